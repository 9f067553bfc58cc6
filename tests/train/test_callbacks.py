"""The callbacks every run gets: transformer diagnostics (and their collapse warnings), TensorBoard images."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.data import TensorDataset

pytest.importorskip("lightning")

from stnkit.models import CNN  # noqa: E402
from stnkit.nn import with_transformer  # noqa: E402
from stnkit.train import fit  # noqa: E402

CONFIG = {"epochs": 2, "batch_size": 8, "deterministic": True}


def _data(n=16, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g))


def _model(scale: float = 1.0):
    torch.manual_seed(0)
    model = with_transformer(CNN(1, 16, num_classes=3), in_channels=1, in_size=(16, 16))
    with torch.no_grad():  # the head's bias is the affine the transformer starts at (its weights are zero)
        model.transformer.head.bias.copy_(torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0]))
    return model


def _metrics(out):
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r.get("st_mean_scale")]


def test_diagnostics_log_the_warp_every_epoch(tmp_path):
    fit(_model(), _data(), _data(seed=1), CONFIG, out=tmp_path, quiet=True)
    rows = _metrics(tmp_path)
    assert len(rows) == 2  # one per epoch
    first = rows[0]
    # near the identity after one epoch: reads inside the input at about its own scale
    assert float(first["st_outside_fraction"]) < 0.2 and 0.8 < float(first["st_mean_scale"]) < 1.2


def test_a_transformer_zoomed_out_past_the_image_is_logged_and_warned(tmp_path):
    # a zoom-out by 4 (scale 4 on both axes): three quarters of the sampling points per axis read padding
    with pytest.warns(UserWarning, match="zoomed or moved out past the image.*--coverage-weight"):
        fit(_model(scale=4.0), _data(), _data(seed=1), {**CONFIG, "loc_lr_mult": 0.0}, out=tmp_path, quiet=True)
    rows = _metrics(tmp_path)
    assert float(rows[-1]["st_outside_fraction"]) > 0.5 and float(rows[-1]["st_mean_scale"]) == pytest.approx(4.0)


def test_a_transformer_that_never_leaves_the_identity_is_warned(tmp_path):
    with pytest.warns(UserWarning, match="never left the identity"):
        fit(_model(), _data(), _data(seed=1), {**CONFIG, "loc_lr_mult": 0.0}, out=tmp_path, quiet=True)


def test_tensorboard_gets_the_transformer_outputs_as_an_image(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(_model(), _data(), _data(seed=1), CONFIG, out=tmp_path, quiet=True)
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    assert [e.step for e in events.Images("transformer")] == [0, 1]
