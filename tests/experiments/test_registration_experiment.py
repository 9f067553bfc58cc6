"""stnkit reproduce registration: the peers' fields in stnkit's convention, resumable, --report-only."""

import json

import pytest

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
