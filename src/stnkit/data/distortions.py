"""The paper's distorted-MNIST family, made with stnkit's own warps, with ground truth.

Every :class:`Distortion` (one per dataset name in :data:`DISTORTIONS`, made by
:func:`get_distortion`) turns a batch of 28x28 digits into distorted samples and
returns, for each sample, the parameters of the warp that made it, in stnkit's
convention: the parameters map **output** (sample) coordinates to **input**
(digit) coordinates, normalised to ``[-1, 1]`` over each image's own frame, x
before y, ``align_corners=False``. So for every family except ``tc`` (whose
clutter is pasted on top)::

    dist = get_distortion(name)
    images, params = dist(digits, generator=g)  # g: a seeded torch.Generator
    images == stnkit.warp(digits, params, dist.transform, out_size=dist.canvas_size)

(up to float rounding), and ``dist.canonicalize(images, params)`` warps the
samples back onto the 28x28 frame of the digit.

=======  =======  ============  =====================================================
name     canvas   ground truth  recipe (pixels of the 28x28 digit unless stated)
=======  =======  ============  =====================================================
mnist    28       attention     the digit itself (identity parameters ``1, 0, 0``)
r        28       similarity    rotation about the centre, angle ~ U[-90, 90] deg
rts      42       similarity    rotation ~ U[-45, 45] deg, scale ~ U[0.7, 1.2],
                                uniform position on the 42x42 canvas
p        28       projective    shrink by s ~ U[0.75, 1], then the four image corners
                                move by N(0, 5 px) (homography)
e        28       tps           shrink by s ~ U[0.75, 1], then the 4x4 grid of control
                                points moves by N(0, 1.5 px) (thin-plate spline)
tc       60       attention     uniform integer position on the 60x60 canvas, plus 6
                                clutter patches of 6x6 cut from other digits (max)
=======  =======  ============  =====================================================

and ``perturbed`` (28x28, projective ground truth), the IC-STN paper's perturbed
MNIST: the four image corners move by N(0, 0.25) each plus one shared N(0, 0.25)
translation, in normalised units (3.5 px each; Lin and Lucey 2017).

Generation is vectorised (a few tensor operations per chunk of samples, never a
Python loop over images) and deterministic: all the random numbers for a batch
are drawn first from the ``torch.Generator`` in a fixed order, then the images
are rendered chunk by chunk, so the result does not depend on the chunk size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int, check_number, check_range
from ..geometry import get_transform, quad_is_convex, warp

DIGIT_SIZE = 28
PX = 2.0 / DIGIT_SIZE  # one pixel of the 28x28 digit in normalised units
DEFAULT_CHUNK = 8192

# the names of the distortion recipes: the plain digits, the paper's five distorted datasets,
# and the IC-STN paper's perturbed MNIST
DISTORTIONS: tuple[str, ...] = ("mnist", "r", "rts", "p", "e", "tc", "perturbed")


def _uniform(n: int, lo: float, hi: float, generator, shape=()) -> Tensor:
    u = torch.rand((n, *shape), generator=generator, dtype=torch.float64)
    return lo + (hi - lo) * u


def check_digits(digits: object, name: str = "digits") -> Tensor:
    """Validate a batch of digits: float tensor ``(N, 1, 28, 28)`` with values in ``[0, 1]``."""
    if not isinstance(digits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 1, 28, 28), got {type(digits).__name__}")
    if not digits.is_floating_point():
        raise TypeError(f"{name} must be float32 in [0, 1] (divide uint8 digits by 255), got dtype {digits.dtype}")
    if digits.ndim != 4 or tuple(digits.shape[1:]) != (1, DIGIT_SIZE, DIGIT_SIZE) or digits.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 1, 28, 28) with N > 0, got {tuple(digits.shape)}")
    lo, hi = float(digits.min()), float(digits.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise ValueError(f"{name} must have values in [0, 1], got range [{lo}, {hi}]")
    return digits.float()


@dataclass
class Draw:
    """The random part of a batch: the ground-truth ``params`` and recipe-specific extras."""

    params: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    def slice(self, start: int, stop: int) -> Draw:
        return Draw(self.params[start:stop], {k: v[start:stop] for k, v in self.extra.items()})


class Distortion:
    """Base class of the distortion recipes. Subclasses set the class attributes and ``_draw``.

    Recipe classes are named ``<Kind>Distortion`` (``ProjectiveDistortion`` draws the
    ``p`` dataset and records :class:`stnkit.geometry.Projective` parameters).
    """

    name: str = ""
    transform: str = ""
    defaults: dict = {}
    mode: str = "bilinear"  # the sampler's interpolation

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            raise TypeError(f"unknown option(s) {', '.join(unknown)} for dataset {self.name!r}; valid options: {valid}")
        self.options = {**self.defaults, **options}
        self._check_options()
        self.family = get_transform(self.transform, **self._family_options())

    # -- description ----------------------------------------------------------------------------
    def _check_options(self) -> None:
        pass

    def _family_options(self) -> dict:
        return {}

    @property
    def canvas_size(self) -> int:
        return DIGIT_SIZE

    @property
    def num_params(self) -> int:
        return self.family.num_params

    def recipe(self) -> dict:
        """JSON-friendly description: name, canvas size, ground-truth family and all options."""
        opts = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return {
            "name": self.name,
            "canvas_size": self.canvas_size,
            "transform": self.transform,
            "num_params": self.num_params,
            "options": opts,
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    # -- generation ------------------------------------------------------------------------------
    def draw(self, n: int, generator: torch.Generator | None = None, **kwargs) -> Draw:
        """All random numbers for ``n`` samples, drawn in a fixed order (params are float32)."""
        check_int("n", n)
        d = self._draw(n, generator, **kwargs)
        return Draw(d.params.float().contiguous(), d.extra)

    def _draw(self, n: int, generator, **kwargs) -> Draw:
        raise NotImplementedError

    def render(self, digits: Tensor, draw: Draw, clutter_source: Tensor | None = None) -> Tensor:
        """Images ``(N, 1, S, S)`` of one chunk from its digits and its draw (no randomness)."""
        out = warp(digits, draw.params, self.family, out_size=self.canvas_size, mode=self.mode)
        return out.clamp_(0.0, 1.0)

    def __call__(
        self,
        digits: Tensor,
        generator: torch.Generator | None = None,
        *,
        clutter_source: Tensor | None = None,
        source_index: Tensor | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> tuple[Tensor, Tensor]:
        """Distort ``digits`` (float32 ``(N, 1, 28, 28)`` in ``[0, 1]``).

        Args:
            digits: the source digits.
            generator: a seeded ``torch.Generator`` for reproducible draws (``None``
                uses torch's global generator).
            clutter_source: for ``tc``, the digits the clutter is cut from
                (default: ``digits`` themselves, each sample's clutter from the others).
            source_index: for ``tc``, the index of each digit in ``clutter_source``,
                so that a sample's clutter never comes from its own digit (default:
                ``arange(N)`` when ``clutter_source`` is ``digits``, else no exclusion).
            chunk_size: samples rendered at once (bounds memory; the result does not
                depend on it).

        Returns:
            ``(images, params)``: float32 ``(N, 1, S, S)`` in ``[0, 1]`` and the float32
            ``(N, num_params)`` ground truth in family ``self.transform``.
        """
        digits = check_digits(digits)
        chunk_size = check_int("chunk_size", chunk_size, low=1)
        n = digits.shape[0]
        draw = self.draw(n, generator, **self._draw_kwargs(digits, clutter_source, source_index))
        pool = self._pool(digits, clutter_source)
        s = self.canvas_size
        images = torch.empty((n, 1, s, s), dtype=torch.float32)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            images[start:stop] = self.render(digits[start:stop], draw.slice(start, stop), pool)
        return images, draw.params

    def _draw_kwargs(self, digits, clutter_source, source_index) -> dict:
        return {}

    def _pool(self, digits, clutter_source):
        return None

    # -- ground truth ------------------------------------------------------------------------------
    def clean(self, digits: Tensor, params: Tensor) -> Tensor:
        """The samples without clutter: ``warp(digits, params)`` on the canvas."""
        return warp(digits, params, self.family, out_size=self.canvas_size, mode=self.mode).clamp_(0.0, 1.0)

    def canonical_grid(self, params: Tensor, out_size: int = DIGIT_SIZE) -> Tensor:
        """For each pixel of the digit's frame, where it lies in the sample: ``(N, H, W, 2)``.

        The inverse of the recorded warp; exact for the matrix families, solved by
        Newton's method for ``tps`` (:meth:`~stnkit.geometry.ThinPlateSpline.inverse_grid`).
        """
        if self.family.is_matrix:
            return self.family.grid(self.family.inverse(params), (out_size, out_size))
        return self.family.inverse_grid(params, out_size)

    def canonicalize(self, images: Tensor, params: Tensor, out_size: int = DIGIT_SIZE) -> Tensor:
        """Warp samples back onto the digit's 28x28 frame with the inverse of ``params``.

        With the recorded ground truth this recovers the source digit, up to the
        blur of resampling twice and the ink that left the canvas.
        """
        grid = self.canonical_grid(params, out_size)
        return F.grid_sample(images, grid.to(images.dtype), mode=self.mode, padding_mode="zeros", align_corners=False)


# -- clutter: patches cut from other digits, pasted with a pixel-wise maximum ----------------------
def draw_excluding(high: int, exclude: Tensor | None, shape: tuple[int, ...], generator) -> Tensor:
    """Uniform integers in ``[0, high)`` of ``(n, *shape)``, row ``i`` never in ``exclude[i]``.

    ``exclude`` is ``(n, k)`` of distinct values per row (``None``: no exclusion). One
    ``randint`` in ``[0, high - k)`` then a shift past each excluded value in increasing
    order, so every allowed value is equally likely.
    """
    if exclude is None:
        return torch.randint(0, high, shape, generator=generator)
    n, k = exclude.shape
    idx = torch.randint(0, high - k, shape, generator=generator)
    ordered = exclude.sort(dim=1).values.view(n, k, *(1,) * (len(shape) - 1))
    for j in range(k):
        idx = idx + (idx >= ordered[:, j]).long()
    return idx


def draw_clutter(
    n: int, m: int, patch_size: int, canvas_size: int, pool_size: int, exclude: Tensor | None, generator
) -> dict[str, Tensor]:
    """The random part of ``m`` clutter patches per sample, drawn in a fixed order.

    Returns ``clutter_index`` ``(n, m)`` (the digit of ``pool_size`` each patch is cut
    from, never one in ``exclude`` ``(n, k)``), ``crop`` ``(n, m, 2)`` (its top-left
    corner in the 28x28 digit, x then y) and ``paste`` ``(n, m, 2)`` (its top-left
    corner on the canvas), for :func:`paste_clutter`.
    """
    idx = draw_excluding(pool_size, exclude, (n, m), generator)
    crop = torch.randint(0, DIGIT_SIZE - patch_size + 1, (n, m, 2), generator=generator)
    paste = torch.randint(0, canvas_size - patch_size + 1, (n, m, 2), generator=generator)
    return {"clutter_index": idx, "crop": crop, "paste": paste}


def paste_max(images: Tensor, patches: Tensor, corners: Tensor) -> Tensor:
    """``images`` ``(n, 1, H, W)`` with ``patches`` ``(n, m, h, w)`` pasted at integer
    top-left ``corners`` ``(n, m, 2)`` (x then y, inside the canvas) by pixel-wise maximum."""
    n, _, big_h, big_w = images.shape
    ph, pw = patches.shape[-2:]
    rows = corners[..., 1, None] + torch.arange(ph)  # (n, m, ph)
    cols = corners[..., 0, None] + torch.arange(pw)
    flat = (rows[..., :, None] * big_w + cols[..., None, :]).reshape(n, -1)
    layer = torch.zeros((n, big_h * big_w), dtype=images.dtype)
    layer.scatter_reduce_(1, flat, patches.reshape(n, -1).to(images.dtype), reduce="amax")
    return torch.maximum(images, layer.view(n, 1, big_h, big_w))


def paste_clutter(images: Tensor, pool: Tensor, clutter: dict[str, Tensor], patch_size: int) -> Tensor:
    """``images`` ``(n, 1, S, S)`` with the patches of :func:`draw_clutter` cut from ``pool``
    ``(P, 1, 28, 28)`` and pasted on top (pixel-wise maximum)."""
    idx, crop = clutter["clutter_index"], clutter["crop"]
    ar = torch.arange(patch_size)
    rows = crop[..., 1, None] + ar  # (n, m, ps)
    cols = crop[..., 0, None] + ar
    patches = pool[idx[..., None, None], 0, rows[..., :, None], cols[..., None, :]]  # (n, m, ps, ps)
    return paste_max(images, patches, clutter["paste"])


# -- the recipes ----------------------------------------------------------------------------------
class IdentityDistortion(Distortion):
    """``mnist``: the undistorted 28x28 digit; ground truth the identity of ``attention``."""

    name = "mnist"
    transform = "attention"
    defaults: dict = {}

    def _draw(self, n, generator, **kwargs):
        return Draw(self.family.identity(n, dtype=torch.float64))

    def render(self, digits, draw, clutter_source=None):
        return digits.clone()


class RotationDistortion(Distortion):
    """``r``: rotation about the centre, angle uniform in ``angle`` degrees (28x28)."""

    name = "r"
    transform = "similarity"
    defaults = {"angle": (-90.0, 90.0)}

    def _check_options(self):
        self.options["angle"] = check_range("angle", self.options["angle"], low=-180.0, high=180.0, symmetric=True)

    def _draw(self, n, generator, **kwargs):
        lo, hi = (math.radians(a) for a in self.options["angle"])
        a = _uniform(n, lo, hi, generator)
        one, zero = torch.ones_like(a), torch.zeros_like(a)
        return Draw(torch.stack([one, a, zero, zero], dim=1))


class RotationScaleTranslationDistortion(Distortion):
    """``rts``: rotation, scale and a uniform random position on a larger canvas.

    The digit's 28x28 frame is scaled by ``s`` and rotated about its centre; its
    centre is then placed uniformly at random (x and y independently) among the
    positions where the scaled, unrotated frame (``28 s`` pixels wide) lies inside
    the canvas, i.e. within ``(canvas_size - 28 s) / 2`` pixels of the centre.
    """

    name = "rts"
    transform = "similarity"
    defaults = {"angle": (-45.0, 45.0), "scale": (0.7, 1.2), "canvas_size": 42}

    def _check_options(self):
        o = self.options
        o["angle"] = check_range("angle", o["angle"], low=-180.0, high=180.0, symmetric=True)
        o["canvas_size"] = check_int("canvas_size", o["canvas_size"], low=DIGIT_SIZE, high=4096)
        o["scale"] = check_range("scale", o["scale"], low=1e-3, high=o["canvas_size"] / DIGIT_SIZE)

    @property
    def canvas_size(self):
        return self.options["canvas_size"]

    def _draw(self, n, generator, **kwargs):
        lo, hi = (math.radians(a) for a in self.options["angle"])
        a = _uniform(n, lo, hi, generator)
        s = _uniform(n, *self.options["scale"], generator)
        big = self.canvas_size
        half = (big - DIGIT_SIZE * s) / 2.0  # pixels the centre may move each way
        shift = _uniform(n, -1.0, 1.0, generator, (2,)) * half[:, None]  # centre, pixels from canvas centre
        # output u (normalised over the canvas) -> input v (over the digit):
        # v = (big / 28) (1 / s) R(a) (u - shift / (big / 2))
        k = big / DIGIT_SIZE / s
        rot = torch.stack([torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)], dim=1).view(n, 2, 2)
        t = -(k[:, None, None] * rot) @ (shift / (big / 2.0)).unsqueeze(-1)
        return Draw(torch.stack([k, a, t[:, 0, 0], t[:, 1, 0]], dim=1))


def _shrink_opts(o: dict) -> None:
    o["scale"] = check_range("scale", o["scale"], low=1e-3, high=1.0)
    o["noise_std"] = check_number("noise_std", o["noise_std"], low=0.0, high=DIGIT_SIZE)


def _redraw(noise: Tensor, is_bad, std: float, generator, max_rounds: int) -> Tensor:
    """Redraw the rows of Gaussian ``noise`` for which ``is_bad`` holds, until none does.

    Only the redrawn rows are checked again. After ``max_rounds`` (practically
    unreachable) the remaining bad rows get zero noise (the plain shrink).
    """
    idx = torch.nonzero(is_bad(noise)).flatten()
    for _ in range(max_rounds):
        if idx.numel() == 0:
            return noise
        noise[idx] = torch.randn((idx.numel(), *noise.shape[1:]), generator=generator, dtype=noise.dtype) * std
        idx = idx[is_bad(noise[idx])]
    noise[idx] = 0.0
    return noise


class ProjectiveDistortion(Distortion):
    """``p``: shrink about the centre by ``s ~ U(scale)``, then a random homography.

    Stated in stnkit's (sampling) direction: the homography takes each corner
    ``c`` of the 28x28 image to ``c + n`` with ``n ~ N(0, noise_std px)`` in x and
    in y, and the output reads the shrunk digit there, so the recorded
    ``projective`` parameters map ``c -> (c + n) / s`` exactly. Draws whose moved
    corners would fold the image (a non-convex quadrilateral, which puts the
    horizon inside the picture) are redrawn.
    """

    name = "p"
    transform = "projective"
    defaults = {"scale": (0.75, 1.0), "noise_std": 5.0}
    max_redraws = 100

    def _check_options(self):
        _shrink_opts(self.options)

    def _draw(self, n, generator, **kwargs):
        s = _uniform(n, *self.options["scale"], generator)
        std = self.options["noise_std"] * PX
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
        noise = torch.randn((n, 4, 2), generator=generator, dtype=torch.float64) * std
        noise = _redraw(noise, lambda z: ~quad_is_convex(corners + z), std, generator, self.max_redraws)
        dst = (corners + noise) / s[:, None, None]
        return Draw(self.family.from_points(corners.expand(n, -1, -1), dst))


class ElasticDistortion(Distortion):
    """``e``: shrink about the centre by ``s ~ U(scale)``, then a random thin-plate spline.

    Stated in stnkit's (sampling) direction: the spline takes each control point
    ``c`` of a ``grid_size x grid_size`` grid spanning the image to ``c + n`` with
    ``n ~ N(0, noise_std px)``, and the output reads the shrunk digit there. The
    shrink after the spline is linear in the control-point targets, so the
    recorded ``tps`` parameters (offsets ``(c + n) / s - c``) are exact.
    """

    name = "e"
    transform = "tps"
    defaults = {"scale": (0.75, 1.0), "noise_std": 1.5, "grid_size": 4}

    def _check_options(self):
        _shrink_opts(self.options)
        self.options["grid_size"] = check_int("grid_size", self.options["grid_size"], low=2, high=32)

    def _family_options(self):
        return {"grid_size": self.options["grid_size"]}

    max_redraws = 100

    def _draw(self, n, generator, **kwargs):
        s = _uniform(n, *self.options["scale"], generator)
        c = self.family.control_points.to(torch.float64)
        k = c.shape[0]
        std = self.options["noise_std"] * PX
        noise = torch.randn((n, k, 2), generator=generator, dtype=torch.float64) * std

        def folds(z: Tensor) -> Tensor:  # on the digit's 28x28 pixel centres
            return self.family.folds(z.reshape(z.shape[0], 2 * k), DIGIT_SIZE)

        noise = _redraw(noise, folds, std, generator, self.max_redraws)
        offsets = (c + noise) / s[:, None, None] - c
        return Draw(offsets.reshape(n, 2 * k))


class TranslatedClutteredDistortion(Distortion):
    """``tc``: the digit at a uniform integer position on the canvas, plus clutter.

    The digit's top-left corner is uniform over the ``canvas_size - 27`` integer
    positions in x and in y, so it is copied without resampling blur and never
    cut. Then ``n_clutter`` patches of ``patch_size x patch_size`` pixels, each cut
    at a uniform position from a random *other* digit, are pasted at uniform
    integer positions (pixel-wise maximum). Ground truth: ``attention``
    (``s = canvas_size / 28``), which describes the digit and ignores the clutter.
    The digit is warped with ``mode="nearest"``: at integer shifts that is an
    exact copy, where bilinear sampling would leak float rounding (~1e-8) into
    the neighbouring pixels.
    """

    name = "tc"
    transform = "attention"
    defaults = {"canvas_size": 60, "n_clutter": 6, "patch_size": 6}
    mode = "nearest"  # integer shifts: nearest-neighbour sampling copies the digit exactly

    def _check_options(self):
        o = self.options
        o["canvas_size"] = check_int("canvas_size", o["canvas_size"], low=DIGIT_SIZE, high=4096)
        o["n_clutter"] = check_int("n_clutter", o["n_clutter"], low=0, high=1000)
        o["patch_size"] = check_int("patch_size", o["patch_size"], low=1, high=DIGIT_SIZE)

    @property
    def canvas_size(self):
        return self.options["canvas_size"]

    def _draw_kwargs(self, digits, clutter_source, source_index):
        if clutter_source is None:
            pool_size = digits.shape[0]
            if source_index is None:
                source_index = torch.arange(pool_size)
        else:
            clutter_source = check_digits(clutter_source, "clutter_source")
            pool_size = clutter_source.shape[0]
        return {"pool_size": pool_size, "source_index": source_index}

    def _pool(self, digits, clutter_source):
        return digits if clutter_source is None else clutter_source.float()

    def _draw(self, n, generator, pool_size: int | None = None, source_index: Tensor | None = None, **kwargs):
        big, m, ps = self.canvas_size, self.options["n_clutter"], self.options["patch_size"]
        pos = torch.randint(0, big - DIGIT_SIZE + 1, (n, 2), generator=generator)  # top-left, x then y
        # output pixel i reads digit pixel i - pos: v = (big / 28) u + (big - 28 - 2 pos) / 28
        scale = torch.full((n,), big / DIGIT_SIZE, dtype=torch.float64)
        t = (big - DIGIT_SIZE - 2.0 * pos.double()) / DIGIT_SIZE
        params = torch.stack([scale, t[:, 0], t[:, 1]], dim=1)
        if m == 0:
            return Draw(params)
        pool_size = n if pool_size is None else pool_size
        if source_index is not None:
            source_index = torch.as_tensor(source_index, dtype=torch.int64)
            if source_index.shape != (n,):
                raise ValueError(f"source_index must have shape ({n},), got {tuple(source_index.shape)}")
            if bool(((source_index < 0) | (source_index >= pool_size)).any()):
                raise ValueError(f"source_index must lie in [0, {pool_size}), got values outside")
        if pool_size < (2 if source_index is not None else 1):
            raise ValueError(f"tc needs at least 2 digits to cut clutter from other digits, got {pool_size}")
        exclude = None if source_index is None else source_index[:, None]
        clutter = draw_clutter(n, m, ps, big, pool_size, exclude, generator)
        return Draw(params, clutter)

    def render(self, digits, draw, clutter_source=None):
        out = self.clean(digits, draw.params)
        if not draw.extra:
            return out
        pool = digits if clutter_source is None else clutter_source
        return paste_clutter(out, pool, draw.extra, self.options["patch_size"])


class PerturbedDistortion(Distortion):
    """``perturbed``: the IC-STN paper's perturbed MNIST, a random homography of the 28x28 digit.

    Stated in stnkit's (sampling) direction, in normalised coordinates: the
    homography takes each corner ``c`` of the image to ``c + n_c + t``, with
    ``n_c ~ N(0, sigma)`` in x and in y for each corner and one translation
    ``t ~ N(0, translation)`` shared by the four corners, and the output reads the
    digit there; no shrink, so ink can leave the canvas. The recorded
    ``projective`` parameters map ``c -> c + n_c + t`` exactly. Defaults: 0.25
    and 0.25 (3.5 px of the 28x28 digit), as in the paper. Draws whose moved
    corners would fold the image (a non-convex quadrilateral) redraw ``n``.

    Random numbers, in this order: ``t`` ``(N, 2)``, then ``n`` ``(N, 4, 2)`` (corners
    ``(-1, -1), (1, -1), (1, 1), (-1, 1)``, x before y), then any redraws.

    References:
        C.-H. Lin and S. Lucey, "Inverse Compositional Spatial Transformer
        Networks", CVPR 2017 (arXiv:1612.03897), section 5.1.
    """

    name = "perturbed"
    transform = "projective"
    defaults = {"sigma": 0.25, "translation": 0.25}
    max_redraws = 100
    corners = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))

    def _check_options(self):
        for name in ("sigma", "translation"):
            self.options[name] = check_number(name, self.options[name], low=0.0, high=2.0)

    def _draw(self, n, generator, **kwargs):
        corners = torch.tensor(self.corners, dtype=torch.float64)
        t = torch.randn((n, 2), generator=generator, dtype=torch.float64) * self.options["translation"]
        std = self.options["sigma"]
        noise = torch.randn((n, 4, 2), generator=generator, dtype=torch.float64) * std
        noise = _redraw(noise, lambda z: ~quad_is_convex(corners + z), std, generator, self.max_redraws)
        dst = corners + noise + t[:, None, :]
        return Draw(self.family.from_points(corners.expand(n, -1, -1), dst))


_DISTORTIONS: dict[str, type[Distortion]] = {
    cls.name: cls
    for cls in (
        IdentityDistortion,
        RotationDistortion,
        RotationScaleTranslationDistortion,
        ProjectiveDistortion,
        ElasticDistortion,
        TranslatedClutteredDistortion,
        PerturbedDistortion,
    )
}
assert tuple(_DISTORTIONS) == DISTORTIONS


def get_distortion(name: str, **options) -> Distortion:
    """The distortion recipe of a distorted-MNIST dataset by name (one of :data:`DISTORTIONS`).

    Options override the recipe's defaults (see each class and the README):
    ``r``: ``angle``; ``rts``: ``angle``, ``scale``, ``canvas_size``; ``p``:
    ``scale``, ``noise_std`` (px); ``e``: ``scale``, ``noise_std`` (px),
    ``grid_size``; ``tc``: ``canvas_size``, ``n_clutter``, ``patch_size``;
    ``perturbed``: ``sigma``, ``translation`` (normalised units). An
    ``angle`` is a maximum in degrees (``45`` means ``[-45, 45]``) or a pair.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {', '.join(DISTORTIONS)}; got {type(name).__name__}")
    if name not in _DISTORTIONS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DISTORTIONS)}")
    return _DISTORTIONS[name](**options)


__all__ = [
    "DISTORTIONS",
    "DEFAULT_CHUNK",
    "Draw",
    "Distortion",
    "check_digits",
    "draw_clutter",
    "draw_excluding",
    "get_distortion",
    "paste_clutter",
    "paste_max",
]
