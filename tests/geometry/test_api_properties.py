"""The public warping API under random input: a clear TypeError/ValueError or a finite output, never NaN
for finite parameters, never slow. Shapes, dtypes, devices, every family, and parameters that are huge,
degenerate (zero, collapsing), NaN or inf."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stnkit
from stnkit.geometry import TRANSFORMS, get_transform
from stnkit.nn import SpatialTransformer

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# the values a parameter may take: ordinary, huge, tiny, exactly degenerate, and not finite
VALUES = st.one_of(
    st.floats(-3.0, 3.0, allow_nan=False),
    st.sampled_from([0.0, 1e-30, -1e-30, 3e4, -3e4, 6e4, 1e10, -1e10, 1e30, -1e30]),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
FAST = settings(
    max_examples=60,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@st.composite
def warp_inputs(draw):
    name = draw(st.sampled_from(sorted(TRANSFORMS)))
    family = get_transform(name)
    b, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    params = torch.tensor(draw(st.lists(VALUES, min_size=b * family.num_params, max_size=b * family.num_params)))
    out = draw(st.one_of(st.none(), st.tuples(st.integers(1, 10), st.integers(1, 10))))
    return name, params.reshape(b, family.num_params), (b, c, h, w), out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FAST
@given(case=warp_inputs(), seed=st.integers(0, 2**16))
def test_warp_raises_clearly_or_is_finite(device, dtype, case, seed):  # device: the conftest fixture
    name, params, shape, out_size = case
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)
    params = params.to(device=device, dtype=torch.float64).to(dtype)  # the dtype may round a huge value to inf
    try:
        y = stnkit.warp(x, params, name, out_size=out_size)
    except (TypeError, ValueError) as err:
        assert "\n" not in str(err) and str(err), err
        assert not torch.isfinite(params).all(), f"finite parameters refused: {err}"  # only NaN/inf are refused
        return
    assert y.dtype == dtype and y.shape[:2] == shape[:2]
    assert torch.isfinite(y).all(), f"{name} {dtype} gave non-finite output for parameters {params.tolist()}"


@FAST
@given(
    name=st.sampled_from(sorted(TRANSFORMS)),
    b=st.integers(1, 3),
    c=st.integers(1, 3),
    size=st.integers(8, 20),
    scale=st.sampled_from([0.0, 1.0, 1e3, 1e8]),
)
def test_a_spatial_transformer_on_any_input_is_finite(name, b, c, size, scale):
    torch.manual_seed(0)
    st_ = SpatialTransformer(transform=name, in_channels=c, in_size=size)
    with torch.no_grad():  # a head far from the identity (its weights are zero: the bias is the warp)
        st_.head.weight.normal_(std=scale)
    y = st_(torch.rand(b, c, size, size) * 10.0)
    assert y.shape == (b, c, size, size) and torch.isfinite(y).all()


@pytest.mark.parametrize("bad", [torch.zeros(2, 5), torch.zeros(3), "affine", None])
def test_params_of_the_wrong_shape_or_type_are_one_line(bad):
    with pytest.raises((TypeError, ValueError)) as err:
        stnkit.warp(torch.rand(2, 1, 8, 8), bad, "affine")
    assert "\n" not in str(err.value) and "params" in str(err.value)
