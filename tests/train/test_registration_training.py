"""Training and measuring a registration network: the metrics, the objective, a run, the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stnkit.data import ShapesPairs
from stnkit.geometry import field_grid
from stnkit.models import create
from stnkit.nn.similarity import dice_loss, ncc_loss
from stnkit.train.config import TrainConfig
from stnkit.train.evaluate import label_dice, registration_metrics
from stnkit.train.objectives import Classification, PairwiseRegistration, objective_for


def _numpy_dice(a, b, k):
    a, b = np.asarray(a) == k, np.asarray(b) == k
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_label_dice_against_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 4, (2, 9, 9), generator=g), torch.randint(0, 4, (2, 9, 9), generator=g)
    got = label_dice(a, b, 4)
    for i in range(2):
        assert got[i] == pytest.approx(np.mean([_numpy_dice(a[i], b[i], k) for k in (1, 2, 3)]), abs=1e-6)
    assert torch.equal(label_dice(a, a, 4), torch.ones(2))


def test_metrics_of_the_true_field_the_zero_field_and_a_mirror():
    ds = ShapesPairs(dims=2, n=1, size=64, seed=2)
    p = ds.pair(0)
    ml, fl, true = p["moving_labels"][None], p["fixed_labels"][None], p["field"][None]
    zero = registration_metrics(torch.zeros_like(true), ml, fl, 5, true)
    best = registration_metrics(true, ml, fl, 5, true)
    assert torch.equal(zero["dice"], zero["dice_before"]) and float(zero["folding"]) == 0.0
    assert float(best["dice"]) > 0.93 > float(zero["dice"])
    assert float(best["epe"]) == 0.0 and float(zero["epe"]) > 1.0
    mirror = torch.zeros_like(true)
    mirror[:, 0] = -2.0 * field_grid(mirror)[..., 0]
    assert float(registration_metrics(mirror, ml, fl, 5)["folding"]) == 100.0


class _Module:
    def __init__(self, model):
        self.model = model


def test_the_registration_objective_is_similarity_plus_smoothness_plus_dice():
    ds = ShapesPairs(dims=2, n=2, size=32, seed=0)
    x, y = torch.utils.data.default_collate([ds[0], ds[1]])
    model = create("fieldnet", in_channels=2, in_size=(32, 32), transform="velocity")
    config = TrainConfig.for_model("fieldnet", dataset="shapes2d")
    objective = objective_for(config)
    assert isinstance(objective, PairwiseRegistration) and objective.monitor == "loss"
    loss, logs = objective(_Module(model), (x, y), "val")
    # the zero field at initialisation: no smoothness, the similarity of the pair as it is
    assert float(logs["smoothness"].detach()) == 0.0
    assert float(loss) == pytest.approx(float(ncc_loss(x[:, :1], x[:, 1:])), abs=1e-6)
    assert torch.allclose(logs["dice"], logs["dice_before"])
    with_dice = objective_for(config.replace(dice_weight=2.0))
    loss2, logs2 = with_dice(_Module(model), (x, y), "train")
    onehot = [F.one_hot(y[k], 5).movedim(-1, 1).float() for k in ("moving_labels", "fixed_labels")]
    assert float(loss2) == pytest.approx(float(loss) + 2.0 * float(dice_loss(*onehot)), abs=1e-5)
    assert "dice" not in logs2  # the metrics are measured in validation and test only
    assert isinstance(objective_for(TrainConfig()), Classification)


def test_a_few_steps_on_one_pair_register_it():
    torch.manual_seed(0)
    ds = ShapesPairs(dims=2, n=1, size=32, seed=4, affine_strength=0.0)
    x, y = torch.utils.data.default_collate([ds[0]])
    model = create("fieldnet", in_channels=2, in_size=(32, 32), transform="velocity")
    objective = objective_for(TrainConfig.for_model("fieldnet", dataset="shapes2d"))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    _, before = objective(_Module(model), (x, y), "val")
    for _ in range(60):
        loss, _ = objective(_Module(model), (x, y), "train")
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, after = objective(_Module(model), (x, y), "val")
    assert float(after["loss"]) < float(before["loss"]) - 0.02
    assert float(after["dice"]) > float(before["dice"]) + 0.02
    assert float(after["epe"]) < float(before["epe"])


SRC = Path(__file__).resolve().parents[2] / "src"


def _stnkit(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "stnkit", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_train_eval_and_the_refusals_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    flags = ["--volume-size", "16", "--train-size", "4", "--val-size", "2", "--test-size", "2", "--epochs", "1"]
    r = _stnkit(
        "train", "--dataset", "shapes2d", "--model", "fieldnet", "--pre-affine", *flags, "--out", str(out), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "test: Dice" in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["test"]) == {"n", "dice_before", "dice", "folding", "epe", "seconds_per_pair"}
    assert results["test"]["n"] == 2 and "best_val_loss" in results and (out / "show.png").is_file()
    r = _stnkit("eval", str(out / "model.safetensors"), cwd=tmp_path)
    assert r.returncode == 0 and "Dice" in r.stdout, r.stderr
    assert json.loads((out / "eval" / "eval.json").read_text())["n"] == 32  # the dataset's test pairs
    for command in ("show", "predict"):
        extra = [str(out / "show.png")] if command == "predict" else []
        r = _stnkit(command, str(out / "model.safetensors"), *extra, cwd=tmp_path)
        assert r.returncode != 0 and "is a registration network" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = [
        (["--dataset", "rts", "--model", "fieldnet"], "--dataset rts is a classification dataset"),
        (
            ["--dataset", "rts", "--model", "st-cnn", "--transform", "velocity"],
            "--transform must be a transformer family",
        ),
        (["--dataset", "shapes2d", "--model", "cnn"], "learns classification"),
        (["--dataset", "shapes2d", "--model", "fieldnet", "--transform", "affine"], "dense or velocity"),
        (["--dataset", "rts", "--volume-size", "32"], "--volume-size"),
        (["--dataset", "shapes2d", "--model", "fieldnet", "--similarity", "l1"], "--similarity must be one of"),
    ]
    for args, message in bad:
        r = _stnkit("train", *args, "--out", str(tmp_path / "bad"), cwd=tmp_path)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
