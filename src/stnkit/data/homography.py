"""Homography estimation on real photographs: the protocol of DeTone et al. 2016.

"Deep Image Homography Estimation" (D. DeTone, T. Malisiewicz, A. Rabinovich, 2016,
arXiv:1606.03798), section 4: a grey photograph resized to 320x240 (W x H), a 128x128
patch ``P_A`` at a random position, its four corners each moved by an offset drawn
uniformly in ``[-RHO, RHO]`` (``RHO = 32`` px) in x and y, and ``P_B`` the same patch
of the photograph warped by the inverse of the homography ``H_AB`` through those four
point pairs (so ``P_B(p) = I(H_AB p)``: the content of the moved quadrilateral,
rectified to the square). The patch is placed ``RHO`` px inside the photograph, so
that the moved corners stay inside it.

A sample is ``(x, y)``: ``x`` ``(2, 128, 128)`` float32, channel 0 ``P_A`` and channel 1
``P_B``, grey levels in ``[0, 1]``; ``y`` ``(8,)`` float32, the corner offsets in pixels
in the patch's frame, ``(dx, dy)`` of the corners in the order top-left, top-right,
bottom-right, bottom-left (:data:`CORNER_ORDER`), the corners being the centres of the
patch's corner pixels (``(0, 0)``, ``(127, 0)``, ``(127, 127)``, ``(0, 127)``,
OpenCV's pixel frame: x the column, y the row). :func:`offsets_to_params` turns
offsets into the ``projective`` parameters whose warp of ``P_A`` gives ``P_B``.

The photographs: those shipped inside scikit-image (``skimage/data``, read from the
installed package, never downloaded): :data:`PHOTOGRAPHS`, split once and for all BY
PHOTOGRAPH (:data:`SPLITS`), so that no test photograph is seen in training. The pairs
are stnkit's own warps (:meth:`~stnkit.geometry.Projective.from_pixel_points` and the
bilinear sampler), drawn from ``(seed, epoch, index)`` only.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_choice, check_int
from ..geometry import Projective, warp

IMAGE_SIZE = (240, 320)  # (H, W) the photographs are resized to
PATCH = 128
RHO = 32
CORNER_ORDER = ("top-left", "top-right", "bottom-right", "bottom-left")

# the photographs of skimage/data (file stems); left out: the synthetic images (chessboard,
# color, logo, phantom, horse), microaneurysms (102 x 102, smaller than the 320 x 240 canvas),
# motorcycle_right (the stereo twin of motorcycle_left: the same scene in two splits)
PHOTOGRAPHS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock_motion",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "ihc",
    "moon",
    "motorcycle_left",
    "page",
    "retina",
    "rocket",
    "text",
)
# the split by photograph: a fixed permutation (seed 27) of PHOTOGRAPHS, 4 test, 2 validation, 12 training
_SPLIT_SEED = 27
_N_TEST, _N_VAL = 4, 2
HOMOGRAPHY_SPLITS = ("train", "val", "test")


def _split() -> dict[str, tuple[str, ...]]:
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(PHOTOGRAPHS))
    names = [PHOTOGRAPHS[i] for i in perm]
    return {
        "test": tuple(sorted(names[:_N_TEST])),
        "val": tuple(sorted(names[_N_TEST : _N_TEST + _N_VAL])),
        "train": tuple(sorted(names[_N_TEST + _N_VAL :])),
    }


SPLITS: dict[str, tuple[str, ...]] = _split()


def patch_corners(size: int = PATCH, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(4, 2)`` pixel coordinates of a ``size`` patch's corner-pixel centres, in :data:`CORNER_ORDER`."""
    s = float(size - 1)
    return torch.tensor([[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]], dtype=dtype)


def offsets_to_params(offsets: Tensor, size: int = PATCH) -> Tensor:
    """``projective`` parameters ``(B, 8)`` of the corner ``offsets`` ``(B, 8)`` (pixels, the layout of
    the dataset's targets): warping ``P_A`` (``size`` x ``size``) by them reads, at each corner of the
    output, ``P_A`` at that corner moved by its offset, as ``P_B`` does.

    Example:
        >>> params = offsets_to_params(torch.zeros(1, 8))  # no offsets: the identity
        >>> torch.allclose(params, torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]))
        True
        >>> offsets_to_params(torch.tensor([[2.0, 0.0] * 4]))[0, 2].item()  # read 2 px right = 2/64 normalised
        0.03125
    """
    if not isinstance(offsets, Tensor) or offsets.ndim != 2 or offsets.shape[1] != 8:
        shape = tuple(offsets.shape) if isinstance(offsets, Tensor) else type(offsets).__name__
        raise ValueError(f"offsets must have shape (B, 8), (dx, dy) of four corners, got {shape}")
    src = patch_corners(size, dtype=offsets.dtype).to(offsets.device).expand(offsets.shape[0], 4, 2)
    return Projective.from_pixel_points(src, src + offsets.view(-1, 4, 2), out_size=size)


def params_to_offsets(params: Tensor, size: int = PATCH) -> Tensor:
    """The inverse of :func:`offsets_to_params`: where ``projective`` ``params`` send the patch's
    corners, minus the corners, in pixels ``(B, 8)``."""
    corners = patch_corners(size, dtype=params.dtype).to(params.device)
    norm = (corners + 0.5) * (2.0 / size) - 1.0  # pixel centres -> normalised (align_corners=False)
    moved = Projective().transform_points(params, norm.expand(params.shape[0], 4, 2))
    return ((moved + 1.0) * (size / 2.0) - 0.5 - corners).reshape(-1, 8)


def skimage_data_dir() -> str:
    """The folder of scikit-image's bundled sample images (an optional dependency)."""
    try:
        import skimage.data
    except ImportError:
        raise ImportError(
            "the homography dataset reads scikit-image's sample photographs: pip install scikit-image"
        ) from None
    return os.path.dirname(skimage.data.__file__)


@cache
def load_photograph(name: str) -> np.ndarray:
    """One photograph of :data:`PHOTOGRAPHS`, grey (ITU-R 601 luma), resized to :data:`IMAGE_SIZE`
    (with anti-aliasing), float32 in ``[0, 1]``."""
    check_choice("photograph", name, PHOTOGRAPHS)
    folder = skimage_data_dir()
    from skimage.io import imread
    from skimage.transform import resize

    path = next(
        os.path.join(folder, name + ext) for ext in (".png", ".jpg") if os.path.isfile(os.path.join(folder, name + ext))
    )
    img = imread(path).astype(np.float64) / 255.0
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    out = resize(img, IMAGE_SIZE, order=1, anti_aliasing=True, mode="reflect")
    out.setflags(write=False)
    return out.astype(np.float32)


def draw_pair(image: Tensor, origin: Tensor, offsets: Tensor) -> Tensor:
    """``(B, 2, PATCH, PATCH)``: ``P_A`` at pixel ``origin`` ``(B, 2)`` (its top-left corner, x y)
    of ``image`` ``(B, 1, H, W)`` and ``P_B``, the patch of the image warped by the inverse of the
    homography that moves the corners by ``offsets`` ``(B, 8)`` pixels (stnkit's bilinear sampler)."""
    b = image.shape[0]
    corners = patch_corners(PATCH, dtype=image.dtype).expand(b, 4, 2)
    at = corners + origin.view(b, 1, 2)
    size = tuple(image.shape[-2:])
    pa = warp(image, Projective.from_pixel_points(corners, at, PATCH, size), "projective", out_size=PATCH)
    moved = at + offsets.view(b, 4, 2)
    pb = warp(image, Projective.from_pixel_points(corners, moved, PATCH, size), "projective", out_size=PATCH)
    return torch.cat([pa, pb], dim=1)


class HomographyPatches(Dataset):
    """``size`` patch pairs ``(x, y)`` of one split's photographs (see the module docstring).

    Sample ``i`` of epoch ``e`` is a function of ``(seed, e, i)`` only: its photograph (cycled
    over the split's photographs), the patch's position and the offsets; ``fresh=False`` (validation,
    test) always reads epoch 0, ``fresh=True`` draws anew each :meth:`set_epoch`.

    Example:
        >>> ds = HomographyPatches("test", 4, seed=0)
        >>> x, y = ds[0]
        >>> tuple(x.shape), tuple(y.shape), bool(y.abs().max() <= RHO)
        ((2, 128, 128), (8,), True)
    """

    def __init__(self, split: str, size: int, *, seed: int, fresh: bool = False):
        check_choice("split", split, HOMOGRAPHY_SPLITS)
        check_int("size", size)
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.split, self.size, self.seed, self.fresh, self.epoch = split, size, seed, fresh, 0
        self.names = SPLITS[split]
        self.photos = torch.from_numpy(np.stack([load_photograph(n) for n in self.names]))

    def set_epoch(self, epoch: int) -> None:
        if self.fresh:
            self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def draw(self, index: int) -> tuple[int, Tensor, Tensor]:
        """``(photograph index, origin (2,), offsets (8,))`` of sample ``index`` (this epoch)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        h, w = IMAGE_SIZE
        origin = [rng.integers(RHO, w - PATCH - RHO + 1), rng.integers(RHO, h - PATCH - RHO + 1)]
        offsets = rng.uniform(-RHO, RHO, size=8)
        return (
            index % len(self.names),
            torch.tensor(origin, dtype=torch.float32),
            torch.tensor(offsets, dtype=torch.float32),
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(f"index must be in [0, {self.size}), got {index}")
        k, origin, offsets = self.draw(index)
        x = draw_pair(self.photos[k].view(1, 1, *IMAGE_SIZE), origin.view(1, 2), offsets.view(1, 8))[0]
        return x, offsets


def homography_splits(
    seed: int, test_seed: int, train_size: int | None, val_size: int, test_size: int | None
) -> tuple[HomographyPatches, HomographyPatches, HomographyPatches]:
    """(train, validation, test) patch pairs as ``stnkit train --dataset homography`` reads them: the
    training pairs drawn afresh each epoch from ``seed``, validation and test fixed by ``test_seed``;
    ``train_size`` (default 4096) pairs per epoch, ``test_size`` (default 1000)."""
    return (
        HomographyPatches("train", 4096 if train_size is None else train_size, seed=seed, fresh=True),
        HomographyPatches("val", max(val_size, 1), seed=test_seed + 1_000),
        HomographyPatches("test", 1000 if test_size is None else test_size, seed=test_seed),
    )


__all__ = [
    "CORNER_ORDER",
    "HOMOGRAPHY_SPLITS",
    "HomographyPatches",
    "IMAGE_SIZE",
    "PATCH",
    "PHOTOGRAPHS",
    "RHO",
    "SPLITS",
    "draw_pair",
    "homography_splits",
    "load_photograph",
    "offsets_to_params",
    "params_to_offsets",
    "patch_corners",
]
