"""The picture of what a transformer does: input with its sampling grid, and output."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._io import save_figure
from ..models import STClassifier, transformer_families
from .evaluate import predict_logits


def _grid_lines(family, params: Tensor, lines: int = 5, steps: int = 25) -> list[Tensor]:
    """The output frame's grid lines mapped into the input, normalised coords: list of (B, steps, 2)."""
    t = torch.linspace(-1.0, 1.0, steps, dtype=params.dtype)
    out = []
    for v in torch.linspace(-1.0, 1.0, lines, dtype=params.dtype):
        for pts in (torch.stack([t, torch.full_like(t, v)], -1), torch.stack([torch.full_like(t, v), t], -1)):
            out.append(family.transform_points(params, pts.expand(params.shape[0], -1, -1).contiguous()))
    return out


@torch.no_grad()
def show_figure(model: nn.Module, images: Tensor, labels: Tensor, path, title: str = "", n: int = 8) -> None:
    """Write a PNG: inputs with the transformer's sampling grid, outputs, predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = images[:n], labels[:n]
    n = images.shape[0]
    pred = predict_logits(model, images).argmax(-1)  # (n,) or (n, K) for K labels per sample
    rows = [("input", images)]
    grids = None
    if isinstance(model, STClassifier):
        out, params = model.warp_input(images)
        family = transformer_families(model)[0]
        grids = _grid_lines(family, params[0])
        k = len(params)
        c = out.shape[1] // k
        for i in range(k):
            label = "transformer output" if k == 1 else f"transformer {i + 1} output"
            rows.append((label, out[:, i * c : (i + 1) * c]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.45 * len(rows) + 0.5), squeeze=False)
    h, w = images.shape[-2:]
    for r, (label, batch) in enumerate(rows):
        for j in range(n):
            ax = axes[r, j]
            ax.imshow(batch[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and grids is not None:
                for line in grids:
                    # normalised -> pixel coordinates (align_corners=False)
                    xs = ((line[j, :, 0] + 1) * w - 1) / 2
                    ys = ((line[j, :, 1] + 1) * h - 1) / 2
                    ax.plot(xs.numpy(), ys.numpy(), color="tab:orange", lw=0.6)
                ax.set_xlim(-0.5, w - 0.5)
                ax.set_ylim(h - 0.5, -0.5)
            if r == 0:
                ok = bool((pred[j] == labels[j]).all())
                text = "".join(str(int(v)) for v in pred[j].flatten())
                ax.set_title(f"pred {text}", fontsize=8, color="k" if ok else "r")
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
