"""The homography patches (DeTone et al. 2016 protocol) and the four-point homography in pixels.

References are OpenCV's: ``cv2.getPerspectiveTransform`` for the homography, ``cv2.warpPerspective``
of the whole photograph followed by a crop for the warped patch, as the paper generates its pairs.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from stnkit.data import dataset_info, open_dataset
from stnkit.data.homography import (
    IMAGE_SIZE,
    PATCH,
    PHOTOGRAPHS,
    RHO,
    SPLITS,
    HomographyPatches,
    homography_splits,
    load_photograph,
    offsets_to_params,
    params_to_offsets,
    patch_corners,
)
from stnkit.geometry import Projective, from_pixel_matrix

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")

F64 = torch.float64


def quad(seed: int, b: int = 3):
    g = torch.Generator().manual_seed(seed)
    src = patch_corners(PATCH, dtype=F64).expand(b, 4, 2) + 20 * torch.rand(b, 4, 2, generator=g, dtype=F64)
    dst = src + 30 * (torch.rand(b, 4, 2, generator=g, dtype=F64) - 0.5) + 40
    return src, dst


# -- Projective.from_pixel_points ---------------------------------------------------------------


def test_from_pixel_points_identity():
    src, _ = quad(0)
    ident = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, 0, 0]], dtype=F64).expand(3, 8)
    assert torch.allclose(Projective.from_pixel_points(src, src, PATCH), ident, atol=1e-10)


@pytest.mark.parametrize("align_corners", [False, True])
def test_from_pixel_points_matches_opencv(align_corners):
    src, dst = quad(1)
    in_size = IMAGE_SIZE
    params = Projective.from_pixel_points(src, dst, PATCH, in_size, align_corners=align_corners)
    for i in range(3):
        # OpenCV's matrix maps the input (source) pixels to the output ones: dst -> src
        m = cv2.getPerspectiveTransform(dst[i].numpy().astype(np.float32), src[i].numpy().astype(np.float32))
        theta = from_pixel_matrix(torch.from_numpy(m)[None], in_size, PATCH, align_corners)[0]
        theta = theta / theta[2, 2]
        assert torch.allclose(Projective().matrix(params[i : i + 1])[0], theta, atol=1e-5)


def test_from_pixel_points_gradcheck():
    src, dst = quad(2, b=1)
    assert gradcheck(
        lambda s, d: Projective.from_pixel_points(s, d, PATCH, IMAGE_SIZE), (src.requires_grad_(), dst.requires_grad_())
    )


def test_from_pixel_points_bad_input():
    with pytest.raises(ValueError, match=r"src must have shape \(B, N, 2\)"):
        Projective.from_pixel_points(torch.zeros(4, 2), torch.zeros(4, 2), PATCH)


def test_offsets_params_round_trip():
    off = 2 * RHO * (torch.rand(5, 8, generator=torch.Generator().manual_seed(3), dtype=F64) - 0.5)
    assert torch.allclose(params_to_offsets(offsets_to_params(off)), off, atol=1e-8)
    with pytest.raises(ValueError, match=r"offsets must have shape \(B, 8\)"):
        offsets_to_params(torch.zeros(2, 4))


# -- the photographs and their split ------------------------------------------------------------


def test_split_by_photograph():
    train, val, test = (set(SPLITS[s]) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(PHOTOGRAPHS)
    assert len(test) == 4 and len(val) == 2
    for split in ("train", "val", "test"):
        assert HomographyPatches(split, 2, seed=0).names == SPLITS[split]


def test_photograph_is_grey_320x240():
    img = load_photograph("camera")
    assert img.shape == IMAGE_SIZE and img.dtype == np.float32
    assert 0.0 <= img.min() < img.max() <= 1.0


def test_missing_scikit_image_is_one_line(monkeypatch):
    load_photograph.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(
        ImportError, match=r"^the homography dataset reads scikit-image's .*: pip install scikit-image$"
    ):
        load_photograph("camera")
    load_photograph.cache_clear()


# -- the pairs ---------------------------------------------------------------------------------


def test_deterministic_by_seed():
    a, b, c = (HomographyPatches("train", 3, seed=s, fresh=True) for s in (5, 5, 6))
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
        assert not torch.equal(a[i][1], c[i][1])
    a.set_epoch(1)
    assert not torch.equal(a[0][1], b[0][1])
    a.set_epoch(0)
    assert torch.equal(a[0][1], b[0][1])
    fixed = HomographyPatches("test", 2, seed=0)
    before = fixed[0][1]
    fixed.set_epoch(3)  # validation and test: one fixed draw
    assert torch.equal(fixed[0][1], before)


def test_offsets_and_origins_in_range():
    ds = HomographyPatches("val", 64, seed=1)
    h, w = IMAGE_SIZE
    for i in range(64):
        _, origin, off = ds.draw(i)
        assert off.abs().max() <= RHO
        assert RHO <= origin[0] <= w - PATCH - RHO and RHO <= origin[1] <= h - PATCH - RHO
    assert ds[0][0].shape == (2, PATCH, PATCH) and ds[0][1].shape == (8,)


@pytest.mark.parametrize("index", [0, 7, 13])
def test_ground_truth_matches_opencv(index):
    ds = HomographyPatches("test", 16, seed=2)
    k, origin, off = ds.draw(index)
    x, y = ds[index]
    assert torch.equal(y, off)
    img = ds.photos[k].numpy()
    c = patch_corners(PATCH).numpy() + origin.numpy()
    moved = c + off.numpy().reshape(4, 2)
    h_ab = cv2.getPerspectiveTransform(c.astype(np.float32), moved.astype(np.float32))
    # the paper's recipe: warp the photograph by H_AB^-1, crop both patches at the same place
    warped = cv2.warpPerspective(img, np.linalg.inv(h_ab), (IMAGE_SIZE[1], IMAGE_SIZE[0]), flags=cv2.INTER_LINEAR)
    ox, oy = (int(v) for v in origin)
    pa, pb = img[oy : oy + PATCH, ox : ox + PATCH], warped[oy : oy + PATCH, ox : ox + PATCH]
    assert np.abs(x[0].numpy() - pa).max() < 1e-4
    # OpenCV interpolates with 5-bit weights: agreement to a few grey levels of 255 at most
    assert np.abs(x[1].numpy() - pb).max() < 0.02 and np.abs(x[1].numpy() - pb).mean() < 1e-3
    assert np.abs(x[1].numpy() - pa).mean() > 0.01  # the warp did something


def test_dataset_info_and_splits():
    info = dataset_info("homography")
    assert (info.in_channels, info.canvas_size, info.num_classes, info.task, info.error_unit) == (
        2,
        PATCH,
        8,
        "homography",
        "px",
    )
    train, val, test = homography_splits(0, 0, 8, 4, 6)
    assert (len(train), len(val), len(test)) == (8, 4, 6) and train.fresh and not test.fresh
    with pytest.raises(ValueError, match="not built from source digits"):
        open_dataset("homography", np.zeros((1, 28, 28)), np.zeros(1), seed=0)
    with pytest.raises(ValueError, match="split must be one of 'train', 'val', 'test', got 'dev'"):
        HomographyPatches("dev", 2, seed=0)
