"""``stnkit train --data``: your own images from the command line, and what the other commands make of the run."""

import csv
import json

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from stnkit.cli import main  # noqa: E402
from stnkit.train import TrainConfig  # noqa: E402
from stnkit.train.run import image_data  # noqa: E402

CLASSES = ["cat", "dog", "emu"]  # 3 classes, not 10
SIZES = [(20, 30), (40, 36), (33, 33), (28, 44)]  # (W, H): mixed sizes


def _cli(argv, capsys):
    """``stnkit ARGV`` in this process: (exit status, stdout, stderr), as the interpreter would end it."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:
        if isinstance(err.code, str):
            print(err.code, file=__import__("sys").stderr)
            code = 1
        else:
            code = 0 if err.code is None else err.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code, err) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("stnkit:"), err
    return lines[0]


def _image(path, seed: int, size=(32, 32), label: int = 0, grey: bool = False) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    pixels[..., label % 3] += 150  # each class has its own dominant colour
    im = Image.fromarray(pixels)
    im = im.convert("L") if grey else im
    im.save(path, quality=95) if path.suffix == ".jpg" else im.save(path)


def _folder(root, classes=CLASSES, per_class: int = 10, mixed: bool = True):
    """``root/<class>/*.png|jpg``: RGB images, PNG and JPEG, of mixed sizes (``mixed``)."""
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            ext = ".jpg" if i % 2 else ".png"
            size = SIZES[i % len(SIZES)] if mixed else (32, 32)
            _image(root / c / f"{i:02d}{ext}", seed=100 * k + i, size=size, label=k)
    return root


TRAIN = ["--model", "st-cnn", "--backbone", "resnet18", "--image-size", "32", "32", "--epochs", "1"]
TRAIN += ["--batch-size", "4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run on a folder of 3 classes (ResNet-18 behind a transformer, 32x32), shared by the tests."""
    root = tmp_path_factory.mktemp("own")
    data = _folder(root / "imgs", per_class=5)  # per class: 3 train, 1 val, 1 test
    out = root / "run"
    code = main(["train", "--data", str(data), *TRAIN, "--out", str(out)])
    assert code == 0
    return root, data, out


class TestTrainOnAFolder:
    def test_results_name_the_classes(self, run):
        _, data, out = run
        res = json.loads((out / "results.json").read_text())
        assert res["classes"] == sorted(p.name for p in data.iterdir()) == CLASSES
        assert 0.0 <= res["test_error"] <= 100.0
        conf = np.array(res["confusion"])
        assert conf.shape == (3, 3) and conf.sum() == res["test_size"] > 0
        assert res["config"]["backbone"] == "resnet18" and res["config"]["image_size"] == [32, 32]
        for name in ("model.safetensors", "config.yaml", "checkpoints/last.ckpt", "show.png", "confusion.png"):
            assert (out / name).is_file(), name

    def test_eval_prints_the_class_names(self, run, capsys):
        root, _, out = run
        code, stdout, _ = _cli(["eval", out / "model.safetensors", "--out", root / "ev"], capsys)
        assert code == 0
        assert "error:" in stdout
        per_class = next(line for line in stdout.splitlines() if line.startswith("per-class error"))
        assert all(c in per_class for c in CLASSES)
        ev = json.loads((root / "ev" / "eval.json").read_text())
        assert ev["classes"] == CLASSES

    def test_show_writes_the_png(self, run, capsys):
        root, _, out = run
        target = root / "show_x.png"
        code, stdout, _ = _cli(["show", out / "model.safetensors", "--out", target], capsys)
        assert code == 0 and target.is_file()
        assert Image.open(target).format == "PNG"

    def test_predict_prints_a_class_name(self, run, capsys):
        root, data, out = run
        img = data / "dog" / "00.png"
        code, stdout, _ = _cli(["predict", out / "model.safetensors", img], capsys)
        assert code == 0
        lines = stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{img}: ")
        assert lines[0].split(": ")[1].split(" ")[0] in CLASSES

    @pytest.mark.parametrize("fmt,name", [("onnx", "m.onnx"), ("torchscript", "m.pt")])
    def test_export_and_refuse_to_overwrite(self, run, capsys, fmt, name):
        if fmt == "onnx":
            pytest.importorskip("onnxruntime")
        root, _, out = run
        target = root / f"export_{name}"
        code, stdout, _ = _cli(["export", out, "--format", fmt, "--out", target], capsys)
        assert code == 0 and target.is_file()
        assert "largest difference" in stdout
        assert "(B, 3, 32, 32)" in stdout
        before = target.read_bytes()
        code, stdout, err = _cli(["export", out, "--format", fmt, "--out", target], capsys)
        assert "exists" in _one_line(code, err) and "--overwrite" in err
        assert target.read_bytes() == before


def test_train_on_a_csv_manifest(tmp_path, capsys):
    data = _folder(tmp_path / "imgs", classes=["a", "b"], per_class=10, mixed=False)
    manifest = tmp_path / "list.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for p in sorted(data.rglob("*.*")):
            w.writerow([p.relative_to(tmp_path).as_posix(), p.parent.name])
    out = tmp_path / "run"
    argv = ["train", "--data", manifest, "--model", "cnn", "--epochs", "1", "--batch-size", "4", "--out", out]
    code, stdout, err = _cli(argv, capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["classes"] == ["a", "b"] and res["train_size"] == 16 and res["test_size"] == 2
    assert "2 classes" in stdout


class TestDistort:
    def test_training_images_differ_between_epochs(self, tmp_path):
        data = _folder(tmp_path / "imgs", per_class=10, mixed=False)
        images = image_data(TrainConfig(data=str(data), distort="rts", seed=1))
        train = images.train
        train.set_epoch(0)
        first = torch.stack([train[i][0] for i in range(4)])
        again = torch.stack([train[i][0] for i in range(4)])
        train.set_epoch(1)
        second = torch.stack([train[i][0] for i in range(4)])
        train.set_epoch(0)
        back = torch.stack([train[i][0] for i in range(4)])
        assert torch.equal(first, again) and torch.equal(first, back)  # a function of (seed, epoch)
        assert not torch.allclose(first, second, atol=1e-3)
        # validation and test: one fixed draw, not the undistorted images
        val = images.val
        x0 = val[0][0]
        val.set_epoch(5)
        assert torch.equal(val[0][0], x0) and not torch.equal(x0, val.load(0))

    def test_cli_distort_trains(self, tmp_path, capsys):
        data = _folder(tmp_path / "imgs", per_class=10, mixed=False)
        out = tmp_path / "run"
        argv = ["train", "--data", data, "--distort", "rts", "--model", "st-cnn", "--epochs", "1"]
        code, _, err = _cli([*argv, "--batch-size", "4", "--out", out], capsys)
        assert code == 0, err
        res = json.loads((out / "results.json").read_text())
        assert res["config"]["distort"] == "rts" and res["classes"] == CLASSES


class TestConfigFile:
    def test_a_runs_config_yaml_reproduces_its_options(self, tmp_path, capsys):
        import yaml

        data = _folder(tmp_path / "imgs", per_class=5, mixed=True)
        out, out2 = tmp_path / "run", tmp_path / "run2"
        argv = ["train", "--data", data, "--model", "st-cnn", "--image-size", "16", "16", "--epochs", "1"]
        argv += ["--batch-size", "4", "--lr", "0.003", "--seed", "5", "--coverage-weight", "0.1", "--no-bounded"]
        code, _, err = _cli([*argv, "--out", out], capsys)
        assert code == 0, err
        code, _, err = _cli(["train", "--config", out / "config.yaml", "--out", out2], capsys)
        assert code == 0, err
        first = yaml.safe_load((out / "config.yaml").read_text())
        assert first["lr"] == 0.003 and first["seed"] == 5 and first["image_size"] == [16, 16]
        assert yaml.safe_load((out2 / "config.yaml").read_text()) == first
        assert (out2 / "config.yaml").read_text() == (out / "config.yaml").read_text()
        res = json.loads((out2 / "results.json").read_text())
        assert res["classes"] == CLASSES and res["config"]["coverage_weight"] == 0.1

    def test_the_command_line_wins_over_the_file(self, tmp_path, capsys):
        import yaml

        data = _folder(tmp_path / "imgs", classes=["a", "b"], mixed=False)
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"data: {data}\nmodel: cnn\nepochs: 1\nbatch_size: 4\nlr: 0.01\n")
        code, _, err = _cli(["train", "--config", cfg, "--lr", "0.002", "--out", tmp_path / "run"], capsys)
        assert code == 0, err
        saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
        assert saved["lr"] == 0.002 and saved["batch_size"] == 4 and saved["model"] == "cnn"

    def test_an_unknown_option_is_refused_in_one_line(self, tmp_path, capsys):
        cfg = tmp_path / "c.yaml"
        cfg.write_text("model: cnn\nepochs: 1\nlearning_rat: 0.1\n")
        code, _, err = _cli(["train", "--config", cfg, "--out", tmp_path / "run"], capsys)
        assert "learning_rat" in _one_line(code, err)
        assert not (tmp_path / "run").exists()


@pytest.fixture
def folder(tmp_path):
    return _folder(tmp_path / "imgs", per_class=4, mixed=False)


REFUSALS = [
    ("tps-on-cnn", ["--model", "cnn", "--transform", "tps"], r"--transform is not read by --model cnn"),
    ("image-size-without-data", ["--image-size", "32", "32"], r"--image-size .*needs --data"),
    ("distort-without-data", ["--distort", "rts"], r"--distort .*needs --data"),
    ("data-with-dataset", ["--data", "{folder}", "--dataset", "rts"], r"--dataset is for the distorted-MNIST"),
    ("data-with-val-size", ["--data", "{folder}", "--val-size", "10"], r"--val-size is for the distorted-MNIST"),
    ("backbone-nosuch", ["--backbone", "nosuch"], r"nosuch"),
    ("backbone-nosuchmodule", ["--backbone", "nosuchmodule:f"], r"cannot import module 'nosuchmodule'"),
]


@pytest.mark.parametrize("name,argv,pattern", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_in_one_line(tmp_path, capsys, folder, name, argv, pattern):
    import re

    out = tmp_path / "run"
    argv = [str(folder) if a == "{folder}" else a for a in argv]
    code, stdout, err = _cli(["train", *argv, "--epochs", "1", "--out", out], capsys)
    line = _one_line(code, err)
    assert re.search(pattern, line), line
    assert not out.exists()  # refused before any output


def test_a_folder_of_one_class_is_refused(tmp_path, capsys):
    data = _folder(tmp_path / "imgs", classes=["only"], per_class=6, mixed=False)
    out = tmp_path / "run"
    code, _, err = _cli(["train", "--data", data, "--model", "cnn", "--epochs", "1", "--out", out], capsys)
    line = _one_line(code, err)
    assert "class" in line, line
    assert not (out / "results.json").exists()


def test_a_folder_of_one_class_is_refused_naming_it_before_any_output(tmp_path, capsys):
    data = _folder(tmp_path / "imgs", classes=["only"], per_class=6, mixed=False)
    out = tmp_path / "run"
    code, _, err = _cli(["train", "--data", data, "--model", "cnn", "--epochs", "1", "--out", out], capsys)
    line = _one_line(code, err)
    assert "--data" in line and "only" in line, line
    assert not out.exists()


def test_images_of_different_sizes_are_resized_to_their_median_size(tmp_path, capsys):
    data = _folder(tmp_path / "imgs", per_class=4, mixed=True)
    out = tmp_path / "run"
    code, printed, err = _cli(["train", "--data", data, "--model", "cnn", "--epochs", "1", "--out", out], capsys)
    assert code == 0, err
    line = next(x for x in printed.splitlines() if "differ in size" in x)
    assert "median" in line and "--image-size H W chooses" in line, line
    size = json.loads((out / "results.json").read_text())
    from stnkit.train.checkpoint import load_run

    _, config, info = load_run(out / "model.safetensors")
    assert config.image_size is None and f"{info['image_size'][0]}x{info['image_size'][1]}" in line, (line, size)


def test_the_library_refuses_images_of_different_sizes_without_a_size(tmp_path):
    from stnkit.data import DatasetError
    from stnkit.data.folder import open_image_data

    data = _folder(tmp_path / "imgs", per_class=4, mixed=True)
    with pytest.raises(DatasetError, match=r"differ in size.*--image-size"):
        open_image_data(data)


def test_folder_and_idx_routes_agree_on_distorted_digits(tmp_path, capsys):
    folder, idx, out = tmp_path / "F", tmp_path / "I", tmp_path / "run"
    for extra in (["--format", "imagefolder", "--out", folder], ["--out", idx]):
        code, _, err = _cli(["data", "make", "rts", "--split", "test", "--n", "200", *extra], capsys)
        assert code == 0, err
    argv = ["train", "--dataset", "rts", "--model", "cnn", "--epochs", "1", "--train-size", "64"]
    argv += ["--val-size", "32", "--test-size", "32", "--deterministic", "--out", out]
    code, _, err = _cli(argv, capsys)
    assert code == 0, err
    model = out / "model.safetensors"
    code, by_folder, err = _cli(["eval", model, "--data", folder, "--out", tmp_path / "ev_f"], capsys)
    assert code == 0, err
    images, labels = idx / "images-idx3-ubyte.gz", idx / "labels-idx1-ubyte.gz"
    code, by_idx, err = _cli(
        ["eval", model, "--images", images, "--labels", labels, "--out", tmp_path / "ev_i"], capsys
    )
    assert code == 0, err
    ev_f = json.loads((tmp_path / "ev_f" / "eval.json").read_text())
    ev_i = json.loads((tmp_path / "ev_i" / "eval.json").read_text())
    assert ev_f["n"] == ev_i["n"] == 200
    assert ev_f["error"] == ev_i["error"]
    assert ev_f["confusion"] == ev_i["confusion"]
    assert by_folder.splitlines()[0].split(" on ")[0] == by_idx.splitlines()[0].split(" on ")[0]
