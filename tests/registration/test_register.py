"""stnkit.registration: world frames against nibabel, known transforms recovered, outputs against SimpleITK."""

import math

import numpy as np
import pytest
import torch

from stnkit.data.folder import png_bytes
from stnkit.data.volumes import Volume, read_volume
from stnkit.geometry import grid_to_field, warp_field
from stnkit.registration import fixed_to_moving_theta, ras_to_lps, register, voxel_centres_world
from stnkit.registration.outputs import write_outputs

nib = pytest.importorskip("nibabel")
from nibabel.affines import apply_affine  # noqa: E402


def rot(axis, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m = np.eye(4)
    m[i, i] = m[j, j] = c
    m[i, j], m[j, i] = -s, s
    return m


def translate(t):
    m = np.eye(4)
    m[:3, 3] = t
    return m


def centred(linear, spatial):
    """A voxel -> world affine of ``linear`` (3x3) whose grid of ``spatial`` (D, H, W) is centred on the origin."""
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = -np.asarray(linear) @ ((np.array(spatial[::-1]) - 1) / 2)
    return m


# the fixed grid: anisotropic voxels (1.2, 1.5, 1.8) mm, axes permuted and flipped, rotated; the moving grid: other
F_SIZE, M_SIZE = (16, 18, 20), (17, 16, 15)
F_AFFINE = centred(rot(2, 20)[:3, :3] @ np.array([[1.2, 0, 0], [0, 0, -1.8], [0, 1.5, 0]]), F_SIZE)
M_AFFINE = centred(np.diag([-1.4, 1.4, 1.6]), M_SIZE)
CENTRES = np.array([[-3.0, 2.0, 1.0], [4.0, -3.0, -2.0], [1.0, 4.0, -3.0], [-4.0, -3.0, 3.0]])
WIDTHS = np.array([2.5, 3.0, 2.0, 2.8])


def scene(world):
    """A smooth function of world points (mm): four Gaussian blobs of different widths."""
    d2 = ((world[..., None, :] - CENTRES) ** 2).sum(-1)
    return np.exp(-d2 / (2 * WIDTHS**2)).sum(-1)


def volume_of(affine, spatial, world_map=None):
    """A Volume whose voxels hold ``scene(world_map^-1 w)`` at their world points ``w``."""
    w = voxel_centres_world(affine, spatial)
    w = w if world_map is None else apply_affine(np.linalg.inv(world_map), w)
    return Volume(torch.from_numpy(scene(w).astype(np.float32))[None], affine, "array")


def tre(a, b, points):
    return np.linalg.norm(apply_affine(a, points) - apply_affine(b, points), axis=-1)


def test_voxel_centres_world_is_nibabels_apply_affine():
    spatial = (4, 5, 6)  # (D, H, W)
    w = voxel_centres_world(F_AFFINE, spatial)
    assert w.shape == (4, 5, 6, 3)
    k, j, i = 3, 1, 4
    np.testing.assert_allclose(w[k, j, i], apply_affine(F_AFFINE, [i, j, k]), atol=1e-12)
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij")
    np.testing.assert_allclose(w, apply_affine(F_AFFINE, np.stack([ii, jj, kk], -1)), atol=1e-12)


def test_theta_samples_the_moving_voxel_nibabel_finds():
    # fixed voxel (i, j, k) -> world -> A -> moving voxel, through theta, equals nibabel's chain of affines
    fs, ms = (7, 9, 11), (10, 8, 6)
    a = translate([3.0, -2.0, 1.5]) @ rot(0, 7) @ rot(1, -4)
    theta = fixed_to_moving_theta(a, F_AFFINE, fs, M_AFFINE, ms).numpy()
    rng = np.random.default_rng(0)
    vox_f = rng.uniform(0, 1, (50, 3)) * (np.array(fs[::-1]) - 1)
    norm_f = (2 * vox_f + 1) / np.array(fs[::-1]) - 1
    norm_m = norm_f @ theta[:, :3].T + theta[:, 3]
    vox_m = ((norm_m + 1) * np.array(ms[::-1]) - 1) / 2
    ref = apply_affine(np.linalg.inv(M_AFFINE) @ a @ F_AFFINE, vox_f)
    np.testing.assert_allclose(vox_m, ref, atol=1e-9)


def test_ras_to_lps_flips_x_and_y():
    a = translate([1.0, 2.0, 3.0])
    assert np.allclose(ras_to_lps(a)[:3, 3], [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(ras_to_lps(ras_to_lps(rot(2, 10))), rot(2, 10))


@pytest.mark.parametrize("kind", ["rigid", "affine"])
def test_register_recovers_a_known_transform_across_grids(kind):
    truth = translate([2.0, -1.5, 1.0]) @ rot(2, 5) @ rot(0, -3)
    if kind == "affine":
        truth = truth @ np.diag([1.06, 0.95, 1.0, 1.0])
    fixed = volume_of(F_AFFINE, F_SIZE)
    moving = volume_of(M_AFFINE, M_SIZE, truth)
    res = register(fixed, moving, kind, loss="mse", levels=2, steps=60)
    # the target registration error at the voxels where the scene is (above a tenth of its maximum)
    pts = voxel_centres_world(F_AFFINE, fixed.spatial)[fixed.data[0].numpy() > 0.1 * float(fixed.data.max())]
    err = tre(res.matrix, truth, pts)
    mean, most = (0.3, 0.6) if kind == "rigid" else (0.5, 1.2)  # 12 parameters fit less tightly than 6
    assert err.mean() < mean and err.max() < most, (err.mean(), err.max())
    assert res.seconds < 120
    assert [r["stage"] for r in res.levels] == ["linear", "linear"]
    start = tre(np.eye(4), truth, pts).mean()
    assert start > 2.0  # the move was not trivially small (the voxels are 1.2 to 1.8 mm)


def test_dense_field_improves_on_affine_in_2d():
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    fixed = torch.exp(-((xx - 16) ** 2 + (yy - 18) ** 2) / 30) + torch.exp(-((xx - 26) ** 2 + (yy - 24) ** 2) / 12)
    bend = 2.0 * torch.sin(yy / 40 * math.pi)  # a smooth non-affine shift along x
    moving = torch.exp(-((xx - 16 - bend) ** 2 + (yy - 18) ** 2) / 30)
    moving = moving + torch.exp(-((xx - 26 - bend) ** 2 + (yy - 24) ** 2) / 12)
    aff = register(fixed, moving, "affine", loss="mse", levels=2, steps=40)
    for kind in ("dense", "velocity"):
        res = register(fixed, moving, kind, loss="mse", smooth=0.1, levels=2, steps=40)
        err_aff = float((aff.warped[0] - fixed).pow(2).mean())
        err = float((res.warped[0] - fixed).pow(2).mean())
        assert err < 0.6 * err_aff, (kind, err, err_aff)
        assert res.field.shape == (2, 40, 40) and res.field_world.shape == (2, 40, 40)
        assert res.folding == 0.0


def test_the_grid_is_the_whole_map_and_warps_as_warped():
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(28.0), indexing="ij")
    fixed = torch.exp(-((xx - 11) ** 2 + (yy - 12) ** 2) / 20) + torch.exp(-((xx - 18) ** 2 + (yy - 14) ** 2) / 8)
    moving = torch.exp(-((xx - 13) ** 2 + (yy - 11) ** 2) / 20) + torch.exp(-((xx - 20) ** 2 + (yy - 13) ** 2) / 8)
    aff = register(fixed, moving, "affine", loss="mse", levels=2, steps=30)
    assert aff.grid.shape == (24, 28, 2)
    # on the identity world the matrix maps fixed pixels (x, y) to moving pixels: the grid, in pixels, is that map
    px = torch.stack([(aff.grid[..., 0] + 1) * 28 / 2 - 0.5, (aff.grid[..., 1] + 1) * 24 / 2 - 0.5], -1).double()
    expected = torch.stack([xx, yy, torch.ones_like(xx)], -1).double() @ torch.from_numpy(aff.matrix[:2]).T
    assert torch.allclose(px, expected, atol=1e-3)
    assert abs(aff.matrix[0, 2] - 2.0) < 0.3  # the move found (2 px right, 1 up), not the identity
    for res in (aff, register(fixed, moving, "dense", loss="mse", smooth=0.1, levels=2, steps=20)):
        u = grid_to_field(res.grid[None])
        assert torch.allclose(warp_field(moving[None, None], u)[0], res.warped, atol=1e-5)


def _two_blobs(dx):
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return torch.exp(-((xx - 12 - dx) ** 2 + (yy - 14) ** 2) / 20) + torch.exp(
        -((xx - 20 - dx) ** 2 + (yy - 20) ** 2) / 8
    )


def test_steps_per_level_as_ants_spells_them():
    fixed, moving = _two_blobs(0), _two_blobs(2.5)
    same = register(fixed, moving, "dense", loss="mse", smooth=0.1, levels=2, steps=(12, 12), field_steps=[8, 8])
    one = register(fixed, moving, "dense", loss="mse", smooth=0.1, levels=2, steps=12, field_steps=8)
    assert torch.equal(same.warped, one.warped)  # one number is that number at every level
    res = register(fixed, moving, "dense", loss="mse", smooth=0.1, levels=3, steps=[15, 10, 0], field_steps=(20, 5, 0))
    done = [(r["stage"], r["size"], r["steps"]) for r in res.levels]
    assert done[2] == ("linear", [32, 32], 0)  # the finest linear level skipped
    assert done[3:] == [("dense", [8, 8], 20), ("dense", [16, 16], 5), ("dense", [32, 32], 0)]
    assert res.field.shape == (2, 32, 32)  # the field carried up to the finest level
    assert float(res.field.abs().max()) > 0.01  # and it is the coarse levels' field, not zero
    before = float((moving - fixed).pow(2).mean())
    assert float((res.warped[0] - fixed).pow(2).mean()) < 0.2 * before
    with pytest.raises(
        ValueError, match=r"steps must give one number per pyramid level \(levels=3\), got 2: \[10, 0\]"
    ):
        register(fixed, moving, levels=3, steps=[10, 0])
    with pytest.raises(ValueError, match=r"field_steps\[1\] must be"):
        register(fixed, moving, "dense", levels=2, field_steps=[10, -1])


def test_overlap_only_recovers_a_shift_between_two_crops_of_one_scene():
    # both images are windows of a larger scene (as a head cut by the field of view): the fixed points that read
    # outside MOVING see its zero padding, where FIXED has content; counted, they pull an affine fit off
    g = torch.Generator().manual_seed(0)
    scene = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 80, 80, generator=g), 7, 1, 3)[0, 0]
    scene = (scene - scene.mean()) / scene.std()
    fixed, moving = scene[20:52, 20:52], scene[17:49, 24:56]  # fixed (x, y) is moving (x - 4, y + 3)
    truth = np.array([[1.0, 0.0, -4.0], [0.0, 1.0, 3.0]])
    inside = register(fixed, moving, "affine", loss="mse", levels=2, steps=50, overlap_only=True)
    assert np.abs(inside.matrix[:2] - truth).max() < 0.05
    counted = register(fixed, moving, "affine", loss="mse", levels=2, steps=50)
    assert np.abs(counted.matrix[:2] - truth).max() > 0.5


def test_register_refuses_bad_input():
    with pytest.raises(ValueError, match=r"fixed and moving must both be 2-D or both 3-D, got a 2-D fixed \(8, 8\)"):
        register(torch.rand(8, 8), torch.rand(6, 8, 8))
    with pytest.raises(ValueError, match="transform must be one of"):
        register(torch.rand(8, 8), torch.rand(8, 8), "tps")
    with pytest.raises(ValueError, match="loss must be one of"):
        register(torch.rand(8, 8), torch.rand(8, 8), loss="l1")


# -- the exported transform, resampled by SimpleITK, gives stnkit's warped image ---------------------------
def nifti_file(path, vol):
    img = nib.Nifti1Image(vol.data[0].numpy().transpose(2, 1, 0), vol.affine)
    img.set_qform(vol.affine, 1)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("kind", ["affine", "dense"])
def test_simpleitk_resampling_with_the_exported_transform(tmp_path, kind):
    sitk = pytest.importorskip("SimpleITK")
    truth = translate([2.0, -1.5, 1.0]) @ rot(2, 6) @ np.diag([1.05, 0.97, 1.0, 1.0])
    f_path = nifti_file(tmp_path / "fixed.nii.gz", volume_of(F_AFFINE, F_SIZE))
    m_path = nifti_file(tmp_path / "moving.nii", volume_of(M_AFFINE, M_SIZE, truth))
    fixed, moving = read_volume(f_path), read_volume(m_path)
    res = register(fixed, moving, kind, loss="mse", levels=2, steps=15)
    paths = write_outputs(tmp_path / "out", res, fixed, moving)
    assert paths["warped"].name == "warped.nii.gz"
    transform = sitk.ReadTransform(str(paths["itk"]))
    if kind == "dense":
        assert paths["field"].name == "field.nii.gz"
        assert float(np.abs(res.field_world).max()) > 0.05  # a field that is not zero
        comp = sitk.CompositeTransform(3)
        comp.AddTransform(transform)  # applied last: moving = matrix(p + field(p))
        comp.AddTransform(sitk.DisplacementFieldTransform(sitk.ReadImage(str(paths["field"]), sitk.sitkVectorFloat64)))
        transform = comp
    ref = sitk.Resample(sitk.ReadImage(str(m_path)), sitk.ReadImage(str(f_path)), transform, sitk.sitkLinear, 0.0)
    ref = sitk.GetArrayFromImage(ref)  # (k, j, i): stnkit's (D, H, W)
    ours = nib.load(paths["warped"]).get_fdata().transpose(2, 1, 0)
    assert np.abs(ours).max() > 0.5
    # within the outer half voxel of MOVING, ITK clamps to the border voxel and grid_sample blends with the
    # zero padding: compared where the point read lies a voxel or more inside MOVING
    world = voxel_centres_world(F_AFFINE, F_SIZE)
    if kind == "dense":
        world = world + np.moveaxis(res.field_world, 0, -1)
    vox = apply_affine(np.linalg.inv(M_AFFINE) @ res.matrix, world)
    inside = ((vox >= 1) & (vox <= np.array(M_SIZE[::-1]) - 2)).all(-1)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-4)
    np.testing.assert_allclose(ours, res.warped[0].numpy(), atol=1e-6)


def test_simpleitk_resampling_2d_png(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    yy, xx = np.mgrid[0:40, 0:48].astype(float)

    def img(dx, dy, ang):
        c, s = math.cos(ang), math.sin(ang)
        x, y = c * (xx - 24) - s * (yy - 20) + 24 - dx, s * (xx - 24) + c * (yy - 20) + 20 - dy
        v = np.exp(-((x - 18) ** 2 + (y - 16) ** 2) / 30) + np.exp(-((x - 30) ** 2 + (y - 24) ** 2) / 10)
        return (v / v.max() * 250).astype(np.uint8)

    (tmp_path / "f.png").write_bytes(png_bytes(img(0, 0, 0)))
    (tmp_path / "m.png").write_bytes(png_bytes(img(2.0, -1.0, math.radians(-6))))
    fixed, moving = read_volume(tmp_path / "f.png"), read_volume(tmp_path / "m.png")
    res = register(fixed, moving, "rigid", loss="mse", levels=2, steps=40)
    # moving(p) = base(R(p - c) + c - d), so fixed p reads moving at R^-1 (p - c + d) + c: a rotation by +6 degrees
    assert abs(res.parameters["rotation_deg"] - 6) < 0.5, res.parameters
    paths = write_outputs(tmp_path / "out", res, fixed, moving)
    assert paths["warped"].name == "warped.png"
    t = sitk.ReadTransform(str(paths["itk"]))
    ref = sitk.Resample(
        sitk.ReadImage(str(tmp_path / "m.png"), sitk.sitkFloat32),
        sitk.ReadImage(str(tmp_path / "f.png"), sitk.sitkFloat32),
        t,
        sitk.sitkLinear,
        0.0,
    )
    ours = res.warped[0].numpy() * 255
    np.testing.assert_allclose(ours, sitk.GetArrayFromImage(ref), atol=1e-3)
    png = read_volume(paths["warped"]).data[0].numpy() * 255
    assert np.abs(png - ours).max() <= 0.5 + 1e-4  # rounded to 8 bits
