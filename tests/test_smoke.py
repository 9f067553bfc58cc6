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
