"""The dataset registry (stnkit.data.tasks) and the multi-label loss and error."""

import pytest
import torch
import torch.nn.functional as F

from stnkit.data import DATASETS, DISTORTIONS, dataset_info, get_distortion, load_digits, open_dataset
from stnkit.train.evaluate import evaluate
from stnkit.train.losses import classification_loss


def test_every_distortion_is_a_dataset_with_its_canvas():
    assert set(DISTORTIONS) <= set(DATASETS)
    for name in DISTORTIONS:
        info = dataset_info(name)
        assert (info.name, info.in_channels, info.num_classes, info.num_labels) == (name, 1, 10, 1)
        assert info.canvas_size == get_distortion(name).canvas_size


def test_unknown_dataset_is_one_line_naming_the_argument():
    with pytest.raises(ValueError, match=r"^dataset must be one of .*got 'nope'$"):
        dataset_info("nope")


# the datasets built from source digits (homography's pairs have their own tests)
@pytest.mark.parametrize("name", [d for d in DATASETS if dataset_info(d).factory is not None])
def test_open_dataset_is_deterministic_by_seed_and_sized_by_its_info(name):
    images, labels = load_digits("test")
    info = dataset_info(name)
    a = open_dataset(name, images[:6], labels[:6], seed=3)
    b = open_dataset(name, images[:6], labels[:6], seed=3)
    c = open_dataset(name, images[:6], labels[:6], seed=4)
    x, y = a[0]
    assert tuple(x.shape) == (info.in_channels, info.canvas_size, info.canvas_size)
    assert tuple(y.shape) == (() if info.num_labels == 1 else (info.num_labels,))
    assert torch.equal(a[5][0], b[5][0])
    if name != "mnist":  # the undistorted digits do not depend on the seed
        assert not torch.equal(torch.stack([a[i][0] for i in range(6)]), torch.stack([c[i][0] for i in range(6)]))


def test_classification_loss_single_label_is_cross_entropy_and_error():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 1])
    loss, error, seq = classification_loss(logits, y)
    assert torch.allclose(loss, F.cross_entropy(logits, y))
    assert float(error) == 50.0 and seq is None


def test_classification_loss_several_labels_counts_labels_and_sequences():
    # two samples of three labels; sample 0 all right, sample 1 one label wrong
    logits = torch.full((2, 3, 4), -5.0)
    y = torch.tensor([[0, 1, 2], [3, 3, 0]])
    for i in range(2):
        for k in range(3):
            logits[i, k, y[i, k]] = 5.0
    logits[1, 2] = torch.tensor([-5.0, 5.0, -5.0, -5.0])  # predicts 1, truth 0
    loss, error, seq = classification_loss(logits, y)
    expected = sum(F.cross_entropy(logits[i, k][None], y[i, k][None]) for i in range(2) for k in range(3)) / 6
    assert torch.allclose(loss, expected)
    assert float(error) == pytest.approx(100 / 6)
    assert float(seq) == 50.0


def test_evaluate_several_labels_per_sample():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            # (N, 2, 3): every label predicted as class 1
            return torch.nn.functional.one_hot(torch.ones(x.shape[0], 2, dtype=torch.long), 3).float()

    labels = torch.tensor([[1, 1], [1, 0], [2, 1]])
    r = evaluate(Fixed(), torch.zeros(3, 1, 4, 4), labels, num_classes=3)
    assert r["n"] == 6
    assert r["error"] == pytest.approx(100 * 2 / 6, abs=1e-3)
    assert r["sequence_error"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert r["confusion"][0][1] == 1 and r["confusion"][2][1] == 1 and r["confusion"][1][1] == 4
