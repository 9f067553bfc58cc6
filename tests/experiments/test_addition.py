"""MNIST addition: the dataset (pairs, sums, ground truth), the 2xST-FCN, and ``stnkit reproduce addition``."""

import json

import pytest
import torch

from stnkit.data import AdditionMNIST, dataset_info, get_distortion, load_digits, open_dataset
from stnkit.geometry import warp


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits("test")
    return images[:40], labels[:40]


def test_registered_with_two_channels_and_nineteen_sums():
    info = dataset_info("addition")
    assert (info.in_channels, info.canvas_size, info.num_classes, info.num_labels) == (2, 42, 19, 1)


def test_deterministic_by_seed_and_fresh_per_epoch(digits):
    a = open_dataset("addition", *digits, seed=3)
    b = AdditionMNIST(*digits, seed=3)
    c = AdditionMNIST(*digits, seed=4)
    for name in ("images", "labels", "pairs", "params"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.images, c.images) and not torch.equal(a.pairs, c.pairs)
    a.set_epoch(5)  # a fixed (test) set never changes
    assert torch.equal(a.images, b.images)

    train = AdditionMNIST(*digits, seed=3, fresh=True)
    first = (train.images.clone(), train.pairs.clone(), train.labels.clone())
    train.set_epoch(1)
    assert not torch.equal(train.pairs, first[1]) and not torch.equal(train.images, first[0])
    train.set_epoch(0)  # an epoch's draw is a function of (seed, epoch)
    assert torch.equal(train.images, first[0]) and torch.equal(train.pairs, first[1])
    assert torch.equal(train.labels, first[2])
    assert not torch.equal(train.images, a.images)  # training epochs never repeat the fixed draw


def test_labels_are_the_sum_of_the_digits_shown(digits):
    images, labels = digits
    ds = AdditionMNIST(images, labels, seed=1)
    # which source digit each channel shows, found from the pixels: canonicalise it and take the
    # nearest source digit (independent of the recorded pairing)
    src = torch.from_numpy(images).float().div(255.0).flatten(1)
    back = ds.canonicalize().flatten(2)  # (N, 2, 784)
    found = torch.cdist(back.transpose(0, 1), src.expand(2, -1, -1)).argmin(-1).T  # (N, 2)
    assert torch.equal(found, ds.pairs)
    assert torch.equal(found[:, 0], torch.arange(len(ds)))
    assert sorted(found[:, 1].tolist()) == list(range(len(ds)))  # each digit once in channel 2
    expected = torch.tensor([int(labels[i]) + int(labels[j]) for i, j in found.tolist()])
    assert torch.equal(ds.labels, expected) and ds.labels.dtype == torch.int64
    assert ds[7][1] == expected[7] and ds[7][0].shape == (2, 42, 42)


def test_each_channel_is_its_digit_under_the_recorded_rts_warp(digits):
    images, labels = digits
    ds = AdditionMNIST(images, labels, seed=2)
    src = torch.from_numpy(images).float().div(255.0).unsqueeze(1)
    rts = get_distortion("rts")
    for c in range(2):
        digit = src[ds.pairs[:, c]]
        # the generator's images, re-rendered here with the geometry's own warp
        again = warp(digit, ds.params[:, c], "similarity", out_size=42).clamp(0, 1)
        assert torch.allclose(ds.images[:, c : c + 1], again, atol=1e-5)
        # warping back with the recorded parameters recovers the digit (as for DistortedMNIST)
        back = ds.canonicalize()[:, c : c + 1]
        visible = (rts.canonicalize(torch.ones_like(ds.images[:, :1]), ds.params[:, c]) > 0.999).float()
        err = ((back - digit).abs() * visible).sum((1, 2, 3)) / (digit * visible).sum((1, 2, 3)).clamp_min(1e-6)
        assert err.median() <= 0.35
        wrong = ds.canonicalize(ds.images.roll(1, 0))[:, c : c + 1]
        err_wrong = ((wrong - digit).abs() * visible).sum((1, 2, 3)) / (digit * visible).sum((1, 2, 3))
        assert err_wrong.median() >= 0.8  # the control: another sample's channel does not
    # each channel draws its own distortion
    assert not torch.allclose(ds.params[:, 0], ds.params[:, 1])


def test_bad_input_is_refused(digits):
    images, labels = digits
    with pytest.raises(ValueError, match=r"labels must have shape \(40,\)"):
        AdditionMNIST(images, labels[:3])
    with pytest.raises(TypeError, match="fresh must be a bool"):
        AdditionMNIST(images, labels, fresh=1)
    with pytest.raises(ValueError, match="seed"):
        AdditionMNIST(images, labels, seed=-1)


def test_two_transformers_start_as_the_identity_on_both_channels():
    from stnkit.models import STClassifier
    from stnkit.train import TrainConfig
    from stnkit.train.checkpoint import build_model

    model = build_model(TrainConfig(dataset="addition", model="st-fcn", num_transformers=2, loc_downsample=1))
    assert isinstance(model, STClassifier)
    x = torch.rand(3, 2, 42, 42)
    out, params = model.warp_input(x)
    # each transformer sees both channels and outputs both: 4 channels for the FCN
    assert out.shape == (3, 4, 42, 42) and len(params) == 2
    assert torch.allclose(out, torch.cat([x, x], 1), atol=1e-5)
    for t, p in zip(model.transformer.transformers, params, strict=True):
        assert t.localization[1].in_features == 2 * 42 * 42
        assert torch.equal(p, t.family.identity(3))
    assert model(x).shape == (3, 19)


def test_side_by_side_draws_the_channels_apart():
    from stnkit.train.show import side_by_side

    x = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).view(2, 2, 3, 4)
    tiles = side_by_side(x, gap=1)
    assert tiles.shape == (2, 3, 9)
    assert torch.equal(tiles[:, :, :4], x[:, 0]) and torch.equal(tiles[:, :, 5:], x[:, 1])
    assert tiles[:, :, 4].isnan().all()


TINY = ["--train-size", "48", "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--epochs", "1"]


def test_reproduce_addition_tiny_is_resumable(tmp_path, capsys):
    pytest.importorskip("lightning")
    from stnkit.cli import main

    out = tmp_path / "results"
    args = ["reproduce", "addition", "--out", str(out), "--models", "2xst-fcn", *TINY]
    assert main(args) == 0
    summary = json.loads((out / "addition.json").read_text())
    assert summary["runs_done"] == 1 and summary["runs_planned"] == 4
    run = summary["runs"][0]
    assert run["row"] == "2xst-fcn" and run["test_size"] == 16
    assert set(run["pose_spread_channels"]) == {"transformer 1", "transformer 2"}
    results = out / "runs" / "addition" / "2xst-fcn" / "seed0" / "results.json"
    config = json.loads(results.read_text())["config"]
    assert (config["model"], config["num_transformers"], config["dataset"]) == ("st-fcn", 2, "addition")
    md = (out / "addition.md").read_text()
    assert "| 2xST-FCN | **" in md and "| 5.8 |" in md and "| FCN | – | 47.7 |" in md
    assert (out / "figures" / "addition.png").is_file()
    assert (out / "runs" / "addition" / "2xst-fcn" / "seed0" / "confusion.png").is_file()

    # a finished run is never trained again
    before = results.stat().st_mtime_ns
    assert main(args) == 0
    assert results.stat().st_mtime_ns == before
    assert main(["reproduce", "addition", "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-4:] == [
        f"addition/{r}/seed0" for r in ("fcn", "cnn", "st-fcn", "2xst-fcn")
    ]


def test_interrupted_addition_run_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("lightning")
    from stnkit.train.config import TrainConfig
    from stnkit.train.module import STNModule
    from stnkit_experiments import addition as add

    out = tmp_path / "results"
    cell = add.Cell("addition", "fcn", 0)
    base = TrainConfig(train_size=32, val_size=16, test_size=16, batch_size=16)
    run_dir = out / "runs" / cell.dirname

    def crash_in_second_epoch(self):
        if self.current_epoch == 1:
            raise RuntimeError("simulated interruption")

    monkeypatch.setattr(STNModule, "on_train_epoch_start", crash_in_second_epoch, raising=False)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        add.run_addition(out, base, [cell], options={"epochs": 2})
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "results.json").exists()
    monkeypatch.undo()
    summary = add.run_addition(out, base, [cell], options={"epochs": 2})
    assert summary["runs_done"] == 1
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 2 * 2  # both epochs
    # other settings never reuse a finished run
    with pytest.raises(ValueError, match="epochs: 2 in the checkpoint, 3 now"):
        add.run_addition(out, base, [cell], options={"epochs": 3})


def test_rows_take_their_epochs_and_given_options_win():
    from stnkit.train.config import TrainConfig
    from stnkit_experiments import addition as add

    two = add.addition_config(add.Cell("addition", "2xst-fcn", 1), TrainConfig())
    assert (two.model, two.num_transformers, two.transform, two.seed) == ("st-fcn", 2, "affine", 1)
    assert two.loc_downsample == 1
    assert (two.epochs, two.hidden, two.lr) == tuple(add.ROW_OPTIONS["2xst-fcn"][k] for k in ("epochs", "hidden", "lr"))
    cnn = add.addition_config(add.Cell("addition", "cnn", 0), TrainConfig(), {"epochs": 2, "lr": 0.01})
    assert (cnn.model, cnn.num_transformers, cnn.epochs, cnn.lr) == ("cnn", 1, 2, 0.01)
    assert cnn.batch_size == add.ROW_OPTIONS["cnn"]["batch_size"] != TrainConfig().batch_size


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "st-cnn-affine"], r"^stnkit reproduce addition: unknown row 'st-cnn-affine'; valid: fcn, "),
        (["--datasets", "r"], r"^stnkit reproduce addition: --datasets applies to table1 only$"),
        (["--check"], r"^stnkit reproduce addition: --check applies to table1 only$"),
        (["--seeds", "0"], r"^stnkit reproduce: --seeds must be >= 1, got 0$"),
    ],
)
def test_reproduce_addition_errors_are_one_line(tmp_path, argv, message):
    from stnkit.cli import main

    with pytest.raises(SystemExit, match=message) as err:
        main(["reproduce", "addition", "--out", str(tmp_path / "r"), *argv])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()
