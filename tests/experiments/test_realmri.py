"""stnkit reproduce mri: the known moves are what the docstring says, the moved volume is the MRI at T^-1."""

import math

import numpy as np
import pytest

pytest.importorskip("nibabel")
pytest.importorskip("scipy")

from stnkit.data.volumes import read_volume  # noqa: E402
from stnkit.registration import voxel_centres_world  # noqa: E402
from stnkit_experiments import realmri  # noqa: E402


def test_known_moves():
    c = np.array([1.0, -2.0, 3.0])
    for seed in range(5):
        t = realmri.known_transform("rigid", seed, c)
        r = t[:3, :3]
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        angle = math.degrees(math.acos((np.trace(r) - 1) / 2))
        assert 2.0 <= angle <= 5.0
        assert np.abs(t[:3, :3] @ c + t[:3, 3] - c).max() <= 4.0  # the centre moves by the translation
        a = realmri.known_transform("affine", seed, c)
        assert not np.allclose(a[:3, :3] @ a[:3, :3].T, np.eye(3), atol=1e-3)
    assert np.array_equal(realmri.known_transform("rigid", 3, c), realmri.known_transform("rigid", 3, c))


def test_moved_volume_reads_the_mri_at_the_inverse():
    fixed = read_volume(realmri.mri_path())
    same = realmri.moved_volume(fixed, np.eye(4))
    np.testing.assert_allclose(same.data.numpy(), fixed.data.numpy(), rtol=1e-5, atol=1e-2)
    # a translation by one voxel along x (world): the moved volume's voxel i + 1 holds the MRI's voxel i
    step = (
        voxel_centres_world(fixed.affine, fixed.spatial)[0, 0, 1]
        - voxel_centres_world(fixed.affine, fixed.spatial)[0, 0, 0]
    )
    t = np.eye(4)
    t[:3, 3] = step
    moved = realmri.moved_volume(fixed, t).data[0].numpy()
    np.testing.assert_allclose(moved[:, :, 1:], fixed.data[0].numpy()[:, :, :-1], rtol=1e-5, atol=1e-2)
    assert len(realmri.brain_points(fixed)) > 1000
