"""stnkit.viz.transformer_outputs_grid: the inputs-over-outputs picture for TensorBoard."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from stnkit.models import create
from stnkit.nn import ParallelTransformers, SpatialTransformer
from stnkit.viz import transformer_outputs_grid


def zoomed(st: SpatialTransformer, scale: float) -> SpatialTransformer:
    """An affine transformer fixed at a zoom: its output differs visibly from its input."""
    with torch.no_grad():
        st.head.bias.copy_(torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0]))
    return st


def cell(grid: torch.Tensor, row: int, col: int, h: int, w: int, pad: int = 2) -> torch.Tensor:
    top, left = pad + row * (h + pad), pad + col * (w + pad)
    return grid[:, top : top + h, left : left + w]


def test_grey_rows_are_the_inputs_and_the_outputs():
    st = zoomed(SpatialTransformer(transform="affine", in_channels=1, in_size=10), 0.5).train()
    x = torch.rand(6, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    grid = transformer_outputs_grid(st, x, n=4)
    assert st.training  # mode restored
    assert grid.dtype == torch.uint8 and grid.shape == (3, 2 * 12 + 2, 4 * 12 + 2)
    assert grid.float().std() > 10  # not constant
    first = cell(grid, 0, 3, 10, 10)
    assert torch.equal(first[0], first[1]) and torch.equal(first[0], first[2])  # grey: the same in R, G, B
    assert torch.equal(first[0], (x[3, 0] * 255).round().to(torch.uint8))
    with torch.no_grad():
        out = st(x[:4])
    assert torch.equal(cell(grid, 1, 2, 10, 10)[0], (out[2, 0] * 255).round().to(torch.uint8))
    assert not torch.equal(cell(grid, 1, 2, 10, 10), cell(grid, 0, 2, 10, 10))


def test_rgb_with_denormalize_and_a_smaller_output():
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    x01 = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    model = create("st-cnn", in_channels=3, in_size=12, st_size=6)
    grid = transformer_outputs_grid(model, (x01 - mean) / std, n=8, denormalize=lambda t: t * std + mean)
    assert grid.shape == (3, 2 * 14 + 2, 3 * 14 + 2)  # n capped at the batch
    torch.testing.assert_close(cell(grid, 0, 1, 12, 12), (x01[1] * 255).round().to(torch.uint8), atol=1, rtol=0)
    # the 6x6 output is centred in its 12x12 cell, mid grey around it
    out_cell = cell(grid, 1, 0, 12, 12)
    assert (out_cell[:, :3] == 128).all() and not (out_cell[:, 3:9, 3:9] == 128).all()


def test_parallel_transformers_get_one_row_each():
    a = zoomed(SpatialTransformer(transform="affine", in_channels=1, in_size=8), 0.5)
    b = zoomed(SpatialTransformer(transform="affine", in_channels=1, in_size=8), 1.5)
    grid = transformer_outputs_grid(ParallelTransformers(a, b), torch.rand(2, 1, 8, 8), n=2)
    assert grid.shape == (3, 3 * 10 + 2, 2 * 10 + 2)
    assert not torch.equal(cell(grid, 1, 0, 8, 8), cell(grid, 2, 0, 8, 8))


@pytest.mark.parametrize(
    ("model", "images", "kwargs", "exc", "message"),
    [
        (create("cnn", in_size=8), torch.rand(2, 1, 8, 8), {}, TypeError, "model must be a spatial transformer"),
        (None, torch.rand(2, 2, 8, 8), {}, ValueError, "images must have 1 (grey) or 3 (RGB) channels, got 2"),
        (None, torch.rand(2, 1, 8, 8), {"n": 0}, ValueError, "n must be a positive int, got 0"),
        (None, torch.rand(2, 1, 8, 8), {"denormalize": 3}, TypeError, "denormalize must be a callable or None"),
    ],
)
def test_errors(model, images, kwargs, exc, message):
    model = model or SpatialTransformer(in_channels=images.shape[1], in_size=8)
    with pytest.raises(exc, match="^" + re.escape(message)):
        transformer_outputs_grid(model, images, **kwargs)


def test_viz_does_not_import_matplotlib():
    code = "import sys, stnkit.viz; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
