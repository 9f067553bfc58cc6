"""Registration by optimisation: align MOVING to FIXED by optimising the transform through stnkit's warps.

No network and no training: the parameters of the transform are optimised directly (Adam, or L-BFGS for the
linear stage) to minimise a similarity of :mod:`stnkit.nn.similarity` between FIXED and MOVING warped onto
FIXED's grid, on a pyramid (coarse to fine; the transform carries over between levels unchanged, since it
lives in millimetres and normalised coordinates, which do not depend on the resolution).

1. The **linear stage**: a rigid (rotation about the fixed image's centre and translation) or affine
   transform of world points, fixed -> moving (:mod:`stnkit.registration.frames`), parametrised so that
   every parameter is of order one: the rotation in radians (a rotation vector in 3-D), the linear part as
   ``I + L``, the translation in units of half the fixed image's largest extent.
2. For ``dense`` and ``velocity``: a displacement (or stationary velocity, integrated by scaling and
   squaring) field on the fixed grid, in the fixed image's normalised frame, applied **before** the linear
   map: a fixed point ``p`` reads MOVING at ``A(p + u(p))``. It is optimised in voxel units on each level,
   with the diffusion penalty ``smooth * smoothness_loss`` of its voxel displacements, and upsampled
   (trilinear) to the next level.

Intensities are rescaled per image (0 at the minimum, 1 at the 99th percentile) before the similarity is
computed; the warped output keeps MOVING's own values. Points outside MOVING read 0 (as SimpleITK's
``Resample`` does by default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_int, check_number
from ..data.volumes import Volume
from ..geometry import (
    base_grid,
    base_grid_3d,
    field_from_pixels,
    field_to_pixels,
    folding_fraction,
    integrate_velocity,
    rotation_matrix,
    sample,
    warp,
)
from ..nn.similarity import SIMILARITIES, ncc_loss, similarity_loss, smoothness_loss
from .frames import fixed_to_moving_theta

__all__ = [
    "OPTIMIZERS",
    "REGISTRATION_TRANSFORMS",
    "RegistrationResult",
    "as_volume",
    "level_steps",
    "parse_level_steps",
    "register",
]

REGISTRATION_TRANSFORMS = ("rigid", "affine", "dense", "velocity")
OPTIMIZERS = ("lbfgs", "adam")
# mutual information is computed on at most this many voxels (a fixed random subset per level)
MI_SAMPLES = 1 << 16
NCC_WINDOW = 9


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        transform: the name asked for.
        matrix: ``(k + 1, k + 1)`` float64, fixed world -> moving world (the point of MOVING each point of
            FIXED reads; millimetres and RAS for NIfTI, pixels for images and ``.npy``).
        parameters: the linear stage's parameters in world units (rotation in radians, translation in mm).
        field: ``(k, *fixed.spatial)`` displacement in FIXED's normalised frame (stnkit's field convention,
            channels ``(x, y[, z])``), applied before ``matrix``; ``None`` for ``rigid`` and ``affine``.
        field_world: the same field in world millimetres along the world axes, ``(k, *fixed.spatial)``.
        warped: MOVING on FIXED's grid, ``(C, *fixed.spatial)``, in MOVING's intensities.
        grid: the sampling grid ``warped`` was read with, ``(*fixed.spatial, k)``: for each point of FIXED
            the point of MOVING it reads, in MOVING's normalised frame (``F.grid_sample``'s, channels
            ``(x, y[, z])``, ``align_corners=False``): the whole map, linear stage and field together.
            Where both images share one grid, :func:`~stnkit.geometry.grid_to_field` of it is the
            registration as one displacement field in stnkit's convention.
        levels: one record per stage and pyramid level: stage, level, size, steps, first and last loss, seconds.
        seconds: the wall time of the whole registration.
        folding: the fraction of voxels where the field folds (Jacobian determinant <= 0), fields only.
    """

    transform: str
    matrix: np.ndarray
    parameters: dict
    field: Tensor | None
    field_world: np.ndarray | None
    warped: Tensor
    grid: Tensor
    levels: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    folding: float | None = None


def as_volume(x: Volume | Tensor | np.ndarray, name: str) -> Volume:
    """A :class:`Volume` as is; an array ``(H, W)``, ``(D, H, W)`` or ``(C, ...)`` with ``C`` 1 or 3 on the
    identity world (spacing 1)."""
    if isinstance(x, Volume):
        return x
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a Volume or a floating tensor, got {type(x).__name__}")
    if x.ndim in (2, 3) and not (x.ndim == 3 and x.shape[0] in (1, 3) and min(x.shape[1:]) > 3):
        x = x[None]
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (H, W), (D, H, W) or (C, *spatial), got {tuple(x.shape)}")
    return Volume(x.float(), np.eye(x.ndim), "array")


def _grey(vol: Volume) -> Tensor:
    return vol.data.float().mean(0, keepdim=True)[None]


def _rescale(x: Tensor) -> Tensor:
    flat = x.flatten()
    if flat.numel() > 1 << 20:
        flat = flat[torch.linspace(0, flat.numel() - 1, 1 << 20).long()]
    lo = float(flat.min())
    hi = float(torch.quantile(flat, 0.99))
    if hi <= lo:
        hi = float(flat.max())
    return (x - lo) / max(hi - lo, 1e-12)


def _pyramid_sizes(size: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Coarse to fine: each level halves every side (down to 4 voxels, never below the side itself)."""
    out = []
    for lev in reversed(range(levels)):
        f = 2**lev
        out.append(tuple(min(n, max(4, round(n / f))) for n in size))
    return out


def _down(x: Tensor, size: tuple[int, ...]) -> Tensor:
    return x if tuple(x.shape[2:]) == tuple(size) else F.interpolate(x, size=size, mode="area")


def _centre_radius(vol: Volume) -> tuple[np.ndarray, float]:
    k = vol.dims
    centre_vox = np.array([(n - 1) / 2 for n in reversed(vol.spatial)] + [1.0])
    centre = (vol.affine @ centre_vox)[:k]
    extent = np.array(vol.spacing) * np.array(list(reversed(vol.spatial)), dtype=np.float64)
    return centre, float(extent.max() / 2)


class _Linear:
    """The linear stage's parameters (order one) and the world matrix they make."""

    def __init__(self, kind: str, k: int, centre: np.ndarray, radius: float):
        self.kind, self.k, self.radius = kind, k, radius
        self.centre = torch.as_tensor(centre, dtype=torch.float64)
        self.t = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        if kind == "rigid":
            self.r = torch.zeros(3 if k == 3 else 1, dtype=torch.float64, requires_grad=True)
        else:
            self.r = torch.zeros(k, k, dtype=torch.float64, requires_grad=True)

    def params(self) -> list[Tensor]:
        return [self.r, self.t]

    def linear(self) -> Tensor:
        if self.kind == "affine":
            return torch.eye(self.k, dtype=torch.float64) + self.r
        if self.k == 3:
            return rotation_matrix(self.r[None])[0]
        c, s = torch.cos(self.r[0]), torch.sin(self.r[0])
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])

    def matrix(self) -> Tensor:
        lin = self.linear()
        offset = self.centre + self.radius * self.t - lin @ self.centre
        top = torch.cat([lin, offset[:, None]], 1)
        bottom = torch.zeros(1, self.k + 1, dtype=torch.float64)
        bottom[0, -1] = 1.0
        return torch.cat([top, bottom], 0)

    def describe(self) -> dict:
        with torch.no_grad():
            m = self.matrix().numpy()
        out = {"centre_mm": self.centre.tolist(), "translation_mm": (self.radius * self.t).detach().tolist()}
        if self.kind == "rigid":
            if self.k == 3:
                out["rotation_vector_rad"] = self.r.detach().tolist()
                out["rotation_deg"] = math.degrees(float(self.r.detach().norm()))
            else:
                out["rotation_deg"] = math.degrees(float(self.r.detach()[0]))
        out["matrix"] = m.tolist()
        return out


def _lr_at(step: int, steps: int, lr: float) -> float:
    """Cosine decay from ``lr`` to ``lr / 20`` over a level's steps."""
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))


def _similarity(name: str, warped: Tensor, fixed: Tensor, idx: Tensor | None, mask: Tensor | None = None) -> Tensor:
    if idx is not None:
        pick = None if mask is None else mask.flatten()[idx].view(1, 1, 1, -1)
        return similarity_loss(
            name, warped.flatten()[idx].view(1, 1, 1, -1), fixed.flatten()[idx].view(1, 1, 1, -1), mask=pick
        )
    if name == "ncc":  # the window (9) no wider than a coarse level's shortest side
        side = min(fixed.shape[2:])
        return ncc_loss(warped, fixed, window=min(NCC_WINDOW, side - 1 + side % 2), mask=mask)
    return similarity_loss(name, warped, fixed, mask=mask)


def _inside(grid: Tensor, moving_size: tuple[int, ...]) -> Tensor:
    """How far inside MOVING (``moving_size``, spatial, slowest axis first) each sampling point of ``grid``
    (1, *size, k; normalised, x first) lies: per axis a ramp from 0 at the volume's edge to 1 one voxel in
    (its outer voxel centre is at half a voxel), the product over axes; shape (1, 1, *size), no gradient. A
    ramp rather than a cut, so that the masked loss changes continuously as the transform moves."""
    with torch.no_grad():
        n = torch.tensor(moving_size[::-1], dtype=grid.dtype)  # x, y(, z): the grid's order
        return ((1 - grid.abs()) * n / 2).clamp(0, 1).prod(-1)[:, None].to(torch.float32)


def _mi_index(name: str, numel: int, seed: int) -> Tensor | None:
    if name != "mi" or numel <= MI_SAMPLES:
        return None
    return torch.randperm(numel, generator=torch.Generator().manual_seed(seed))[:MI_SAMPLES]


def _identity_grid(size: tuple[int, ...]) -> Tensor:
    return (base_grid(size) if len(size) == 2 else base_grid_3d(size))[None]


def _field_grid(theta: Tensor, u: Tensor) -> Tensor:
    """The grid of ``p -> theta (p + u(p))``: ``u`` ``(1, k, *size)`` normalised, theta ``(k, k + 1)``."""
    k = u.shape[1]
    q = _identity_grid(tuple(u.shape[2:])).to(u) + u.movedim(1, -1)
    th = theta.to(u)
    return q @ th[:, :k].T + th[:, k]


def register(
    fixed: Volume | Tensor | np.ndarray,
    moving: Volume | Tensor | np.ndarray,
    transform: str = "affine",
    loss: str = "ncc",
    smooth: float = 1.0,
    levels: int = 3,
    steps: int | Sequence[int] = 100,
    *,
    field_steps: int | Sequence[int] | None = None,
    lr: float = 0.02,
    field_lr: float = 0.2,
    optimizer: str = "lbfgs",
    velocity_steps: int = 7,
    overlap_only: bool = False,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
) -> RegistrationResult:
    """Align ``moving`` to ``fixed``: the transform, the warped image, the losses per level.

    Args:
        fixed, moving: :class:`~stnkit.data.volumes.Volume` (from :func:`~stnkit.data.volumes.read_volume`:
            its world affine is honoured, the grids may differ) or arrays on the identity world.
        transform: ``rigid``, ``affine`` (the linear stage only), ``dense`` or ``velocity`` (an affine stage,
            then the field).
        loss: ``mse``, ``ncc`` (local normalised cross-correlation, window 9) or ``mi`` (mutual information).
        smooth: weight of the field's diffusion penalty (fields only), relative to the similarity.
        levels: pyramid levels (each halves the resolution; 1 = full resolution only).
        steps: optimiser steps per level of the linear stage (L-BFGS: its iterations): one number for every
            level, or one per level from the coarsest to the finest (ANTs' ``100x50x0``; 0 skips a level).
        field_steps: steps per level of the field stage, one number or one per level (default ``steps``); a
            level with 0 steps still carries the field up to the next.
        lr: Adam's learning rate for the linear parameters (order one), cosine-decayed per level.
        field_lr: Adam's learning rate for the field, in voxels of the level.
        optimizer: ``lbfgs`` (default) or ``adam``, for the linear stage (the field always uses Adam).
        velocity_steps: squarings of the velocity integration.
        overlap_only: count the similarity only at the fixed points that read inside MOVING, weighted down
            over its outermost voxel (ITK's metrics count only the points that map inside the moving image).
            Off by default: every fixed point counts, those that read MOVING's zero padding too, which biases
            an affine fit when both images are crops of a larger scene (a head cut by the field of view).
        seed: of the voxel subset mutual information is computed on (for volumes over 65,536 voxels).
        progress: called after each step with a dict (stage, level, levels, size, step, steps, loss, done=False),
            and at the end of each level with ``done=True`` and the level's final loss.

    Example:
        >>> import torch
        >>> yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        >>> def blobs(dx):  # two blobs of different sizes, moved dx pixels to the right
        ...     return torch.exp(-((xx - 12 - dx) ** 2 + (yy - 14) ** 2) / 20) + torch.exp(-((xx - 20 - dx) ** 2 + (yy - 20) ** 2) / 8)
        >>> res = register(blobs(0), blobs(3), "rigid", loss="mse", levels=2, steps=50)
        >>> res.matrix[:2].round(decimals=1) + 0.0  # fixed (x, y) reads moving at (x + 3, y)
        array([[1., 0., 3.],
               [0., 1., 0.]])
    """
    t0 = time.perf_counter()
    fixed, moving = as_volume(fixed, "fixed"), as_volume(moving, "moving")
    check_choice("transform", transform, REGISTRATION_TRANSFORMS)
    check_choice("loss", loss, tuple(SIMILARITIES))
    check_choice("optimizer", optimizer, OPTIMIZERS)
    smooth = check_number("smooth", smooth, low=0.0)
    levels = check_int("levels", levels, low=1, high=8)
    lr = check_number("lr", lr, low=1e-9)
    field_lr = check_number("field_lr", field_lr, low=1e-9)
    schedule = level_steps("steps", steps, levels)
    field_schedule = schedule if field_steps is None else level_steps("field_steps", field_steps, levels)
    if fixed.dims != moving.dims:
        raise ValueError(
            f"fixed and moving must both be 2-D or both 3-D, got a {fixed.dims}-D fixed {fixed.spatial} "
            f"and a {moving.dims}-D moving {moving.spatial}"
        )
    k = fixed.dims
    f_full, m_full = _rescale(_grey(fixed)), _rescale(_grey(moving))
    sizes_f = _pyramid_sizes(fixed.spatial, levels)
    sizes_m = _pyramid_sizes(moving.spatial, levels)
    pyr_f = [_down(f_full, s) for s in sizes_f]
    pyr_m = [_down(m_full, s) for s in sizes_m]
    centre, radius = _centre_radius(fixed)
    records: list[dict] = []

    def theta_of(world: Tensor) -> Tensor:
        return fixed_to_moving_theta(world, fixed.affine, fixed.spatial, moving.affine, moving.spatial)

    def report(stage, lev, size, step, nsteps, value, done=False):
        if progress is not None:
            info = {"stage": stage, "level": lev + 1, "levels": levels, "size": size, "step": step, "steps": nsteps}
            progress({**info, "loss": value, "done": done})

    # 1. the linear stage
    lin = _Linear("rigid" if transform == "rigid" else "affine", k, centre, radius)
    for lev, (fl, ml) in enumerate(zip(pyr_f, pyr_m)):
        start = time.perf_counter()
        idx = _mi_index(loss, fl.numel(), seed + lev)
        size = tuple(fl.shape[2:])

        def objective(ml=ml, fl=fl, size=size, idx=idx) -> Tensor:
            theta = theta_of(lin.matrix())[None].float()
            mask = (
                _inside(_field_grid(theta[0], torch.zeros(1, k, *size)), tuple(ml.shape[2:])) if overlap_only else None
            )
            return _similarity(loss, warp(ml, theta, "affine", out_size=size), fl, idx, mask)

        nsteps = schedule[lev]

        def tell(step, value, lev=lev, size=size, nsteps=nsteps):
            report("linear", lev, size, step, nsteps, value)

        losses = _optimise(lin.params(), objective, optimizer, nsteps, lr, tell)
        with torch.no_grad():
            final = float(objective())
        records.append(_record("linear", lev, size, len(losses), losses, final, start))
        report("linear", lev, size, len(losses), nsteps, final, done=True)

    matrix = lin.matrix().detach()
    theta = theta_of(matrix)
    parameters = lin.describe()
    parameters["kind"] = lin.kind

    # 2. the field stage
    u = None
    if transform in ("dense", "velocity"):
        d = None
        for lev, (fl, ml) in enumerate(zip(pyr_f, pyr_m)):
            start = time.perf_counter()
            size = tuple(fl.shape[2:])
            if d is None:
                d = torch.zeros(1, k, *size)
            else:  # upsample the previous level's field: normalised units carry over
                up = F.interpolate(field_from_pixels(d), size=size, mode="bilinear" if k == 2 else "trilinear")
                d = field_to_pixels(up)
            d = d.detach().requires_grad_(True)
            idx = _mi_index(loss, fl.numel(), seed + 100 + lev)

            def displacement(d=d) -> Tensor:
                un = field_from_pixels(d)
                return integrate_velocity(un, velocity_steps) if transform == "velocity" else un

            def objective(d=d, fl=fl, ml=ml, idx=idx) -> Tensor:
                grid = _field_grid(theta, displacement()).float()
                mask = _inside(grid, tuple(ml.shape[2:])) if overlap_only else None
                return _similarity(loss, sample(ml, grid), fl, idx, mask) + smooth * smoothness_loss(d)

            nsteps = field_schedule[lev]

            def tell(step, value, lev=lev, size=size, nsteps=nsteps):
                report(transform, lev, size, step, nsteps, value)

            losses = _optimise([d], objective, "adam", nsteps, field_lr, tell)
            with torch.no_grad():
                final = float(objective())
            records.append(_record(transform, lev, size, len(losses), losses, final, start))
            report(transform, lev, size, len(losses), nsteps, final, done=True)
        with torch.no_grad():
            un = field_from_pixels(d.detach())
            u = integrate_velocity(un, velocity_steps) if transform == "velocity" else un

    # the warped image: MOVING's own values (every channel) on FIXED's full grid
    with torch.no_grad():
        m_in = moving.data.float()[None]
        if u is None:
            th = theta[None].float()
            grid = F.affine_grid(th, [1, 1, *fixed.spatial], align_corners=False)
            warped = warp(m_in, th, "affine", out_size=fixed.spatial)[0]
            field_world = folding = None
        else:
            grid = _field_grid(theta, u).float()
            warped = sample(m_in, grid)[0]
            vox = field_to_pixels(u.double())[0].numpy()  # (k, *spatial), voxels along (x, y[, z])
            field_world = np.tensordot(fixed.affine[:k, :k], vox, axes=1)
            folding = float(folding_fraction(u))
    return RegistrationResult(
        transform=transform,
        matrix=matrix.numpy(),
        parameters=parameters,
        field=None if u is None else u[0],
        field_world=field_world,
        warped=warped,
        grid=grid[0],
        levels=records,
        seconds=time.perf_counter() - t0,
        folding=folding,
    )


def level_steps(name: str, value: int | Sequence[int], levels: int) -> list[int]:
    """The optimiser steps of each pyramid level, coarsest first: ``value`` for every level, or ``value``'s own
    numbers (as many as ``levels``; ANTs' ``100x50x0`` is ``(100, 50, 0)``)."""
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ValueError(
                f"{name} must give one number per pyramid level (levels={levels}), got {len(value)}: {list(value)}"
            )
        return [check_int(f"{name}[{i}]", v, low=0, high=1_000_000) for i, v in enumerate(value)]
    return [check_int(name, value, low=0, high=1_000_000)] * levels


def parse_level_steps(text: str) -> int | list[int]:
    """``"100"`` -> 100, ``"100x50x0"`` -> ``[100, 50, 0]`` (the command line's ``--steps``, as ANTs spells it)."""
    parts = str(text).strip().lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"steps must be a number or numbers joined by 'x' (as 100x50x0), got {text!r}") from None
    return numbers[0] if len(numbers) == 1 else numbers


def _optimise(params: list[Tensor], objective, optimizer: str, steps: int, lr: float, tell) -> list[float]:
    """Minimise ``objective()`` over ``params``: Adam (cosine-decayed ``lr``) or L-BFGS; the losses seen."""
    losses: list[float] = []
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr)
            opt.zero_grad()
            value = objective()
            value.backward()
            opt.step()
            losses.append(float(value.detach()))
            tell(step + 1, losses[-1])
    elif steps:
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, tolerance_change=1e-7, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            value = objective()
            value.backward()
            losses.append(float(value.detach()))
            tell(min(len(losses), steps), losses[-1])
            return value

        opt.step(closure)
    return losses


def _record(stage, lev, size, n, losses, final, start) -> dict:
    return {
        "stage": stage,
        "level": lev + 1,
        "size": list(size),
        "steps": n,
        "first_loss": losses[0] if losses else final,
        "last_loss": final,
        "seconds": time.perf_counter() - start,
    }
