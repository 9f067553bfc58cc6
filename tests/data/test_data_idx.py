"""IDX files and the MNIST sources: bundled digits, their fixed split, a directory of IDX files."""

import gzip
import hashlib
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stnkit.data import (
    DatasetError,
    IdxError,
    bundled_mnist,
    bundled_split_indices,
    load_digits,
    load_mnist_dir,
    read_idx,
    write_idx,
)
from stnkit.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from stnkit.data.mnist import BUNDLED_DIR

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 28, 28), (2, 1, 3, 4)])
def test_round_trip(tmp_path, dtype, suffix, shape):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert not list(tmp_path.glob("*.part"))


def test_header_layout_is_mnists(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(tmp_path / "x", a).read_bytes()
    assert raw[:16] == struct.pack(">IIII", 2051, 2, 3, 4)
    assert raw[16:] == a.tobytes()
    # the named constants are MNIST's: uint8 images (N, 28, 28) and uint8 labels (N,)
    assert (IMAGES_MAGIC, LABELS_MAGIC) == (2051, 2049)
    labels = write_idx(tmp_path / "y", np.zeros(5, dtype=np.uint8)).read_bytes()
    assert struct.unpack(">I", labels[:4])[0] == LABELS_MAGIC


def test_gzip_output_is_deterministic(tmp_path):
    a = np.arange(1000, dtype=np.int32)
    one = write_idx(tmp_path / "a.gz", a).read_bytes()
    two = write_idx(tmp_path / "b.gz", a).read_bytes()
    assert one == two
    assert gzip.decompress(one)[:4] == struct.pack(">HBB", 0, 0x0C, 1)


def _good(tmp_path, name="good", gz=False):
    return write_idx(tmp_path / (name + (".gz" if gz else "")), np.ones((4, 28, 28), dtype=np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, gz):
    raw = gzip.decompress(_good(tmp_path, gz=True).read_bytes())
    bad = raw[:-10]
    path = tmp_path / "t"
    path.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(IdxError, match="truncated"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(_good(tmp_path).read_bytes() + b"\x00\x00")
    with pytest.raises(IdxError, match="trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize(
    "header, match",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 0), "magic"),  # first bytes must be zero
        (b"\x00\x00\x07\x01" + struct.pack(">I", 0), "magic"),  # unknown type code
        (b"\x00\x00\x08\x00", "magic"),  # no dimensions
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
    ],
)
def test_bad_headers(tmp_path, header, match):
    path = tmp_path / "bad"
    path.write_bytes(header)
    with pytest.raises(IdxError, match=match):
        read_idx(path)


def test_mislabelled_file(tmp_path):
    labels = write_idx(tmp_path / "labels.gz", np.zeros(5, dtype=np.uint8))
    with pytest.raises(IdxError, match="expected magic number 2051, got 2049"):
        read_idx(labels, expect_magic=2051)
    assert read_idx(labels, expect_magic=2049).shape == (5,)


def test_corrupt_gzip(tmp_path):
    raw = bytearray(_good(tmp_path, gz=True).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    raw[len(raw) // 2 + 1] ^= 0xFF
    path = tmp_path / "c.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(IdxError, match="corrupt gzip|cannot be read"):
        read_idx(path)
    path.write_bytes(bytes(raw[:40]))  # gzip cut short
    with pytest.raises(IdxError):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_write_rejects_bad_arrays(tmp_path):
    with pytest.raises(TypeError, match="dtype"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="dtype"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "a", np.array(3, dtype=np.uint8))


# -- bundled digits and their split ------------------------------------------------------------
def test_bundled_digits_match_their_readme():
    images, labels = bundled_mnist()
    assert images.shape == (8000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (8000,)
    assert np.bincount(labels).tolist() == [784, 882, 805, 828, 789, 679, 811, 882, 755, 785]
    readme = (BUNDLED_DIR / "README.md").read_text()
    for name in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
        digest = hashlib.sha256((BUNDLED_DIR / name).read_bytes()).hexdigest()
        assert digest in readme


def test_bundled_split_is_fixed_balanced_and_disjoint():
    train_idx, test_idx = bundled_split_indices()
    assert len(train_idx) == 7000 and len(test_idx) == 1000
    assert np.intersect1d(train_idx, test_idx).size == 0
    np.testing.assert_array_equal(np.union1d(train_idx, test_idx), np.arange(8000))
    # the split must never change silently: every bundled experiment depends on it
    digest = hashlib.sha256(test_idx.astype("<i8").tobytes()).hexdigest()
    assert digest == "84dc3dd6aafceba14c63fcbfac0d4c1efe7c9f79d24ecaeffb1dc57c8894323e"
    other = bundled_split_indices(seed=1)[1]
    assert not np.array_equal(other, test_idx)


def test_load_digits_bundled():
    x_tr, y_tr = load_digits("train")
    x_te, y_te = load_digits("test")
    assert x_tr.shape == (7000, 28, 28) and x_te.shape == (1000, 28, 28)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int64 and y_te.dtype == np.int64
    assert np.bincount(y_te).tolist() == [100] * 10
    images, labels = bundled_mnist()
    _, test_idx = bundled_split_indices()
    np.testing.assert_array_equal(x_te, images[test_idx])
    np.testing.assert_array_equal(y_te, labels[test_idx])
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits("val")


def write_mnist_dir(directory, n_train=12, n_test=6, gz=True, seed=0):
    """Four small standard-named MNIST IDX files; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, stem_img, stem_lab, n in (
        ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", n_train),
        ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", n_test),
    ):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(directory / f"{stem_img}{ext}", x)
        write_idx(directory / f"{stem_lab}{ext}", y)
        arrays[split] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_directory(tmp_path, gz):
    arrays = write_mnist_dir(tmp_path, gz=gz)
    for split in ("train", "test"):
        x, y = load_digits(split, data_dir=tmp_path)
        np.testing.assert_array_equal(x, arrays[split][0])
        np.testing.assert_array_equal(y, arrays[split][1])
        assert y.dtype == np.int64
        assert load_mnist_dir(tmp_path, split)[0].shape == arrays[split][0].shape


def test_directory_errors(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_digits("test", data_dir=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, dtype=np.uint8))  # 6 images, 5 labels
    with pytest.raises(ValueError, match="labels must have shape"):
        load_digits("test", data_dir=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(6, 11, dtype=np.uint8))
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        load_digits("test", data_dir=tmp_path)
    # images and labels swapped: the magic numbers tell
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros(12, dtype=np.uint8))
    with pytest.raises(IdxError, match="expected magic number 2051"):
        load_digits("train", data_dir=tmp_path)


# -- hostile files: stnkit's own error, no allocation of the declared size, no hang ---------------


_FUZZ = settings(
    max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True
)


def _read_bounded(path, budget=8 << 20):
    """read_idx(path): IdxError or an array; never more than ``budget`` bytes of peak allocation."""
    tracemalloc.start()
    try:
        try:
            result = read_idx(path)
        except IdxError:
            result = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < budget, f"read_idx allocated {peak} bytes"
    return result


@_FUZZ
@given(data=st.binary(max_size=512), gz=st.booleans())
def test_fuzz_random_bytes(tmp_path, data, gz):
    path = tmp_path / "f.idx"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    arr = _read_bounded(path)
    if arr is not None:  # it parsed: then it is exactly what its header declares
        assert arr.nbytes + 4 + 4 * arr.ndim == len(data)


@_FUZZ
@given(
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=6),
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
    body=st.binary(max_size=256),
    gz=st.booleans(),
)
def test_fuzz_headers_declaring_huge_sizes(tmp_path, dims, code, body, gz):
    raw = struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + body
    path = tmp_path / "h.idx"
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    _read_bounded(path)


@_FUZZ
@given(cut=st.integers(0, 4 * 28 * 28 + 15), gz=st.booleans())
def test_fuzz_truncations(tmp_path, cut, gz):
    raw = write_idx(tmp_path / "full", np.ones((4, 28, 28), dtype=np.uint8)).read_bytes()
    data = raw[:cut]
    path = tmp_path / "t.idx"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    with pytest.raises(IdxError):
        read_idx(path)


def test_gzip_bomb_declaring_terabytes_is_refused_before_reading(tmp_path):
    # 1 TB declared; the stream itself would decompress to 64 MB of zeros
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 1 << 20, 1 << 10, 1 << 10)
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb") as f:
        f.write(header)
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert _read_bounded(path) is None  # refused, with a few bytes read
    with pytest.raises(IdxError, match="declare 1,099,511,627,776 bytes, more than"):
        read_idx(path)
    with pytest.raises(IdxError):
        read_idx(tmp_path, IMAGES_MAGIC)  # a directory


def test_idx_errors_are_dataset_errors_and_value_errors():
    assert issubclass(IdxError, DatasetError) and issubclass(DatasetError, ValueError)


@pytest.mark.parametrize(
    "images,labels,match",
    [
        (np.zeros((3, 28, 28), np.uint8), np.array([0, 1, 10], np.uint8), r"labels must lie in 0\.\.9"),
        (np.zeros((3, 28, 28), np.uint8), np.array([0, 1], np.uint8), r"labels must have shape \(3,\)"),
        (np.zeros((3, 28, 28), np.float32), np.array([0, 1, 2], np.uint8), "images must be uint8"),
    ],
)
def test_directory_contents_are_validated(tmp_path, images, labels, match):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    # float images have another magic number: refused as IDX of the wrong kind
    with pytest.raises(DatasetError, match=match if images.dtype == np.uint8 else "expected magic number 2051"):
        load_mnist_dir(tmp_path, "test")
