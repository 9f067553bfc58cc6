"""The demo: warp bundled digits with every transform family and draw the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._io import save_figure
from .data import bundled_mnist
from .geometry import TRANSFORMS, get_transform, warp
from .viz import montage, save_png


def demo_warps(n: int = 8, seed: int = 0, strength: float = 1.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first ``n`` bundled digits (padded to 36x36) and their warps by each family."""
    images, _ = bundled_mnist()
    x = torch.from_numpy(images[:n].astype(np.float32) / 255.0).unsqueeze(1)
    x = torch.nn.functional.pad(x, (4, 4, 4, 4))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in TRANSFORMS:
        family = get_transform(name)
        out[name] = warp(x, family.random(n, strength, generator=g), name)[:, 0].numpy()
    return x[:, 0].numpy(), out


def run_demo(out: str | Path = "demo.png", n: int = 8, seed: int = 0) -> Path:
    """Write a PNG: first row the input digits, then one row per transform family."""
    src, warped = demo_warps(n, seed)
    rows = [src] + [warped[name] for name in TRANSFORMS]
    labels = ["input"] + list(TRANSFORMS)
    out = Path(out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the core has no plotting dependency: plain montage, rows in `labels` order
        save_png(out, montage(np.concatenate(rows), ncols=n))
        return out
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.9 + 1.4, len(rows) * 1.0 + 0.4))
    for ax, row, label in zip(axes, rows, labels):
        ax.imshow(montage(row, ncols=n), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"stnkit.warp: random parameters of each family (seed {seed})", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=100)
    plt.close(fig)
    return out
