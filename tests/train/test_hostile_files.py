"""Files from elsewhere treated as hostile: checkpoints, IDX files and images that are special files,
declare more than they hold, inflate absurdly, or hold non-finite weights. Each is refused in one line,
quickly, before what it declares is allocated; nothing blocks and nothing is unpickled."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from stnkit.data.idx import IdxError, read_idx, write_idx
from stnkit.data.images import ImageFileError, read_grey_png
from stnkit.models import create
from stnkit.train import checkpoint as ck
from stnkit.train.checkpoint import CheckpointError, load_model, save_model
from stnkit.train.config import TrainConfig

CONFIG = TrainConfig(model="fcn", dataset="mnist", hidden=8)


@pytest.fixture(autouse=True)
def no_hang():
    """A test that blocks (a FIFO opened for reading) fails after 60 s instead of hanging the suite."""

    def fail(*_):
        raise TimeoutError("the test blocked")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _model():
    torch.manual_seed(0)
    return create("fcn", in_channels=1, in_size=28, hidden=8)


def _ckpt(path, config=CONFIG, state=None, **save):
    state = _model().state_dict() if state is None else state
    ckpt = {"hyper_parameters": {"config": config.to_dict()}, "state_dict": {"model." + k: v for k, v in state.items()}}
    torch.save(ckpt, path, **save)
    return path


def _peak_mb(code: str, timeout: float = 120) -> tuple[str, float]:
    """Run ``code`` in a fresh interpreter; its output and how much its peak RSS grew while it ran (MB)."""
    prog = f"""
import resource, sys
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch, stnkit.train.checkpoint, stnkit.data.idx
before = peak()
try:
{chr(10).join("    " + line for line in code.strip().splitlines())}
except Exception as err:
    print(type(err).__name__, str(err).replace(chr(10), " "))
print("GROWTH", peak() - before)
"""
    proc = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), float(lines[-1].split()[1])


# -- 1. special files as checkpoints ---------------------------------------------------------
def _special(tmp_path, kind, suffix):
    path = tmp_path / f"model{suffix}"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "is a FIFO, not a file"
    if kind == "dir":
        path.mkdir()
        return path, "is a directory, not a file"
    if kind == "devzero":
        path.symlink_to("/dev/zero")
        return path, "is a character device, not a file"
    path.symlink_to(tmp_path / "gone")
    return path, "is a symbolic link to .*gone, which does not exist"


LOADERS = {
    "load_model": load_model,
    "load_run": ck.load_run,
    "read_lightning_checkpoint": ck.read_lightning_checkpoint,
    "checkpoint_config": ck.checkpoint_config,
}


@pytest.mark.parametrize("kind", ["fifo", "dir", "devzero", "broken-link"])
@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_special_files_are_named_for_what_they_are(tmp_path, kind, loader, suffix):
    path, message = _special(tmp_path, kind, suffix)
    error = FileNotFoundError if kind == "broken-link" else CheckpointError
    with pytest.raises(error, match=message) as err:
        LOADERS[loader](path)
    assert "\n" not in str(err.value)


def test_a_fifo_swapped_in_after_the_stat_never_blocks(tmp_path, monkeypatch):
    path = tmp_path / "m.ckpt"
    os.mkfifo(path)
    monkeypatch.setattr(ck, "_check_file", lambda p: None)  # as if it was a file when stat-ed
    with pytest.raises(ValueError, match="is a FIFO"):
        load_model(path)


# -- 2. what a safetensors header or a stored config declares --------------------------------
def _safetensors(path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


META = {"__metadata__": {"stnkit_config": json.dumps(CONFIG.to_dict())}}


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p.write_bytes(struct.pack("<Q", 1 << 40)), "its header declares 1,099,511,627,776 bytes"),
        (lambda p: p.write_bytes(struct.pack("<Q", 1000) + b"{}"), "truncated: its header declares 1,000 bytes"),
        (lambda p: p.write_bytes(b"\x01\x00"), "truncated: 2 bytes"),
        (  # a terabyte tensor in a small file
            lambda p: _safetensors(
                p, {**META, "w": {"dtype": "F32", "shape": [1 << 20, 1 << 18], "data_offsets": [0, 1 << 40]}}
            ),
            "tensor 'w' ends at byte 1,099,511,627,776 of the data, the file holds 0",
        ),
        (
            lambda p: _safetensors(p, {**META, "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, bytes(8)),
            r"shape \(4,\) of F32 is 16 bytes, its data_offsets hold 8",
        ),
        (
            lambda p: _safetensors(p, {**META, "w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"x"),
            "tensor 'w'",
        ),
        (lambda p: _safetensors(p, [1, 2]), "its header is JSON list"),
        (lambda p: p.write_bytes(struct.pack("<Q", 20000) + b"[" * 20000), "its header is not JSON"),
    ],
)
def test_a_safetensors_header_is_checked_before_any_tensor(tmp_path, make, match):
    path = tmp_path / "m.safetensors"
    make(path)
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_tensors_over_the_limit_are_refused_from_the_header(tmp_path, monkeypatch):
    path = save_model(tmp_path / "m.safetensors", _model(), CONFIG)
    assert load_model(path)[1] == CONFIG
    monkeypatch.setattr(ck, "MAX_CHECKPOINT_BYTES", 1000)
    with pytest.raises(CheckpointError, match=r"its tensors declare [\d,]+ bytes, more than the 1,000 stnkit reads"):
        load_model(path)


def _huge_config_code(path, **config) -> str:
    """Load a small model's weights under a config that asks for a huge model, in a process whose
    address space allows 2 GiB more than at the start (a real build would need far more)."""
    return f"""
import resource, time
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.RLIM_INFINITY))
from stnkit.train.checkpoint import load_model
t = time.time()
try:
    load_model({str(path)!r})
finally:
    print("SECONDS", round(time.time() - t, 2))
"""


@pytest.mark.parametrize(
    "options,match",
    [
        ({"hidden": 10_000_000}, "hidden must be an int in"),  # 31 GB of weights: over the bound
        ({"hidden": 60_000}, "weights do not fit the fcn model its config describes"),  # within it: shapes checked
        ({"model": "st-cnn", "num_transformers": 100_000}, "num_transformers"),
        ({"batch_size": 10**9}, "batch_size"),
        ({"model": "st-cnn", "transform": "tps", "tps_grid_size": 2000}, "tps_grid_size"),
    ],
)
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_config_asking_for_a_huge_model_is_refused_quickly(tmp_path, options, match, suffix):
    config = {**CONFIG.to_dict(), **options}
    path = tmp_path / f"m{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(dict(_model().state_dict()), str(path), metadata={"stnkit_config": json.dumps(config)})
    else:
        ckpt = {
            "hyper_parameters": {"config": config},
            "state_dict": {"model." + k: v for k, v in _model().state_dict().items()},
        }
        torch.save(ckpt, path)
    out, _ = _peak_mb(_huge_config_code(path), timeout=120)
    assert "CheckpointError" in out and match in out, out
    assert float(out.split("SECONDS")[1].split()[0]) < 20, out


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_first(tmp_path, suffix, value):
    model = _model()
    name = next(iter(model.state_dict()))
    with torch.no_grad():
        model.state_dict()[name].view(-1)[3] = value
    path = tmp_path / f"m{suffix}"
    if suffix == ".safetensors":
        save_model(path, model, CONFIG)
    else:
        _ckpt(path, state=model.state_dict())
    with pytest.raises(CheckpointError, match=f"weight {name} holds 1 NaN or inf value"):
        load_model(path)


# -- 3. zip checkpoints: declared sizes before torch.load --------------------------------------
def _bomb(path, nbytes: int) -> None:
    """A torch-like zip whose data.pkl is ``nbytes`` zeros, deflated (200 MB -> 200 KB)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/version", b"3\n")
        z.writestr("archive/byteorder", b"little")
        info = zipfile.ZipInfo("archive/data.pkl")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                f.write(block)


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb.ckpt"
    _bomb(path, 200 << 20)
    assert path.stat().st_size < 1 << 20
    for load in ("load_model", "checkpoint_config"):
        out, growth = _peak_mb(f"stnkit.train.checkpoint.{load}({str(path)!r})")
        assert "CheckpointError" in out and "zip entry archive/data.pkl inflates" in out and "a zip bomb" in out, out
        assert growth < 50, f"{load}: peak memory grew {growth:.0f} MB"  # today: 410 MB


def test_zip_entries_over_the_limit_are_refused(tmp_path, monkeypatch):
    path = _ckpt(tmp_path / "m.ckpt")
    assert load_model(path)[1] == CONFIG
    monkeypatch.setattr(ck, "MAX_CHECKPOINT_BYTES", 10_000)
    with pytest.raises(
        CheckpointError, match=r"its zip entries declare [\d,]+ bytes uncompressed, more than the 10,000"
    ):
        load_model(path)
    monkeypatch.setattr(ck, "MAX_CHECKPOINT_BYTES", 4 << 30)
    monkeypatch.setattr(ck, "MAX_ZIP_ENTRIES", 3)
    with pytest.raises(CheckpointError, match="a zip of [0-9]+ entries; a checkpoint has at most 3"):
        load_model(path)


def test_a_legacy_non_zip_checkpoint_loads_as_before_bounded_by_its_size(tmp_path, monkeypatch):
    path = _ckpt(tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    model, config = load_model(path)
    assert config == CONFIG and torch.equal(
        next(iter(model.state_dict().values())), next(iter(_model().state_dict().values()))
    )
    monkeypatch.setattr(ck, "MAX_CHECKPOINT_BYTES", 1000)
    with pytest.raises(CheckpointError, match=r"legacy.ckpt: [\d,]+ bytes, more than the 1,000 stnkit reads"):
        load_model(path)


def test_a_valid_checkpoint_still_loads_and_predicts_the_same(tmp_path):
    model = _model().eval()
    x = torch.rand(3, 1, 28, 28)
    for path in (_ckpt(tmp_path / "m.ckpt"), save_model(tmp_path / "m.safetensors", model, CONFIG)):
        loaded, config = load_model(path)
        assert config == CONFIG and torch.equal(loaded(x), model(x))


# -- 4. IDX: declared sizes before inflating -------------------------------------------------------
def _idx_gz(path, dims, payload: bytes = b"", code: int = 0x08) -> None:
    header = struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(gzip.compress(header + payload))


def test_idx_declaring_over_1_gib_is_refused_from_the_header(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    _idx_gz(path, (2_000_000, 28, 28), bytes(1000))  # 1.57 GB declared
    with pytest.raises(IdxError, match="declare 1,568,000,000 bytes, more than the 1,073,741,824 stnkit reads"):
        read_idx(path)


def test_idx_sides_are_bounded(tmp_path):
    path = tmp_path / "x.gz"
    _idx_gz(path, (1, 20_000, 2), bytes(40_000))
    with pytest.raises(IdxError, match="every dimension after the first to be at most 16,384"):
        read_idx(path)


@pytest.mark.parametrize(
    "payload,match",
    [
        (bytes(100), "truncated: dimensions .* need 800 bytes, it decompresses to 116"),
        (bytes(900), "has trailing bytes"),
    ],
)
def test_idx_gzip_truncated_or_padded(tmp_path, payload, match):
    path = tmp_path / "x.gz"
    _idx_gz(path, (1, 28, 28), payload)
    with pytest.raises(IdxError, match=match):
        read_idx(path)


def test_idx_special_files_never_block(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(IdxError, match="is a FIFO"):
        read_idx(tmp_path / "fifo")
    with pytest.raises(IdxError, match="zero is not a regular file"):
        read_idx(tmp_path / "zero")


def test_idx_reads_in_one_buffer(tmp_path):
    """A 300 MB gzip IDX (of zeros: 300 KB on disk) costs its data once, not three times."""
    path = tmp_path / "big-idx3.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 382_654, 28, 28))
        for _ in range(300):
            f.write(bytes(1_000_000))
        f.write(bytes(382_654 * 784 - 300_000_000))
    out, growth = _peak_mb(f"a = stnkit.data.idx.read_idx({str(path)!r}); print(a.shape, a.dtype)")
    assert "(382654, 28, 28) uint8" in out, out
    assert growth < 1.3 * 300, f"peak memory grew {growth:.0f} MB for 300 MB of data"  # today: ~600 MB


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_in_every_dtype(tmp_path, dtype):
    a = (np.arange(2 * 5 * 3).reshape(2, 5, 3) - 7).astype(dtype) if dtype != np.uint8 else np.arange(30, dtype=dtype)
    for name in ("a.idx", "a.idx.gz"):
        b = read_idx(write_idx(tmp_path / name, a))
        assert b.dtype == a.dtype and b.dtype.isnative and np.array_equal(a, b) and b.flags.writeable


# -- 6. images for stnkit predict ----------------------------------------------------------------
def _digit():
    d = np.zeros((28, 28), np.uint8)
    d[6:22, 12:16] = 255
    return d


def _png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode).save(path)
    return path


@pytest.mark.parametrize("ink", [0, 255])
def test_a_digit_drawn_only_in_alpha_is_composited(tmp_path, ink):
    pytest.importorskip("PIL")
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = _digit()
    path = _png(tmp_path / "a.png", rgba, "RGBA")
    seen, hidden = ("black", "white") if ink == 255 else ("white", "black")
    grey = read_grey_png(path, background=seen)
    expected = _digit() / 255.0 if ink == 255 else 1.0 - _digit() / 255.0
    np.testing.assert_allclose(grey, expected, atol=1 / 255)
    with pytest.raises(ImageFileError, match=f"drawn only in its transparency.*read it on {seen}"):
        read_grey_png(path, background=hidden)


def test_half_transparent_ink_is_blended(tmp_path):
    pytest.importorskip("PIL")
    la = np.stack([np.full((8, 8), 200, np.uint8), np.full((8, 8), 51, np.uint8)], -1)
    la[0, 0, 1] = 255
    path = _png(tmp_path / "la.png", la, "LA")
    a = 51 / 255
    np.testing.assert_allclose(read_grey_png(path)[1, 1], 200 / 255 * a, atol=1e-6)
    np.testing.assert_allclose(read_grey_png(path, background="white")[1, 1], 200 / 255 * a + 1 - a, atol=1e-6)


def test_opaque_images_read_as_before(tmp_path):
    pytest.importorskip("PIL")
    d = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    for path in (_png(tmp_path / "g.png", d), _png(tmp_path / "rgba.png", np.dstack([d, d, d, np.full_like(d, 255)]))):
        for background in ("black", "white"):
            assert np.array_equal(read_grey_png(path, background=background), d / np.float32(255.0))


def test_a_16_bit_grey_png_keeps_its_16_bits(tmp_path):
    pytest.importorskip("PIL")
    g = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472: most above 255
    path = _png(tmp_path / "g16.png", g)
    grey = read_grey_png(path)
    assert grey.dtype == np.float32
    np.testing.assert_allclose(grey, g / 65535.0, atol=1e-6)
    assert len(np.unique(grey)) == 1024  # not binarised


def test_image_special_files_never_block(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(ImageFileError, match="is a FIFO"):
        read_grey_png(tmp_path / "fifo.png")
    with pytest.raises(ImageFileError, match="not a regular file"):
        read_grey_png(tmp_path / "zero.png")
    (tmp_path / "d").mkdir()
    with pytest.raises(ImageFileError, match="is a directory"):
        read_grey_png(tmp_path / "d")


def test_background_is_checked(tmp_path):
    path = _png(tmp_path / "g.png", _digit())
    with pytest.raises(ValueError, match="background must be one of 'black', 'white', got 'grey'"):
        read_grey_png(path, background="grey")
