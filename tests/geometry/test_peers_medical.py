"""Oracles: stnkit's dense fields against the medical-imaging peers, MONAI and VoxelMorph.

Each peer is imported with pytest.importorskip (both are test extras). Their convention, read
from their code (MONAI 1.6.1 ``monai/networks/blocks/warp.py``; VoxelMorph 0.3.4
``voxelmorph/nn/functional.py`` and ``modules.py``): a displacement in **voxels**, channels in
the tensor's axis order ``([d,] h, w)``, voxel ``i`` of the output reading the input at
``i + flow(i)``, normalised with ``2 v / (n - 1) - 1`` for ``grid_sample(align_corners=True)``.
MONAI's ``Warp`` pads with ``border`` by default, its ``DVF2DDF`` with ``zeros``; VoxelMorph
pads with ``zeros``. stnkit's converters (``to_monai``, ``to_voxelmorph`` and back) turn
stnkit's normalised, x-first fields into theirs.

Fields are smooth (coarse noise upsampled trilinearly), up to about 2 voxels. With the same
padding every point is compared; with stnkit's default padding (``border``, where the peers
use ``zeros``) only interior points, those whose samples never leave the grid. The
tolerance is 1e-10 in float64: the two sides differ only by rounding (the normalisation
``2 v / (n - 1) - 1`` against stnkit's frame, and the order of the additions), ~1e-15 per
operation, which the 7 squarings of an integration carry along without growing beyond
1e-12. 1e-10 is far below any convention error (a channel swap, a half-voxel shift or a
scale by ``n / (n - 1)`` move these fields by ~1e-2 or more; the control tests check that).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stnkit.geometry import (
    base_grid,
    base_grid_3d,
    compose_fields,
    from_monai,
    from_voxelmorph,
    grid_to_field,
    integrate_velocity,
    jacobian_determinant,
    to_monai,
    to_voxelmorph,
    warp_field,
)

monai_blocks = pytest.importorskip("monai.networks.blocks")
vxm_nn = pytest.importorskip("voxelmorph.nn.modules")
vxm_f = pytest.importorskip("voxelmorph.nn.functional")
vxm_utils = pytest.importorskip("voxelmorph.py.utils")

F64 = torch.float64
TOL = 1e-10
# W is not H + 1 or H: VoxelMorph's compose reads a (.., H, W) trailing shape with W - 1 in (2, 3) and H in
# (W - 1, W) as an affine matrix (see test_voxelmorph_compose_reads_some_fields_as_matrices)
SHAPES = {2: (9, 12), 3: (7, 8, 10)}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def smooth_voxels(shape, batch, amplitude, seed):
    """A smooth field in voxels (B, ndim, *shape): 4^ndim noise upsampled (linear, align_corners=True)."""
    ndim = len(shape)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, ndim, *(4,) * ndim, generator=gen, dtype=F64)
    mode = "bilinear" if ndim == 2 else "trilinear"
    return amplitude * F.interpolate(coarse, size=shape, mode=mode, align_corners=True)


def image(shape, batch, channels, seed):
    return torch.rand(batch, channels, *shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def interior(flow: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """(B, *spatial) bool: voxels whose source point i + flow(i) lies at least ``margin`` inside [0, n - 1]."""
    spatial = flow.shape[2:]
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=F64) for n in spatial], indexing="ij"))
    src = idx + flow
    ok = torch.ones(flow.shape[0], *spatial, dtype=torch.bool)
    for k, n in enumerate(spatial):
        ok &= (src[:, k] >= margin) & (src[:, k] <= n - 1 - margin)
    return ok


def monai_warp(x, ddf, padding_mode="border"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monai_blocks.Warp(mode="bilinear", padding_mode=padding_mode)(x, ddf)


# -- warping ------------------------------------------------------------------------------
class TestWarp:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("padding_mode", ["zeros", "border"])
    def test_monai_warp(self, ndim, align_corners, padding_mode):
        shape = SHAPES[ndim]
        x, ddf = image(shape, 2, 3, seed=1), smooth_voxels(shape, 2, 2.0, seed=2)
        ref = monai_warp(x, ddf, padding_mode)
        u = from_monai(ddf, align_corners)
        out = warp_field(x, u, padding_mode=padding_mode, align_corners=align_corners)
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
        torch.testing.assert_close(to_monai(u, align_corners), ddf, atol=TOL, rtol=0)

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_voxelmorph_spatial_transformer(self, ndim, align_corners):
        shape = SHAPES[ndim]
        x, flow = image(shape, 2, 2, seed=3), smooth_voxels(shape, 2, 2.0, seed=4)
        ref = vxm_nn.SpatialTransformer()(x, flow)  # its defaults: linear, align_corners=True, zeros
        u = from_voxelmorph(flow, align_corners)
        torch.testing.assert_close(warp_field(x, u, align_corners=align_corners), ref, atol=TOL, rtol=0)
        torch.testing.assert_close(to_voxelmorph(u, align_corners), flow, atol=TOL, rtol=0)
        # the functional form, one sample at a time (no batch axis)
        one = vxm_f.spatial_transform(x[0], flow[0], non_spatial_dims=(0,))
        torch.testing.assert_close(warp_field(x[:1], u[:1], align_corners=align_corners)[0], one, atol=TOL, rtol=0)

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_stnkit_default_padding_agrees_inside(self, ndim):
        """stnkit's warp_field pads with zeros as VoxelMorph; MONAI's border default agrees where no sample leaves."""
        shape = SHAPES[ndim]
        x, flow = image(shape, 1, 1, seed=5), smooth_voxels(shape, 1, 2.0, seed=6)
        vxm = vxm_nn.SpatialTransformer()(x, flow)
        monai = monai_warp(x, flow)  # border
        inside = interior(flow)[:, None].expand_as(x)
        assert 0 < int(inside.sum()) < inside.numel()  # some points leave the grid: the mask matters
        torch.testing.assert_close(vxm[inside], monai[inside], atol=TOL, rtol=0)
        torch.testing.assert_close(warp_field(x, from_monai(flow))[inside], monai[inside], atol=TOL, rtol=0)
        assert (vxm - monai).abs().max() > 1e-3  # and they differ outside

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_controls_the_oracle_can_fail(self, ndim):
        shape = SHAPES[ndim]
        x, flow = image(shape, 1, 1, seed=7), smooth_voxels(shape, 1, 2.0, seed=8)
        ref = vxm_nn.SpatialTransformer()(x, flow)
        from_pixels_wrong_order = from_voxelmorph(flow.flip(1))  # channels read x-first
        assert (warp_field(x, from_pixels_wrong_order) - ref).abs().max() > 1e-2
        u = from_voxelmorph(flow, align_corners=False)
        assert (warp_field(x, u, align_corners=True) - ref).abs().max() > 1e-2  # the frame mixed up

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_monai_reflection_is_about_voxel_centres(self, ndim):
        """MONAI's reflection (grid_sample, align_corners=True) mirrors about the border voxels' centres:
        stnkit's align_corners=True does the same; align_corners=False mirrors about the edges (a documented
        difference in docs/convention.md)."""
        shape = SHAPES[ndim]
        x, ddf = image(shape, 1, 1, seed=9), smooth_voxels(shape, 1, 3.0, seed=10)
        ref = monai_warp(x, ddf, "reflection")
        same = warp_field(x, from_monai(ddf, True), padding_mode="reflection", align_corners=True)
        torch.testing.assert_close(same, ref, atol=TOL, rtol=0)
        edges = warp_field(x, from_monai(ddf, False), padding_mode="reflection", align_corners=False)
        inside = interior(ddf)[:, None]
        torch.testing.assert_close(edges[inside], ref[inside], atol=TOL, rtol=0)
        assert (edges - ref).abs().max() > 1e-3

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_voxelmorph_align_corners_false_is_a_stretch(self, ndim):
        """VoxelMorph 0.3.4's align_corners=False still normalises voxels with (n - 1): grid_sample then reads
        voxel v n / (n - 1) - 1/2, so even the zero field resamples (a zoom by n / (n - 1) about the centre).
        stnkit reproduces it as the field of that grid; stnkit's converters assume its align_corners=True."""
        shape = SHAPES[ndim]
        x, flow = image(shape, 1, 1, seed=11), smooth_voxels(shape, 1, 1.0, seed=12)
        zero = torch.zeros_like(flow)
        quirk = vxm_nn.SpatialTransformer(align_corners=False)
        assert (quirk(x, zero) - x).abs().max() > 1e-2  # the zero field is not the identity
        # its grid: 2 (i + flow) / (n - 1) - 1, reversed to x-first, read in the align_corners=False frame
        ident = base_grid(shape, True, dtype=F64) if ndim == 2 else base_grid_3d(shape, True, dtype=F64)
        grid = ident[None] + from_voxelmorph(flow, align_corners=True).movedim(1, -1)
        u = grid_to_field(grid, align_corners=False)
        torch.testing.assert_close(warp_field(x, u, align_corners=False), quirk(x, flow), atol=TOL, rtol=0)


# -- integration ---------------------------------------------------------------------------
class TestIntegrate:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("steps", [1, 7])
    def test_monai_dvf2ddf(self, ndim, align_corners, steps):
        shape = SHAPES[ndim]
        dvf = smooth_voxels(shape, 2, 3.0, seed=20)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = monai_blocks.DVF2DDF(num_steps=steps)(dvf)  # zeros padding, its default
        v = from_monai(dvf, align_corners)
        out = integrate_velocity(v, steps, align_corners, padding_mode="zeros")
        torch.testing.assert_close(to_monai(out, align_corners), ref, atol=TOL, rtol=0)

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_voxelmorph_integrate(self, ndim, align_corners):
        shape = SHAPES[ndim]
        vel = smooth_voxels(shape, 2, 3.0, seed=21)
        ref = vxm_nn.IntegrateVelocityField(steps=7)(vel)
        v = from_voxelmorph(vel, align_corners)
        out = integrate_velocity(v, 7, align_corners, padding_mode="zeros")
        torch.testing.assert_close(to_voxelmorph(out, align_corners), ref, atol=TOL, rtol=0)
        torch.testing.assert_close(vxm_f.integrate_vec(vel, steps=7), ref, atol=TOL, rtol=0)

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_stnkit_default_padding_agrees_inside(self, ndim):
        """stnkit integrates with border padding by default, the peers with zeros. A squaring reads the field
        at p + u(p), and a difference at the border spreads inwards with every squaring, so no fixed mask
        isolates it; a velocity that vanishes on a 2-voxel rim never reads outside, and then the two agree
        everywhere. Without the rim they differ."""
        shape = SHAPES[ndim]
        vel = smooth_voxels(shape, 1, 1.0, seed=22)
        out = to_voxelmorph(integrate_velocity(from_voxelmorph(vel), 7))
        assert (out - vxm_nn.IntegrateVelocityField(steps=7)(vel)).abs().max() > 1e-3
        rim = torch.ones(shape, dtype=F64)
        for axis, n in enumerate(shape):
            t = torch.arange(n, dtype=F64)
            bump = ((t >= 2) & (t <= n - 3)).to(F64) * torch.sin(torch.pi * (t - 1) / (n - 2)) ** 2
            rim = rim * bump.view(*(-1 if k == axis else 1 for k in range(len(shape))))
        vel = vel * rim
        ref = vxm_nn.IntegrateVelocityField(steps=7)(vel)
        assert interior(ref).all() and ref.abs().max() > 0.3
        out = to_voxelmorph(integrate_velocity(from_voxelmorph(vel), 7))
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)

    def test_monai_refuses_zero_steps(self):
        """A peer quirk: DVF2DDF needs num_steps > 0; stnkit's steps=0 returns the field (first-order exp)."""
        with pytest.raises(ValueError, match="positive num_steps"):
            monai_blocks.DVF2DDF(num_steps=0)
        v = smooth_voxels(SHAPES[2], 1, 1.0, seed=23)
        assert torch.equal(integrate_velocity(v, 0), v)


# -- composition ---------------------------------------------------------------------------
class TestCompose:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_voxelmorph_compose(self, ndim, align_corners):
        """vxm compose([a, b]) is T(x) = a(b(x)): b applied to the points first; stnkit's compose_fields(a, b)
        (warp by a, then by b) is the same map (id + a) o (id + b)."""
        shape = SHAPES[ndim]
        a, b = smooth_voxels(shape, 2, 2.0, seed=30), smooth_voxels(shape, 2, 2.0, seed=31)
        ref = vxm_f.compose([a, b])
        ua, ub = from_voxelmorph(a, align_corners), from_voxelmorph(b, align_corners)
        out = compose_fields(ua, ub, align_corners, padding_mode="zeros")
        torch.testing.assert_close(to_voxelmorph(out, align_corners), ref, atol=TOL, rtol=0)
        # control: the other order is another map
        other = to_voxelmorph(compose_fields(ub, ua, align_corners, padding_mode="zeros"), align_corners)
        assert (other - ref).abs().max() > 1e-2

    def test_voxelmorph_compose_reads_some_fields_as_matrices(self):
        """A peer quirk: vxm compose tells matrices from fields by the trailing two sizes, so a 2-D field of
        width 3 or 4 and height W - 1 or W is taken for an affine matrix: its result is not the composition."""
        a, b = smooth_voxels((3, 4), 1, 0.5, seed=33), smooth_voxels((3, 4), 1, 0.5, seed=34)
        want = to_voxelmorph(compose_fields(from_voxelmorph(a), from_voxelmorph(b), padding_mode="zeros"))
        try:
            got = vxm_f.compose([a, b])
        except (RuntimeError, ValueError, AssertionError, IndexError):
            return  # refused outright: also not the composition
        assert got.shape != want.shape or (got - want).abs().max() > 1e-3


# -- Jacobian determinant ------------------------------------------------------------------
class TestJacobian:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_voxelmorph_jacobian_determinant(self, ndim, align_corners):
        shape = SHAPES[ndim]
        flow = smooth_voxels(shape, 1, 2.0, seed=40)
        ref = vxm_utils.jacobian_determinant(flow[0].movedim(0, -1).numpy())
        out = jacobian_determinant(from_voxelmorph(flow, align_corners), align_corners)[0].numpy()
        np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
