import subprocess
import sys

import torch

import stnkit


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "stnkit", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"stnkit {stnkit.__version__}"
    out = subprocess.run([sys.executable, "-m", "stnkit", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout


def test_demo_writes_png(tmp_path):
    from stnkit.cli import main

    assert main(["demo", "--out", str(tmp_path / "d.png"), "--n", "3"]) == 0
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_top_level_warp_identity():
    x = torch.rand(2, 1, 5, 5)
    assert torch.allclose(stnkit.warp(x, stnkit.get_transform("affine").identity(2)), x, atol=1e-6)


def test_bench_reports_ratios(tmp_path):
    import json

    from stnkit.cli import main

    assert main(["bench", "--batch", "2", "--size", "8", "--repeat", "2", "--out", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["results"]) == {"warp_affine", "tps_grid", "spatial_transformer"}
    for r in report["results"].values():
        assert r["ratio"] == r["stnkit_s"] / r["reference_s"] > 0
