"""DistortedMNIST: a torch Dataset, fixed test draws, fresh training draws, any source of digits."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stnkit import warp
from stnkit.data import DISTORTIONS, DistortedMNIST, get_distortion, load_digits, load_distorted
from stnkit.data.dataset import stream_seed


@pytest.fixture(scope="module")
def test_digits():
    images, labels = load_digits("test")
    return images[:200], labels[:200]


@pytest.mark.parametrize("name", DISTORTIONS)
def test_dataset_items(test_digits, name):
    images, labels = test_digits
    ds = DistortedMNIST(name, images, labels, seed=0)
    s = get_distortion(name).canvas_size
    assert len(ds) == 200 and ds.canvas_size == s and ds.name == name
    assert ds.transform == get_distortion(name).transform and ds.num_params == ds.params.shape[1]
    x, y = ds[3]
    assert x.shape == (1, s, s) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert y.dtype == torch.int64 and y.ndim == 0 and int(y) == labels[3]
    assert ds.images.shape == (200, 1, s, s) and ds.digits.shape == (200, 1, 28, 28)
    assert ds.params.shape == (200, ds.num_params) and ds.params.dtype == torch.float32
    assert torch.equal(ds.digits, torch.from_numpy(images).float().div(255).unsqueeze(1))
    if name != "tc":
        again = warp(ds.digits, ds.params, ds.transform, out_size=s, mode=ds.distortion.mode)
        assert (again - ds.images).abs().max() < 1e-5


def test_dataloader(test_digits):
    ds = DistortedMNIST("rts", *test_digits, seed=0)
    xb, yb = next(iter(DataLoader(ds, batch_size=32, shuffle=False)))
    assert xb.shape == (32, 1, 42, 42) and yb.shape == (32,) and yb.dtype == torch.int64
    assert torch.equal(xb, ds.images[:32])


def test_fixed_draw_is_fixed_by_seed(test_digits):
    a = DistortedMNIST("r", *test_digits, seed=5)
    b = DistortedMNIST("r", *test_digits, seed=5)
    c = DistortedMNIST("r", *test_digits, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.params, b.params)
    assert not torch.equal(a.params, c.params)
    before = a.params.clone()
    a.set_epoch(3)  # a no-op for a fixed set
    assert torch.equal(a.params, before) and a.epoch is None


def test_fresh_draws_change_every_epoch_and_repeat(test_digits):
    ds = DistortedMNIST("rts", *test_digits, seed=1, fresh=True)
    assert ds.epoch == 0
    p0, x0 = ds.params.clone(), ds.images.clone()
    ds.set_epoch(1)
    assert ds.epoch == 1 and not torch.equal(ds.params, p0)
    ds.set_epoch(0)
    assert torch.equal(ds.params, p0) and torch.equal(ds.images, x0)
    other = DistortedMNIST("rts", *test_digits, seed=1, fresh=True)
    other.set_epoch(1)
    ds.set_epoch(1)
    assert torch.equal(other.images, ds.images)
    fixed = DistortedMNIST("rts", *test_digits, seed=1)
    assert not torch.equal(fixed.params, p0)  # a test draw never repeats a training epoch


def test_stream_seeds():
    assert stream_seed(0, None) == 0 and stream_seed(0, 0) == 1 and stream_seed(2, 4) == 2 * 1_000_003 + 5
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        stream_seed(-1, 0)
    with pytest.raises(ValueError, match="epoch must be an int in"):
        stream_seed(0, -1)


@pytest.mark.parametrize("kind", ["numpy-uint8", "torch-uint8", "torch-float", "torch-float-4d"])
def test_any_source_of_digits(test_digits, kind):
    images, labels = test_digits
    ref = DistortedMNIST("e", images, labels, seed=2)
    src = {
        "numpy-uint8": images,
        "torch-uint8": torch.from_numpy(images),
        "torch-float": torch.from_numpy(images).float() / 255,
        "torch-float-4d": torch.from_numpy(images).float().div(255).unsqueeze(1),
    }[kind]
    ds = DistortedMNIST("e", src, torch.from_numpy(labels), seed=2)
    assert torch.equal(ds.images, ref.images) and torch.equal(ds.labels, ref.labels)


def test_recipe_options_pass_through(test_digits):
    ds = DistortedMNIST("r", *test_digits, seed=0, angle=10)
    assert ds.params[:, 1].abs().max() <= math.radians(10) + 1e-6
    ds = DistortedMNIST("tc", *test_digits, seed=0, canvas_size=48)
    assert ds.images.shape[-1] == 48


def test_tc_clutter_source(test_digits):
    images, labels = test_digits
    pool = np.zeros((10, 28, 28), dtype=np.uint8)  # blank clutter: only the digit remains
    ds = DistortedMNIST("tc", images, labels, seed=0, clutter_source=pool)
    assert torch.equal(ds.images, ds.distortion.clean(ds.digits, ds.params))
    busy = DistortedMNIST("tc", images, labels, seed=0)
    assert not torch.equal(busy.images, ds.images)


def test_bad_inputs(test_digits):
    images, labels = test_digits
    with pytest.raises(ValueError, match=r"labels must have shape \(200,\)"):
        DistortedMNIST("r", images, labels[:10])
    with pytest.raises(TypeError, match="labels must be an integer"):
        DistortedMNIST("r", images, labels.astype(np.float32))
    with pytest.raises(TypeError, match="images must be uint8"):
        DistortedMNIST("r", images.astype(np.int32), labels)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 28, 28\)"):
        DistortedMNIST("r", images[:, :20], labels)
    with pytest.raises(TypeError, match="numpy array or torch.Tensor"):
        DistortedMNIST("r", images.tolist(), labels)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        DistortedMNIST("r", images.astype(np.float32), labels)  # floats must be in [0, 1]
    with pytest.raises(ValueError, match="seed must be"):
        DistortedMNIST("r", images, labels, seed=-3)
    with pytest.raises(TypeError, match="fresh must be a bool"):
        DistortedMNIST("r", images, labels, fresh=1)
    with pytest.raises(ValueError, match="unknown dataset"):
        DistortedMNIST("q", images, labels)
    ds = DistortedMNIST("r", images, labels, fresh=True)
    with pytest.raises(ValueError, match="epoch must be"):
        ds.set_epoch(-1)


def test_load_distorted_splits():
    test = load_distorted("p", "test", seed=0, n=50)
    assert len(test) == 50 and not test.fresh
    train = load_distorted("p", "train", seed=0, n=60)
    assert train.fresh and train.epoch == 0 and len(train) == 60
    x, y = load_digits("train")
    assert torch.equal(train.labels, torch.from_numpy(y[:60]))
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 1000\]"):
        load_distorted("p", "test", n=5000)


def test_dataset_ground_truth_helpers(test_digits):
    ds = DistortedMNIST("rts", *test_digits, seed=0)
    frac = ds.ink_fraction()
    assert frac.shape == (200,) and frac.min() > 0.9
    assert ds.canonicalize().shape == (200, 1, 28, 28)
    assert "rts" in repr(ds) and "similarity" in repr(ds)
