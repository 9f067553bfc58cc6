"""``compositing``: a box in a room under a random perspective camera, its image perturbed by a homography.

A synthetic benchmark for geometric image compositing in the spirit of the ST-GAN
paper's synthetic experiment (Lin et al., CVPR 2018): each scene is a closed room
(floor with a checkerboard of tiles, four walls with a dark skirting, a ceiling;
flat-shaded planes) and a box standing on the floor, seen by a pinhole camera
inside the room at a random position, height, heading and field of view. The
renderer casts one ray per sub-pixel (3x3 per pixel) and shades each plane and
each face of the box flatly (a fixed light direction), so edges are antialiased.

Per scene ``i``:

* ``background(i)``: the room alone, ``(3, S, S)`` in ``[0, 1]``;
* ``foreground(i)``: the box alone, premultiplied RGBA ``(4, S, S)`` (colour times
  coverage, then the coverage), where it belongs in the camera's image;
* ``perturbations[i]``: a random homography (``projective`` parameters, stnkit's
  convention: output points to input points, normalised): the four corners of the
  box's bounding box moved by Gaussian offsets of ``perturb`` times the box's
  width (x) and height (y), truncated at two standard deviations, redrawn until the
  moved quad is convex;
  :meth:`perturbed` warps the foreground by it (:func:`~stnkit.geometry.warp`);
* ``vertices[i]``: the box's eight vertices projected to pixels ``(8, 2)``
  (OpenCV's frame: the centre of pixel (row i, column j) is ``(x=j, y=i)``), the
  true corners of the object: the perturbation moves them to
  ``inverse(P)(vertices)`` (:func:`placement_error` measures where a warp leaves them).

The perturbation is the foreground's initial placement: a compositing model that
samples the unperturbed foreground once with ``compose(P, G)`` (its own warp ``G``
after the placement, as :class:`~stnkit.nn.IterativeWarpGenerator` with
``init=P`` does) resamples it once, as the fake image :meth:`perturbed` does.

``composite(perturbed(i), background(i))`` is a fake image; a real image is the
composite of the unperturbed foreground (:meth:`real`), drawn from another seed so
that no (fake, real) pair is shared between the sets.

Everything is drawn at construction from one generator seeded by
:func:`~stnkit.data.dataset.stream_seed` ``(seed, None)`` (camera, box, colours,
perturbation; a scene is redrawn until the whole box lies in the image, 3 px from
its border); the pixels are rendered lazily, the same every time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int, check_number
from ..geometry import Projective, normalization_matrix, quad_is_convex, warp
from ..nn.compositing import composite
from .dataset import stream_seed

COMPOSITING_SIZE = 64
ROOM = (2.0, 2.6, 5.0)  # half width (x in [-2, 2]), height (y in [0, 2.6]), depth (z in [0, 5])
TILE = 0.5  # floor tiles (m)
SKIRT = 0.12  # the walls' dark skirting (m)
SUPERSAMPLE = 3
MARGIN = 3.0  # px between the box's vertices and the image border
LIGHT = (0.35, 0.85, -0.4)  # towards the light
# the box's vertices in its own frame, in units of its half extents: bottom face first
_UNIT_BOX = torch.tensor(
    [[sx, sy, sz] for sy in (-1.0, 1.0) for sx, sz in ((-1, -1), (1, -1), (1, 1), (-1, 1))], dtype=torch.float64
)


def _normalize(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def camera_basis(position: Tensor, target: Tensor) -> Tensor:
    """The ``(3, 3)`` rows right, up, forward of a camera at ``position`` looking at ``target`` (y up)."""
    f = _normalize(target - position)
    r = _normalize(torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=f.dtype), f))
    u = torch.linalg.cross(f, r)
    return torch.stack([r, u, f])


def project(points: Tensor, position: Tensor, basis: Tensor, focal: float, size: int) -> Tensor:
    """Pixel coordinates ``(N, 2)`` of world points ``(N, 3)`` (OpenCV's frame, the principal point at the centre)."""
    cam = (points - position) @ basis.T
    c = (size - 1) / 2
    return torch.stack([c + focal * cam[:, 0] / cam[:, 2], c - focal * cam[:, 1] / cam[:, 2]], dim=1)


def _rays(basis: Tensor, focal: float, size: int) -> Tensor:
    """One ray direction per sub-pixel, ``(size * s, size * s, 3)``."""
    s = SUPERSAMPLE
    sub = (torch.arange(size * s, dtype=torch.float64) + 0.5) / s - 0.5  # sub-pixel centres, pixel frame
    c = (size - 1) / 2
    v, u = torch.meshgrid((sub - c) / focal, (sub - c) / focal, indexing="ij")
    return basis[2] + u[..., None] * basis[0] - v[..., None] * basis[1]


def _down(x: Tensor, size: int) -> Tensor:
    """``(size * s, size * s, C)`` sub-pixels averaged to ``(C, size, size)``."""
    s = SUPERSAMPLE
    return x.reshape(size, s, size, s, -1).mean(dim=(1, 3)).permute(2, 0, 1)


def render_room(position: Tensor, basis: Tensor, focal: float, size: int, colours: Tensor) -> Tensor:
    """The closed room from ``position``: ``(3, size, size)`` float32. ``colours`` ``(3, 3)``: floor, walls, ceiling."""
    d = _rays(basis, focal, size)
    hx, hy, hz = ROOM
    # (axis, plane value, surface): floor, ceiling, left, right, front, back
    planes = [(1, 0.0, 0), (1, hy, 2), (0, -hx, 1), (0, hx, 1), (2, 0.0, 1), (2, hz, 1)]
    best = torch.full(d.shape[:2], math.inf, dtype=torch.float64)
    which = torch.zeros(d.shape[:2], dtype=torch.long)
    for i, (axis, value, _) in enumerate(planes):
        t = (value - position[axis]) / d[..., axis]
        t = torch.where(t > 0, t, math.inf)
        closer = t < best
        best = torch.where(closer, t, best)
        which = torch.where(closer, i, which)
    hit = position + best[..., None] * d
    shades = torch.tensor([1.0, 0.95, 0.78, 0.7, 0.85, 0.9], dtype=torch.float64)
    surface = torch.tensor([s for _, _, s in planes])[which]
    rgb = colours.to(torch.float64)[surface] * shades[which][..., None]
    tiles = (torch.floor(hit[..., 0] / TILE) + torch.floor(hit[..., 2] / TILE)) % 2
    floor = which == 0
    rgb = torch.where((floor & (tiles == 1))[..., None], rgb * 0.72, rgb)
    skirt = (surface == 1) & (hit[..., 1] < SKIRT)
    rgb = torch.where(skirt[..., None], rgb * 0.45, rgb)
    return _down(rgb, size).float()


def render_box(
    position: Tensor, basis: Tensor, focal: float, size: int, centre: Tensor, half: Tensor, yaw: float, colour: Tensor
) -> Tensor:
    """The box alone: premultiplied RGBA ``(4, size, size)`` float32 (slab ray casting, faces shaded flatly)."""
    d = _rays(basis, focal, size)
    c, s = math.cos(yaw), math.sin(yaw)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)  # box frame -> world
    o = (position - centre) @ rot  # R^T (p - centre)
    dl = d @ rot
    with torch.no_grad():
        inv = 1.0 / torch.where(dl.abs() < 1e-12, torch.full_like(dl, 1e-12), dl)
        t1, t2 = (-half - o) * inv, (half - o) * inv
        near, far = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_in, axis = near.max(dim=-1)
        t_out = far.min(dim=-1).values
        hit = (t_out >= t_in) & (t_in > 0)
    normal_local = torch.zeros_like(dl)
    normal_local.scatter_(-1, axis[..., None], 1.0)
    normal_local = normal_local * -torch.sign(dl)  # the face the ray enters faces the ray
    normal = normal_local @ rot.T
    light = _normalize(torch.tensor(LIGHT, dtype=torch.float64))
    shade = 0.35 + 0.65 * (normal @ light).clamp(min=0.0)
    a = hit.to(torch.float64)[..., None]
    rgba = torch.cat([colour.to(torch.float64) * shade[..., None] * a, a], dim=-1)
    return _down(rgba, size).float()


class CompositingScenes(Dataset):
    """``n`` scenes of a box in a room (see the module), with the box's image perturbed by a homography.

    Args:
        n: the number of scenes.
        seed: draws everything (:func:`~stnkit.data.dataset.stream_seed`).
        size: the images' side in px (64).
        perturb: the standard deviation of the perturbation's corner offsets, as a
            fraction of the box's width (x) and height (y) in the image (0.15).

    ``ds[i]`` is ``(perturbed, background, foreground)``: the perturbed and the
    unperturbed premultiplied RGBA ``(4, S, S)`` and the room ``(3, S, S)``, float32.
    ``ds.vertices`` ``(n, 8, 2)`` and ``ds.perturbations`` ``(n, 8)`` (float32) are
    the ground truth; ``ds.boxes`` ``(n, 4)`` the box's bounding box ``(x0, y0, x1, y1)``
    of its projected vertices (px).

    Example:
        >>> ds = CompositingScenes(2, seed=0, size=32)
        >>> fake, bg, fg = ds[0]
        >>> fake.shape, bg.shape, tuple(ds.vertices.shape), tuple(ds.perturbations.shape)
        (torch.Size([4, 32, 32]), torch.Size([3, 32, 32]), (2, 8, 2), (2, 8))
    """

    def __init__(self, n: int, seed: int = 0, size: int = COMPOSITING_SIZE, perturb: float = 0.15):
        self.n = check_int("n", n)
        self.seed = check_int("seed", seed, low=0)
        self.size = check_int("size", size, low=16)
        self.perturb = check_number("perturb", perturb, low=0.0, high=0.5)
        g = torch.Generator().manual_seed(stream_seed(seed, None))
        self.scenes: list[dict] = []
        verts, perts, boxes = [], [], []
        for _ in range(self.n):
            scene, v = self._draw_scene(g)
            x0, y0 = v.min(0).values
            x1, y1 = v.max(0).values
            sides = torch.stack([x1 - x0, y1 - y0])
            corners = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float64)
            for _ in range(100):  # a perturbation that keeps the box's quad convex (no fold)
                offsets = (torch.randn(4, 2, generator=g, dtype=torch.float64) * self.perturb).clamp(
                    -2 * self.perturb, 2 * self.perturb
                ) * sides
                if bool(quad_is_convex((corners + offsets)[None])):
                    break
            # the warp moves the foreground's content at the corners to the moved corners
            p = Projective.from_pixel_points((corners + offsets)[None], corners[None], out_size=self.size)
            self.scenes.append(scene)
            verts.append(v)
            perts.append(p[0])
            boxes.append(torch.stack([x0, y0, x1, y1]))
        self.vertices = torch.stack(verts).float()
        self.perturbations = torch.stack(perts).float()
        self.boxes = torch.stack(boxes).float()

    def _draw_scene(self, g: Tensor) -> tuple[dict, Tensor]:
        def u(lo, hi):
            return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

        for _ in range(1000):
            position = torch.tensor([u(-0.8, 0.8), u(1.0, 1.7), u(0.2, 0.9)], dtype=torch.float64)
            target = torch.tensor([u(-0.7, 0.7), u(0.1, 0.6), u(2.6, 3.6)], dtype=torch.float64)
            focal = (self.size / 2) / math.tan(math.radians(u(50.0, 70.0)) / 2)
            half = torch.tensor([u(0.22, 0.45), u(0.18, 0.45), u(0.22, 0.45)], dtype=torch.float64)
            centre = torch.tensor([target[0] + u(-0.5, 0.5), half[1], u(2.2, 3.4)], dtype=torch.float64)
            yaw = u(0.0, math.pi / 2)
            basis = camera_basis(position, target)
            world = self._vertices_world(centre, half, yaw)
            depth = (world - position) @ basis[2]
            if bool((depth < 0.3).any()):
                continue
            v = project(world, position, basis, focal, self.size)
            if bool(((v < MARGIN) | (v > self.size - 1 - MARGIN)).any()):
                continue
            hue = torch.rand(3, 3, generator=g, dtype=torch.float64)
            colours = 0.35 + 0.55 * hue  # floor, walls, ceiling: muted
            colours[2] = 0.75 + 0.2 * hue[2]
            box = 0.15 + 0.85 * torch.rand(3, generator=g, dtype=torch.float64)
            scene = {
                "position": position,
                "basis": basis,
                "focal": focal,
                "half": half,
                "centre": centre,
                "yaw": yaw,
                "colours": colours,
                "box_colour": box,
            }
            return scene, v
        raise RuntimeError("could not place a box in the image in 1000 draws")  # pragma: no cover

    @staticmethod
    def _vertices_world(centre: Tensor, half: Tensor, yaw: float) -> Tensor:
        c, s = math.cos(yaw), math.sin(yaw)
        rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)
        return centre + (_UNIT_BOX * half) @ rot.T

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not -self.n <= i < self.n:
            raise IndexError(f"index must be an int in [{-self.n}, {self.n}), got {i!r}")
        return i % self.n

    def background(self, i: int) -> Tensor:
        """The room of scene ``i``, ``(3, S, S)``."""
        sc = self.scenes[self._index(i)]
        return render_room(sc["position"], sc["basis"], sc["focal"], self.size, sc["colours"])

    def foreground(self, i: int) -> Tensor:
        """The box of scene ``i`` where it belongs, premultiplied RGBA ``(4, S, S)``."""
        sc = self.scenes[self._index(i)]
        return render_box(
            sc["position"], sc["basis"], sc["focal"], self.size, sc["centre"], sc["half"], sc["yaw"], sc["box_colour"]
        )

    def perturbed(self, i: int, foreground: Tensor | None = None) -> Tensor:
        """The foreground of scene ``i`` warped by its perturbation, ``(4, S, S)``."""
        fg = self.foreground(i) if foreground is None else foreground
        return warp(fg[None], self.perturbations[self._index(i)][None], "projective")[0]

    def real(self, i: int) -> Tensor:
        """A real image: the unperturbed box over the room, ``(3, S, S)``."""
        return composite(self.foreground(i)[None], self.background(i)[None])[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        fg = self.foreground(i)
        return self.perturbed(i, fg), self.background(i), fg


def draw_perturbations(boxes: Tensor, perturb: float, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Fresh random perturbations ``(B, 8)`` of boxes ``(B, 4)`` (``x0, y0, x1, y1`` px), as :class:`CompositingScenes` draws them.

    Each corner of a box's bounding box moves by a Gaussian offset of ``perturb`` times the
    box's width (x) and height (y), truncated at 2 standard deviations; a draw whose moved
    quad is not convex is redrawn (at most 100 times). The homography (``projective``,
    composite -> foreground) moves the foreground's content at the corners to the moved
    corners, so ``placement_error`` of the result is the perturbation's own error. The
    supervised bound of ``stnkit reproduce stgan`` draws a new one for every update.

    Example:
        >>> ds = CompositingScenes(3, seed=0, size=32)
        >>> p = draw_perturbations(ds.boxes, 0.15, 32, torch.Generator().manual_seed(0))
        >>> p.shape, bool((placement_error(p, ds.vertices, 32) > 0).all())
        (torch.Size([3, 8]), True)
    """
    perturb = check_number("perturb", perturb, low=0.0, high=0.5)
    size = check_int("size", size, low=16)
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (B, 4), got {getattr(boxes, 'shape', type(boxes).__name__)}")
    b = boxes.to(torch.float64)
    x0, y0, x1, y1 = b.unbind(1)
    corners = torch.stack([torch.stack([x0, y0], 1), torch.stack([x1, y0], 1), torch.stack([x1, y1], 1),
                           torch.stack([x0, y1], 1)], 1)  # fmt: skip
    sides = torch.stack([x1 - x0, y1 - y0], 1)[:, None]
    offsets = torch.zeros_like(corners)
    todo = torch.ones(len(b), dtype=torch.bool)
    for _ in range(100):
        n = int(todo.sum())
        if n == 0:
            break
        draw = (torch.randn(n, 4, 2, generator=generator, dtype=torch.float64) * perturb).clamp(
            -2 * perturb, 2 * perturb
        ) * sides[todo]
        offsets[todo] = draw
        todo = todo & ~quad_is_convex(corners + offsets)
    return Projective.from_pixel_points(corners + offsets, corners, out_size=size).float()


def placement_error(params: Tensor, vertices: Tensor, size: int) -> Tensor:
    """Per scene, the mean distance (px) of the box's vertices from where they belong under a warp ``(B,)``.

    ``params`` map the composite's points to the unperturbed foreground's (stnkit's
    convention): the foreground warped by them shows a vertex ``v`` of the original
    at ``params^-1 (v)``, and the error is that point's distance from ``v``. The
    perturbation itself (``ds.perturbations``) gives the fake image's error; a
    generator's warp ``G`` applied on top of it is ``compose(P, G)`` (the foreground
    placed by ``P`` and then warped by ``G`` reads the original at ``P(G(p))``).
    Differentiable in ``params`` (the supervised bound trains on it).

    Args:
        params: ``(B, 8)`` projective parameters, composite -> original foreground.
        vertices: ``(B, N, 2)`` pixel coordinates (OpenCV's frame) in the original.
        size: the images' side (px).

    Example:
        >>> ds = CompositingScenes(2, seed=0, size=32)
        >>> before = placement_error(ds.perturbations, ds.vertices, 32)
        >>> undone = Projective().compose(ds.perturbations, Projective().inverse(ds.perturbations))
        >>> bool((before > 0.1).all()), bool(placement_error(undone, ds.vertices, 32).max() < 1e-4)
        (True, True)
    """
    fam = Projective()
    n = normalization_matrix(size, device=params.device, dtype=params.dtype)
    v = vertices.to(params.dtype)
    v_norm = v @ n[:2, :2].T + n[:2, 2]
    moved = fam.transform_points(fam.inverse(params), v_norm)
    moved_px = (moved - n[:2, 2]) / torch.diagonal(n[:2, :2])
    return (moved_px - v).norm(dim=-1).mean(dim=-1)


__all__ = [
    "COMPOSITING_SIZE",
    "CompositingScenes",
    "draw_perturbations",
    "placement_error",
    "render_box",
    "render_room",
]
