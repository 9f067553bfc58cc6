"""How much of a warped digit stays on its canvas: the ink metric of the distorted-MNIST recipes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int
from ..geometry import TransformFamily, get_transform
from ..geometry.coords import base_grid
from .distortions import check_digits


def ink_fraction(
    digits: Tensor,
    params: Tensor,
    transform: str | TransformFamily,
    canvas_size: int,
    *,
    mode: str = "bilinear",
    factor: int = 5,
    chunk_size: int = 64,
) -> Tensor:
    """Per sample, the fraction of the warped digit's ink that lies on the canvas.

    The digit is rendered with its warp ``params`` (family ``transform``, stnkit's
    convention: output canvas -> input digit) on a canvas ``factor`` times wider
    than ``canvas_size`` with the same pixel size and the same centre; the
    fraction is the ink (sum of pixel values) in the central
    ``canvas_size x canvas_size`` window over the ink on the whole big canvas.
    Scaling changes the ink of the whole digit and of the window alike, so this
    measures only the ink that the canvas cut off. A digit without ink counts as
    kept whole (1).

    Args:
        digits: float32 ``(N, 1, 28, 28)`` in ``[0, 1]``.
        params: ``(N, num_params)`` the warps, e.g. a recipe's ground truth.
        transform: the family of ``params`` (a name or a ``TransformFamily``).
        canvas_size: the side of the canvas the samples are rendered on.
        mode: the sampler's interpolation (as the recipe renders).
        factor: an odd int >= 1, how much wider the big canvas is.
        chunk_size: samples rendered at once (bounds memory).

    Returns:
        float32 ``(N,)`` in ``[0, 1]``.
    """
    digits = check_digits(digits)
    family = get_transform(transform)
    s = check_int("canvas_size", canvas_size)
    factor = check_int("factor", factor, low=1)
    chunk_size = check_int("chunk_size", chunk_size)
    if factor % 2 == 0:
        raise ValueError(f"factor must be odd (centres stay aligned), got {factor}")
    big = factor * s
    pts0 = factor * base_grid((big, big), False, dtype=torch.float64).view(1, -1, 2)
    lo = (factor - 1) // 2 * s
    out = []
    for start in range(0, digits.shape[0], chunk_size):
        p = params[start : start + chunk_size].double()
        d = digits[start : start + chunk_size]
        pts = family.transform_points(p, pts0.expand(p.shape[0], -1, -1))
        img = F.grid_sample(d, pts.view(-1, big, big, 2).float(), mode=mode, align_corners=False)
        total = img.sum(dim=(1, 2, 3)).double()
        inside = img[:, :, lo : lo + s, lo : lo + s].sum(dim=(1, 2, 3)).double()
        out.append(torch.where(total > 0, inside / total.clamp_min(1e-12), torch.ones_like(total)))
    return torch.cat(out).float()


__all__ = ["ink_fraction"]
