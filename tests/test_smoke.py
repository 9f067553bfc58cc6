import json
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


def _planted_median_s(name: str) -> float:
    """Median times planted in the bench's report: stnkit 3 ms, torch 2 ms, kornia 6 ms; the CNN 4 ms, the rest 5 ms."""
    if name.startswith(("F.", "kornia")):
        return 2e-3 if name.startswith("F.") else 6e-3
    return {"stnkit": 3e-3, "cnn": 4e-3}.get(name, 5e-3)


def test_bench_quick_reports_ratios(tmp_path, monkeypatch):
    import json

    from stnkit.cli import main

    # every contender still runs and is timed; the medians the report is built from are planted,
    # so the ratios and the fastest peer have known values
    real = stnkit.bench.time_interleaved

    def planted(fns, repeat, warmup=2, **kwargs):
        return {k: {**v, "median_s": _planted_median_s(k)} for k, v in real(fns, repeat, warmup, **kwargs).items()}

    monkeypatch.setattr(stnkit.bench, "time_interleaved", planted)
    out = tmp_path / "b.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    ops = {(r["op"], r["mode"]) for r in report["warps"]}
    assert ops == {(op, m) for op in stnkit.bench.WARP_OPS for m in stnkit.bench.MODES}
    for r in report["warps"]:
        assert r["check"]["max_abs_difference"] <= 1e-4
        peers = [k for k in r["times"] if k != "stnkit"]
        torch_peer = [k for k in peers if k.startswith("F.")]
        if torch_peer:  # 3 ms against torch's 2 ms and kornia's 6 ms: torch is the fastest, 1.5x
            assert (r["fastest_peer"], r["ratio"]) == (torch_peer[0], pytest.approx(1.5))
        elif peers:  # against kornia alone: 0.5x
            assert (r["fastest_peer"], r["ratio"]) == (peers[0], pytest.approx(0.5))
        else:
            assert "ratio" not in r and "fastest_peer" not in r
    affine = [r for r in report["warps"] if r["op"] == "affine"]
    assert all("F.affine_grid + F.grid_sample" in r["times"] for r in affine)
    steps = {r["model"]: r for r in report["training_step"]["rows"]}
    assert {m: r["ratio_to_cnn"] for m, r in steps.items()} == {
        m: pytest.approx(1.0 if m == "cnn" else 1.25) for m in steps
    }
    assert steps["st-cnn"]["saved_activations_bytes"] > steps["cnn"]["saved_activations_bytes"] > 0
    assert {r["dataset"] for r in report["generators"]} == set(stnkit.data.DISTORTIONS)
    assert all(r["samples_per_s"] == pytest.approx(r["samples"] / 5e-3) for r in report["generators"])
    md = out.with_suffix(".md").read_text()
    assert "| affine | 4x1x16 | forward |" in md and "ratio to CNN" in md
    assert "| F.affine_grid + F.grid_sample | 2.00 (" in md and "**1.50** |" in md and "**1.25** |" in md


def test_bench_only_resnet(tmp_path, monkeypatch):
    from stnkit.cli import main

    real = stnkit.bench.time_interleaved
    planted_s = {stnkit.bench.RESNET: 4e-3, stnkit.bench.RESNET_ST: 5e-3, stnkit.bench.RESNET_IG: 4.4e-3}

    def planted(fns, repeat, warmup=2, **kwargs):
        out = real(fns, repeat, warmup, **kwargs)
        for k, v in out.items():
            v["median_s"] = planted_s.get(k, 1e-3)
            if "times_s" in v:
                v["times_s"] = [planted_s[k]] * repeat
        return out

    monkeypatch.setattr(stnkit.bench, "time_interleaved", planted)
    out = tmp_path / "r.json"
    assert main(["bench", "--quick", "--only", "resnet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["only"] == ["resnet"] and "warps" not in report and "generators" not in report
    rn = report["resnet"]
    assert (rn["ratio"], rn["ratio_of_medians"]) == (pytest.approx(1.25), pytest.approx(1.25))
    assert [r["model"] for r in rn["rows"]] == [
        "resnet18",
        "resnet18 + affine transformer",
        "resnet18, input gradient too",
    ]
    assert (rn["input_grad_ratio"], rn["ratio_to_input_grad"]) == (pytest.approx(1.1), pytest.approx(5 / 4.4))
    assert rn["loc_size"] == [48, 48] and len(rn["parts"]) == 3  # quick: 96x96 input, 2 per batch
    assert "with / without **1.250**" in out.with_suffix(".md").read_text()
    with pytest.raises(
        ValueError, match=r"only must name sections among warps, steps, resnet, generators, volumes, got \['gpu'\]"
    ):
        stnkit.bench.run_bench(quick=True, only=["gpu"])


_VOLUME_PLANTED_S = {"stnkit": 3e-3, "F.affine_grid + F.grid_sample": 2e-3, "kornia warp_affine3d": 6e-3}


def _volume_planted_s(name: str) -> float:
    """stnkit 3 ms, torch 2 ms, kornia 6 ms, VoxelMorph 4 ms, MONAI 6 ms."""
    return _VOLUME_PLANTED_S.get(name, 4e-3 if name.startswith("VoxelMorph") else 6e-3)


def test_bench_volumes_quick_writes_a_well_formed_report(tmp_path, monkeypatch):
    pytest.importorskip("monai")
    pytest.importorskip("voxelmorph")
    from stnkit.cli import main

    # every contender still runs (its output checked against stnkit's first); the times the report is
    # built from are planted, so the fastest peer and the paired ratios have known values
    real = stnkit.bench.time_interleaved

    def planted(fns, repeat, warmup=2, **kwargs):
        out = real(fns, repeat, warmup, **kwargs)
        for k, v in out.items():
            v["median_s"] = _volume_planted_s(k)
            v["times_s"] = [_volume_planted_s(k)] * repeat
        return out

    monkeypatch.setattr(stnkit.bench, "time_interleaved", planted)
    out = tmp_path / "v.json"
    threads = torch.get_num_threads()
    try:  # one thread: seconds even on a loaded machine (the memory subprocess is told the same)
        assert main(["bench", "--quick", "--only", "volumes", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert report["quick"] and report["only"] == ["volumes"] and "warps" not in report and "generators" not in report
    assert report["machine"]["monai"] and report["machine"]["voxelmorph"]
    rows = report["volumes"]
    ops, modes = stnkit.bench.VOLUME_OPS, stnkit.bench.VOLUME_MODES
    assert [(r["op"], r["mode"]) for r in rows] == [(op, m) for op in ops for m in modes]
    kornia = ["kornia warp_affine3d"] if report["machine"]["kornia"] else []
    peers = {
        "dense warp": ["MONAI Warp", "VoxelMorph SpatialTransformer"],
        "3-D affine": ["F.affine_grid + F.grid_sample", *kornia],
        "integrate_velocity, 7 steps": ["MONAI DVF2DDF", "VoxelMorph IntegrateVelocityField"],
    }
    fastest = {
        "dense warp": ("VoxelMorph SpatialTransformer", 0.75),
        "3-D affine": ("F.affine_grid + F.grid_sample", 1.5),
    }
    fastest["integrate_velocity, 7 steps"] = ("VoxelMorph IntegrateVelocityField", 0.75)
    for r in rows:
        b, c, s = stnkit.bench.VOLUME_QUICK_SIZES[0]
        assert (r["batch"], r["size"]) == (b, s) and r["channels"] == (3 if r["op"].startswith("integrate") else c)
        assert sorted(r["times"]) == sorted(["stnkit", *peers[r["op"]]])
        assert 0 <= r["check"]["max_abs_difference"] <= stnkit.bench.AGREE
        assert all(len(t["times_s"]) == r["repeat"] >= 3 and t["q1_s"] <= t["q3_s"] for t in r["times"].values())
        assert (r["fastest_peer"], r["ratio"], r["ratio_of_medians"]) == (
            fastest[r["op"]][0],
            pytest.approx(fastest[r["op"]][1]),
            pytest.approx(fastest[r["op"]][1]),
        )
        if sys.platform == "linux" and r["mode"] == "forward+backward":  # from /proc: every contender, bytes
            assert sorted(r["memory"]) == sorted(r["times"])
            assert all(isinstance(m["peak_bytes"], int) and m["peak_bytes"] >= 0 for m in r["memory"].values())
    md = out.with_suffix(".md").read_text()
    assert md == stnkit.bench.to_markdown(report) and "MONAI 1." in md
    assert f"| dense warp | {b}x{c}x{s}^3 | forward | 3.00 (" in md and "| VoxelMorph SpatialTransformer | 4.00 (" in md
    assert "**0.75** |" in md and "**1.50** |" in md


def test_bench_volumes_are_not_in_the_default_run():
    assert "volumes" in stnkit.bench.SECTIONS and "volumes" not in stnkit.bench.DEFAULT_SECTIONS
    assert set(stnkit.bench.DEFAULT_SECTIONS) == set(stnkit.bench.SECTIONS) - {"volumes"}


def test_bench_shuffled_order_is_seeded():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    stnkit.bench.time_interleaved(fns, 20, warmup=0, shuffle_seed=0)
    first = list(calls)
    calls.clear()
    stnkit.bench.time_interleaved(fns, 20, warmup=0, shuffle_seed=0)
    assert calls == first and sorted(first) == sorted("abc" * 20)
    rounds = {tuple(first[i : i + 3]) for i in range(0, 60, 3)}
    assert len(rounds) > 1  # not the same order every round


def test_bench_times_warps_and_steps_on_the_device(device):
    rows = stnkit.bench.bench_warps([(2, 1, 12)], 1, ops=("affine", "tps4"), device=device)
    assert {r["op"] for r in rows} == {"affine", "tps4"} and all(r["check"]["max_abs_difference"] <= 1e-4 for r in rows)
    steps = stnkit.bench.bench_steps(4, 28, 1, compile=False, device=device)
    assert {r["model"] for r in steps["rows"]} >= {"cnn", "st-cnn", "tutorial-stn"}
    assert all(r["times"]["median_s"] > 0 for r in steps["rows"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_bench_on_cuda_without_a_gpu_is_one_line(capsys):
    from stnkit.cli import main

    with pytest.raises(SystemExit, match="--device cuda needs a GPU that torch can see"):
        main(["bench", "--quick", "--device", "cuda"])
    with pytest.raises(ValueError, match="device must be one this machine has .*got 'cuda'"):
        stnkit.bench.run_bench(quick=True, device="cuda")


def test_bench_refuses_bad_repeat(capsys):
    from stnkit.cli import main

    with pytest.raises(SystemExit, match="--repeat must be >= 1, got 0"):
        main(["bench", "--quick", "--repeat", "0"])


def test_docs_speed_section_is_the_committed_bench():
    import json
    from pathlib import Path

    from stnkit.bench import to_markdown

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "benchmarks.md").read_text()
    block = page[page.index("<!-- bench:start -->\n") + 21 : page.index("<!-- bench:end -->")]
    md = (root / "benchmarks" / "results" / "bench.md").read_text()
    assert block == md, "docs/benchmarks.md's speed tables differ from benchmarks/results/bench.md"
    report = json.loads((root / "benchmarks" / "results" / "bench.json").read_text())
    assert to_markdown(report) == md and not report["quick"]


@pytest.mark.parametrize("size, batches", [(64, (1, 4)), (128, (1,))])  # 128^3: batch 1 only (docs say why)
def test_docs_volume_speed_section_is_the_committed_bench(size, batches):
    from pathlib import Path

    from stnkit.bench import to_markdown

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "benchmarks.md").read_text()
    start = f"<!-- bench-volumes-{size}:start -->\n"
    block = page[page.index(start) + len(start) : page.index(f"<!-- bench-volumes-{size}:end -->")]
    md = (root / "benchmarks" / "results" / f"bench_volumes_{size}.md").read_text()
    assert block == md, f"docs/benchmarks.md's {size}^3 tables differ from benchmarks/results/bench_volumes_{size}.md"
    report = json.loads((root / "benchmarks" / "results" / f"bench_volumes_{size}.json").read_text())
    assert to_markdown(report) == md and not report["quick"] and report["only"] == ["volumes"]
    settings = {(r["batch"], r["channels"], r["size"]) for r in report["volumes"] if r["op"] == "dense warp"}
    assert settings == {(b, c, size) for b in batches for c in (1, 3)}
