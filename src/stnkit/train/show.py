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


def _middle_slice(x: Tensor) -> Tensor:
    """A 2-D view of ``(*spatial)``: the image itself, or a volume's middle axial slice (along D)."""
    return x if x.ndim == 2 else x[x.shape[0] // 2]


def _field_slice(u: Tensor) -> Tensor:
    """The in-plane components ``(2, H, W)`` (x, y) of a field ``(dims, *spatial)`` on the middle slice."""
    return u[:2] if u.ndim == 3 else u[:2, u.shape[1] // 2]


@torch.no_grad()
def registration_figure(pair: dict, fields: dict[str, Tensor], path, title: str = "", lines: int = 17) -> None:
    """One registration pair and the fields that register it, as a PNG (middle axial slice of a volume).

    Row per field (the first row: moving, fixed and the true field when ``pair`` has ``field``):
    moving warped by the field, the field as the deformed grid (the fixed frame's grid lines drawn
    where they read the moving image, in-plane components), and its Jacobian determinant (red where
    ``<= 0``: folding).

    Args:
        pair: ``moving``, ``fixed`` ``(1, *spatial)``, optionally ``field`` (the truth), as
            :meth:`stnkit.data.ShapesPairs.pair` gives.
        fields: name -> a field ``(dims, *spatial)`` (stnkit's convention, ``align_corners=False``).
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..geometry import field_grid, jacobian_determinant, warp_field

    moving, fixed = pair["moving"], pair["fixed"]
    rows = dict(fields)
    if "field" in pair:
        rows = {"true field": pair["field"], **rows}
    fig, axes = plt.subplots(len(rows) + 1, 3, figsize=(7.5, 2.5 * (len(rows) + 1)), squeeze=False)
    vmax = float(max(moving.max(), fixed.max()))
    show = {"cmap": "gray", "vmin": 0.0, "vmax": vmax}
    axes[0, 0].imshow(_middle_slice(moving[0]).numpy(), **show)
    axes[0, 0].set_title("moving", fontsize=8)
    axes[0, 1].imshow(_middle_slice(fixed[0]).numpy(), **show)
    axes[0, 1].set_title("fixed", fontsize=8)
    diff = _middle_slice((moving - fixed)[0]).abs().numpy()
    axes[0, 2].imshow(diff, cmap="magma", vmin=0.0, vmax=vmax / 2)
    axes[0, 2].set_title("|moving - fixed|", fontsize=8)
    for i, (name, u) in enumerate(rows.items(), start=1):
        u = u.float()
        warped = warp_field(moving[None], u[None])[0, 0]
        axes[i, 0].imshow(_middle_slice(warped).numpy(), **show)
        axes[i, 0].set_title(f"{name}: moving warped", fontsize=8)
        grid = field_grid(u[None])[0]  # (*spatial, dims): the source point of each fixed point
        g = grid if u.ndim == 3 else grid[grid.shape[0] // 2]
        h, w = g.shape[:2]
        px = ((g[..., 0] + 1) * w / 2 - 0.5).numpy()  # to pixel coordinates of the moving image
        py = ((g[..., 1] + 1) * h / 2 - 0.5).numpy()
        ax = axes[i, 1]
        ax.imshow(_middle_slice(moving[0]).numpy(), **show, alpha=0.5)
        for k in np.linspace(0, h - 1, lines).round().astype(int):
            ax.plot(px[k, :], py[k, :], lw=0.5, color="tab:orange")
        for k in np.linspace(0, w - 1, lines).round().astype(int):
            ax.plot(px[:, k], py[:, k], lw=0.5, color="tab:orange")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"{name}: deformed grid", fontsize=8)
        det = _middle_slice(jacobian_determinant(u[None])[0]).numpy()
        im = axes[i, 2].imshow(det, cmap="coolwarm", vmin=0.0, vmax=2.0)
        folded = np.ma.masked_where(det > 0, np.ones_like(det))
        axes[i, 2].imshow(folded, cmap="autumn", vmin=0, vmax=1)
        axes[i, 2].set_title(f"{name}: det J ({100 * float((det <= 0).mean()):.2f} % <= 0)", fontsize=8)
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / fig.get_figheight()))  # the title above the first row's titles
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def model_registration_figure(model: nn.Module, dataset, index: int, path, title: str = "") -> None:
    """:func:`registration_figure` of pair ``index`` of a registration dataset and ``model``'s field for it."""
    pair = dataset.pair(index)
    model.eval()
    with torch.no_grad():
        u = model(torch.cat([pair["moving"], pair["fixed"]])[None])[0]
    registration_figure(pair, {"fieldnet": u}, path, title)
