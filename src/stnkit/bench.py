"""``stnkit bench``: speed of stnkit's warps as ratios against reference code in the same process.

Absolute times depend on the machine; the ratios say what stnkit adds:

* ``warp_affine``: ``stnkit.warp(x, theta, "affine")`` against
  ``F.grid_sample(x, F.affine_grid(theta))`` (the checks and the clamp of
  degenerate grids are the difference; the ratio should be close to 1).
* ``tps_grid``: the cached thin-plate-spline grid against solving the spline's
  linear system on every call (what kornia does), same output.
* ``spatial_transformer``: forward + backward of an ST-CNN-sized
  ``SpatialTransformer`` against the same localisation net without the
  transformer, i.e. the cost of grid generation and sampling.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .geometry import base_grid, get_transform, warp
from .geometry.families import _tps_kernel
from .nn import SpatialTransformer


def _time_pair(
    ours: Callable[[], object], ref: Callable[[], object], repeat: int, warmup: int = 3
) -> tuple[float, float]:
    """Median seconds of one call of each; the two are timed alternately, so that
    load from other processes affects both alike and their ratio stays meaningful."""
    for _ in range(warmup):
        ours()
        ref()
    t_ours, t_ref = [], []
    for _ in range(repeat):
        for fn, times in ((ours, t_ours), (ref, t_ref)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_ref)


def _tps_grid_solving(params: torch.Tensor, out_size: tuple[int, int], grid_size: int) -> torch.Tensor:
    """The reference: build and solve the TPS system for every call (no precomputation)."""
    c = torch.linspace(-1.0, 1.0, grid_size, dtype=params.dtype)
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    ctrl = torch.stack([cx, cy], -1).reshape(-1, 2)
    k = ctrl.shape[0]
    b = params.shape[0]
    targets = ctrl + params.view(b, -1, 2)
    p = torch.cat([torch.ones(k, 1, dtype=params.dtype), ctrl], 1)
    top = torch.cat([_tps_kernel(torch.cdist(ctrl, ctrl).pow(2)), p], 1)
    lmat = torch.cat([top, torch.cat([p.T, torch.zeros(3, 3, dtype=params.dtype)], 1)], 0)
    rhs = torch.cat([targets, torch.zeros(b, 3, 2, dtype=params.dtype)], 1)
    coef = torch.linalg.solve(lmat.expand(b, -1, -1), rhs)  # (B, K+3, 2)
    pts = base_grid(out_size, dtype=params.dtype).view(-1, 2)
    basis = torch.cat([_tps_kernel(torch.cdist(pts, ctrl).pow(2)), torch.ones(len(pts), 1, dtype=params.dtype), pts], 1)
    return (basis @ coef).view(b, *out_size, 2)


def run_bench(batch: int = 64, size: int = 42, channels: int = 1, repeat: int = 20) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=g)
    results: dict[str, dict] = {}

    theta = get_transform("affine").random(batch, generator=g)
    ours, ref = _time_pair(
        lambda: warp(x, theta, "affine"),
        lambda: F.grid_sample(
            x, F.affine_grid(theta.view(-1, 2, 3), list(x.shape), align_corners=False), align_corners=False
        ),
        repeat,
    )
    results["warp_affine"] = {
        "stnkit_s": ours,
        "reference_s": ref,
        "ratio": ours / ref,
        "reference": "F.affine_grid + F.grid_sample",
    }

    tps = get_transform("tps")
    params = tps.random(batch, generator=g)
    assert torch.allclose(tps.grid(params, (size, size)), _tps_grid_solving(params, (size, size), 4), atol=1e-4)
    ours, ref = _time_pair(
        lambda: tps.grid(params, (size, size)), lambda: _tps_grid_solving(params, (size, size), 4), repeat
    )
    results["tps_grid"] = {
        "stnkit_s": ours,
        "reference_s": ref,
        "ratio": ours / ref,
        "reference": "solve the TPS system per call",
    }

    st = SpatialTransformer(transform="affine", in_channels=channels, in_size=size)
    loc, head = st.localization, st.head

    def with_st():
        st(x).sum().backward()

    def loc_only():
        head(loc(x).flatten(1)).sum().backward()

    ours, ref = _time_pair(with_st, loc_only, repeat)
    results["spatial_transformer"] = {
        "stnkit_s": ours,
        "reference_s": ref,
        "ratio": ours / ref,
        "reference": "localisation net alone (forward + backward)",
    }
    return {
        "settings": {
            "batch": batch,
            "size": size,
            "channels": channels,
            "repeat": repeat,
            "threads": torch.get_num_threads(),
        },
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "results": results,
    }


def main_bench(out: str | None, threads: int | None = None, **kwargs) -> dict:
    if threads:
        torch.set_num_threads(threads)
    report = run_bench(**kwargs)
    print(f"{'benchmark':<22} {'stnkit ms':>10} {'reference ms':>13} {'ratio':>7}  reference")
    for name, r in report["results"].items():
        print(
            f"{name:<22} {r['stnkit_s'] * 1e3:>10.3f} {r['reference_s'] * 1e3:>13.3f} {r['ratio']:>7.2f}  {r['reference']}"
        )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return report
