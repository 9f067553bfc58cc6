"""stnkit.data.volumes: NIfTI, .npy and PNG read with their world, hostile headers refused in one line."""

import gzip
import struct

import numpy as np
import pytest
import torch

from stnkit.data.folder import png_bytes
from stnkit.data.idx import ImageFileError
from stnkit.data.volumes import MAX_SIDE, Volume, read_volume, volume_kind, write_volume

nib = pytest.importorskip("nibabel")

# a rotation about z by 30 degrees times anisotropic spacing (1.5, 2, 3) mm, and an offset: qform-representable
_c, _s = np.cos(np.radians(30)), np.sin(np.radians(30))
AFFINE = np.array(
    [[1.5 * _c, -2.0 * _s, 0.0, -20.0], [1.5 * _s, 2.0 * _c, 0.0, 12.5], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]]
)


def nifti(path, arr, affine=AFFINE):
    img = nib.Nifti1Image(np.asarray(arr), affine)
    img.set_qform(affine, 1)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_axis_order_affine_and_spacing(tmp_path, suffix):
    arr = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)  # nibabel's (i, j, k)
    vol = read_volume(nifti(tmp_path / f"a{suffix}", arr))
    assert vol.kind == "nifti" and vol.dims == 3 and vol.spatial == (4, 5, 6)
    # tensor [z, y, x] = nibabel [i, j, k] with x = i
    assert torch.equal(vol.data[0], torch.from_numpy(arr.transpose(2, 1, 0)))
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    np.testing.assert_allclose(vol.spacing, (1.5, 2.0, 3.0), atol=1e-6)
    assert vol.describe() == "6x5x4 voxels of 1.5x2x3 mm"


def test_nifti_written_back_with_the_fixed_header(tmp_path):
    arr = np.random.default_rng(1).random((6, 5, 4)).astype(np.float32)
    vol = read_volume(nifti(tmp_path / "a.nii.gz", (arr * 1000).astype(np.int16)))
    write_volume(tmp_path / "b.nii.gz", vol.data * 0.5, vol)
    back = nib.load(tmp_path / "b.nii.gz")
    assert back.get_data_dtype() == np.float32
    np.testing.assert_allclose(back.affine, nib.load(tmp_path / "a.nii.gz").affine)
    assert back.header.get_qform(coded=True)[1] == 1
    np.testing.assert_allclose(back.get_fdata(), (arr * 1000).astype(np.int16) * 0.5, rtol=1e-6)


def test_nifti_4d_with_one_volume_is_3d_and_more_is_refused(tmp_path):
    vol = read_volume(nifti(tmp_path / "one.nii", np.ones((4, 4, 4, 1), np.float32)))
    assert vol.spatial == (4, 4, 4)
    with pytest.raises(ImageFileError, match=r"a 3-D volume is needed, got shape \(4, 4, 4, 2\)"):
        read_volume(nifti(tmp_path / "two.nii", np.ones((4, 4, 4, 2), np.float32)))
    with pytest.raises(ImageFileError, match="a 3-D volume is needed"):
        read_volume(nifti(tmp_path / "flat.nii", np.ones((4, 4), np.float32)))


def test_nifti_hostile_headers(tmp_path):
    path = nifti(tmp_path / "big.nii", np.ones((4, 4, 4), np.float32))
    raw = bytearray(path.read_bytes())
    raw[42:48] = struct.pack("<3h", 30000, 30000, 30000)  # dim[1..3]: 27e12 voxels declared, 256 bytes there
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageFileError, match=f"declares 30000x30000x30000 voxels; expected sides of 1 to {MAX_SIDE}"):
        read_volume(path)
    short = nifti(tmp_path / "short.nii", np.ones((8, 8, 8), np.float32))
    short.write_bytes(short.read_bytes()[:600])
    with pytest.raises(ImageFileError, match="truncated"):
        read_volume(short)
    sing = nifti(tmp_path / "sing.nii", np.ones((4, 4, 4), np.float32))
    raw = bytearray(sing.read_bytes())
    raw[252:256] = struct.pack("<2h", 0, 1)  # qform_code 0, sform_code 1
    raw[296:312] = struct.pack("<4f", 0, 0, 0, 0)  # srow_y: the sform is singular
    sing.write_bytes(bytes(raw))
    with pytest.raises(ImageFileError, match="singular or not finite"):
        read_volume(sing)
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti" * 50))
    with pytest.raises(ImageFileError, match="junk.nii.gz"):
        read_volume(tmp_path / "junk.nii.gz")


def test_npy(tmp_path):
    arr = np.random.default_rng(2).random((3, 5, 7))
    np.save(tmp_path / "a.npy", arr)
    vol = read_volume(tmp_path / "a.npy")
    assert vol.kind == "npy" and vol.spatial == (3, 5, 7) and np.array_equal(vol.affine, np.eye(4))
    torch.testing.assert_close(vol.data[0], torch.from_numpy(arr).float())
    write_volume(tmp_path / "b.npy", vol.data, vol)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), arr.astype(np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageFileError, match="an array of numbers is needed, got dtype object"):
        read_volume(tmp_path / "obj.npy")
    np.save(tmp_path / "four.npy", np.zeros((2, 2, 2, 2)))
    with pytest.raises(ImageFileError, match=r"a 2-D \(H, W\) or 3-D \(D, H, W\) array is needed"):
        read_volume(tmp_path / "four.npy")
    # a header declaring 10^12 values in a file of a few bytes: refused before any allocation
    header = {"descr": "<f4", "fortran_order": False, "shape": (10000, 10000, 10000)}
    with open(tmp_path / "bomb.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(ImageFileError, match="declares 10000x10000x10000 voxels"):
        read_volume(tmp_path / "bomb.npy")
    header["shape"] = (100, 100)
    with open(tmp_path / "short.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 100)
    with pytest.raises(ImageFileError, match="truncated"):
        read_volume(tmp_path / "short.npy")


def test_png_round_trip(tmp_path):
    img = (np.random.default_rng(3).random((9, 13)) * 255).astype(np.uint8)
    (tmp_path / "a.png").write_bytes(png_bytes(img))
    vol = read_volume(tmp_path / "a.png")
    assert vol.kind == "image" and vol.spatial == (9, 13) and np.array_equal(vol.affine, np.eye(3))
    write_volume(tmp_path / "b.png", vol.data, vol)
    assert np.array_equal(read_volume(tmp_path / "b.png").data.numpy(), vol.data.numpy())


def test_names_and_files(tmp_path):
    assert [volume_kind(n) for n in ("a.NII", "a.nii.gz", "b.npy", "c.jpeg")] == ["nifti", "nifti", "npy", "image"]
    with pytest.raises(ValueError, match=r"a.mha: unknown image type; expected one of .nii, .nii.gz"):
        volume_kind("a.mha")
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "d.nii").mkdir()
    with pytest.raises(ImageFileError, match="is a directory"):
        read_volume(tmp_path / "d.nii")
    (tmp_path / "fake.png").write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(ImageFileError, match="not a PNG or JPEG"):
        read_volume(tmp_path / "fake.png")
    with pytest.raises(ValueError, match=r"spatial size \(2, 2\) of like"):
        write_volume(tmp_path / "x.npy", torch.zeros(3, 3), Volume(torch.zeros(1, 2, 2), np.eye(3), "npy"))
