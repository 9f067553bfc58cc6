"""stnkit.nn.heatmap: soft-argmax centres, uniform start, gradients, translation equivariance."""

import pytest
import torch

from stnkit.nn import HeatmapLocalization, soft_argmax_2d


def test_uniform_scores_give_the_middle():
    c, p = soft_argmax_2d(torch.zeros(2, 3, 5, 7))
    assert torch.allclose(c, torch.zeros(2, 3, 2), atol=1e-6)
    assert torch.allclose(p.sum((2, 3)), torch.ones(2, 3))


def test_a_peak_gives_its_pixel_centre():
    s = torch.full((1, 1, 8, 8), -1e4)
    s[0, 0, 2, 5] = 0.0  # row 2, column 5
    c, _ = soft_argmax_2d(s)
    assert torch.allclose(c[0, 0], torch.tensor([(2 * 5 + 1) / 8 - 1, (2 * 2 + 1) / 8 - 1]))


def test_localization_starts_at_the_middle_whatever_the_input():
    loc = HeatmapLocalization(3, heatmaps=2).eval()
    out = loc(torch.rand(4, 3, 32, 32))
    assert out.shape == (4, 4) and out.abs().max() < 1e-6


def test_soft_argmax_gradcheck_float64():
    s = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_argmax_2d(t, 0.7)[0], (s,))


def test_localization_gradcheck_float64():
    torch.manual_seed(0)
    loc = HeatmapLocalization(1, heatmaps=1, width=4, depth=2).double().eval()
    torch.nn.init.normal_(loc.score.weight)  # away from the zero start, so the trunk matters
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loc, (x,))


def test_a_shifted_blob_moves_the_centre_by_the_shift():
    torch.manual_seed(0)
    loc = HeatmapLocalization(1, heatmaps=1, width=8, depth=3).eval()
    with torch.no_grad():  # score = sum of the trunk's channels: a bright blob scores high (ReLU features)
        loc.score.weight.fill_(1.0)
    loc.temperature = 0.002

    def blob(cx, cy, n=64):
        y, x = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
        return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 3.0**2))[None, None]

    with torch.no_grad():
        a = loc(blob(24, 28))[0]
        b = loc(blob(24 + 8, 28 + 4))[0]
    # 8 px across and 4 px down of 64: 0.25 and 0.125 in the normalised frame
    assert torch.allclose(b - a, torch.tensor([0.25, 0.125]), atol=0.02)
    with torch.no_grad():  # and the score maps themselves move by the shift (half: the trunk pools 2x)
        sa, sb = loc.scores(blob(24, 28)), loc.scores(blob(24 + 8, 28 + 4))
    assert torch.allclose(sa[..., 6:20, 6:20], sb[..., 8:22, 10:24], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [(dict(heatmaps=0), "heatmaps"), (dict(temperature=0.0), "temperature"), (dict(depth=0), "depth")],
)
def test_bad_arguments_name_themselves(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        HeatmapLocalization(3, **kwargs)


def test_scores_must_be_four_dimensional():
    with pytest.raises(ValueError, match=r"scores must have shape \(B, K, H, W\)"):
        soft_argmax_2d(torch.zeros(3, 4))
