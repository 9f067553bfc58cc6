"""World coordinates: how a transform in millimetres becomes a sampling grid of stnkit's warps.

A registration transform ``A`` maps a point of the **fixed** image's world to the point of the **moving**
image's world that it reads (the direction of ITK's transforms, and of stnkit's grids: output -> input). The
moving image is sampled on the fixed image's grid through

    fixed normalised -> fixed voxel -> fixed world -> (A) -> moving world -> moving voxel -> moving normalised,

that is ``theta = N_m  M_m^-1  A  M_f  N_f^-1`` with ``M`` each image's voxel -> world affine
(:class:`~stnkit.data.volumes.Volume`) and ``N`` its voxel -> normalised matrix
(:func:`~stnkit.geometry.normalization_matrix`, ``align_corners=False``). The top rows of ``theta`` are
``F.affine_grid``'s theta for :func:`stnkit.warp` (``out_size`` the fixed image's), so two images on
different grids (spacing, orientation, field of view) are compared point by point in millimetres.

NIfTI's world is RAS+ (x to the right, y anterior, z superior); ITK's is LPS+ (x to the left, y posterior):
:func:`ras_to_lps` converts a world matrix, :data:`LPS` is the flip.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..geometry import normalization_matrix

__all__ = ["LPS", "fixed_to_moving_theta", "ras_to_lps", "voxel_centres_world"]

# RAS <-> LPS: the first two world axes reversed (its own inverse)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_to_lps(matrix: np.ndarray) -> np.ndarray:
    """A 4x4 world transform between RAS points, written for LPS points (and back: the same formula)."""
    return LPS @ np.asarray(matrix, dtype=np.float64) @ LPS


def _as_tensor(m, like: Tensor | None = None) -> Tensor:
    if isinstance(m, Tensor):
        return m.to(torch.float64)
    return torch.as_tensor(np.asarray(m, dtype=np.float64), dtype=torch.float64)


def fixed_to_moving_theta(
    world: Tensor | np.ndarray,
    fixed_affine: np.ndarray,
    fixed_size: tuple[int, ...],
    moving_affine: np.ndarray,
    moving_size: tuple[int, ...],
) -> Tensor:
    """The normalised ``(k, k + 1)`` theta (float64) that samples MOVING on FIXED's grid through ``world``.

    Args:
        world: ``(k + 1, k + 1)`` transform of world points, fixed -> moving (differentiable if a tensor).
        fixed_affine, moving_affine: voxel ``(x, y[, z])`` -> world affines, ``(k + 1, k + 1)``.
        fixed_size, moving_size: spatial sizes ``(H, W)`` or ``(D, H, W)``.

    Example:
        >>> import numpy as np
        >>> m = np.diag([2.0, 2.0, 1.0])  # 2 mm pixels, both images on the same grid
        >>> fixed_to_moving_theta(np.eye(3), m, (4, 4), m, (4, 4))
        tensor([[1., 0., 0.],
                [0., 1., 0.]], dtype=torch.float64)
    """
    k = len(fixed_size)
    a = _as_tensor(world)
    nf = normalization_matrix(tuple(fixed_size))
    nm = normalization_matrix(tuple(moving_size))
    mf = _as_tensor(fixed_affine).to(a.device)
    mm_inv = torch.linalg.inv(_as_tensor(moving_affine)).to(a.device)
    theta = nm.to(a.device) @ mm_inv @ a @ mf @ torch.linalg.inv(nf).to(a.device)
    return theta[:k]


def voxel_centres_world(affine: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The world points of every voxel centre, ``(*size, k)``, in the tensor's axis order ``size``."""
    k = len(size)
    axes = [np.arange(n, dtype=np.float64) for n in reversed(size)]  # x, y[, z]
    mesh = np.meshgrid(*axes, indexing="ij")  # indexed (x, y[, z])
    vox = np.stack(mesh, axis=-1).reshape(-1, k)
    world = vox @ np.asarray(affine)[:k, :k].T + np.asarray(affine)[:k, k]
    return world.reshape(*reversed(size), k).transpose(*reversed(range(k)), k)
