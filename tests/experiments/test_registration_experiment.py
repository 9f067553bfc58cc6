"""stnkit reproduce registration: the peers' fields in stnkit's convention, resumable, --report-only."""

import json

import pytest
import torch

from stnkit.cli import main
from stnkit.train.config import TrainConfig
from stnkit.train.evaluate import load_test_set
from stnkit_experiments import registration as reg


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(reg, "TEST_PAIRS", 3)


def test_methods_run_once_and_the_report_is_rewritten_from_disk(tmp_path, small):
    methods = ["none", "true-affine", "sitk-affine"]
    summary = reg.run_registration(tmp_path, methods)
    t = summary["table"]
    assert set(t) == set(methods) and all(r["n"] == 3 for r in t.values())
    assert t["none"]["dice"] == t["none"]["dice_before"] and t["none"]["epe"]["mean"] > 1.0
    # the true affine part brings the labels closer; SimpleITK's affine too
    assert t["true-affine"]["dice"]["mean"] > t["none"]["dice"]["mean"]
    assert t["sitk-affine"]["dice"]["mean"] > t["none"]["dice"]["mean"]
    # SimpleITK's transform, as a stnkit field, resamples as SimpleITK does
    assert t["sitk-affine"]["conversion_check_max"] < 1e-3
    stamp = (tmp_path / "runs" / "none.json").stat().st_mtime_ns
    reg.run_registration(tmp_path, methods)  # nothing to run again
    assert (tmp_path / "runs" / "none.json").stat().st_mtime_ns == stamp
    (tmp_path / "registration.md").unlink()
    again = reg.run_registration(tmp_path, methods, report_only=True)
    assert again["table"] == summary["table"]
    assert "SimpleITK affine" in (tmp_path / "registration.md").read_text()
    assert json.loads((tmp_path / "registration.json").read_text())["table"] == summary["table"]
    assert (tmp_path / "figures" / "registration_pair.png").is_file()
    page = reg.render_page(again, "figures/registration_pair.png")
    assert "not measured" in page and "| SimpleITK affine |" in page


def test_ants_syn_fields_resample_as_ants_does(tmp_path, small):
    pytest.importorskip("ants")
    summary = reg.run_registration(tmp_path, ["none", "ants-syn"])
    r = summary["table"]["ants-syn"]
    assert r["conversion_check_max"] < 1e-3
    assert r["dice"]["mean"] > summary["table"]["none"]["dice"]["mean"] + 0.05


@pytest.fixture
def tiny_register(monkeypatch):
    """register's rows on 2 test pairs of 32x32, its settings searched over two losses on 2 validation pairs,
    without SyN (the bar: every trial passes)."""
    monkeypatch.setattr(
        reg, "REGISTER_START", {"loss": "mse", "levels": 2, "steps": [10, 5], "smooth": 0.3, "field_steps": [15, 5]}
    )
    monkeypatch.setattr(reg, "REGISTER_SEARCH", (("loss", ("mse", "ncc")), ("smooth", (0.3, 3.0))))
    monkeypatch.setattr(reg, "peer_syn", lambda: None)
    return reg.Bench("shapes2d", 32, 2, 2)


def test_validation_pairs_are_not_test_pairs():
    config = TrainConfig(dataset="shapes2d", volume_size=32)
    val, test = load_test_set(config, split="val", size=2), load_test_set(config, size=2)
    assert val.seed == config.test_seed + 1000 and test.seed == config.test_seed
    assert not torch.equal(val.pair(0)["moving"], test.pair(0)["moving"])
    with pytest.raises(ValueError, match="split must be one of 'test', 'val', got 'train'"):
        load_test_set(config, split="train")


def test_register_rows_tuned_on_validation_pairs_and_resumable(tmp_path, tiny_register):
    bench = tiny_register
    methods = ["none", "register-affine", "register-dense", "register-velocity"]
    summary = reg.run_registration(tmp_path, methods, bench=bench)
    t = summary["table"]
    assert all(t[m]["n"] == 2 for m in methods)
    for m in ("register-affine", "register-dense", "register-velocity"):
        assert t[m]["dice"]["mean"] > t["none"]["dice"]["mean"] + 0.02, m
        assert t[m]["epe"]["mean"] < t["none"]["epe"]["mean"], m
        # the whole map as one field resamples as register's own warped image
        assert t[m]["conversion_check_max"] < 1e-4, m
        assert t[m]["threads"] == torch.get_num_threads()
    tuning = json.loads((tmp_path / "runs" / "register-tuning.json").read_text())
    assert tuning["bench"] == {"dataset": "shapes2d", "size": 32, "test_pairs": 2, "val_pairs": 2}
    assert tuning["split"].startswith("val") and tuning["syn"] is None
    # the affine stage has no field knobs: two trials; the fields four each (loss, then smooth: one shared)
    per = {k: [tr for tr in tuning["trials"] if tr["transform"] == k] for k in ("affine", "dense", "velocity")}
    assert [len(v) for v in per.values()] == [2, 3, 3]
    assert all("smooth" not in tr["settings"] for tr in per["affine"])
    for m, transform in reg.REGISTER_ROWS.items():
        chosen = tuning["chosen"][transform]
        last = "loss" if transform == "affine" else "smooth"  # the last knob searched: its best trial is the choice
        rivals = [
            tr
            for tr in per[transform]
            if all(tr["settings"][k] == v for k, v in chosen["settings"].items() if k != last)
        ]
        assert len(rivals) == 2 and chosen["validation"]["dice"] == max(tr["dice"] for tr in rivals)
        assert t[m]["settings"] == chosen["settings"]
    stamp = (tmp_path / "runs" / "register-tuning.json").stat().st_mtime_ns
    rows = (tmp_path / "runs" / "register-dense.json").stat().st_mtime_ns
    again = reg.run_registration(tmp_path, methods, bench=bench)  # nothing runs again
    assert (tmp_path / "runs" / "register-tuning.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "runs" / "register-dense.json").stat().st_mtime_ns == rows
    (tmp_path / "registration.md").unlink()
    (tmp_path / "figures" / "registration_pair.png").unlink()
    only = reg.run_registration(tmp_path, methods, report_only=True, bench=bench)
    assert only["table"] == summary["table"] == again["table"]
    assert (tmp_path / "figures" / "registration_pair.png").is_file()
    md = (tmp_path / "registration.md").read_text()
    assert "| stnkit register, dense |" in md and "chosen on the validation pairs" in md
    page = reg.render_page(only, "figures/registration_pair.png")
    assert "## How `stnkit register`'s settings were chosen" in page and "validation** pairs" in page
    assert "| register, dense | loss " in page
    with pytest.raises(ValueError, match="holds the search of another benchmark"):
        reg.tune_register(tmp_path, reg.Bench("shapes2d", 32, 2, 3), None, 5)
    # a 3-D run with the settings chosen on these 2-D validation pairs: no search there, said so
    vol = tmp_path / "3d"
    cube = reg.Bench("shapes3d", 16, 1, 1)
    three = reg.run_registration(
        vol, ["none", "register-dense"], bench=cube, settings_from=tmp_path / "runs" / "register-tuning.json"
    )
    r = three["table"]["register-dense"]
    assert r["settings"] == tuning["chosen"]["dense"]["settings"] and r["conversion_check_max"] < 1e-4
    assert r["dice"]["mean"] > three["table"]["none"]["dice"]["mean"]
    copied = json.loads((vol / "runs" / "register-tuning.json").read_text())
    assert (
        copied["trials"] == [] and copied["from_bench"] == tuning["bench"] and copied["bench"]["dataset"] == "shapes3d"
    )
    assert "Not searched on this benchmark" in reg.render_page(three, "f.png")


def row(dice, folding, seconds, cpu=None, threads=1):
    r = {"dice": {"mean": dice}, "folding": {"mean": folding}, "seconds": {"mean": seconds}, "threads": threads}
    if cpu is not None:
        r["cpu_seconds"] = {"mean": cpu}
    return r


def test_targets_judge_dice_folding_and_both_times():
    table = {
        "ants-syn": row(0.84, 0.0, 0.30, 0.30),
        "sitk-affine": row(0.77, 0.0, 0.05, 0.03),
        "register-affine": row(0.78, 0.0, 0.04, 0.02),  # against SimpleITK's affine, like for like
        "register-dense": row(0.85, 0.0, 0.20, 0.35),  # faster on the wall clock, not in CPU time
        "register-velocity": row(0.86, 0.0, 0.10, 0.10),
        "fieldnet": row(0.845, 0.0, 0.0009, 0.0009),  # 0.015 below the better field, 111x faster
        "fieldnet-dice": row(0.83, 0.0, 0.0005, threads=2),  # an earlier record: no CPU time
    }
    affine, *lines = reg._targets({"table": table})
    assert affine.startswith("- stnkit register, affine vs SimpleITK affine") and affine.endswith(": reached.")
    assert lines[0].startswith("- stnkit register, dense vs ANTs SyN") and lines[0].endswith("not reached (time).")
    assert lines[1].endswith(": reached.") and "CPU 0.100 vs 0.300 s" in lines[1]
    assert "vs stnkit register, velocity" in lines[2] and "111x and 111x less time" in lines[2]
    assert lines[2].endswith(": reached.")
    assert lines[3].endswith("not reached (Dice).") and "(2 vs 1 threads)" in lines[3] and "CPU" not in lines[3]


def test_reproduce_registration_refusals(tmp_path):
    with pytest.raises(SystemExit, match="--dataset must be one of shapes2d, shapes3d, got 'p'"):
        main(["reproduce", "registration", "--dataset", "p", "--dry-run"])
    with pytest.raises(SystemExit, match=r"--register-settings .*nothing.json is not a file"):
        main(
            ["reproduce", "registration", "--out", str(tmp_path), "--register-settings", str(tmp_path / "nothing.json")]
        )


def test_the_search_gives_a_schedule_per_level_and_refuses_another_search(tmp_path, tiny_register):
    start, search = reg.REGISTER_START, reg.REGISTER_SEARCH
    # the schedules give one number per level of the start's pyramid (register refuses any other length)
    for knob, values in (*search, *((k, [v]) for k, v in start.items())):
        for v in values:
            assert not isinstance(v, list) or len(v) == start["levels"], (knob, v)
    assert reg._settings_text({"steps": [10, 10, 0], "smooth": 3.0}) == "steps 10x10x0, smooth 3.0"
    path = tmp_path / "runs" / "register-tuning.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"start": {"loss": "mi"}, "search": [["loss", ["mi"]]]}))
    with pytest.raises(ValueError, match="holds a search from other settings or knobs"):
        reg.tune_register(tmp_path, tiny_register, None, 5)
