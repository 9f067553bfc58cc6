"""Bad input to stnkit.nn raises ValueError/TypeError whose message names the argument and what was expected/got.

(The geometry's cases live in test_geometry.py, in the class of each function.)
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from stnkit.nn import ParallelTransformers, SeriesTransformers, SpatialTransformer


def esc(s: str) -> str:
    return re.escape(s)


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


class TestModuleInput:
    def test_transformer_checks_channels_and_size(self):
        st = SpatialTransformer(in_channels=1, in_size=(28, 28))
        with pytest.raises(
            ValueError, match=r"x must have shape \(B, 1, 28, 28\) for this transformer, got shape \(2, 3, 28, 28\)"
        ):
            st(torch.rand(2, 3, 28, 28))
        with pytest.raises(ValueError, match=r"got shape \(2, 1, 20, 20\)"):
            st(torch.rand(2, 1, 20, 20))
