"""``parts``: cluttered RGB scenes whose class is fixed by two small parts, each part's box recorded.

A synthetic stand-in for fine-grained recognition (the paper's birds, where the
class shows in a few small parts such as the head and the body): a scene is a
``canvas_size x canvas_size`` RGB image (default 128) with a smooth random
background and clutter (random strokes and discs), and two small glyphs:

* **part A**, one of the four glyphs of set A (:data:`GLYPHS_A`: ring, triangle,
  plus, L), and
* **part B**, one of the four glyphs of set B (:data:`GLYPHS_B`: square, T, H, "="),

each at a random position, side (``part_size``, a fraction of the canvas; 0.16
to 0.22 by default, 20 to 28 px on 128) and rotation (uniform over the full
circle), in a random bright colour. The class is the pair ``(a, b)``: label
``4 * a + b``, 16 classes. The roles are fixed (part A always comes from set A),
so a part is known by its kind and either one alone leaves four classes open:
both must be seen. The two parts never overlap (their centres are at least
``1.2 x`` the mean of their half-diagonals apart); the clutter may touch them.

Everything is drawn at construction from one generator seeded by
:func:`~stnkit.data.dataset.stream_seed` ``(seed, None)``: the glyph kinds,
sizes, angles, positions and colours, and one integer seed per scene from which
its background and clutter are rendered. The pixels are rendered lazily in
``__getitem__`` (the same every time), so a set of any size costs little memory.

Boxes: ``ds.boxes`` ``(N, 2, 4)`` holds each part's ``(x0, y0, x1, y1)`` in
pixel edges (:mod:`stnkit.geometry.boxes`), ``[:, 0]`` part A and ``[:, 1]``
part B: the tight box of the pixels the glyph paints (its rendered alpha
above 0), found from the very rendering ``__getitem__`` composites.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int, check_range
from .dataset import stream_seed

PARTS_CANVAS = 128
GLYPHS_A = ("ring", "triangle", "plus", "L")
GLYPHS_B = ("square", "T", "H", "equals")
GLYPHS = GLYPHS_A + GLYPHS_B
NUM_PART_CLASSES = len(GLYPHS_A) * len(GLYPHS_B)
TEMPLATE = 64  # the glyph templates' side (sampled down to the glyph's size, bilinear)
ALPHA_MIN = 0.0  # a glyph "paints" a pixel where its alpha exceeds this (bilinear: exactly 0 off the glyph)
N_STROKES, N_DISCS = 10, 6


def _glyph_mask(name: str, n: int = TEMPLATE) -> np.ndarray:
    """The glyph ``name`` as an ``(n, n)`` float mask in ``[0, 1]`` (4x4 supersampled), filling ``[-1, 1]^2``."""
    s = 4 * n
    u = (np.arange(s) + 0.5) / s * 2 - 1
    x, y = np.meshgrid(u, u)  # x across, y down
    ax, ay = np.abs(x), np.abs(y)
    if name == "ring":
        r = np.hypot(x, y)
        m = (r > 0.55) & (r < 0.95)
    elif name == "triangle":  # equilateral, apex up
        m = (y < 0.7) & (ax < (y + 0.95) / 1.65 * 0.95)
    elif name == "plus":
        m = ((ax < 0.25) & (ay < 0.95)) | ((ay < 0.25) & (ax < 0.95))
    elif name == "L":
        m = ((x > -0.9) & (x < -0.4) & (ay < 0.95)) | ((y > 0.45) & (y < 0.95) & (ax < 0.9))
    elif name == "square":
        m = (ax < 0.8) & (ay < 0.8)
    elif name == "T":
        m = ((y > -0.95) & (y < -0.5) & (ax < 0.95)) | ((ax < 0.22) & (ay < 0.95))
    elif name == "H":
        m = ((np.abs(ax - 0.7) < 0.22) & (ay < 0.95)) | ((ay < 0.2) & (ax < 0.7))
    elif name == "equals":
        m = (np.abs(ay - 0.5) < 0.22) & (ax < 0.95)
    else:
        raise ValueError(f"glyph must be one of {', '.join(GLYPHS)}, got {name!r}")
    return m.reshape(n, 4, n, 4).mean(axis=(1, 3)).astype(np.float32)


_TEMPLATES = torch.from_numpy(np.stack([_glyph_mask(g) for g in GLYPHS]))[:, None]  # (8, 1, 64, 64)


def glyph_alpha(kinds: Tensor, sizes: Tensor, angles: Tensor, centres: Tensor, canvas: int) -> Tensor:
    """The alpha ``(B, canvas, canvas)`` of glyphs ``kinds`` (indices into :data:`GLYPHS`) of side ``sizes``
    px, rotated by ``angles`` (radians, counter-clockwise on screen) about ``centres`` ``(B, 2)`` (x, y in px)."""
    b = kinds.shape[0]
    pix = torch.arange(canvas, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(pix, pix, indexing="ij")
    dx = gx[None] - centres[:, 0, None, None]
    dy = gy[None] - centres[:, 1, None, None]
    c, s = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    half = (sizes / 2)[:, None, None]
    # the inverse rotation takes a canvas offset to the template's frame ([-1, 1] across the glyph's side)
    u = (c * dx - s * dy) / half
    v = (s * dx + c * dy) / half
    grid = torch.stack([u, v], dim=-1)
    alpha = F.grid_sample(_TEMPLATES[kinds], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return alpha[:, 0].reshape(b, canvas, canvas)


def alpha_box(alpha: Tensor) -> Tensor:
    """The tight box ``(B, 4)`` (pixel edges) of each ``(B, H, W)`` alpha's pixels above :data:`ALPHA_MIN`."""
    on = alpha > ALPHA_MIN
    cols, rows = on.any(1), on.any(2)
    w, h = alpha.shape[-1], alpha.shape[-2]
    ix, iy = torch.arange(w), torch.arange(h)
    x0 = torch.where(cols, ix, w).min(1).values
    x1 = torch.where(cols, ix, -1).max(1).values + 1
    y0 = torch.where(rows, iy, h).min(1).values
    y1 = torch.where(rows, iy, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float()


class PartsScenes(Dataset):
    """``n`` cluttered RGB scenes, each labelled by the pair of glyphs of its two parts (see the module).

    Args:
        n: the number of scenes.
        seed: the seed of the whole set (an int >= 0); the same ``(n, seed, ...)`` gives the same scenes.
        canvas_size: the scenes' side in pixels (at least 64; default 128).
        part_size: ``(low, high)``: each glyph's side as a fraction of the canvas, uniform.
        clutter: render the background noise, strokes and discs (``False``: a black background).

    ``ds[i]`` is ``(scene, label)``: float32 ``(3, S, S)`` in ``[0, 1]`` and an int64 scalar in
    ``[0, 16)``. Ground truth: ``ds.labels`` ``(N,)``, ``ds.kinds`` ``(N, 2)`` (part A's glyph
    in ``[0, 4)``, part B's in ``[0, 4)``), ``ds.boxes`` ``(N, 2, 4)``, ``ds.centres`` ``(N, 2, 2)``,
    ``ds.sizes`` and ``ds.angles`` ``(N, 2)``.

    Example:
        >>> ds = PartsScenes(4, seed=0)
        >>> x, y = ds[0]
        >>> tuple(x.shape), int(y) == 4 * int(ds.kinds[0, 0]) + int(ds.kinds[0, 1]), tuple(ds.boxes.shape)
        ((3, 128, 128), True, (4, 2, 4))
    """

    num_classes = NUM_PART_CLASSES
    in_channels = 3

    def __init__(
        self,
        n: int,
        seed: int = 0,
        canvas_size: int = PARTS_CANVAS,
        part_size: tuple[float, float] = (0.16, 0.22),
        clutter: bool = True,
    ):
        self.n = check_int("n", n)
        stream_seed(seed, None)  # validates seed
        self.seed = seed
        self.canvas_size = check_int("canvas_size", canvas_size, low=64)
        self.part_size = check_range("part_size", part_size, low=0.05, high=0.4)
        if not isinstance(clutter, bool):
            raise TypeError(f"clutter must be a bool, got {type(clutter).__name__}")
        self.clutter = clutter
        g = torch.Generator().manual_seed(stream_seed(seed, None))
        s = self.canvas_size
        a = torch.randint(len(GLYPHS_A), (n,), generator=g)
        b = torch.randint(len(GLYPHS_B), (n,), generator=g)
        self.kinds = torch.stack([a, b], dim=1)
        self.labels = a * len(GLYPHS_B) + b
        lo, hi = self.part_size
        self.sizes = (lo + (hi - lo) * torch.rand(n, 2, generator=g)) * s
        self.angles = (torch.rand(n, 2, generator=g) * 2 - 1) * math.pi
        self.centres = self._place(g)
        self.colours = 0.55 + 0.45 * torch.rand(n, 2, 3, generator=g)
        self.scene_seeds = torch.randint(0, 2**62, (n,), generator=g)
        self.boxes = torch.empty(n, 2, 4)
        for i in range(0, n, 256):  # the boxes of the very alphas __getitem__ paints
            j = slice(i, min(i + 256, n))
            for k in range(2):
                alpha = self._alpha(j, k)
                self.boxes[j, k] = alpha_box(alpha)

    def _place(self, g: torch.Generator) -> Tensor:
        """Centres ``(N, 2, 2)``: each glyph whole on the canvas, the two apart (redrawn until they are)."""
        s, n = self.canvas_size, self.n
        reach = self.sizes * math.sqrt(2) / 2 + 1  # the rotated glyph's half-diagonal, and a pixel
        centres = torch.empty(n, 2, 2)
        todo = torch.arange(n)
        for _ in range(1000):
            m = todo.numel()
            r = reach[todo]
            c = r[..., None] + torch.rand(m, 2, 2, generator=g) * (s - 2 * r[..., None])
            centres[todo] = c
            far = (c[:, 0] - c[:, 1]).norm(dim=1) >= 1.2 * r.sum(1)
            todo = todo[~far]
            if todo.numel() == 0:
                return centres
        raise ValueError(f"part_size {self.part_size} leaves no room for two separate parts on a {s} px canvas")

    def _alpha(self, index, k: int) -> Tensor:
        kinds = self.kinds[index, k] + (0 if k == 0 else len(GLYPHS_A))
        return glyph_alpha(
            kinds.reshape(-1),
            self.sizes[index, k].reshape(-1),
            self.angles[index, k].reshape(-1),
            self.centres[index, k].reshape(-1, 2),
            self.canvas_size,
        )

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"PartsScenes(n={self.n}, seed={self.seed}, canvas_size={self.canvas_size}, clutter={self.clutter})"

    def render(self, index: int, parts: tuple[int, ...] = (0, 1)) -> Tensor:
        """Scene ``index`` ``(3, S, S)`` with only the parts in ``parts`` painted (``()``: the background alone)."""
        i = range(self.n)[index]
        x = self._background(i) if self.clutter else torch.zeros(3, self.canvas_size, self.canvas_size)
        for k in parts:
            alpha = self._alpha(slice(i, i + 1), k)[0]
            x = x * (1 - alpha) + self.colours[i, k][:, None, None] * alpha
        return x

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        i = range(self.n)[index]
        return self.render(i), self.labels[i]

    def _background(self, i: int) -> Tensor:
        """Smooth colour noise (dark), then strokes and discs in bright colours: the clutter."""
        s = self.canvas_size
        g = torch.Generator().manual_seed(int(self.scene_seeds[i]))
        low = torch.rand(1, 3, 6, 6, generator=g) * 0.35
        x = F.interpolate(low, size=(s, s), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        pix = torch.arange(s, dtype=torch.float32) + 0.5
        gy, gx = torch.meshgrid(pix, pix, indexing="ij")
        p = torch.stack([gx, gy], dim=-1)[None]  # (1, S, S, 2)
        k = N_STROKES  # segments 0.05 to 0.25 of the canvas long, 1.5 to 3 px wide
        a = torch.rand(k, 2, generator=g) * s
        ang = torch.rand(k, generator=g) * 2 * math.pi
        length = (0.05 + 0.2 * torch.rand(k, generator=g)) * s
        d = length[:, None] * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
        width = 1.5 + 1.5 * torch.rand(k, generator=g)
        stroke_colours = 0.4 + 0.6 * torch.rand(k, 3, generator=g)
        a, d = a[:, None, None], d[:, None, None]
        t = (((p - a) * d).sum(-1) / (d * d).sum(-1)).clamp(0, 1)
        q = p - (a + t[..., None] * d)
        dist = (q[..., 0] ** 2 + q[..., 1] ** 2).sqrt()
        strokes = (width[:, None, None] / 2 + 0.5 - dist).clamp(0, 1)
        c = torch.rand(N_DISCS, 2, generator=g) * s  # discs of radius 0.01 to 0.04 of the canvas
        r = (0.01 + 0.03 * torch.rand(N_DISCS, generator=g)) * s
        disc_colours = 0.4 + 0.6 * torch.rand(N_DISCS, 3, generator=g)
        q = p - c[:, None, None]
        discs = (r[:, None, None] + 0.5 - (q[..., 0] ** 2 + q[..., 1] ** 2).sqrt()).clamp(0, 1)
        for alpha, colour in zip(torch.cat([strokes, discs]), torch.cat([stroke_colours, disc_colours])):
            x = x * (1 - alpha) + colour[:, None, None] * alpha
        return x


__all__ = [
    "GLYPHS",
    "GLYPHS_A",
    "GLYPHS_B",
    "NUM_PART_CLASSES",
    "PARTS_CANVAS",
    "PartsScenes",
    "alpha_box",
    "glyph_alpha",
]
