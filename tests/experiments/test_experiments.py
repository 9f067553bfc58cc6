"""stnkit experiments: the recipe log generated from results files."""

from __future__ import annotations

import json

import pytest

from stnkit.cli import main
from stnkit.train.config import TrainConfig


def write_run(root, name, seed, val, fit=60.0, device=None, **options):
    config = TrainConfig(seed=seed, **options).to_dict()
    d = root / name / f"seed{seed}"
    d.mkdir(parents=True)
    result = {
        "config": config,
        "best_val_error": val,
        "test_error": 99.0,
        "fit_seconds": fit,
        "epochs": config["epochs"],
        **({"device": device} if device else {}),
    }
    (d / "results.json").write_text(json.dumps(result))


def test_groups_seeds_and_writes_the_command(tmp_path, capsys):
    write_run(tmp_path, "a", 0, 4.0, epochs=8)
    write_run(tmp_path, "a", 1, 6.0, epochs=8)
    write_run(tmp_path, "a", 2, 5.0, epochs=8, accelerator="cpu")  # where it ran is not part of the recipe
    write_run(tmp_path, "b", 0, 3.0, fit=120.0, epochs=8, loc_downsample=1, bounded=True)
    out = tmp_path / "log" / "recipe.md"
    assert main(["experiments", str(tmp_path), "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())
    assert len(rows) == 2
    a = next(r for r in rows if r["change"] == "--epochs 8")
    assert a["seeds"] == [0, 1, 2] and a["val_error_mean"] == 5.0 and a["val_error_std"] == 1.0
    assert a["command"] == "stnkit train --dataset rts --model st-cnn --epochs 8 --seed {0,1,2}"
    b = next(r for r in rows if r is not a)
    assert b["change"] == "--bounded --loc-downsample 1 --epochs 8" and b["val_error_std"] is None
    text = out.read_text()
    assert "| --epochs 8 | rts | st-cnn | 3 | 5.00 ± 1.00 | 1.0 min |" in text
    assert "| --bounded --loc-downsample 1 --epochs 8 | rts | st-cnn | 1 | 3.00 | 2.0 min |" in text
    assert not any("test" in key for r in rows for key in r)  # no test error in the log


def test_missing_runs_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="stnkit: no results.json below"):
        main(["experiments", str(tmp_path)])
    with pytest.raises(SystemExit, match="is neither a results.json nor a directory"):
        main(["experiments", str(tmp_path / "nope")])


def test_tutorial_rows_list_only_what_differs_from_the_tutorial_recipe(tmp_path):
    from stnkit.models import MODEL_RECIPES

    write_run(tmp_path, "t", 0, 2.0, model="tutorial-stn", **{**MODEL_RECIPES["tutorial-stn"], "epochs": 5})
    assert main(["experiments", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 0
    (row,) = json.loads((tmp_path / "r.json").read_text())
    assert row["change"] == "--epochs 5"


def test_options_a_model_ignores_are_not_listed(tmp_path):
    write_run(tmp_path, "c", 0, 2.0, model="cnn", loc_lr_mult=0.1, epochs=5)
    write_run(tmp_path, "s", 0, 2.0, model="st-cnn", loc_lr_mult=0.1, epochs=5)
    assert main(["experiments", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 0
    rows = {r["model"]: r["change"] for r in json.loads((tmp_path / "r.json").read_text())}
    assert rows == {"cnn": "--epochs 5", "st-cnn": "--epochs 5 --loc-lr-mult 0.1"}


def test_fit_times_of_gpu_runs_are_marked(tmp_path):
    write_run(tmp_path, "g", 0, 2.0, fit=120.0, epochs=5, accelerator="gpu")
    write_run(tmp_path, "g", 1, 4.0, fit=120.0, epochs=5, accelerator="gpu")
    write_run(tmp_path, "c", 0, 2.0, fit=120.0, epochs=6, device="cpu")
    # the recorded device wins over the accelerator asked for ("auto" may land on a GPU)
    write_run(tmp_path, "m", 0, 2.0, fit=120.0, epochs=7, device="cuda:0")
    write_run(tmp_path, "m", 1, 2.0, fit=120.0, epochs=7, device="cpu")
    assert main(["experiments", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "| --epochs 5 | rts | st-cnn | 2 | 3.00 ± 1.41 | 2.0 min (GPU) |" in text
    assert "| --epochs 6 | rts | st-cnn | 1 | 2.00 | 2.0 min |" in text
    assert "| --epochs 7 | rts | st-cnn | 2 | 2.00 ± 0.00 | 2.0 min (GPU 1/2) |" in text
