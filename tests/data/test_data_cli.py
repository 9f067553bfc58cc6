"""``stnkit data make`` and ``stnkit data show``: files, manifest, determinism, errors."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stnkit.cli import main
from stnkit.data import DistortedMNIST, load_dataset_dir, load_digits, read_idx, write_idx
from stnkit.data.export import to_uint8, write_npz

FILES = ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz", "params.npz", "preview.png")


def write_mnist_dir(directory, n_train, n_test):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_make_writes_everything_and_it_reads_back(tmp_path):
    out = tmp_path / "rts"
    assert main(["data", "make", "rts", "--split", "test", "--seed", "3", "--n", "100", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "rts" and manifest["split"] == "test" and manifest["seed"] == 3
    assert manifest["count"] == 100 and sum(manifest["class_counts"]) == 100
    assert manifest["recipe"]["transform"] == "similarity" and manifest["recipe"]["canvas_size"] == 42
    assert manifest["recipe"]["options"]["scale"] == [0.7, 1.2]
    for name in FILES:
        assert manifest["files"][name]["sha256"] == _sha(out / name)
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.part"))

    data = load_dataset_dir(out)
    images, labels = load_digits("test")
    ds = DistortedMNIST("rts", images[:100], labels[:100], seed=3)
    np.testing.assert_array_equal(data["images"], to_uint8(ds.images))
    np.testing.assert_array_equal(data["labels"], labels[:100])
    np.testing.assert_array_equal(data["params"], ds.params.numpy())
    assert data["transform"] == "similarity" and data["images"].shape == (100, 42, 42)


def test_make_is_deterministic(tmp_path):
    hashes = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["data", "make", "tc", "--split", "train", "--seed", "1", "--n", "64", "--out", str(out)]) == 0
        hashes.append({name: _sha(out / name) for name in FILES})
    assert hashes[0] == hashes[1]
    out = tmp_path / "c"
    assert main(["data", "make", "tc", "--split", "train", "--seed", "2", "--n", "64", "--out", str(out)]) == 0
    assert _sha(out / "images-idx3-ubyte.gz") != hashes[0]["images-idx3-ubyte.gz"]


def test_train_split_is_epoch_zero(tmp_path):
    assert main(["data", "make", "e", "--split", "train", "--seed", "0", "--n", "50", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["fresh"] is True and manifest["epoch"] == 0
    images, labels = load_digits("train")
    ds = DistortedMNIST("e", images[:50], labels[:50], seed=0, fresh=True)
    np.testing.assert_array_equal(load_dataset_dir(tmp_path)["params"], ds.params.numpy())


def test_make_with_options_and_data_dir(tmp_path):
    write_mnist_dir(tmp_path / "mnist", n_train=20, n_test=10)
    out = tmp_path / "out"
    argv = ["data", "make", "r", "--split", "test", "--seed", "0", "--data-dir", str(tmp_path / "mnist")]
    assert main([*argv, "--opt", "angle=15", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 10 and manifest["recipe"]["options"]["angle"] == [-15.0, 15.0]
    assert manifest["data_dir"] == str(tmp_path / "mnist")
    assert np.abs(load_dataset_dir(out)["params"][:, 1]).max() <= np.radians(15) + 1e-6


def test_tampered_files_are_detected(tmp_path):
    assert main(["data", "make", "p", "--split", "test", "--seed", "0", "--n", "20", "--out", str(tmp_path)]) == 0
    write_npz(tmp_path / "params.npz", {"params": np.zeros((20, 8), np.float32), "transform": np.array("projective")})
    with pytest.raises(ValueError, match="does not match the manifest"):
        load_dataset_dir(tmp_path)
    assert load_dataset_dir(tmp_path, verify=False)["params"].shape == (20, 8)


def test_npz_has_no_pickles_and_fixed_bytes(tmp_path):
    arrays = {"params": np.arange(6, dtype=np.float32).reshape(2, 3), "transform": np.array("tps")}
    one = write_npz(tmp_path / "a.npz", arrays).read_bytes()
    two = write_npz(tmp_path / "b.npz", arrays).read_bytes()
    assert one == two
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert str(z["transform"]) == "tps" and z["params"].shape == (2, 3)


def test_show_writes_the_montage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "show", "tc"]) == 0
    png = (tmp_path / "tc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (8 * 62 + 2, 8 * 62 + 2)  # 8 x 8 samples of 60 px, 2 px apart
    assert main(["data", "show", "mnist", "--count", "10", "--out", "sub/m.png"]) == 0
    assert (tmp_path / "sub" / "m.png").exists()
    assert "wrote" in capsys.readouterr().out


def test_show_matches_the_preview_of_make(tmp_path):
    assert main(["data", "make", "r", "--split", "test", "--seed", "4", "--out", str(tmp_path / "m")]) == 0
    assert main(["data", "show", "r", "--seed", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "m" / "preview.png").read_bytes()


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "make", "xyz", "--split", "test", "--out", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["data", "make", "r", "--out", str(tmp_path)])  # --split is required
    with pytest.raises(SystemExit):
        main(["data", "make", "r", "--split", "test", "--seed", "-1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["data", "make", "r", "--split", "test", "--opt", "angle", "--out", str(tmp_path)])
    capsys.readouterr()
    assert main(["data", "make", "r", "--split", "test", "--n", "5000", "--out", str(tmp_path)]) == 1
    assert "n must be an int in [1, 1000]" in capsys.readouterr().err
    assert main(["data", "make", "r", "--split", "test", "--opt", "angel=3", "--out", str(tmp_path)]) == 1
    assert "unknown option" in capsys.readouterr().err
    assert main(["data", "show", "r", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x.png")]) == 1
    assert "neither t10k-images-idx3-ubyte nor" in capsys.readouterr().err


def test_fresh_clone_command(tmp_path):
    """The issue's acceptance command, as a user runs it."""
    out = tmp_path / "X"
    cmd = [sys.executable, "-m", "stnkit", "data", "make", "rts", "--split", "test", "--seed", "0", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "1000 rts test samples" in res.stdout
    assert read_idx(out / "images-idx3-ubyte.gz").shape == (1000, 42, 42)
    ds = DistortedMNIST("rts", *load_digits("test"), seed=0)
    np.testing.assert_array_equal(load_dataset_dir(out)["params"], ds.params.numpy())
    assert torch.equal(torch.from_numpy(read_idx(out / "images-idx3-ubyte.gz")), torch.from_numpy(to_uint8(ds.images)))


def test_docs_data_page_matches_the_benchmark_and_montages():
    root = Path(__file__).resolve().parents[2]
    section = (root / "docs" / "data.md").read_text()
    report = json.loads((root / "benchmarks" / "results" / "data_gen.json").read_text())
    assert report["n"] == 60_000 and report["machine"]["torch_threads"] == 2
    for name, r in report["results"].items():
        ink = r["ink_kept"]
        row = (
            f"| `{name}` | {r['canvas_size']} | `{r['transform']}` | {r['seconds']:.2f} | "
            f"{r['samples_per_second']:,} | {ink['mean']:.4f} | {ink['p5']:.4f} | {ink['min']:.4f} |"
        )
        assert row in section, f"docs/data.md's benchmark row for {name} differs from data_gen.json"
        assert f"(data/{name}.png)" in section
        png = (root / "docs" / "data" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["results"]["rts"]["seconds"] < 10  # the speed target
    assert "60,000" in section and "7,000 train" in section


def test_dataset_dir_refuses_pickles_and_inconsistent_files(tmp_path):
    from stnkit.data import DatasetError

    out = tmp_path / "d"
    assert main(["data", "make", "r", "--split", "test", "--n", "4", "--out", str(out)]) == 0
    good = (out / "params.npz").read_bytes()
    # an object array in params.npz: np.load(allow_pickle=False) refuses it, nothing is unpickled
    np.savez(out / "params.npz", params=np.array([object()] * 4, dtype=object), transform=np.array("similarity"))
    with pytest.raises(DatasetError, match="without pickles"):
        load_dataset_dir(out, verify=False)
    np.savez(out / "params.npz", params=np.zeros((3, 4), np.float32), transform=np.array("similarity"))
    with pytest.raises(DatasetError, match=r"params must be floats of shape \(4, P\)"):
        load_dataset_dir(out, verify=False)
    np.savez(out / "params.npz", params=np.zeros((4, 4), np.float32), transform=np.array("warp9"))
    with pytest.raises(DatasetError, match="transform must name one of"):
        load_dataset_dir(out, verify=False)
    (out / "params.npz").write_bytes(good)
    write_idx(out / "labels-idx1-ubyte.gz", np.array([1, 2, 3, 12], np.uint8))
    with pytest.raises(DatasetError, match="SHA-256"):
        load_dataset_dir(out)
    with pytest.raises(DatasetError, match=r"labels must lie in 0\.\.9"):
        load_dataset_dir(out, verify=False)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset_dir(out)
