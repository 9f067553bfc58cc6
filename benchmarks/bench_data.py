"""Time the distorted-MNIST distortion recipes and measure the ink each recipe keeps on its canvas.

    .venv/bin/python benchmarks/bench_data.py            # 60,000 samples per family, 2 torch threads

For each family it generates ``--n`` samples (the bundled 8,000 digits, tiled)
``--repeat`` times with ``torch.set_num_threads(--threads)`` and reports the
best wall time (the machine may be shared; the best run is the least disturbed).
Then, on the 1,000 bundled test digits (fixed draw, seed 0), the fraction of
each warped digit's ink that stays on the canvas (see ``stnkit.data.ink_fraction``).
Writes ``benchmarks/results/data_gen.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stnkit.data import DISTORTIONS, DistortedMNIST, bundled_mnist, get_distortion, load_digits

RESULTS = Path(__file__).parent / "results" / "data_gen.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_family(name: str, digits: torch.Tensor, repeat: int) -> list[float]:
    gen = get_distortion(name)
    gen(digits[:256], torch.Generator().manual_seed(0))  # warm-up (caches, allocator)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        gen(digits, torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - start)
    return times


def ink_stats(name: str) -> dict:
    images, labels = load_digits("test")
    frac = DistortedMNIST(name, images, labels, seed=0).ink_fraction().double()
    return {
        "mean": round(float(frac.mean()), 4),
        "p5": round(float(frac.quantile(0.05)), 4),
        "min": round(float(frac.min()), 4),
        "share_above_0.95": round(float((frac >= 0.95).double().mean()), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60_000, help="samples per family (default: 60000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per family; the best is reported")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    ap.add_argument("--out", default=str(RESULTS), help=f"JSON output (default: {RESULTS})")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    raw, _ = bundled_mnist()
    reps = -(-args.n // raw.shape[0])
    digits = torch.from_numpy(np.tile(raw, (reps, 1, 1))[: args.n].astype(np.float32) / 255.0).unsqueeze(1)

    results = {}
    for name in DISTORTIONS:
        gen = get_distortion(name)
        times = time_family(name, digits, args.repeat)
        best = min(times)
        results[name] = {
            "canvas_size": gen.canvas_size,
            "transform": gen.transform,
            "seconds": round(best, 3),
            "all_seconds": [round(t, 3) for t in times],
            "samples_per_second": round(args.n / best),
            "ink_kept": ink_stats(name),
        }
    report = {
        "what": f"time to generate {args.n} samples per family (best of {args.repeat}); ink kept on 1,000 test digits",
        "command": "python benchmarks/bench_data.py",
        "n": args.n,
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"| dataset | canvas | ground truth | {args.n:,} samples (s) | samples/s | ink kept: mean | 5th pct | min |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ink = r["ink_kept"]
        print(
            f"| `{name}` | {r['canvas_size']} | `{r['transform']}` | {r['seconds']:.2f} | {r['samples_per_second']:,} "
            f"| {ink['mean']:.4f} | {ink['p5']:.4f} | {ink['min']:.4f} |"
        )
    print(f"\nmachine: {report['machine']['cpu']}, {args.threads} torch threads; wrote {out}")
    return report


if __name__ == "__main__":
    main()
