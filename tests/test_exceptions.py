"""Bad input raises ValueError/TypeError whose message names the argument and what was expected/got."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from stnkit import warp
from stnkit.geometry import (
    TRANSFORMS,
    base_grid,
    compose_grid,
    from_pixel_matrix,
    get_transform,
    normalization_matrix,
    sample,
    to_pixel_matrix,
)
from stnkit.nn import ParallelTransformers, SeriesTransformers, SpatialTransformer

FAMILIES = list(TRANSFORMS)


def esc(s: str) -> str:
    return re.escape(s)


@pytest.fixture
def x():
    return torch.rand(2, 3, 8, 8)


class TestWarpImage:
    @pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8), (1, 2, 3, 8, 8)])
    def test_wrong_rank(self, shape):
        params = get_transform("affine").identity(1)
        with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\), got shape " + esc(str(shape))):
            warp(torch.rand(shape), params)

    @pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
    def test_integer_dtype(self, dtype):
        x = torch.zeros(1, 1, 4, 4, dtype=dtype)
        with pytest.raises(TypeError, match=f"x must have a floating dtype.*got {esc(str(dtype))}"):
            warp(x, get_transform("affine").identity(1))

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
            warp([[1.0]], get_transform("affine").identity(1))

    @pytest.mark.parametrize("shape", [(0, 1, 4, 4), (1, 0, 4, 4), (1, 1, 0, 4)])
    def test_empty(self, shape):
        with pytest.raises(ValueError, match="x must be non-empty.*got shape " + esc(str(shape))):
            warp(torch.rand(shape), get_transform("affine").identity(1))


class TestWarpParams:
    @pytest.mark.parametrize("name", FAMILIES)
    def test_wrong_count(self, x, name):
        n = get_transform(name).num_params
        with pytest.raises(
            ValueError, match=esc(f"params for transform '{name}' must have shape (B, {n}), got shape (2, {n + 1})")
        ):
            warp(x, torch.zeros(2, n + 1), name)

    def test_wrong_rank(self, x):
        with pytest.raises(ValueError, match=esc("must have shape (B, 6), got shape (6,)")):
            warp(x, torch.zeros(6))
        with pytest.raises(ValueError, match=esc("must have shape (B, 8), got shape (2, 2, 3)")):
            warp(x, torch.zeros(2, 2, 3), "projective")  # only affine takes a (B, 2, 3) theta

    def test_integer_dtype(self, x):
        with pytest.raises(TypeError, match="params must have a floating dtype.*got torch.int64"):
            warp(x, torch.zeros(2, 6, dtype=torch.int64))

    def test_empty_batch(self):
        with pytest.raises(ValueError, match=esc("params must have a non-empty batch, got shape (0, 6)")):
            get_transform("affine").grid(torch.zeros(0, 6), (4, 4))

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize("name", FAMILIES)
    def test_not_finite(self, x, name, bad):
        p = get_transform(name).identity(2)
        p[1, 0] = bad
        with pytest.raises(ValueError, match="params must be finite, got NaN or inf"):
            warp(x, p, name)

    def test_batch_mismatch(self, x):
        with pytest.raises(ValueError, match=esc("params must have the same batch size as x (2), got 3")):
            warp(x, get_transform("affine").identity(3))


class TestWarpOptions:
    @pytest.mark.parametrize("size", [0, -3, (0, 5), (4, -1)])
    def test_non_positive_out_size(self, x, size):
        with pytest.raises(ValueError, match="out_size must be positive, got"):
            warp(x, get_transform("affine").identity(2), out_size=size)

    @pytest.mark.parametrize("size", [2.5, (4,), (4, 4, 4), (4.0, 4), "8", True])
    def test_bad_out_size_type(self, x, size):
        with pytest.raises(TypeError, match=r"out_size must be an int or a pair \(H, W\) of ints, got"):
            warp(x, get_transform("affine").identity(2), out_size=size)

    def test_bad_mode(self, x):
        with pytest.raises(ValueError, match="mode must be one of 'bilinear', 'nearest', 'bicubic', got 'linear'"):
            warp(x, get_transform("affine").identity(2), mode="linear")

    def test_bad_padding_mode(self, x):
        with pytest.raises(ValueError, match="padding_mode must be one of 'zeros', 'border', 'reflection', got 'wrap'"):
            warp(x, get_transform("affine").identity(2), padding_mode="wrap")

    def test_unknown_family_lists_valid_names(self, x):
        with pytest.raises(ValueError, match="unknown transform 'rigid'; valid names: " + ", ".join(FAMILIES)):
            warp(x, torch.zeros(2, 3), "rigid")
        assert FAMILIES == ["translation", "attention", "similarity", "affine", "projective", "tps"]

    def test_transform_wrong_type(self, x):
        with pytest.raises(TypeError, match="transform must be a name or a TransformFamily, got int"):
            warp(x, torch.zeros(2, 6), 6)

    def test_bad_family_options(self):
        with pytest.raises(ValueError, match="grid_size must be an int >= 2, got 1"):
            get_transform("tps", grid_size=1)
        with pytest.raises(ValueError, match="reg must be a finite number >= 0, got -1"):
            get_transform("tps", reg=-1.0)
        with pytest.raises(TypeError, match="invalid options for transform 'affine'"):
            get_transform("affine", grid_size=3)
        with pytest.raises(ValueError, match="options can only be given with a transform name"):
            get_transform(get_transform("tps"), grid_size=3)

    @pytest.mark.parametrize("bad", [0, -1])
    def test_identity_batch_size(self, bad):
        with pytest.raises(ValueError, match=f"batch_size must be a positive int, got {bad!r}"):
            get_transform("affine").identity(bad)

    @pytest.mark.parametrize("bad", [2.0, True])
    def test_identity_batch_size_type(self, bad):
        with pytest.raises(TypeError, match=f"batch_size must be an int, got {type(bad).__name__} {bad!r}"):
            get_transform("affine").identity(bad)


class TestSample:
    def test_grid_shape(self, x):
        with pytest.raises(ValueError, match=esc("grid must have shape (2, H_out, W_out, 2), got (3, 4, 4, 2)")):
            sample(x, torch.zeros(3, 4, 4, 2))
        with pytest.raises(ValueError, match=esc("grid must have shape (2, H_out, W_out, 2), got (2, 4, 4, 3)")):
            sample(x, torch.zeros(2, 4, 4, 3))
        with pytest.raises(ValueError, match="grid must have shape .* got list"):
            sample(x, [0.0])


class TestPoints:
    @pytest.mark.parametrize("shape", [(5, 2), (1, 5, 3), (1, 5, 2, 1)])
    @pytest.mark.parametrize("name", FAMILIES)
    def test_bad_shape(self, name, shape):
        fam = get_transform(name)
        with pytest.raises(
            ValueError, match=esc(f"points must have shape (B, N, 2) with x before y, got shape {shape}")
        ):
            fam.transform_points(fam.identity(1), torch.zeros(shape))

    @pytest.mark.parametrize("name", FAMILIES)
    def test_batch_mismatch(self, name):
        fam = get_transform(name)
        with pytest.raises(ValueError, match=esc("points must have the same batch size as params (2), got 3")):
            fam.transform_points(fam.identity(2), torch.zeros(3, 4, 2))

    def test_integer_points(self):
        fam = get_transform("affine")
        with pytest.raises(TypeError, match="points must have a floating dtype"):
            fam.transform_points(fam.identity(1), torch.zeros(1, 4, 2, dtype=torch.int32))


class TestMatrices:
    def test_from_matrix_shape(self):
        with pytest.raises(ValueError, match=esc("m must have shape (B, 3, 3), got shape (2, 2, 3)")):
            get_transform("affine").from_matrix(torch.zeros(2, 2, 3))

    def test_compose_names_the_argument(self):
        fam = get_transform("similarity")
        with pytest.raises(
            ValueError, match=esc("b for transform 'similarity' must have shape (B, 4), got shape (1, 3)")
        ):
            fam.compose(fam.identity(1), torch.zeros(1, 3))
        with pytest.raises(ValueError, match="a must be finite"):
            fam.compose(torch.full((1, 4), math.nan), fam.identity(1))

    def test_pixel_matrix_shape(self):
        with pytest.raises(ValueError, match=esc("theta must have shape (B, 2, 3) or (B, 3, 3), got shape (2, 3)")):
            to_pixel_matrix(torch.eye(3)[:2], (4, 4))
        with pytest.raises(ValueError, match=esc("m must have shape (B, 2, 3) or (B, 3, 3), got shape (1, 4, 4)")):
            from_pixel_matrix(torch.eye(4)[None], (4, 4))

    def test_pixel_matrix_sizes(self):
        with pytest.raises(ValueError, match="in_size must be positive"):
            to_pixel_matrix(torch.eye(3)[None], (0, 4))
        with pytest.raises(ValueError, match=esc("size must be at least (2, 2) with align_corners=True, got (1, 4)")):
            normalization_matrix((1, 4), align_corners=True)

    def test_base_grid_size(self):
        with pytest.raises(ValueError, match="out_size must be positive"):
            base_grid((3, 0))


class TestComposeGrid:
    def test_length_mismatch(self):
        p = get_transform("affine").identity(1)
        with pytest.raises(
            ValueError, match="params and transforms must be non-empty lists of equal length, got 2 and 1"
        ):
            compose_grid([p, p], ["affine"], (4, 4))
        with pytest.raises(ValueError, match="got 0 and 0"):
            compose_grid([], [], (4, 4))

    def test_batch_mismatch(self):
        a, b = get_transform("affine").identity(2), get_transform("tps").identity(3)
        with pytest.raises(ValueError, match=esc("must have the same batch size as params (2), got 3")):
            compose_grid([a, b], ["affine", "tps"], (4, 4))


class TestModules:
    @pytest.mark.parametrize(
        ("kw", "got"),
        [
            ({}, "in_channels=None, in_size=None"),
            ({"in_channels": 1}, "in_channels=1, in_size=None"),
            ({"in_size": 28}, "in_channels=None, in_size=28"),
        ],
    )
    def test_default_localization_needs_channels_and_size(self, kw, got):
        with pytest.raises(
            ValueError, match=esc(f"the default localisation net needs in_channels and in_size; got {got}")
        ):
            SpatialTransformer(**kw)

    def test_bad_in_channels(self):
        with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
            SpatialTransformer(in_channels=0, in_size=8)

    def test_bad_localization(self):
        with pytest.raises(TypeError, match="localization must be an nn.Module or None, got function"):
            SpatialTransformer(lambda t: t, in_channels=1, in_size=8)

    def test_bad_options(self):
        with pytest.raises(ValueError, match="mode must be one of"):
            SpatialTransformer(in_channels=1, in_size=8, mode="area")
        with pytest.raises(ValueError, match="padding_mode must be one of"):
            SpatialTransformer(in_channels=1, in_size=8, padding_mode="circular")
        with pytest.raises(ValueError, match="out_size must be positive"):
            SpatialTransformer(in_channels=1, in_size=8, out_size=(0, 4))
        with pytest.raises(ValueError, match="unknown transform 'rigid'; valid names"):
            SpatialTransformer(in_channels=1, in_size=8, transform="rigid")

    def test_forward_bad_input(self):
        st = SpatialTransformer(in_channels=1, in_size=8)
        with pytest.raises(ValueError, match=esc("x must have shape (B, C, H, W), got shape (1, 8, 8)")):
            st(torch.rand(1, 8, 8))
        with pytest.raises(TypeError, match="x must have a floating dtype"):
            st(torch.zeros(1, 1, 8, 8, dtype=torch.long))

    def test_nan_params_from_localization(self):
        st = SpatialTransformer(nn.Flatten(), in_channels=1, in_size=4)
        with torch.no_grad():
            st.head.bias.fill_(math.nan)
        with pytest.raises(ValueError, match="params must be finite"):
            st(torch.rand(1, 1, 4, 4))

    def test_stacks(self):
        a = SpatialTransformer(in_channels=1, in_size=8)
        b = SpatialTransformer(in_channels=1, in_size=8, out_size=4)
        with pytest.raises(ValueError, match="ParallelTransformers needs at least one transformer"):
            ParallelTransformers()
        with pytest.raises(ValueError, match="SeriesTransformers needs at least one transformer"):
            SeriesTransformers()
        with pytest.raises(ValueError, match="parallel transformers must share out_size"):
            ParallelTransformers(a, b)
        with pytest.raises(TypeError, match=r"transformers\[1\] must be a SpatialTransformer, got Linear"):
            ParallelTransformers(a, nn.Linear(2, 2))
        with pytest.raises(TypeError, match=r"transformers\[0\] must be a SpatialTransformer, got Identity"):
            SeriesTransformers(nn.Identity())


class TestPixelMatrixSingular:
    def test_to_pixel_matrix_singular(self):
        with pytest.raises(ValueError, match="theta must be invertible, got a singular matrix"):
            to_pixel_matrix(torch.zeros(1, 2, 3), (4, 4))

    def test_from_pixel_matrix_singular(self):
        with pytest.raises(ValueError, match="m must be invertible, got a singular matrix"):
            from_pixel_matrix(torch.zeros(1, 3, 3), (4, 4))


class TestModuleAndDeviceInput:
    def test_transformer_checks_channels_and_size(self):
        st = SpatialTransformer(in_channels=1, in_size=(28, 28))
        with pytest.raises(
            ValueError, match=r"x must have shape \(B, 1, 28, 28\) for this transformer, got shape \(2, 3, 28, 28\)"
        ):
            st(torch.rand(2, 3, 28, 28))
        with pytest.raises(ValueError, match=r"got shape \(2, 1, 20, 20\)"):
            st(torch.rand(2, 1, 20, 20))

    def test_compose_grid_needs_lists(self):
        p = get_transform("affine").identity(1)
        with pytest.raises(TypeError, match="params and transforms must be lists, got Tensor and list"):
            compose_grid(p, ["affine"], 4)

    def test_params_on_another_device(self):
        x = torch.rand(1, 1, 4, 4, device="meta")
        with pytest.raises(ValueError, match="params must be on the device of x"):
            warp(x, get_transform("affine").identity(1), "affine")
