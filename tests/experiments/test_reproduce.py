"""``stnkit reproduce table1`` on a tiny grid."""

import csv
import json
import statistics

import pytest

pytest.importorskip("lightning")

from stnkit.cli import main  # noqa: E402
from stnkit_experiments import table1 as rep  # noqa: E402

TINY = ["--train-size", "64", "--val-size", "32", "--test-size", "32", "--batch-size", "32", "--epochs", "1"]


def test_plan_covers_the_table():
    plan = rep.cells()
    assert len(plan) == 5 * (8 + 2 + 2)  # 8 rows per dataset, CNN and ST-CNN affine with 3 seeds
    assert {c.dataset for c in plan} == {"r", "rts", "p", "e", "tc"}
    tc = rep.cell_config(rep.Cell("tc", "st-cnn-tps", 0), rep.TrainConfig())
    assert (tc.model, tc.transform, tc.st_size) == ("st-cnn", "tps", 30)


def test_row_key_is_the_one_name_of_a_row():
    from stnkit.models import row_key, row_label, split_row_key

    for row in rep.ROWS:
        model, transform = split_row_key(row)
        assert row_key(model, transform) == row
        cell = rep.Cell("r", row, 0)
        assert cell.dirname == f"r/{row}/seed0" and cell.model == model
    assert rep.ROWS[5] == "st-cnn-affine" and row_label("st-cnn-affine") == "ST-CNN AFFINE"
    assert split_row_key("tutorial-stn-tps") == ("tutorial-stn", "tps")
    for bad in ("st-cnn affine", "st-cnn", "cnn-affine", "st-cnn-shear"):
        with pytest.raises(ValueError, match="unknown row"):
            split_row_key(bad)


def test_table1_json_with_the_old_row_spelling_still_reads(tmp_path):
    old = {
        "table": {"st-cnn affine": {"tc": {"mean": 9.9, "std": None, "n": 1}}},
        "paper": {"st-cnn affine": {"r": 0.7}},
        "cells": [{"dataset": "tc", "model": "st-cnn affine", "seed": 0, "test_error": 9.9, "pose_recovery": None}],
        "cells_done": 1,
        "cells_planned": 60,
        "data": [],
    }
    (tmp_path / "table1.json").write_text(json.dumps(old))
    summary = rep.read_summary(tmp_path)
    assert list(summary["table"]) == list(summary["paper"]) == ["st-cnn-affine"]
    assert summary["cells"][0]["row"] == "st-cnn-affine" and "model" not in summary["cells"][0]
    assert summary["cells"][0]["pose_spread"] is None and "pose_recovery" not in summary["cells"][0]
    assert "| ST-CNN AFFINE | – (0.7) | – (0.5) | – (0.8) | – (1.2) | **9.90** (1.7) |" in rep.render_markdown(summary)


def test_unknown_rows_and_datasets_are_refused():
    with pytest.raises(SystemExit, match="unknown row 'st-cnn affine'; valid: fcn, cnn, st-fcn-affine"):
        main(["reproduce", "table1", "--models", "st-cnn affine", "--dry-run"])
    with pytest.raises(SystemExit, match="unknown dataset 'mnist'; valid: r, rts, p, e, tc"):
        main(["reproduce", "table1", "--datasets", "mnist", "--dry-run"])


def test_cells_take_their_models_recipe_and_given_options_win(monkeypatch):
    monkeypatch.setitem(rep.MODEL_RECIPES, "fcn", {"epochs": 77, "lr": 0.5})
    fcn = rep.cell_config(rep.Cell("r", "fcn", 0), rep.TrainConfig(epochs=5), {"lr": 0.1})
    assert (fcn.epochs, fcn.lr) == (77, 0.1)
    cnn = rep.cell_config(rep.Cell("rts", "cnn", 1), rep.TrainConfig(epochs=5), {"lr": 0.1})
    assert (cnn.model, cnn.epochs, cnn.lr, cnn.seed) == ("cnn", 5, 0.1, 1)


def test_dataset_options_are_recorded_and_named_under_the_table(tmp_path):
    summary = rep.summarize_grid(tmp_path, rep.TrainConfig(epochs=15, loc_downsample=1))
    assert summary["dataset_options"]["tc st-cnn"] == {"epochs": 60, "batch_size": 32, "loc_downsample": 2}
    md = rep.render_markdown(summary)
    assert "TC cnn: --epochs 20 --loc-downsample 2; TC st-cnn: --epochs 60 --batch-size 32 --loc-downsample 2." in md


def test_tc_cnn_and_st_cnn_take_the_validated_recipe_and_given_options_win():
    base = rep.TrainConfig(epochs=15, loc_downsample=1)
    cnn = rep.cell_config(rep.Cell("tc", "cnn", 2), base)
    assert (cnn.epochs, cnn.batch_size, cnn.loc_downsample) == (20, 64, 2)
    for family in ("affine", "projective", "tps"):
        st = rep.cell_config(rep.Cell("tc", f"st-cnn-{family}", 0), base)
        assert (st.epochs, st.batch_size, st.loc_downsample, st.st_size) == (60, 32, 2, 30)
    # the other datasets and the FCNs keep the table's base
    assert rep.cell_config(rep.Cell("rts", "st-cnn-affine", 0), base).epochs == 15
    assert rep.cell_config(rep.Cell("tc", "st-fcn-affine", 0), base).loc_downsample == 1
    given = rep.cell_config(rep.Cell("tc", "st-cnn-affine", 0), base, {"epochs": 3})
    assert (given.epochs, given.batch_size) == (3, 32)


def test_r_cnn_and_st_cnn_train_the_validated_60_epochs():
    base = rep.TrainConfig(epochs=15, loc_downsample=1)
    assert rep.cell_config(rep.Cell("r", "cnn", 0), base).epochs == 60
    for family in ("affine", "projective", "tps"):
        st = rep.cell_config(rep.Cell("r", f"st-cnn-{family}", 1), base)
        assert (st.epochs, st.batch_size, st.loc_downsample) == (60, 64, 1)
    assert rep.cell_config(rep.Cell("r", "st-fcn-affine", 0), base).epochs == rep.MODEL_RECIPES["st-fcn"]["epochs"]


def test_table_takes_mean_and_sample_std_over_seeds(tmp_path):
    # two finished seeds with known errors: mean 12, sample std sqrt(8) = 2.828 (the population std is 2)
    for seed, err in enumerate([10.0, 14.0]):
        d = tmp_path / "runs" / rep.Cell("r", "cnn", seed).dirname
        d.mkdir(parents=True)
        sizes = {"train_size": 64, "val_size": 32, "test_size": 32, "data_source": "bundled mnist8k"}
        (d / "results.json").write_text(
            json.dumps({"test_error": err, "epochs": 1, "fit_seconds": 1.0, "num_parameters": 10, **sizes})
        )
    summary = rep.summarize_grid(tmp_path, rep.TrainConfig(), seeds=2)
    assert summary["cells_done"] == 2
    assert summary["table"] == {"cnn": {"r": {"mean": 12.0, "std": 2.828427, "n": 2}}}


def test_table_entries_round_once():
    # sample std of 2.2, 1.8, 2.3 is 0.2646: printed 0.26, not 0.27 (a stored 0.265 rounded again)
    stats = rep.error_stats([{"test_error": e} for e in (2.2, 1.8, 2.3)])
    assert rep.stats_text(stats) == "**2.10** ± 0.26"


def test_tiny_grid_resumes_and_checks(tmp_path, capsys):
    out = tmp_path / "results"
    args = ["reproduce", "table1", "--out", str(out), "--datasets", "r", "--models", "cnn,st-cnn-affine"]
    args += ["--seeds", "2", *TINY]
    assert main(args) == 0
    summary = json.loads((out / "table1.json").read_text())
    assert summary["cells_done"] == 4 and summary["cells_planned"] == 5 * (8 + 2)  # the whole grid with 2 seeds
    cell = summary["cells"][0]
    for key in (
        "test_error",
        "seed",
        "epochs",
        "fit_seconds",
        "num_parameters",
        "git_commit",
        "data_source",
        "train_size",
    ):
        assert key in cell
    assert set(summary["model_recipes"]) == {"fcn", "cnn", "st-fcn", "st-cnn"}
    # mean and sample standard deviation (n - 1) of the two seeds' test errors
    errs = [c["test_error"] for c in summary["cells"] if c["row"] == "cnn" and c["dataset"] == "r"]
    cnn_r = summary["table"]["cnn"]["r"]
    assert cnn_r["n"] == len(errs) == 2
    assert cnn_r["mean"] == pytest.approx(statistics.mean(errs), abs=1e-3)
    assert cnn_r["std"] == pytest.approx(statistics.stdev(errs), abs=1e-3)
    md = (out / "table1.md").read_text()
    assert "| CNN |" in md and "(1.2)" in md and "32 test digits" in md
    assert (out / "figures" / "r_st-cnn.png").is_file() and (out / "figures" / "errors.png").is_file()

    # a finished cell is never trained twice
    results = out / "runs" / "r" / "cnn" / "seed0" / "results.json"
    before = results.stat().st_mtime_ns
    assert main(args) == 0
    assert results.stat().st_mtime_ns == before

    # --report-only rewrites the outputs from finished cells without training
    (out / "table1.md").unlink()
    assert main(["reproduce", "table1", "--out", str(out), "--report-only", "--seeds", "2"]) == 0
    assert (out / "table1.md").read_text() == md
    assert results.stat().st_mtime_ns == before

    # --check: README block must match the JSON
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{rep.README_START}\nold\n{rep.README_END}\n")
    assert main(["reproduce", "table1", "--out", str(out), "--check", "--readme", str(readme)]) == 1
    rep.update_readme(readme, out)
    assert main(["reproduce", "table1", "--out", str(out), "--check", "--readme", str(readme)]) == 0
    # a hand-edited number is caught
    readme.write_text(readme.read_text().replace("**", "*", 1))
    assert main(["reproduce", "table1", "--out", str(out), "--check", "--readme", str(readme)]) == 1


def test_interrupted_cell_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    from stnkit.train.module import STNModule

    out = tmp_path / "results"
    cell = rep.Cell("rts", "cnn", 0)
    base = rep.TrainConfig(train_size=64, val_size=32, test_size=32, batch_size=32, epochs=2)
    run_dir = out / "runs" / cell.dirname

    def crash_in_second_epoch(self):
        if self.current_epoch == 1:
            raise RuntimeError("simulated interruption")

    monkeypatch.setattr(STNModule, "on_train_epoch_start", crash_in_second_epoch, raising=False)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        rep.run_table1(out, base, [cell], seeds=1)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "results.json").exists()
    monkeypatch.undo()
    summary = rep.run_table1(out, base, [cell], seeds=1)
    assert summary["cells_done"] == 1
    res = json.loads((run_dir / "results.json").read_text())
    assert res["global_step"] == 2 * 2  # both epochs counted
    # the resumed segment (second log version) trained epoch 1 only: epoch 0 was not repeated
    second = sorted((run_dir / "logs").glob("version_*"))[-1] / "metrics.csv"
    epochs = {int(r["epoch"]) for r in csv.DictReader(second.open()) if r.get("val_error")}
    assert epochs == {1}


def test_cells_with_other_settings_are_refused(tmp_path):
    out = tmp_path / "results"
    cell = rep.Cell("r", "fcn", 0)
    base = rep.TrainConfig(train_size=64, val_size=32, test_size=32, batch_size=32)
    # --epochs given on the command line (it wins over the FCN's recipe)
    rep.run_table1(out, base, [cell], seeds=1, options={"epochs": 1})
    # a finished cell trained for 1 epoch is not reused for a 2-epoch grid
    with pytest.raises(ValueError, match="epochs: 1 in the checkpoint, 2 now"):
        rep.run_table1(out, base, [cell], seeds=1, options={"epochs": 2})
    # an interrupted one neither
    (out / "runs" / cell.dirname / "results.json").unlink()
    with pytest.raises(ValueError, match="epochs: 1 in the checkpoint, 2 now"):
        rep.run_table1(out, base, [cell], seeds=1, options={"epochs": 2})


def test_committed_readme_table_matches_committed_results():
    """The docs' Table 1 (docs/results/table1.md) is generated from results/table1.json, never retyped."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "results" / "table1.json").is_file():
        pytest.skip("no results/table1.json in this checkout")
    assert rep.check_readme(root / "docs" / "results" / "table1.md", root / "results") == []


def test_reproduce_budget_trains_each_model_for_the_budget(tmp_path, capsys):
    from stnkit.cli import main
    from stnkit.models import count_parameters, create

    argv = ["reproduce", "budget", "--dataset", "mnist", "--minutes", "0.05", "--seeds", "1", "--out", str(tmp_path)]
    argv += ["--train-size", "64", "--val-size", "32", "--test-size", "32"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "budget_mnist.json").read_text())
    assert set(summary["models"]) == {"cnn", "st-cnn", "tutorial-cnn", "tutorial-stn"}
    for r in summary["runs"]:
        assert r["budget"]["max_time_minutes"] == 0.05 and r["samples_seen"] == r["steps"] * r["recipe"]["batch_size"]
    assert summary["models"]["tutorial-stn"]["recipe"]["optimizer"] == "sgd"
    assert summary["models"]["st-cnn"]["recipe"]["optimizer"] == "adamw"
    # the localisation net's input is shown for the models with a transformer only
    # `stnkit train`'s defaults (the main job's models), not table1's paper networks
    assert summary["models"]["st-cnn"]["recipe"]["loc_downsample"] == 2
    assert summary["models"]["st-cnn"]["parameters"] == count_parameters(create("st-cnn", in_size=28, loc_downsample=2))
    assert "loc_downsample" not in summary["models"]["cnn"]["recipe"]
    assert "localisation net on the input averaged over 2x2" in (tmp_path / "budget_mnist.md").read_text()
    assert "| tutorial-stn |" in (tmp_path / "budget_mnist.md").read_text()
    # a second call reuses the finished runs
    mtime = (tmp_path / "runs" / "budget_mnist" / "cnn" / "seed0" / "results.json").stat().st_mtime
    assert main(argv) == 0
    assert (tmp_path / "runs" / "budget_mnist" / "cnn" / "seed0" / "results.json").stat().st_mtime == mtime
    # a subset of the models, and an unknown one refused in one line
    sub = ["reproduce", "budget", "--dataset", "mnist", "--minutes", "0.05", "--seeds", "1", "--out", str(tmp_path)]
    # with --models cnn the finished runs of the other models stay in the summary
    assert main(sub + ["--models", "cnn", "--train-size", "64", "--val-size", "32", "--test-size", "32"]) == 0
    assert set(json.loads((tmp_path / "budget_mnist.json").read_text())["models"]) == set(summary["models"])
    other = tmp_path / "other"
    assert (
        main(sub[:-1] + [str(other), "--models", "cnn", "--train-size", "64", "--val-size", "32", "--test-size", "32"])
        == 0
    )
    assert set(json.loads((other / "budget_mnist.json").read_text())["models"]) == {"cnn"}
    with pytest.raises(SystemExit, match="--models must be among cnn, st-cnn, tutorial-cnn, tutorial-stn, got 'fcn'"):
        main(sub + ["--models", "fcn"])
