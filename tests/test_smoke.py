import subprocess
import sys

import pytest
import torch

import stnkit
import stnkit.bench
import stnkit.data


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


def test_bench_quick_reports_ratios(tmp_path):
    import json

    from stnkit.cli import main

    out = tmp_path / "b.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    ops = {(r["op"], r["mode"]) for r in report["warps"]}
    assert ops == {(op, m) for op in stnkit.bench.WARP_OPS for m in stnkit.bench.MODES}
    for r in report["warps"]:
        assert r["check"]["max_abs_difference"] <= 1e-4
        if "fastest_peer" in r:
            peer = r["times"][r["fastest_peer"]]["median_s"]
            assert r["ratio"] == r["times"]["stnkit"]["median_s"] / peer > 0
            assert all(v["median_s"] >= peer for k, v in r["times"].items() if k != "stnkit")
    affine = [r for r in report["warps"] if r["op"] == "affine"]
    assert all("F.affine_grid + F.grid_sample" in r["times"] for r in affine)
    steps = {r["model"]: r for r in report["training_step"]["rows"]}
    assert steps["cnn"]["ratio_to_cnn"] == 1.0
    assert steps["st-cnn"]["saved_activations_bytes"] > steps["cnn"]["saved_activations_bytes"] > 0
    assert {r["dataset"] for r in report["generators"]} == set(stnkit.data.DISTORTIONS)
    md = out.with_suffix(".md").read_text()
    assert "| affine | 4x1x16 | forward |" in md and "ratio to CNN" in md


def test_bench_refuses_bad_repeat(capsys):
    from stnkit.cli import main

    with pytest.raises(SystemExit, match="--repeat must be >= 1, got 0"):
        main(["bench", "--quick", "--repeat", "0"])


def test_readme_speed_section_is_the_committed_bench():
    import json
    from pathlib import Path

    from stnkit.bench import to_markdown

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme[readme.index("<!-- bench:start -->\n") + 21 : readme.index("<!-- bench:end -->")]
    md = (root / "benchmarks" / "results" / "bench.md").read_text()
    assert block == md, "README's speed tables differ from benchmarks/results/bench.md"
    report = json.loads((root / "benchmarks" / "results" / "bench.json").read_text())
    assert to_markdown(report) == md and not report["quick"]
