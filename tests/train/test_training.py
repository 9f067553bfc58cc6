"""End-to-end training, evaluation and the command line, on tiny data."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from stnkit.cli import main  # noqa: E402
from stnkit.data import load_digits, write_idx  # noqa: E402
from stnkit.models import create  # noqa: E402
from stnkit.train import TrainConfig  # noqa: E402
from stnkit.train.checkpoint import load_model  # noqa: E402
from stnkit.train.evaluate import evaluate, load_test_set, predict_logits  # noqa: E402
from stnkit.train.losses import consistency_loss  # noqa: E402
from stnkit.train.run import train  # noqa: E402

TINY = dict(train_size=96, val_size=48, test_size=48, batch_size=32, epochs=1)


def _tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def _metrics(run) -> list[dict]:
    rows = []
    for path in sorted((run / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


@pytest.mark.parametrize(
    "model,transform,dataset",
    [
        ("fcn", "affine", "mnist"),
        ("cnn", "affine", "rts"),
        ("st-fcn", "tps", "r"),
        ("st-cnn", "affine", "rts"),
        ("tutorial-stn", "affine", "rts"),
    ],
)
def test_end_to_end_train_eval_show(tmp_path, model, transform, dataset):
    run = tmp_path / "run"
    res = train(_tiny(model=model, transform=transform, dataset=dataset), run, quiet=True)
    # the error is the percentage of test digits off the confusion matrix's diagonal
    conf = np.array(res["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == res["test_size"]
    assert res["test_error"] == pytest.approx(100.0 * (1.0 - np.trace(conf) / conf.sum()), abs=1e-3)
    assert res["test_size"] == 48 and res["train_size"] == 96 and res["val_size"] == 48
    for name in ("model.safetensors", "results.json", "show.png", "confusion.png", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "results.json").read_text())["config"]["model"] == model
    # the device the fit ran on is recorded (accelerator auto: the GPU where there is one)
    assert res["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    if "st" in model:
        assert set(res["pose_spread"]) == {"spread_st_px", "spread_identity_px"}
    # eval and show from the command line, given only the checkpoint
    assert main(["eval", str(run / "model.safetensors"), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["n"] == 1000 and len(ev["confusion"]) == 10 and (tmp_path / "ev" / "confusion.png").is_file()
    assert main(["show", str(run / "model.safetensors"), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["summarize", str(run), "--out", str(tmp_path / "summary.md")]) == 0
    row = (tmp_path / "summary.md").read_text().splitlines()[2]
    assert row.startswith(f"| {model} |") and f"**{res['test_error']:.2f}**" in row


def test_summarize_reads_committed_runs_with_the_old_pose_key(tmp_path):
    """docs/consistency holds results.json files written with ``pose_recovery``: the table is unchanged."""
    import shutil
    from pathlib import Path

    from stnkit.train.report import read_pose_spread, summarize

    docs = Path(__file__).resolve().parents[2] / "docs" / "consistency"
    runs = []
    for name in ("st-cnn-rts-w0", "st-cnn-rts-w0.1", "st-cnn-rts-w1"):
        (tmp_path / name).mkdir()
        shutil.copy(docs / f"{name}.json", tmp_path / name / "results.json")
        runs.append(tmp_path / name)
    old = json.loads((runs[0] / "results.json").read_text())
    assert "pose_recovery" in old and "pose_spread" not in old
    assert read_pose_spread(old) == old["pose_recovery"] and read_pose_spread({"pose_spread": 1}) == 1
    assert summarize(runs) == (docs / "summary.md").read_text()


def test_checkpoint_reloads_to_same_predictions(tmp_path):
    run = tmp_path / "run"
    train(_tiny(model="st-cnn", dataset="mnist"), run, quiet=True)
    x = torch.from_numpy(load_digits("test")[0][:64].astype(np.float32) / 255.0).unsqueeze(1)
    a, cfg_a = load_model(run / "model.safetensors")
    b, cfg_b = load_model(run / "checkpoints" / "last.ckpt")  # weights_only torch.load of the Lightning file
    assert cfg_a == cfg_b
    best = json.loads((run / "results.json").read_text())["best_checkpoint"]
    c, _ = load_model(run / best)
    assert torch.equal(predict_logits(a, x), predict_logits(c, x))
    assert predict_logits(b, x).shape == (64, 10)


def test_resume_continues_from_saved_step(tmp_path):
    run = tmp_path / "run"
    first = train(_tiny(model="cnn", dataset="mnist", epochs=1), run, quiet=True)
    second = train(_tiny(model="cnn", dataset="mnist", epochs=3), run, resume=True, quiet=True)
    steps_per_epoch = first["global_step"]
    assert steps_per_epoch == 3  # 96 digits / batch 32
    assert second["global_step"] == 3 * steps_per_epoch
    epochs_logged = sorted({int(r["epoch"]) for r in _metrics(run) if r.get("val_error")})
    assert epochs_logged == [0, 1, 2]  # epoch 0 was not trained again


def test_early_stopping_stops(tmp_path):
    # a zero learning rate never improves the validation error: patience 1 stops after 2 epochs
    res = train(_tiny(model="cnn", dataset="mnist", epochs=20, lr=0.0, patience=1), tmp_path / "run", quiet=True)
    assert res["epochs"] < 20
    assert len({int(r["epoch"]) for r in _metrics(tmp_path / "run") if r.get("val_error")}) == 2


class TestConsistencyLoss:
    def test_zero_for_identical_inputs(self):
        model = create("st-cnn", in_size=28, transform="affine")
        x = torch.rand(4, 1, 28, 28)
        ident = model.transformer.family.identity(4)
        assert consistency_loss(model, x, ident).item() == pytest.approx(0.0, abs=1e-10)

    def test_positive_for_distorted_inputs(self):
        torch.manual_seed(0)
        model = create("st-cnn", in_size=28, transform="affine")
        x = torch.rand(4, 1, 28, 28)
        q = model.transformer.family.random(4)
        loss = consistency_loss(model, x, q)
        assert loss.item() > 1e-4
        loss.backward()  # differentiable end to end
        assert model.transformer.head.weight.grad.abs().sum() > 0

    def test_training_with_consistency_logs_it(self, tmp_path):
        train(_tiny(model="st-cnn", dataset="rts", consistency_weight=0.5), tmp_path / "run", quiet=True)
        rows = [r for r in _metrics(tmp_path / "run") if r.get("train_consistency")]
        assert rows and float(rows[0]["train_consistency"]) > 0


def test_eval_on_external_idx_files(tmp_path):
    run = tmp_path / "run"
    train(_tiny(model="cnn", dataset="mnist"), run, quiet=True)
    images, labels = load_digits("test")
    write_idx(tmp_path / "imgs.idx.gz", images[:100])
    write_idx(tmp_path / "lbls.idx.gz", labels[:100].astype(np.uint8))
    args = ["eval", str(run / "model.safetensors"), "--images", str(tmp_path / "imgs.idx.gz")]
    assert main([*args, "--labels", str(tmp_path / "lbls.idx.gz"), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    model, _ = load_model(run / "model.safetensors")
    x = torch.from_numpy(images[:100].astype(np.float32) / 255.0).unsqueeze(1)
    expected = 100.0 * float((predict_logits(model, x).argmax(1) != torch.from_numpy(labels[:100])).float().mean())
    assert ev["n"] == 100 and ev["error"] == pytest.approx(expected, abs=1e-3)


def test_external_images_of_wrong_size_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    train(_tiny(model="cnn", dataset="rts"), run, quiet=True)
    images, labels = load_digits("test")
    write_idx(tmp_path / "i.gz", images[:10])
    write_idx(tmp_path / "l.gz", labels[:10].astype(np.uint8))
    argv = [
        "eval",
        str(run / "model.safetensors"),
        "--images",
        str(tmp_path / "i.gz"),
        "--labels",
        str(tmp_path / "l.gz"),
    ]
    assert main(argv) == 1  # one line, no traceback
    assert capsys.readouterr().err.startswith("stnkit: the model takes 42x42 images")
    with pytest.raises(ValueError, match="the model takes 42x42 images"):
        main(["--debug", *argv])


def test_predict_png(tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    train(_tiny(model="cnn", dataset="mnist"), run, quiet=True)
    images, _ = load_digits("test")
    Image.fromarray(images[0]).save(tmp_path / "d.png")
    assert main(["predict", str(run / "model.safetensors"), str(tmp_path / "d.png")]) == 0
    model, _ = load_model(run / "model.safetensors")
    expected = int(predict_logits(model, torch.from_numpy(images[:1].astype(np.float32) / 255.0).unsqueeze(1)).argmax())
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'd.png'}: {expected} ")


class TestPredictImages:
    """``stnkit.data.read_grey_png`` and ``fit_to_canvas``: an image file as a model's input batch."""

    def test_a_png_reads_as_grey_levels_in_0_1(self, tmp_path):
        from PIL import Image

        from stnkit.data import read_grey_png

        images, _ = load_digits("test")
        Image.fromarray(images[0]).save(tmp_path / "d.png")
        grey = read_grey_png(tmp_path / "d.png")
        assert grey.dtype == np.float32 and np.array_equal(grey, images[0] / np.float32(255.0))
        rgb = np.stack([images[0]] * 3, -1)  # a colour file: its luminance
        Image.fromarray(rgb).save(tmp_path / "rgb.png")
        assert np.allclose(read_grey_png(tmp_path / "rgb.png"), grey, atol=1 / 255)

    def test_fit_to_canvas_keeps_resizes_and_inverts(self):
        from stnkit.data import fit_to_canvas

        image = np.random.default_rng(0).random((28, 28), dtype=np.float32)
        kept = fit_to_canvas(image, 28)
        assert kept.shape == (1, 1, 28, 28) and torch.equal(kept[0, 0], torch.from_numpy(image))
        assert torch.equal(fit_to_canvas(image, 28, invert=True), 1.0 - kept)
        resized = fit_to_canvas(np.ones((20, 30), np.float32), 42)
        assert resized.shape == (1, 1, 42, 42) and torch.allclose(resized, torch.ones_like(resized))
        with pytest.raises(ValueError, match=r"image must have shape \(H, W\), got shape \(1, 28, 28\)"):
            fit_to_canvas(image[None], 28)


def test_cli_option_types_come_from_the_config_annotations():
    import argparse
    import typing
    from dataclasses import fields

    from stnkit.cli.train import _argument_type, add_config_arguments

    kinds = {f.name: _argument_type(f.name) for f in fields(TrainConfig)}
    assert (kinds["epochs"], kinds["lr"], kinds["data_dir"], kinds["bounded"]) == (int, float, str, bool)
    assert kinds["st_size"] is int and kinds["grad_clip"] is float  # X | None: X
    hints = typing.get_type_hints(TrainConfig)
    for name, kind in kinds.items():  # the annotation's own type (int | float: either, as Lightning's limits)
        assert kind in (hints[name], *typing.get_args(hints[name])) or typing.get_args(hints[name])[:2] == (int, float)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--limit-train-batches", "3", "--limit-val-batches", "0.5", "--no-bounded"])
    assert (args.limit_train_batches, args.limit_val_batches, args.bounded) == (3, 0.5, False)
    assert type(args.limit_train_batches) is int


class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    from stnkit.train.checkpoint import CheckpointError, checkpoint_config

    marker = tmp_path / "pwned"
    torch.save({"hyper_parameters": {"config": {}}, "state_dict": {}, "x": _Evil(marker)}, tmp_path / "evil.ckpt")
    for load in (load_model, checkpoint_config):
        with pytest.raises(CheckpointError) as err:
            load(tmp_path / "evil.ckpt")
        assert "stnkit will not unpickle it" in str(err.value) and "weights_only=False" not in str(err.value)
        assert err.value.__cause__ is None and err.value.__suppress_context__  # torch's advice is not chained
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "is not a stnkit checkpoint"),
        (os.urandom(4096), "is not a stnkit checkpoint"),
        ("truncated", "is not a stnkit checkpoint"),
        ("other-object", "not a checkpoint written by stnkit train"),
        ("bad-safetensors", "is not a readable safetensors file"),
        ("other-model", "weights do not fit the cnn model"),
        ("dir", "is a directory, not a file"),
    ],
)
def test_unreadable_checkpoints_raise_checkpoint_error(tmp_path, content, match):
    from stnkit.train.checkpoint import CheckpointError, save_model

    path = tmp_path / ("model.safetensors" if content in ("bad-safetensors", "other-model") else "model.ckpt")
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:500])
    elif content == "other-object":
        torch.save([1, 2, 3], path)
    elif content == "bad-safetensors":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    elif content == "other-model":  # an FCN's weights under a CNN's config
        save_model(path, create("fcn", in_channels=1, in_size=28), _tiny(model="cnn", dataset="mnist"))
    elif content == "dir":
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "stnkit", "train", "--model", "st-cnn", "--dataset", "mnist", "--epochs", "1"]
    cmd += ["--train-size", "128", "--val-size", "64", "--test-size", "64", "--batch-size", "32"]
    cmd += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = json.loads((out / "ddp" / "rank0.json").read_text())
    r1 = json.loads((out / "ddp" / "rank1.json").read_text())
    assert r0["digest"] == r1["digest"]
    assert "test error" in proc.stdout


def test_existing_run_is_not_silently_mixed(tmp_path):
    run = tmp_path / "run"
    train(_tiny(model="fcn", dataset="mnist"), run, quiet=True)
    with pytest.raises(FileExistsError, match="already holds a run: pass --resume to continue it or --overwrite"):
        train(_tiny(model="fcn", dataset="mnist"), run, quiet=True)
    res = train(_tiny(model="fcn", dataset="mnist"), run, quiet=True, overwrite=True)
    assert res["global_step"] == 3 and len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1


def test_resume_with_other_options_is_refused(tmp_path):
    run = tmp_path / "run"
    train(_tiny(model="cnn", dataset="mnist"), run, quiet=True)
    with pytest.raises(
        ValueError, match="cannot resume .* with different options \\(lr: 0.001 in the checkpoint, 0.5 now\\)"
    ):
        train(_tiny(model="cnn", dataset="mnist", epochs=2, lr=0.5), run, resume=True, quiet=True)


def test_cli_resume_continues_the_saved_run(tmp_path, capsys):
    run = tmp_path / "run"
    first = train(_tiny(model="cnn", dataset="mnist"), run, quiet=True)
    # only --epochs given: the model, data and sizes come from the checkpoint
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["config"]["model"] == "cnn" and res["config"]["dataset"] == "mnist" and res["config"]["epochs"] == 2
    assert res["global_step"] == 2 * first["global_step"]
    assert res["fit_seconds"] >= first["fit_seconds"]  # wall time adds up across resumes
    assert "test error" in capsys.readouterr().out


class TestModelRecipes:
    """Options left at their defaults take the chosen model's own recipe; given ones always win."""

    @staticmethod
    def parse(*argv):
        from stnkit.cli import build_parser
        from stnkit.cli.train import config_from_args, given_options

        args = build_parser().parse_args(["train", *argv])
        return config_from_args(args), given_options(args)

    def test_tutorial_models_train_with_the_tutorial_recipe(self):
        config, given = self.parse("--model", "tutorial-stn")
        assert (config.optimizer, config.lr, config.batch_size, config.momentum) == ("sgd", 0.01, 64, 0.0)
        assert (config.schedule, config.weight_decay, config.loc_lr_mult, config.epochs) == ("none", 0.0, 1.0, 20)
        assert given == {"model": "tutorial-stn"}

    def test_given_options_win_over_the_recipe(self):
        config, given = self.parse("--model", "tutorial-cnn", "--lr", "0.05", "--epochs", "3")
        assert (config.lr, config.epochs, config.optimizer) == (0.05, 3, "sgd")

    def test_other_models_keep_the_defaults(self):
        config, given = self.parse("--model", "st-cnn")
        assert config == TrainConfig(model="st-cnn")
        # a value equal to the default still counts as given (it overrides a resumed run's option)
        _, given = self.parse("--lr", "0.001")
        assert given == {"lr": 0.001}

    def test_help_names_the_recipes(self, capsys):
        from stnkit.cli import main

        with pytest.raises(SystemExit):
            main(["train", "--help"])
        assert "tutorial-stn 0.01" in capsys.readouterr().out


def test_max_time_fits_the_epochs_to_the_budget(tmp_path):
    run = tmp_path / "run"
    res = train(_tiny(model="st-cnn", max_time=0.2, epochs=1000), run, quiet=True)
    plan = res["budget"]
    assert plan == json.loads((run / "budget.json").read_text()) | {k: plan[k] for k in ("epochs_run", "steps_run")}
    # the plan replaces --epochs (so the schedule ends inside the budget) and is recorded
    assert plan["planned_epochs"] < 1000
    # (the recorded epoch time is rounded to 10 ms)
    fill = plan["planned_epochs"] * (plan["estimated_epoch_seconds"] - 0.005)
    assert fill <= 0.9 * 12 or plan["planned_epochs"] == 1
    assert plan["steps_per_epoch"] == 3
    # after the first epoch the plan is made again from that epoch's measured time, and the
    # epochs, the cosine schedule and the config in the checkpoints follow it
    from stnkit.train.budget import replan_epochs

    if plan["planned_epochs"] == 1:  # a loaded machine (seconds per step): no second epoch, so no re-plan
        assert "replanned_epochs" not in plan and plan["epochs_run"] == 1
        return
    first, epochs = plan["first_epoch_seconds"], plan["replanned_epochs"]
    assert abs(epochs - replan_epochs(0.2, first)) <= 1  # first is rounded to 10 ms
    assert res["config"]["epochs"] == epochs and plan["epochs_run"] <= epochs
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["lr_schedulers"][0]["T_max"] == epochs
    assert last["hyper_parameters"]["config"]["epochs"] == epochs


def test_last_checkpoint_is_the_last_epoch_also_when_the_best_is_earlier(tmp_path):
    # lr 0: the validation error never improves after epoch 0, so the best checkpoint stays there;
    # a resume must still restart after the last finished epoch, not the best one
    run = tmp_path / "run"
    train(_tiny(model="cnn", epochs=3, lr=0.0), run, quiet=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 9)
    assert [p.name for p in (run / "checkpoints").glob("best-*.ckpt")] == ["best-epoch=000.ckpt"]


def test_replan_keeps_a_revised_plan_on_resume():
    from types import SimpleNamespace

    from stnkit.train.callbacks import Replan

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)  # as restored from an early checkpoint
    trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(max_epochs=30), lr_scheduler_configs=[SimpleNamespace(scheduler=sched)]
    )
    module = SimpleNamespace(config=TrainConfig(epochs=30), hparams={"config": TrainConfig(epochs=30).to_dict()})
    Replan({"max_time_minutes": 1.0, "planned_epochs": 30}, print).on_train_start(trainer, module)
    assert (trainer.fit_loop.max_epochs, sched.T_max, module.config.epochs) == (30, 30, 30)  # not revised yet
    Replan({"max_time_minutes": 1.0, "planned_epochs": 30, "replanned_epochs": 12}, print).on_train_start(
        trainer, module
    )
    assert (trainer.fit_loop.max_epochs, sched.T_max, module.config.epochs) == (12, 12, 12)
    assert module.hparams["config"]["epochs"] == 12
    assert replan_epochs_at_least_two()


def replan_epochs_at_least_two() -> bool:
    from stnkit.train.budget import replan_epochs

    # 0.9 of 10 minutes at 20 s an epoch: 27 epochs; an epoch longer than the budget still gets a second
    return replan_epochs(10.0, 20.0) == 27 and replan_epochs(0.1, 60.0) == 2


def test_max_time_must_be_positive():
    with pytest.raises(SystemExit, match="--max-time must be > 0 \\(minutes\\), got 0.0"):
        main(["train", "--max-time", "0", "--out", "unused"])


def test_hidden_sets_the_fcn_width(tmp_path):
    res = train(_tiny(model="st-fcn", hidden=12, train_size=32, val_size=16, test_size=16), tmp_path / "r", quiet=True)
    model, config = load_model(tmp_path / "r" / "model.safetensors")
    assert config.hidden == 12 and res["config"]["hidden"] == 12
    assert model.classifier.hidden == 12
    with pytest.raises(SystemExit, match="--hidden must be an int in \\[1, 65536\\], got 0"):
        main(["train", "--model", "fcn", "--hidden", "0", "--out", "unused"])
    with pytest.raises(SystemExit, match="--model must be fcn or st-fcn, got 'cnn'"):
        main(["train", "--model", "cnn", "--hidden", "64", "--out", "unused"])


def test_compile_keeps_checkpoints_interchangeable(tmp_path):
    pytest.importorskip("torch._inductor")
    run = tmp_path / "run"
    res = train(_tiny(model="st-cnn", compile=True, train_size=32, val_size=16, test_size=16), run, quiet=True)
    assert res["config"]["compile"] is True
    model, config = load_model(run / "model.safetensors")  # same parameter names as an eager model
    assert set(model.state_dict()) == set(create("st-cnn", in_size=42, loc_downsample=2).state_dict())


def test_loading_and_evaluating_a_model_never_imports_lightning(tmp_path):
    """``stnkit.train.checkpoint`` and ``.evaluate`` work without Lightning (a fresh interpreter)."""
    code = f"""
import sys
import torch
from stnkit.models import create
from stnkit.train.checkpoint import load_model, save_model
from stnkit.train.config import TrainConfig
from stnkit.train.evaluate import check_input_size, evaluate, pose_spread

config = TrainConfig(model="st-cnn", dataset="mnist")
model = create("st-cnn", in_size=28, loc_downsample=config.loc_downsample)
save_model({str(tmp_path / "m.safetensors")!r}, model, config)
ckpt = {{"hyper_parameters": {{"config": config.to_dict()}},
        "state_dict": {{"model." + k: v for k, v in model.state_dict().items()}}}}
torch.save(ckpt, {str(tmp_path / "m.ckpt")!r})
x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
for name in ("m.safetensors", "m.ckpt"):
    loaded, _ = load_model({str(tmp_path)!r} + "/" + name)
    assert evaluate(loaded, x, y)["n"] == 6
    check_input_size(config, x)
    pose_spread(loaded, x, torch.zeros(6, 4), "similarity")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric")))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


class TestTestSet:
    """``load_test_set``: the one loader of the fixed test distortions (training, eval, show, figures)."""

    def test_training_reports_the_error_on_the_loaded_test_set(self, tmp_path):
        run = tmp_path / "run"
        res = train(_tiny(model="cnn", dataset="rts"), run, quiet=True)
        model, config = load_model(run / "model.safetensors")
        ds = load_test_set(config, size=config.test_size)
        assert len(ds) == res["test_size"] == 48 and ds.name == "rts" and ds.seed == config.test_seed
        assert evaluate(model, ds.images, ds.labels)["error"] == res["test_error"]
        # stnkit eval: the whole test split under the same distortions
        assert main(["eval", str(run / "model.safetensors"), "--out", str(tmp_path / "ev")]) == 0
        full = load_test_set(config)  # (a draw for 1000 digits: not the 48-digit draw's distortions)
        assert torch.equal(full.labels[:48], ds.labels)
        ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
        assert ev["error"] == evaluate(model, full.images, full.labels)["error"] and ev["n"] == 1000

    def test_arguments_override_the_config(self):
        config = _tiny(dataset="r", test_seed=3)
        assert len(load_test_set(config, size=10_000)) == 1000  # the split has fewer: all of it
        other = load_test_set(config, dataset="p", split="train", seed=5, size=20)
        assert (other.name, other.seed, len(other), other.fresh) == ("p", 5, 20, False)
        images, labels = load_digits("train")
        assert torch.equal(other.labels, torch.from_numpy(labels[:20]))
        own = load_test_set(config, digits=(images[:7], labels[:7]))
        assert (own.name, own.seed, len(own)) == ("r", 3, 7)
        assert torch.equal(own.images, load_test_set(config, split="train", size=7).images)


def test_eval_writes_beside_the_checkpoint_by_default(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_tiny(model="cnn", dataset="mnist", test_size=16), run, quiet=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(run / "model.safetensors")]) == 0
    assert (run / "eval" / "eval.json").is_file() and (run / "eval" / "confusion.png").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing in the current directory
    assert main(["eval", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert (run / "checkpoints" / "eval" / "eval.json").is_file()
    assert main(["eval", str(run / "model.safetensors"), "--out", "mine"]) == 0  # --out wins
    assert (elsewhere / "mine" / "eval.json").is_file()


def test_show_writes_beside_the_checkpoint_by_default(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_tiny(model="st-cnn", dataset="mnist", test_size=16), run, quiet=True)
    trained = (run / "show.png").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["show", str(run / "model.safetensors"), "--n", "2"]) == 0
    assert (run / "show" / "show.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "show.png").read_bytes() == trained  # training's figure is left alone
    assert list(elsewhere.iterdir()) == []
    assert main(["show", str(run / "model.safetensors"), "--n", "2", "--out", "mine.png"]) == 0  # --out wins
    assert (elsewhere / "mine.png").is_file()


class TestConfigValidation:
    """``TrainConfig`` refuses a bad option when it is made, whatever the entry point."""

    @pytest.mark.parametrize(
        "options,error,message",
        [
            ({"optimizer": "adam"}, ValueError, "optimizer must be one of 'adamw', 'sgd', got 'adam'"),
            ({"schedule": "linear"}, ValueError, "schedule must be one of 'cosine', 'step', 'none', got 'linear'"),
            ({"model": "resnet"}, ValueError, "model must be one of 'fcn', .*, got 'resnet'"),
            ({"dataset": "svhn"}, ValueError, "dataset must be one of 'mnist', .*, got 'svhn'"),
            ({"transform": "spline"}, ValueError, "transform must be one of 'translation', .*, got 'spline'"),
            ({"epochs": 0}, ValueError, "epochs must be an int in \\[1, 1000000\\], got 0"),
            ({"epochs": 2.0}, TypeError, "epochs must be an int, got float 2.0"),
            ({"batch_size": True}, TypeError, "batch_size must be an int, got bool True"),
            ({"lr": -0.1}, ValueError, "lr must be a finite number in \\[0.0, inf\\], got -0.1"),
            ({"lr": float("nan")}, ValueError, "lr must be a finite number in \\[0.0, inf\\], got nan"),
            ({"dropout": 1.0}, ValueError, "dropout must be in \\[0, 1\\), got 1.0"),
            ({"max_time": 0.0}, ValueError, "max_time must be > 0 \\(minutes\\), got 0.0"),
            ({"patience": -1}, ValueError, "patience must be an int >= 0, got -1"),
            ({"hidden": 0}, ValueError, "hidden must be an int in \\[1, 65536\\], got 0"),
            ({"tps_grid_size": 1}, ValueError, "tps_grid_size must be an int in \\[2, 64\\], got 1"),
            ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
            ({"test_size": 0}, ValueError, "test_size must be a positive int, got 0"),
            ({"devices": 2}, TypeError, "devices must be a str, got int 2"),
            ({"compile": "yes"}, TypeError, "compile must be a bool, got str 'yes'"),
        ],
    )
    def test_every_entry_point_refuses_a_bad_option(self, options, error, message):
        with pytest.raises(error, match=f"^{message}$"):
            TrainConfig(**options)
        with pytest.raises(error, match=f"^{message}$"):
            TrainConfig().replace(**options)
        with pytest.raises(error, match=f"^{message}$"):
            TrainConfig.from_dict({**TrainConfig().to_dict(), **options})  # a checkpoint's record

    def test_optional_options_accept_none_and_paths_become_strings(self, tmp_path):
        config = TrainConfig(train_size=None, test_size=None, patience=None, max_time=None, hidden=None)
        assert config == TrainConfig()
        assert TrainConfig(data_dir=tmp_path).data_dir == str(tmp_path)

    def test_every_committed_record_still_loads(self):
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        records = [json.loads(f.read_text()) for f in sorted((root / "docs").rglob("*.json"))]
        configs = [r["config"] for r in records if isinstance(r, dict) and "config" in r]
        assert configs  # results.json files of the documented runs
        for config in configs:
            TrainConfig.from_dict(config)

    def test_the_command_line_gives_one_line(self, tmp_path):
        with pytest.raises(SystemExit, match="^stnkit: --optimizer must be one of 'adamw', 'sgd', got 'adam'$"):
            main(["train", "--optimizer", "adam", "--out", str(tmp_path / "unused")])
        with pytest.raises(SystemExit, match="^stnkit: --loc-lr-mult must be a finite number in"):
            main(["reproduce", "table1", "--loc-lr-mult", "-1", "--out", str(tmp_path / "unused")])
        cmd = [sys.executable, "-m", "stnkit", "train", "--batch-size", "0", "--out", str(tmp_path / "unused")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and proc.stderr == "stnkit: --batch-size must be an int in [1, 65536], got 0\n"
        assert not (tmp_path / "unused").exists()


class TestTpsGridSize:
    def test_default_is_the_models_so_runs_without_it_are_unchanged(self):
        import inspect

        from stnkit.train.checkpoint import build_model

        assert TrainConfig().tps_grid_size == inspect.signature(create).parameters["tps_grid_size"].default
        model = build_model(TrainConfig(model="st-cnn", transform="tps", dataset="mnist"))
        reference = create("st-cnn", in_size=28, transform="tps", loc_downsample=2)
        assert {k: v.shape for k, v in model.state_dict().items()} == {
            k: v.shape for k, v in reference.state_dict().items()
        }
        # a record written before the option existed ran with the models' default
        old = {k: v for k, v in TrainConfig(transform="tps", tps_grid_size=3).to_dict().items() if k != "tps_grid_size"}
        assert TrainConfig.from_dict(old).tps_grid_size == 4

    def test_command_line_sets_it_and_the_checkpoint_keeps_it(self, tmp_path):
        from stnkit.cli import build_parser
        from stnkit.cli.train import config_from_args

        args = build_parser().parse_args(
            ["train", "--model", "tutorial-stn", "--transform", "tps", "--tps-grid-size", "3"]
        )
        assert config_from_args(args).tps_grid_size == 3
        run = tmp_path / "run"
        argv = ["train", "--model", "st-fcn", "--transform", "tps", "--tps-grid-size", "3", "--dataset", "mnist"]
        argv += ["--train-size", "32", "--val-size", "16", "--test-size", "16", "--epochs", "1", "--out", str(run)]
        assert main(argv) == 0
        model, config = load_model(run / "model.safetensors")
        assert config.tps_grid_size == 3
        assert model.transformer.family.grid_size == 3 and model.transformer.head.out_features == 2 * 3 * 3

    @pytest.mark.parametrize(
        "argv,message",
        [
            (["--tps-grid-size", "3"], "--transform must be tps, got 'affine'"),
            (["--transform", "projective", "--tps-grid-size", "4"], "--transform must be tps, got 'projective'"),
            (["--model", "cnn", "--transform", "tps", "--tps-grid-size", "3"], "--model must have a transformer"),
            (["--transform", "tps", "--tps-grid-size", "1"], "--tps-grid-size must be an int in \\[2, 64\\], got 1"),
        ],
    )
    def test_refused_where_no_tps_reads_it(self, argv, message):
        with pytest.raises(SystemExit, match=message):
            main(["train", *argv, "--out", "unused"])


def test_validation_digits_are_unchanged():
    """``VAL_SPLIT_SEED`` picks the validation digits; renaming it must not move them."""
    import hashlib

    from stnkit.train.datamodule import VAL_SPLIT_SEED, split_train_val

    train_idx, val_idx = split_train_val(7000, 500)
    assert VAL_SPLIT_SEED == 20_150_605 and len(train_idx) == 6500
    assert val_idx[:5].tolist() == [14, 19, 47, 58, 93]
    digest = hashlib.sha256(val_idx.astype(np.int64).tobytes()).hexdigest()
    assert digest == "1bd77b4226cb9079c5f6205935ebf583176435d599b175f23d86babed66ed96f"
