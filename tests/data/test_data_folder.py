"""Image folders and CSV manifests: reading, splits, hostile files, distortions, the imagefolder export."""

import io
import os
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from stnkit.cli import main
from stnkit.data import (
    DatasetError,
    DistortedMNIST,
    ImageFolderDataset,
    channel_stats,
    load_dataset_dir,
    load_digits,
    open_image_data,
    read_image,
    read_image_manifest,
    scan_image_folder,
)
from stnkit.data import folder as folder_mod
from stnkit.data.folder import png_bytes, read_image_header
from stnkit.data.images import ImageFileError


def save(path, array, fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    if fmt == "raw":
        path.write_bytes(png_bytes(arr))
    else:
        Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def grey(value, size=(6, 5)):
    return np.full(size, value, np.uint8)


@pytest.fixture
def grey_folder(tmp_path):
    root = tmp_path / "imgs"
    for c, name in enumerate(("zebra", "apple", "mango")):
        for k in range(10):
            save(root / name / f"im{k}.png", grey(20 * c + k))
    (root / "README.txt").write_text("ignored")
    (root / "apple" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    return root


def test_folder_classes_labels_and_raw_values(grey_folder):
    listing = scan_image_folder(grey_folder)
    assert listing.classes == ("apple", "mango", "zebra")  # sorted names, index = position
    assert len(listing.paths) == 30 and set(listing.splits) == {None}
    data = open_image_data(grey_folder, seed=0)
    assert data.classes == ("apple", "mango", "zebra") and data.in_channels == 1 and data.image_size == (6, 5)
    assert len(data.train) + len(data.val) + len(data.test) == 30
    for ds in (data.train, data.val, data.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (1, 6, 5) and x.dtype == torch.float32 and y.dtype == torch.int64 and y.ndim == 0
            name = data.classes[int(y)]
            assert ds.paths[i].parent.name == name
            k = int(ds.paths[i].stem[2:])
            want = 20 * ("zebra", "apple", "mango").index(name) + k
            assert torch.equal(x, torch.full((1, 6, 5), want, dtype=torch.float32) / 255)


def test_seeded_split_is_stratified_deterministic_and_a_partition(grey_folder):
    a = open_image_data(grey_folder, seed=3, val_fraction=0.2, test_fraction=0.3)
    b = open_image_data(grey_folder, seed=3, val_fraction=0.2, test_fraction=0.3)
    c = open_image_data(grey_folder, seed=4, val_fraction=0.2, test_fraction=0.3)
    for s in ("train", "val", "test"):
        assert getattr(a, s).paths == getattr(b, s).paths
    assert a.test.paths != c.test.paths
    every = a.train.paths + a.val.paths + a.test.paths
    assert len(set(every)) == 30
    for ds, per_class in ((a.train, 5), (a.val, 2), (a.test, 3)):
        assert torch.bincount(ds.labels, minlength=3).tolist() == [per_class] * 3
    with pytest.raises(DatasetError, match="leave none for training"):
        open_image_data(grey_folder, val_fraction=0.5, test_fraction=0.5)


def test_split_folders_and_a_carved_val(tmp_path):
    root = tmp_path / "d"
    for s, n in (("train", 10), ("test", 3)):
        for c in ("a", "b"):
            for k in range(n):
                save(root / s / c / f"{k}.png", grey(k))
    data = open_image_data(root, val_fraction=0.2)
    assert len(data.test) == 6 and all(p.parts[-3] == "test" for p in data.test.paths)
    assert len(data.val) == 4 and len(data.train) == 16
    assert all(p.parts[-3] == "train" for p in data.val.paths + data.train.paths)
    save(root / "val" / "c" / "0.png", grey(1))
    with pytest.raises(DatasetError, match=r"class 'c' has no folder in .*train"):
        scan_image_folder(root)
    (root / "val" / "c" / "0.png").unlink()
    (root / "val" / "c").rmdir()
    save(root / "val" / "a" / "0.png", grey(1))
    data = open_image_data(root)  # all three given: nothing carved
    assert len(data.val) == 1 and len(data.train) == 20
    save(root / "extra" / "0.png", grey(1))
    with pytest.raises(DatasetError, match=r"split folders .* and other folders \(extra\)"):
        scan_image_folder(root)


def test_layout_errors_name_the_culprit(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_image_folder(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        scan_image_folder(tmp_path / "empty")
    save(tmp_path / "loose" / "x.png", grey(0))
    with pytest.raises(DatasetError, match="'x.png' lies next to the class folders"):
        scan_image_folder(tmp_path / "loose")
    (tmp_path / "e" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"class folder .*cat holds no"):
        scan_image_folder(tmp_path / "e")
    save(tmp_path / "g" / "cat" / "x.gif", grey(0), fmt="GIF")
    with pytest.raises(DatasetError, match=r"x\.gif: \.gif images are not read"):
        scan_image_folder(tmp_path / "g")
    save(tmp_path / "n" / "cat" / "deeper" / "x.png", grey(0))
    with pytest.raises(DatasetError, match="holds a folder 'deeper'"):
        scan_image_folder(tmp_path / "n")


def test_format_by_content_not_suffix(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    jpeg_as_png = save(tmp_path / "c" / "a" / "photo.png", rgb, fmt="JPEG", quality=95)
    assert read_image_header(jpeg_as_png).format == "jpeg"
    x = read_image(jpeg_as_png)
    assert x.shape == (3, 8, 8) and abs(float(x[0].mean()) - 200 / 255) < 0.02 and float(x[2].mean()) < 0.05
    png_as_jpg = save(tmp_path / "c" / "a" / "g.jpg", grey(7, (8, 8)), fmt="PNG")
    assert torch.equal(read_image(png_as_jpg), torch.full((1, 8, 8), 7.0) / 255)
    fake = tmp_path / "c" / "a" / "fake.png"
    fake.write_text("hello, not an image")
    with pytest.raises(ImageFileError, match=r"fake\.png: not a PNG or JPEG file"):
        read_image(fake)
    with pytest.raises(ImageFileError, match="fake.png"):
        open_image_data(tmp_path / "c")  # found when the headers are read, before training


def test_rgba_and_la_composite_onto_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128]]], np.uint8)
    x = read_image(save(tmp_path / "rgba.png", rgba))
    a = 128 / 255
    want = torch.tensor([[1.0, 1.0, 1 - a], [0.0, 1.0, 1 - a], [0.0, 1.0, 1.0 * a + (1 - a)]])
    assert x.shape == (3, 1, 3) and torch.allclose(x[:, 0, :], want, atol=1e-6)
    la = np.array([[[0, 255], [0, 0], [100, 51]]], np.uint8)
    x = read_image(save(tmp_path / "la.png", la))
    assert x.shape == (1, 1, 3)
    assert torch.allclose(x[0, 0], torch.tensor([0.0, 1.0, 100 / 255 * 0.2 + 0.8]), atol=1e-6)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    g16 = np.array([[0, 257, 40000, 65535]], np.uint16)
    path = save(tmp_path / "g16.png", g16, fmt="raw")
    assert read_image_header(path).bit_depth == 16 and read_image_header(path).grey
    x = read_image(path)
    assert torch.equal(x, torch.from_numpy(g16.astype(np.float32))[None] / 65535)  # 40000 -> 0.61, not clipped to 1
    rgb16 = np.zeros((1, 2, 3), np.uint16)
    rgb16[0, 0] = [65535, 0x8080, 0]
    x = read_image(save(tmp_path / "rgb16.png", rgb16, fmt="raw"))
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))  # Pillow's 8 bits, correctly scaled


def test_channels_grey_colour_mixed_and_forced(tmp_path):
    root = tmp_path / "m"
    save(root / "a" / "g.png", grey(100, (4, 4)))
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 200
    save(root / "b" / "c.png", rgb)
    data = open_image_data(root, val_fraction=0, test_fraction=0)
    assert data.in_channels == 3
    by_class = {int(data.train[i][1]): data.train[i][0] for i in range(2)}
    assert by_class[0].shape == (3, 4, 4) and torch.equal(by_class[0][0], by_class[0][2])
    data = open_image_data(root, channels=1, val_fraction=0, test_fraction=0)
    x = {int(data.train[i][1]): data.train[i][0] for i in range(2)}[1]
    assert data.in_channels == 1 and torch.allclose(x, torch.full((1, 4, 4), 0.587 * 200 / 255))
    # a palette of grey entries counts as grey, a coloured palette as colour
    pal = Image.fromarray(grey(3, (4, 4))).convert("P")
    pal.putpalette([v for i in range(256) for v in (i, i, i)])
    pal.save(tmp_path / "p_grey.png")
    assert read_image_header(tmp_path / "p_grey.png").grey
    pal.putpalette([v for i in range(256) for v in (i, 0, 0)])
    pal.save(tmp_path / "p_red.png")
    assert not read_image_header(tmp_path / "p_red.png").grey
    assert torch.allclose(read_image(tmp_path / "p_red.png")[:, 0, 0], torch.tensor([3 / 255, 0, 0]))


def test_sizes_must_agree_unless_resized(tmp_path):
    root = tmp_path / "s"
    save(root / "a" / "small.png", grey(0, (4, 4)))
    save(root / "b" / "wide.png", np.concatenate([grey(0, (4, 4)), grey(255, (4, 4))], axis=1))
    with pytest.raises(DatasetError, match=r"small\.png is 4x4, .*wide\.png is 8x4; pass --image-size H W"):
        open_image_data(root)
    data = open_image_data(root, image_size=(4, 4), val_fraction=0, test_fraction=0)
    x = {int(data.train[i][1]): data.train[i][0] for i in range(2)}
    assert data.image_size == (4, 4) and torch.equal(x[0], torch.zeros(1, 4, 4))  # already 4x4: untouched
    wide = x[1][0]  # the whole 8x4 image squeezed to 4x4 (aspect not kept, no pad rows, no crop)
    assert torch.equal(wide[:, 0], torch.zeros(4)) and torch.equal(wide[:, 3], torch.ones(4))
    assert torch.allclose(wide[:, 1] + wide[:, 2], torch.ones(4)) and torch.equal(wide[0], wide[3])
    src = torch.tensor(np.concatenate([grey(0, (4, 4)), grey(255, (4, 4))], axis=1), dtype=torch.float32) / 255
    ref = torch.nn.functional.interpolate(src[None, None], size=(4, 4), mode="bilinear", antialias=True)
    assert torch.allclose(wide, ref[0, 0], atol=1e-6)
    big = open_image_data(root, image_size=(6, 9), val_fraction=0, test_fraction=0).train
    assert big[0][0].shape == (1, 6, 9) and big[1][0].shape == (1, 6, 9)


def test_hostile_files(tmp_path):
    # a FIFO named like an image: refused at once, never opened for a blocking read
    root = tmp_path / "f"
    save(root / "a" / "ok.png", grey(0))
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "a" / "pipe.png")
        with pytest.raises(ImageFileError, match="pipe.png is not a regular file"):
            scan_image_folder(root)
        with pytest.raises(ImageFileError, match="pipe.png is a FIFO"):
            read_image(root / "a" / "pipe.png")
    # a header declaring 100000 x 100000 pixels: refused before any pixel is decoded
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (tmp_path / "bomb.png").write_bytes(bomb + b"\x00" * 100)
    with pytest.raises(ImageFileError, match=r"declares 100000x100000 pixels; expected 1 to 40,000,000"):
        read_image(tmp_path / "bomb.png")
    good = png_bytes(np.arange(64, dtype=np.uint8).reshape(8, 8))
    (tmp_path / "cut.png").write_bytes(good[: len(good) - 30])
    with pytest.raises(ImageFileError, match=r"cut\.png: not a readable PNG"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "head.png").write_bytes(good[:20])
    with pytest.raises(ImageFileError, match=r"head\.png: truncated or corrupt PNG"):
        read_image_header(tmp_path / "head.png")
    cmyk = Image.new("CMYK", (4, 4))
    cmyk.save(tmp_path / "cmyk.jpg")
    with pytest.raises(ImageFileError, match="JPEG with 4 components"):
        read_image_header(tmp_path / "cmyk.jpg")
    with pytest.raises(ImageFileError, match="is a directory"):
        read_image(tmp_path)


def test_missing_pillow_is_one_clear_error(tmp_path, monkeypatch):
    path = save(tmp_path / "x.png", grey(0))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="needs Pillow: pip install pillow"):
        read_image(path)


def test_csv_manifest(tmp_path):
    for k in range(4):
        save(tmp_path / "imgs" / f"{k}.png", grey(k))
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label,split\nimgs/0.png,dog,train\nimgs/1.png,cat,train\nimgs/2.png,dog,test\n")
    listing = read_image_manifest(csv_path)
    assert listing.classes == ("cat", "dog") and listing.labels == (1, 0, 1)
    data = open_image_data(csv_path, val_fraction=0)
    assert len(data.train) == 2 and len(data.test) == 1 and data.test.paths == (tmp_path / "imgs" / "2.png",)
    x, y = data.test[0]
    assert int(y) == 1 and torch.equal(x, torch.full((1, 6, 5), 2.0) / 255)
    csv_path.write_text(" path , label \r\nimgs/0.png,dog\r\nimgs/1.png,cat\r\nimgs/2.png,dog\r\nimgs/3.png,cat\r\n")
    assert len(read_image_manifest(csv_path).paths) == 4  # no split column: carved by seed
    bad = {
        "imgs/0.png,dog\n": "header must name the columns path,label",
        "path,label,spilt\nimgs/0.png,dog,train\n": "got 'spilt'",
        "path,label\nimgs/0.png\n": "line 2: expected 2 fields",
        "path,label,split\nimgs/0.png,dog,valid\n": "line 2: split must be train, val or test, got 'valid'",
        "path,label\nimgs/0.png,dog\nimgs/9.png,dog\n": r"line 3: no such image .*9\.png",
        "path,label\nimgs/0.png,dog\nimgs/0.png,cat\n": "line 3: 'imgs/0.png' is listed again",
        "path,label\nimgs/0.png,\n": "line 2: empty label",
        "path,label\n": "no images listed",
        "path,label,split\nimgs/0.png,dog,train\nimgs/1.png,cat,test\n": "class 'cat' has no train image",
    }
    for text, message in bad.items():
        csv_path.write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_image_manifest(csv_path)
    csv_path.write_bytes(b"path,label\n\xff\xfe,dog\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_image_manifest(csv_path)


def test_lazy_decoding_and_cache(grey_folder, monkeypatch):
    calls = []
    real = folder_mod.read_image
    monkeypatch.setattr(folder_mod, "read_image", lambda p, m: calls.append(p) or real(p, m))
    data = open_image_data(grey_folder, cache_size=2)
    assert calls == []  # opening reads headers only
    ds = data.train
    first = ds[0][0]
    assert len(calls) == 1 and torch.equal(ds[0][0], first) and len(calls) == 1  # cached
    ds[1], ds[2], ds[0]
    assert len(calls) == 4  # the cache holds 2: image 0 was evicted
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_channel_stats(tmp_path):
    root = tmp_path / "c"
    save(root / "a" / "0.png", np.array([[0, 255]], np.uint8))
    save(root / "a" / "1.png", np.array([[255, 255]], np.uint8))
    data = open_image_data(root, val_fraction=0, test_fraction=0)
    mean, std = channel_stats(data.train)
    assert torch.allclose(mean, torch.tensor([0.75])) and torch.allclose(std, torch.tensor([0.75**0.5 * 0.5]))
    mean1, _ = channel_stats(data.train, max_images=1)
    assert torch.allclose(mean1, torch.tensor([0.5]))  # the first image only
    with pytest.raises(ValueError, match="dataset is empty"):
        channel_stats(data.val)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """40 bundled test digits written as 28x28 PNGs, named by their index."""
    images, labels = load_digits("test")
    images, labels = images[:40], labels[:40]
    root = tmp_path_factory.mktemp("digits")
    for i in range(40):
        save(root / "test" / str(labels[i]) / f"{i:05d}.png", images[i])
        save(root / "train" / str(labels[i]) / f"{i:05d}.png", images[i])
    return root, images, labels


@pytest.mark.parametrize("name", ["r", "p", "e"])
def test_distortions_match_distorted_mnist(digit_folder, name):
    root, images, labels = digit_folder
    data = open_image_data(root, distort=name, seed=5, val_fraction=0)
    ref = DistortedMNIST(name, images, labels, seed=5)  # the fixed draw of seed 5 = the test set
    got = torch.stack([data.test[i][0] for i in range(40)])
    assert torch.equal(data.test.labels, torch.from_numpy(labels))  # the index order
    assert (got - ref.images).abs().max() < 1e-5
    assert data.test.transform == ("affine" if name == "r" else ref.transform)
    train = DistortedMNIST(name, images, labels, seed=5, fresh=True)
    before = torch.stack([data.train[i][0] for i in range(40)])
    assert (before - train.images).abs().max() < 1e-5  # epoch 0
    data.train.set_epoch(3)
    train.set_epoch(3)
    after = torch.stack([data.train[i][0] for i in range(40)])
    assert (after - train.images).abs().max() < 1e-5 and (after - before).abs().max() > 0.1
    fixed = data.test.params.clone()
    data.test.set_epoch(3)
    assert torch.equal(data.test.params, fixed)  # val and test keep one draw


def test_rotation_is_rigid_on_non_square_images(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    save(tmp_path / "d" / "a" / "x.png", rgb)
    ds = open_image_data(tmp_path / "d", distort="rts", val_fraction=0, test_fraction=0).train
    theta = ds.params.view(-1, 2, 3).double()
    h, w = ds.image_size
    s = torch.diag(torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64))
    pixel = torch.linalg.inv(s) @ theta[:, :, :2] @ s  # the map in pixels
    k = pixel[:, 0, 0].hypot(pixel[:, 1, 0])
    rot = pixel / k[:, None, None]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(2, dtype=torch.float64), atol=1e-5)
    assert ds[0][0].shape == (3, 20, 40)


def test_imagefolder_export_is_bit_identical_to_idx(tmp_path, capsys):
    args = ["data", "make", "rts", "--split", "test", "--seed", "2", "--n", "300"]
    assert main([*args, "--out", str(tmp_path / "idx")]) == 0
    assert main([*args, "--format", "imagefolder", "--out", str(tmp_path / "img")]) == 0
    assert f"to {tmp_path / 'img' / 'test'}" in capsys.readouterr().out
    idx = load_dataset_dir(tmp_path / "idx")
    data = open_image_data(tmp_path / "img")
    assert len(data.train) == 0 and len(data.val) == 0  # only the test split was written
    got = torch.stack([data.test[i][0] for i in range(len(data.test))])
    want = torch.from_numpy(idx["images"]).float().div(255.0).unsqueeze(1)
    assert torch.equal(got, want) and torch.equal(data.test.labels, torch.from_numpy(idx["labels"]))
    by_class = open_image_data(tmp_path / "img", order="class").test
    perm = np.argsort(idx["labels"], kind="stable")
    assert torch.equal(by_class.labels, torch.from_numpy(idx["labels"][perm]))
    np.testing.assert_array_equal(np.load(tmp_path / "img" / "test" / "params.npz")["params"], idx["params"])
    # nothing is overwritten
    assert main([*args, "--format", "imagefolder", "--out", str(tmp_path / "img")]) == 1
    err = capsys.readouterr().err
    assert "already exists and is not an empty folder" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "img").glob(".*part"))


def test_export_then_train_split_reads_back(tmp_path):
    out = tmp_path / "o"
    assert (
        main(["data", "make", "r", "--split", "train", "--n", "50", "--format", "imagefolder", "--out", str(out)]) == 0
    )
    assert (
        main(["data", "make", "r", "--split", "test", "--n", "20", "--format", "imagefolder", "--out", str(out)]) == 0
    )
    data = open_image_data(out, val_fraction=0.2)
    assert data.classes == tuple(str(d) for d in range(10)) and data.image_size == (28, 28) and data.in_channels == 1
    assert len(data.test) == 20 and len(data.train) + len(data.val) == 50
    stems = [int(p.stem) for p in data.train.paths]
    assert stems == sorted(stems)


def test_png_writer_round_trips_through_pillow():
    for arr in (np.arange(12, dtype=np.uint8).reshape(3, 4), np.arange(24, dtype=np.uint16).reshape(2, 4, 3) * 2000):
        back = np.asarray(Image.open(io.BytesIO(png_bytes(arr))))
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        np.testing.assert_array_equal(back, arr)


def test_dataset_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        ImageFolderDataset([], [], (), image_size=4, channels=2)
    with pytest.raises(ValueError, match="distort must be one of"):
        ImageFolderDataset([], [], (), image_size=4, channels=1, distort="tc")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        ImageFolderDataset([tmp_path / "x.png"], [3], ("a",), image_size=4, channels=1)


def test_jpeg_headers(tmp_path):
    rgb = np.full((9, 7, 3), 90, np.uint8)
    path = save(tmp_path / "x.jpg", rgb, fmt="JPEG", exif=b"Exif\x00\x00" + b"\x00" * 3000)  # a segment to skip
    h = read_image_header(path)
    assert (h.format, h.width, h.height, h.grey) == ("jpeg", 7, 9, False)
    assert read_image_header(save(tmp_path / "g.jpg", grey(9, (3, 5)), fmt="JPEG")).grey
    data = path.read_bytes()
    (tmp_path / "nosof.jpg").write_bytes(data[:20])
    with pytest.raises(ImageFileError, match=r"nosof\.jpg: truncated or corrupt JPEG \(no frame header\)"):
        read_image_header(tmp_path / "nosof.jpg")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) - 40])
    with pytest.raises(ImageFileError, match=r"cut\.jpg: not a readable JPEG"):
        read_image(tmp_path / "cut.jpg")


def test_order_index_needs_integer_names(grey_folder):
    with pytest.raises(DatasetError, match="order='index' needs every file name to be a distinct integer, got 'im"):
        open_image_data(grey_folder, order="index")
    with pytest.raises(ValueError, match="order must be one of"):
        open_image_data(grey_folder, order="random")


def test_failed_export_leaves_nothing(tmp_path, monkeypatch, capsys):
    calls = []

    def failing(img):
        calls.append(1)
        if len(calls) > 5:
            raise OSError("disk full")
        return png_bytes(img)

    monkeypatch.setattr(folder_mod, "png_bytes", failing)
    out = tmp_path / "o"
    assert (
        main(["data", "make", "r", "--split", "test", "--n", "20", "--format", "imagefolder", "--out", str(out)]) == 1
    )
    assert "disk full" in capsys.readouterr().err
    assert not (out / "test").exists() and not list(out.glob(".*"))
    (tmp_path / "afile").write_text("mine")
    argv = ["data", "make", "r", "--split", "test", "--n", "4", "--format", "imagefolder"]
    assert main([*argv, "--out", str(tmp_path / "afile" / "d")]) == 1
    assert (tmp_path / "afile").read_text() == "mine"
