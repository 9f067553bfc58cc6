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


# the bar between the channels of a multi-channel sample (drawn side by side), in pixels
_CHANNEL_GAP = 2
# the sampling grid of each parallel transformer
_GRID_COLOURS = ("tab:orange", "tab:cyan", "tab:green", "tab:pink")


def side_by_side(batch: Tensor, gap: int = _CHANNEL_GAP) -> Tensor:
    """Images ``(B, C, H, W)`` as ``(B, H, C W + (C - 1) gap)``: the channels left to right, NaN between them."""
    b, c, h, w = batch.shape
    out = torch.full((b, h, c * w + (c - 1) * gap), float("nan"), dtype=batch.dtype)
    for k in range(c):
        out[:, :, k * (w + gap) : k * (w + gap) + w] = batch[:, k]
    return out


@torch.no_grad()
def show_figure(
    model: nn.Module, images: Tensor, labels: Tensor, path, title: str = "", n: int = 8, classes=None
) -> None:
    """Write a PNG: inputs with the transformers' sampling grids, outputs, predictions
    (named by ``classes`` when given, else by index).

    Three-channel samples are drawn as RGB pictures (your own images).
    A sample of several channels (``addition``) is drawn channel by channel, left to
    right, with a blue bar between them; every channel is sampled at the same points,
    so each transformer's grid is drawn on each channel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = images[:n], labels[:n]
    n = images.shape[0]
    pred = predict_logits(model, images).argmax(-1)  # (n,) or (n, K) for K labels per sample
    rows = [("input", images)]
    grids = []
    if isinstance(model, STClassifier):
        out, params = model.warp_input(images)
        grids = [_grid_lines(f, p) for f, p in zip(transformer_families(model), params, strict=True)]
        k = len(params)
        c = out.shape[1] // k
        for i in range(k):
            label = "transformer output" if k == 1 else f"transformer {i + 1} output"
            rows.append((label, out[:, i * c : (i + 1) * c]))
    rgb = images.shape[1] == 3
    channels = 1 if rgb else images.shape[1]
    width = 1.3 * (channels + (channels - 1) * 0.1)
    fig, axes = plt.subplots(len(rows), n, figsize=(width * n, 1.45 * len(rows) + 0.5), squeeze=False)
    h, w = images.shape[-2:]
    cmap = plt.get_cmap("gray").with_extremes(bad="tab:blue")
    for r, (label, batch) in enumerate(rows):
        tiles = batch.permute(0, 2, 3, 1).clamp(0, 1) if rgb else side_by_side(batch)
        for j in range(n):
            ax = axes[r, j]
            ax.imshow(tiles[j].numpy(), cmap=None if rgb else cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and grids:
                gap = torch.full((1,), float("nan"))
                for t, lines in enumerate(grids):
                    # every line on every channel in one polyline, NaN between lines;
                    # normalised -> pixel coordinates (align_corners=False)
                    xs = [
                        ((line[j, :, 0] + 1) * w - 1) / 2 + c * (w + _CHANNEL_GAP)
                        for c in range(channels)
                        for line in lines
                    ]
                    ys = [((line[j, :, 1] + 1) * h - 1) / 2 for _ in range(channels) for line in lines]
                    xs = torch.cat([torch.cat([x, gap]) for x in xs]).numpy()
                    ys = torch.cat([torch.cat([y, gap]) for y in ys]).numpy()
                    ax.plot(xs, ys, color=_GRID_COLOURS[t % len(_GRID_COLOURS)], lw=0.6)
                ax.set_xlim(-0.5, (w if rgb else tiles.shape[-1]) - 0.5)
                ax.set_ylim(h - 0.5, -0.5)
            if r == 0:
                ok = bool((pred[j] == labels[j]).all())
                if classes is not None:
                    text = str(classes[int(pred[j])])[:14]
                else:
                    text = "".join(str(int(v)) for v in pred[j].flatten())
                ax.set_title(f"pred {text}", fontsize=8, color="k" if ok else "r")
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
