"""transform="dense" / "velocity": a field as the parameters of stnkit.warp, in 2-D and 3-D."""

from __future__ import annotations

import re

import pytest
import torch
from torch.autograd import gradcheck

import stnkit
from stnkit.geometry import DenseField, VelocityField, get_transform, integrate_velocity, warp_field

F64 = torch.float64
SIZES = {2: (5, 6), 3: (4, 5, 6)}


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def field(dims, b=2, size=None, scale=0.2, seed=1, dtype=torch.float32):
    size = size or SIZES[dims]
    return scale * (2 * rand(b, dims, *size, seed=seed, dtype=dtype) - 1)


def volume(dims, b=2, c=2, size=None, seed=0, dtype=torch.float32):
    return rand(b, c, *(size or SIZES[dims]), seed=seed, dtype=dtype)


@pytest.mark.parametrize("dims", [2, 3])
class TestFieldFamilies:
    def test_family_objects(self, dims):
        dense = get_transform("dense", dims=dims)
        vel = get_transform("velocity", dims=dims, steps=5)
        assert isinstance(dense, DenseField) and isinstance(vel, VelocityField)
        assert (dense.name, dense.dims, vel.name, vel.dims, vel.steps) == ("dense", dims, "velocity", dims, 5)
        assert get_transform("velocity", dims=dims).steps == 7
        assert get_transform("dense", dims=dims) is dense  # cached like the other families
        ident = dense.identity(3, SIZES[dims], dtype=F64)
        assert ident.shape == (3, dims, *SIZES[dims]) and ident.dtype == F64 and not ident.any()

    @pytest.mark.parametrize("name", ["dense", "velocity"])
    def test_zero_field_is_the_identity(self, dims, name):
        x = volume(dims)
        u = get_transform(name, dims=dims).identity(2, SIZES[dims])
        assert (stnkit.warp(x, u, name) - x).abs().max() < 1e-6

    def test_dense_is_warp_field_exactly(self, dims):
        x, u = volume(dims), field(dims)
        for kw in ({}, {"align_corners": True, "padding_mode": "border"}, {"mode": "nearest"}):
            assert torch.equal(stnkit.warp(x, u, "dense", **kw), warp_field(x, u, **kw))

    @pytest.mark.parametrize("steps", [0, 3, 7])
    def test_velocity_is_integrate_then_warp(self, dims, steps):
        x, v = volume(dims), field(dims)
        for ac in (False, True):
            ref = warp_field(x, integrate_velocity(v, steps, ac), align_corners=ac)
            got = stnkit.warp(x, v, get_transform("velocity", dims=dims, steps=steps), align_corners=ac)
            assert torch.equal(got, ref)
        if steps == 7:
            assert torch.equal(stnkit.warp(x, v, "velocity"), warp_field(x, integrate_velocity(v)))

    def test_the_field_sets_the_output_size(self, dims):
        big = tuple(2 * n for n in SIZES[dims])
        x, u = volume(dims, size=big), field(dims)
        out = stnkit.warp(x, u, "dense")
        assert out.shape == (2, 2, *SIZES[dims])
        assert torch.equal(out, warp_field(x, u))
        assert torch.equal(stnkit.warp(x, u, "dense", out_size=SIZES[dims]), out)
        with pytest.raises(ValueError, match=r"^out_size must be None or the field's spatial size .*got "):
            stnkit.warp(x, u, "dense", out_size=big)

    @pytest.mark.parametrize("name", ["dense", "velocity"])
    def test_gradcheck(self, dims, name):
        size = (3, 4) if dims == 2 else (2, 3, 3)
        fam = get_transform(name, dims=dims, **({"steps": 2} if name == "velocity" else {}))
        x = volume(dims, b=1, c=1, size=size, dtype=F64).requires_grad_()
        u = field(dims, b=1, size=size, dtype=F64).requires_grad_()
        assert gradcheck(lambda a, b: stnkit.warp(a, b, fam), (x, u), eps=1e-6, atol=1e-5)

    def test_bad_shapes_are_one_line(self, dims):
        x = volume(dims)
        other = 5 - dims
        cases = [
            (torch.zeros(2, 6), "must be a field of shape"),
            (torch.zeros(2, dims + 1, *SIZES[dims]), "must be a field of shape"),
            (torch.zeros(2, other, *SIZES[other]), f"that is a {other}-D field"),
            (torch.zeros(3, dims, *SIZES[dims]), "params must have the same batch size as x (2), got 3"),
            (torch.full((2, dims, *SIZES[dims]), float("nan")), "params must be finite"),
        ]
        for u, message in cases:
            with pytest.raises(ValueError, match=re.escape(message)) as err:
                stnkit.warp(x, u, "dense")
            assert "\n" not in str(err.value)


def test_unknown_names_list_the_field_families():
    with pytest.raises(ValueError, match=r"valid names: translation.*tps, dense, velocity$"):
        get_transform("fluid")
    with pytest.raises(TypeError, match=r"^invalid options for transform 'dense'"):
        get_transform("dense", steps=3)
    with pytest.raises(ValueError, match=r"^steps must be"):
        get_transform("velocity", steps=-1)
