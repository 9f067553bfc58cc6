"""stnkit.models.finegrained: parallel_st_cnn with heatmap localisers (window_scale)."""

import pytest
import torch

from stnkit.models.finegrained import CentreWindow, SmallConvNet, parallel_st_cnn


def _small(in_channels, in_size, num_classes):
    return SmallConvNet(in_channels, num_classes, 4)


def test_window_scale_starts_every_window_at_the_middle_with_that_scale_and_freezes_the_head():
    torch.manual_seed(0)
    m = parallel_st_cnn(
        _small,
        2,
        in_channels=3,
        in_size=64,
        crop_size=16,
        num_classes=5,
        features=8,
        loc_size=32,
        window_scale=0.3,
        evidence_classes=4,
    ).eval()
    _, params = m.warp_input(torch.rand(2, 3, 64, 64))
    for p in params:
        assert torch.allclose(p, torch.tensor([[0.3, 0.0, 0.0]] * 2), atol=1e-6)
    for st in m.transformer.transformers:
        assert isinstance(st.localization, CentreWindow) and not st.head.weight.requires_grad
        assert st.localization.heatmap.pooled_evidence.shape == (2, 1, 4)


class _PeakAtLastCell(torch.nn.Module):
    def forward(self, feats):
        b, _, h, w = feats.shape
        scores = torch.zeros(b, 1, h, w)
        scores[..., -1, -1] = 50.0
        return scores


def test_the_window_follows_the_heatmap():
    torch.manual_seed(0)
    m = parallel_st_cnn(_small, 1, in_channels=1, in_size=32, crop_size=8, num_classes=3, features=4, window_scale=0.25)
    st = m.transformer
    st.localization.heatmap.score = _PeakAtLastCell()  # the 16x16 heatmap peaks at its bottom-right cell
    p = st.predict_params(torch.rand(1, 1, 32, 32))
    assert torch.allclose(p, torch.tensor([[0.25, 15 / 16, 15 / 16]]), atol=1e-3)


def test_bad_window_scale_is_refused():
    with pytest.raises(ValueError, match=r"window_scale must be a finite number in \[0.001, 2.0\], got 0.0"):
        parallel_st_cnn(_small, 2, in_channels=3, in_size=64, crop_size=16, num_classes=5, features=8, window_scale=0)
