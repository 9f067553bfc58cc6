"""shapes2d / shapes3d: deterministic by seed, and the recorded ground truth is the truth."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from stnkit.data import REGISTRATION_DATASETS, ShapesPairs, dataset_info, open_dataset, open_pairs
from stnkit.geometry import field_to_pixels, warp_field


def _dice(a: torch.Tensor, b: torch.Tensor, labels) -> list[float]:
    return [float(2 * ((a == k) & (b == k)).sum() / ((a == k).sum() + (b == k).sum())) for k in labels]


def test_the_registration_datasets_are_named():
    assert REGISTRATION_DATASETS == ("shapes2d", "shapes3d")
    info = dataset_info("shapes3d")
    assert (info.task, info.dims, info.in_channels, info.canvas_size) == ("registration", 3, 2, 64)
    assert dataset_info("rts").task == "classification"


@pytest.mark.parametrize("name,size", [("shapes2d", 32), ("shapes3d", 16)])
def test_same_seed_same_pairs_other_seed_other_pairs(name, size):
    a = open_pairs(name, 3, seed=5, size=size)
    b = open_pairs(name, 3, seed=5, size=size)
    c = open_pairs(name, 3, seed=6, size=size)
    for i in range(3):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya["field"], yb["field"])
        assert torch.equal(ya["fixed_labels"], yb["fixed_labels"])
        assert not torch.equal(xa, c[i][0])
    assert not torch.equal(a[0][0], a[1][0])  # pairs of one draw differ


def test_a_training_set_draws_afresh_each_epoch_and_again_the_same():
    ds = open_pairs("shapes2d", 2, seed=0, size=32, fresh=True)
    ds.set_epoch(0)
    e0 = ds[0][0].clone()
    ds.set_epoch(1)
    e1 = ds[0][0].clone()
    ds.set_epoch(0)
    assert not torch.equal(e0, e1) and torch.equal(ds[0][0], e0)
    fixed = open_pairs("shapes2d", 2, seed=0, size=32)
    assert not torch.equal(fixed[0][0], e0)  # the fixed draw is never a training epoch's


def test_sample_layout_and_default_size():
    ds = ShapesPairs(dims=3, n=1)
    x, y = ds[0]
    assert x.shape == (2, 64, 64, 64) and x.dtype == torch.float32
    assert y["field"].shape == (3, 64, 64, 64)
    assert y["moving_labels"].shape == (64, 64, 64) and y["moving_labels"].dtype == torch.int64
    assert set(y["fixed_labels"].unique().tolist()) <= set(range(5))
    assert len(y["moving_labels"].unique()) >= 3  # background, the body and at least one blob


@pytest.mark.parametrize("dims,size", [(2, 96), (3, 32)])
def test_the_true_field_maps_the_moving_labels_onto_the_fixed_ones(dims, size):
    ds = ShapesPairs(dims=dims, n=2, size=size, seed=1)
    for i in range(2):
        p = ds.pair(i)
        ml, fl = p["moving_labels"].long(), p["fixed_labels"].long()
        present = [k for k in range(1, 5) if (fl == k).sum() > 20]
        # stnkit's warp: one-hot labels, linear interpolation, argmax
        onehot = F.one_hot(ml, 5).movedim(-1, 0)[None].float()
        warped = warp_field(onehot, p["field"][None]).argmax(1)[0]
        # small blobs at low resolution lose a voxel shell to interpolation: the mean is near 1, the worst lower
        assert np.mean(_dice(warped, fl, present)) > 0.93 and min(_dice(warped, fl, present)) > 0.85
        # an independent reference: scipy's nearest-neighbour resampling at the voxel coordinates of p + u(p)
        vox = field_to_pixels(p["field"][None])[0].numpy()  # (x, y[, z]) in voxels
        idx = np.stack(np.meshgrid(*[np.arange(size)] * dims, indexing="ij"))  # tensor-axis order
        coords = idx + vox[::-1]  # channel x runs along the last tensor axis
        ref = torch.from_numpy(map_coordinates(ml.numpy(), coords, order=0, mode="constant", cval=0))
        assert np.mean(_dice(ref, fl, present)) > 0.9 and min(_dice(ref, fl, present)) > 0.8
        # without the transform the labels overlap less: the task is not trivial
        assert np.mean(_dice(ml, fl, present)) < np.mean(_dice(ref, fl, present)) - 0.02


def test_without_a_transform_the_fixed_scene_is_the_moving_scene():
    ds = ShapesPairs(dims=2, n=1, size=48, seed=3, max_velocity=0.0, affine_strength=0.0)
    p = ds.pair(0)
    assert p["field"].abs().max() < 1e-6
    assert torch.equal(p["moving_labels"], p["fixed_labels"])


def test_the_warp_is_smooth_and_invertible():
    from stnkit.geometry import folding_fraction

    ds = ShapesPairs(dims=3, n=2, size=32, seed=0)
    for i in range(2):
        assert float(folding_fraction(ds.pair(i)["field"][None])) == 0.0


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="dims"):
        ShapesPairs(dims=4)
    with pytest.raises(ValueError, match="size"):
        ShapesPairs(dims=2, size=4)
    with pytest.raises(ValueError, match="index"):
        ShapesPairs(dims=2, n=2, size=16).pair(2)
    with pytest.raises(TypeError, match="index"):
        ShapesPairs(dims=2, n=2, size=16)["a"]
    with pytest.raises(ValueError, match="dataset"):
        open_pairs("rts", 2, seed=0)
    with pytest.raises(ValueError, match="open_pairs"):
        open_dataset("shapes2d", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.int64), seed=0)
