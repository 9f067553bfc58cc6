"""Coordinate frames: normalised grids and the pixel (OpenCV/kornia) convention.

stnkit's convention, used by every function in :mod:`stnkit.geometry`:

* Coordinates are **normalised** to ``[-1, 1]`` over the image, **x before y**
  (x runs along the width, left to right; y along the height, top to bottom),
  exactly as in :func:`torch.nn.functional.affine_grid`.
* With ``align_corners=False`` (the default) -1 and +1 are the outer *edges*
  of the border pixels, so pixel ``j`` of ``W`` has centre
  ``x = (2 j + 1) / W - 1``. With ``align_corners=True`` they are the *centres*
  of the border pixels: ``x = 2 j / (W - 1) - 1``.
* Transform parameters map **output** coordinates to **input** coordinates
  (inverse mapping, as in the paper and ``affine_grid``): the output pixel at
  ``p`` takes the input's value at ``T(p)``.

OpenCV (``cv2.warpAffine``) and kornia (``warp_affine``) instead describe a
warp by a matrix ``M`` in *pixel* coordinates mapping **source to
destination** (``dst = M @ src``). :func:`to_pixel_matrix` and
:func:`from_pixel_matrix` convert between the two.

References:
    M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu, "Spatial
    Transformer Networks", NeurIPS 2015 (arXiv:1506.02025): section 3.2, the
    grid generator in normalised coordinates and the inverse mapping.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_float_tensor, check_size, check_size_3d, is_tracing

# Grid coordinates are clamped to this range so that degenerate transforms
# (points at infinity, huge parameters) sample the padding instead of
# producing NaN or overflowing inside the sampler.
GRID_LIMIT = 1.0e4


def finite_grid(grid: Tensor) -> Tensor:
    """Replace NaN/inf and clamp to ``[-GRID_LIMIT, GRID_LIMIT]`` (far outside the image)."""
    grid = torch.nan_to_num(grid, nan=GRID_LIMIT, posinf=GRID_LIMIT, neginf=-GRID_LIMIT)
    return grid.clamp(-GRID_LIMIT, GRID_LIMIT)


# Grid operators depend only on the output size, align_corners, device and dtype:
# built once (in float64) and reused by every batch. Bounded, oldest out first.
_OPERATOR_CACHE: dict = {}
_OPERATOR_CACHE_SIZE = 64


def cached_operator(key: tuple, make):
    """``make()`` once per ``key``; not stored while tracing (FakeTensors would poison the cache)."""
    hit = _OPERATOR_CACHE.get(key)
    if hit is None:
        hit = make()
        if not is_tracing():
            if len(_OPERATOR_CACHE) >= _OPERATOR_CACHE_SIZE:
                _OPERATOR_CACHE.pop(next(iter(_OPERATOR_CACHE)))
            _OPERATOR_CACHE[key] = hit
    return hit


def interleave_xy(basis: Tensor, params_outer: bool) -> Tensor:
    """Turn a per-point basis ``(n, N)`` into the ``(2 n, 2 N)`` operator of a grid that is linear in its parameters.

    With ``params_outer=True`` the parameters are laid out ``(x-row, y-row)`` each of
    ``n`` coefficients (the affine ``2x3`` matrix, row-major); otherwise ``n`` points,
    each ``(x, y)`` (TPS offsets). ``params (B, 2n) @ operator`` is the grid
    ``(B, N * 2)``, x before y: one matrix product for the whole batch, whose backward
    is one matrix product too.
    """
    n, npts = basis.shape
    if params_outer:
        op = basis.new_zeros(2, n, npts, 2)
        op[0, :, :, 0] = basis
        op[1, :, :, 1] = basis
    else:
        op = basis.new_zeros(n, 2, npts, 2)
        op[:, 0, :, 0] = basis
        op[:, 1, :, 1] = basis
    return op.reshape(2 * n, 2 * npts)


def affine_operator(
    out_size: int | tuple[int, int],
    align_corners: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The cached ``(6, H*W*2)`` operator with ``theta.view(B, 6) @ op == F.affine_grid(theta, ...).view(B, -1)``
    (to float rounding).

    Example:
        >>> theta = torch.tensor([[1.0, 0.0, 0.5, 0.0, 1.0, 0.0]])
        >>> grid = (theta @ affine_operator((2, 2))).view(1, 2, 2, 2)
        >>> torch.allclose(grid, torch.nn.functional.affine_grid(theta.view(1, 2, 3), [1, 1, 2, 2], False))
        True
    """
    h, w = check_size("out_size", out_size)
    dtype = dtype or torch.get_default_dtype()

    def make() -> Tensor:
        return interleave_xy(homogeneous_points((h, w), align_corners), params_outer=True).to(device, dtype)

    return cached_operator(("affine", h, w, bool(align_corners), str(device), dtype), make)


def homogeneous_points(
    out_size: int | tuple[int, int],
    align_corners: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The identity grid's points as rows ``(x, y, 1)`` stacked column-wise: ``(3, H*W)``, float64 unless told."""
    pts = base_grid(out_size, align_corners, dtype=torch.float64).view(-1, 2)
    rows = torch.cat([pts.T, torch.ones(1, pts.shape[0], dtype=torch.float64)], 0)
    return rows.to(device=device, dtype=dtype or torch.float64)


def linspace_coords(
    n: int, align_corners: bool, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Normalised coordinates of the centres of ``n`` pixels along one axis.

    The same values on every device: the division is by a tensor, which CUDA rounds
    correctly, where a division by a Python number becomes a product with its
    reciprocal there (1 ulp off on most sizes).
    """
    idx = torch.arange(n, device=device, dtype=dtype or torch.get_default_dtype())
    if align_corners:
        return idx * (2.0 / (n - 1)) - 1.0 if n > 1 else torch.zeros_like(idx)
    return (2.0 * idx + 1.0) / torch.full_like(idx, n) - 1.0


def base_grid(
    out_size: int | tuple[int, int],
    align_corners: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The identity sampling grid: the normalised coordinates of every output pixel centre.

    ``grid[i, j] = (x_j, y_i)``, x before y, with ``x_j = (2 j + 1) / W - 1``
    (``align_corners=False``: -1 and +1 are the outer edges of the border
    pixels) or ``x_j = 2 j / (W - 1) - 1`` (``align_corners=True``: they are the
    border pixels' centres); the same for y along the height. This is
    ``F.affine_grid`` of the identity matrix, and every family's grid at its
    identity parameters.

    Args:
        out_size: ``(H, W)``, or an int for a square.
        align_corners: the frame, as in ``F.affine_grid``.
        device: of the result.
        dtype: of the result; torch's default dtype when ``None``.

    Returns:
        ``(H, W, 2)``.

    Example:
        >>> g = base_grid((2, 3))
        >>> g.shape
        torch.Size([2, 3, 2])
        >>> g[0, :, 0]  # x of the three column centres
        tensor([-0.6667,  0.0000,  0.6667])
        >>> g[:, 0, 1]  # y of the two row centres: y points down
        tensor([-0.5000,  0.5000])
        >>> base_grid((2, 3), align_corners=True)[0, :, 0]
        tensor([-1.,  0.,  1.])
    """
    h, w = check_size("out_size", out_size)
    ys = linspace_coords(h, align_corners, device=device, dtype=dtype)
    xs = linspace_coords(w, align_corners, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def base_grid_3d(
    out_size: int | tuple[int, int, int],
    align_corners: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The 3-D identity sampling grid: the normalised coordinates of every output voxel centre.

    ``grid[k, i, j] = (x_j, y_i, z_k)``, x before y before z (x along the width,
    y along the height, z along the depth), each axis as in :func:`base_grid`.
    This is ``F.affine_grid`` of the ``(3, 4)`` identity for a ``(B, C, D, H, W)``
    volume.

    Args:
        out_size: ``(D, H, W)``, or an int for a cube.
        align_corners: the frame, as in ``F.affine_grid``.
        device: of the result.
        dtype: of the result; torch's default dtype when ``None``.

    Returns:
        ``(D, H, W, 3)``.

    Example:
        >>> g = base_grid_3d((2, 3, 4))
        >>> g.shape
        torch.Size([2, 3, 4, 3])
        >>> g[:, 0, 0, 2]  # z of the two slice centres
        tensor([-0.5000,  0.5000])
    """
    if isinstance(out_size, bool):
        raise TypeError(f"out_size must be an int or a triple (D, H, W) of ints, got {out_size!r}")
    if isinstance(out_size, int):
        out_size = (out_size,) * 3
    if isinstance(out_size, torch.Size):  # under tracing the entries are 0-dim tensors
        out_size = tuple(int(s) for s in out_size)
    if (
        not isinstance(out_size, (tuple, list))
        or len(out_size) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in out_size)
    ):
        raise TypeError(f"out_size must be an int or a triple (D, H, W) of ints, got {out_size!r}")
    if min(out_size) <= 0:
        raise ValueError(f"out_size must be positive, got {tuple(out_size)}")
    d, h, w = out_size
    zs = linspace_coords(d, align_corners, device=device, dtype=dtype)
    ys = linspace_coords(h, align_corners, device=device, dtype=dtype)
    xs = linspace_coords(w, align_corners, device=device, dtype=dtype)
    gz, gy, gx = torch.meshgrid(zs, ys, xs, indexing="ij")
    return torch.stack([gx, gy, gz], dim=-1)


def normalization_matrix(
    size: int | tuple[int, int] | tuple[int, int, int],
    align_corners: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The ``(3, 3)`` matrix taking pixel coordinates ``(x, y, 1)`` to normalised ones (``(4, 4)`` in 3-D).

    Pixel coordinates are OpenCV's: the centre of pixel (row i, column j) is
    ``(x=j, y=i)``. Normalised coordinates are stnkit's (x before y, ``[-1, 1]``
    over the image, see the module docstring); its inverse goes back. A
    ``(D, H, W)`` size gives the ``(4, 4)`` matrix of voxel coordinates
    ``(x, y, z, 1)`` (``x`` the index along ``W``, ``z`` along ``D``): the frame of
    ``F.affine_grid``'s 3-D grids.

    Args:
        size: ``(H, W)`` of the image, or an int for a square, or ``(D, H, W)`` of a
            volume; at least 2 along every axis with ``align_corners=True``.
        align_corners: the normalised frame, as in ``F.affine_grid``.
        device: of the result.
        dtype: of the result; float64 when ``None``.

    Returns:
        ``(3, 3)`` (``(4, 4)`` for a volume), affine (last row ``(0, ..., 0, 1)``).

    Example:
        >>> n = normalization_matrix((4, 8))
        >>> n @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # centre of pixel (row 0, column 0)
        tensor([-0.8750, -0.7500,  1.0000], dtype=torch.float64)
        >>> normalization_matrix((4, 8), align_corners=True) @ torch.tensor([7.0, 3.0, 1.0], dtype=torch.float64)
        tensor([1., 1., 1.], dtype=torch.float64)
        >>> normalization_matrix((2, 4, 8)) @ torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
        tensor([-0.8750, -0.7500,  0.5000,  1.0000], dtype=torch.float64)
    """
    if isinstance(size, (tuple, list, torch.Size)) and len(size) == 3:
        sides = tuple(reversed(check_size_3d("size", tuple(size))))  # x, y, z along W, H, D
    else:
        h, w = check_size("size", size)
        sides = (w, h)
    dtype = dtype or torch.float64
    if align_corners and min(sides) < 2:
        shown = tuple(reversed(sides))
        raise ValueError(f"size must be at least {(2,) * len(sides)} with align_corners=True, got {shown}")
    k = len(sides)
    m = torch.eye(k + 1, dtype=torch.float64)
    for axis, n in enumerate(sides):
        m[axis, axis] = 2.0 / (n - 1) if align_corners else 2.0 / n
        m[axis, k] = -1.0 if align_corners else 1.0 / n - 1.0
    return m.to(device=device, dtype=dtype)


def _as_3x3(name: str, m: object) -> Tensor:
    m = check_float_tensor(name, m)
    if m.ndim != 3 or m.shape[-1] != 3 or m.shape[-2] not in (2, 3):
        raise ValueError(f"{name} must have shape (B, 2, 3) or (B, 3, 3), got shape {tuple(m.shape)}")
    if m.shape[-2] == 2:
        last = torch.tensor([0.0, 0.0, 1.0], device=m.device, dtype=m.dtype).expand(m.shape[0], 1, 3)
        m = torch.cat([m, last], dim=1)
    return m


def to_pixel_matrix(
    theta: Tensor,
    in_size: int | tuple[int, int],
    out_size: int | tuple[int, int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Convert stnkit matrices to OpenCV/kornia matrices.

    stnkit's ``theta`` maps **output** points to **input** points in normalised
    coordinates; the result maps **input** (source) pixels to **output**
    (destination) pixels, ``dst = M @ src``, with pixel centres at integer
    ``(x=column, y=row)``. :func:`from_pixel_matrix` is its inverse.

    Args:
        theta: ``(B, 2, 3)`` or ``(B, 3, 3)``, normalised, mapping output to input
            (stnkit's convention; ``family.matrix(params)`` gives it).
        in_size: ``(H, W)`` of the input image.
        out_size: ``(H, W)`` of the output image; defaults to ``in_size``.
        align_corners: the ``align_corners`` the normalised frame uses.

    Returns:
        ``(B, 3, 3)`` matrices ``M`` in pixel coordinates mapping source (input)
        to destination (output), as ``cv2.warpAffine(src, M[:2], (W, H))`` or
        ``cv2.warpPerspective(src, M, (W, H))`` expect, in ``theta``'s dtype.

    Raises:
        ValueError: ``theta`` has another shape or is singular (no inverse).

    Example:
        >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
        >>> to_pixel_matrix(theta, (4, 4))[0, 0, 2]  # shift the content left by a quarter of 4 px
        tensor(-1.)
    """
    theta = _as_3x3("theta", theta)
    in_size = check_size("in_size", in_size)
    out_size = in_size if out_size is None else check_size("out_size", out_size)
    n_in = normalization_matrix(in_size, align_corners, device=theta.device, dtype=theta.dtype)
    n_out = normalization_matrix(out_size, align_corners, device=theta.device, dtype=theta.dtype)
    # pixel_out -> pixel_in is N_in^-1 theta N_out; OpenCV wants its inverse.
    return torch.linalg.inv(n_out) @ _solve("theta", theta, n_in.expand_as(theta))


def from_pixel_matrix(
    m: Tensor,
    in_size: int | tuple[int, int],
    out_size: int | tuple[int, int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Convert OpenCV/kornia matrices (pixel, source to destination) to stnkit's.

    The inverse of :func:`to_pixel_matrix`.

    Args:
        m: ``(B, 2, 3)`` or ``(B, 3, 3)`` matrices in pixel coordinates (pixel
            centres at integer ``(x=column, y=row)``) mapping source (input) to
            destination (output), as ``cv2.warpAffine``/``cv2.warpPerspective``
            take them.
        in_size: ``(H, W)`` of the input image.
        out_size: ``(H, W)`` of the output image; defaults to ``in_size``.
        align_corners: the ``align_corners`` of the normalised frame wanted.

    Returns:
        ``(B, 3, 3)`` normalised matrices mapping output to input (stnkit's
        convention). Use ``[:, :2]`` for ``F.affine_grid``, or
        ``get_transform(name).from_matrix`` for a family's parameters.

    Raises:
        ValueError: ``m`` has another shape or is singular (no inverse).

    Example:
        >>> m = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # content 1 px left
        >>> from_pixel_matrix(m, (4, 4))[0, 0, 2]  # read 1 px = 2/4 to the right
        tensor(0.5000)
    """
    m = _as_3x3("m", m)
    in_size = check_size("in_size", in_size)
    out_size = in_size if out_size is None else check_size("out_size", out_size)
    n_in = normalization_matrix(in_size, align_corners, device=m.device, dtype=m.dtype)
    n_out = normalization_matrix(out_size, align_corners, device=m.device, dtype=m.dtype)
    # theta = N_in M^-1 N_out^-1
    return n_in @ _solve("m", m, torch.linalg.inv(n_out).expand_as(m))


def _solve(name: str, a: Tensor, b: Tensor, problem: str = "must be invertible, got a singular matrix") -> Tensor:
    """``solve(a, b)``; ``ValueError(f"{name} {problem}")`` where ``a`` is singular."""
    out, info = torch.linalg.solve_ex(a, b)
    if bool((info != 0).any()) or not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} {problem}")
    return out
