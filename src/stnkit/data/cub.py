"""CUB-200-2011 (Caltech-UCSD Birds) read from its directory as distributed.

Wah, Branson, Welinder, Perona, Belongie, "The Caltech-UCSD Birds-200-2011 Dataset",
Caltech CNS-TR-2011-001. The archive ``CUB_200_2011.tgz`` unpacks to a folder ``ROOT``
holding (ids count from 1, fields separated by spaces):

=============================  ==============================================================
``images.txt``                 ``<image_id> <path>``, the path relative to ``ROOT/images``
                               (``<class folder>/<file>.jpg``)
``image_class_labels.txt``     ``<image_id> <class_id>``
``train_test_split.txt``       ``<image_id> <is_training_image>`` (1 train, 0 test)
``bounding_boxes.txt``         ``<image_id> <x> <y> <width> <height>`` (pixels)
``classes.txt``                ``<class_id> <class name>``, ids 1..200 in order
``parts/parts.txt``            ``<part_id> <part name>`` (15 parts: back, beak, ..., throat)
``parts/part_locs.txt``        ``<image_id> <part_id> <x> <y> <visible>`` (one row per image and part)
=============================  ==============================================================

:class:`CUB200` checks every file when it is opened: each line's fields (a one-line
:class:`~stnkit.data.DatasetError` naming the file and line), every image id present in
every file exactly once, class ids in ``classes.txt``, boxes inside the image, every
image file a regular file under ``ROOT/images`` whose header (PNG or JPEG,
:func:`~stnkit.data.folder.read_image_header`) is read and checked; no pixel is decoded
until ``ds[i]``. The box and part coordinates are scaled with the image to
``image_size`` (the whole image resized, aspect not kept, as
:func:`~stnkit.data.open_image_data` does); ``x, y`` in CUB are taken as the pixel
edges' frame of :mod:`stnkit.geometry.boxes` (a box ``(x, y, x + w, y + h)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_choice, check_int, check_size
from .folder import MAX_PIXELS, convert_channels, read_image, read_image_header, resize_image
from .idx import DatasetError

CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "classes.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
)
CUB_SPLITS = ("train", "test")
MAX_LIST_BYTES = 64 << 20  # part_locs.txt is ~5 MB for the 11,788 images
BOX_SLACK = 1.0  # a box may pass the image's edge by this many px (rounding in the published boxes)


def _lines(root: Path, name: str) -> list[tuple[int, list[str]]]:
    path = root / name
    if not path.is_file():
        raise DatasetError(f"{path}: missing (not a CUB-200-2011 directory: it needs {', '.join(CUB_FILES)})")
    if path.stat().st_size > MAX_LIST_BYTES:
        raise DatasetError(f"{path}: {path.stat().st_size:,} bytes, more than a CUB list file ({MAX_LIST_BYTES:,})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a UTF-8 text file") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _int(path: Path, n: int, field: str, text: str, low: int = 1) -> int:
    try:
        v = int(text)
    except ValueError:
        raise DatasetError(f"{path}:{n}: {field} must be an integer, got {text!r}") from None
    if v < low:
        raise DatasetError(f"{path}:{n}: {field} must be >= {low}, got {v}")
    return v


def _float(path: Path, n: int, field: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DatasetError(f"{path}:{n}: {field} must be a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise DatasetError(f"{path}:{n}: {field} must be finite, got {text!r}")
    return v


def _fields(path: Path, n: int, parts: list[str], count: int, what: str, at_least: bool = False) -> None:
    if len(parts) < count if at_least else len(parts) != count:
        raise DatasetError(f"{path}:{n}: expected {what}, got {len(parts)} fields: {' '.join(parts)[:80]!r}")


def _by_id(root: Path, name: str, ids: set[int], parse) -> dict[int, object]:
    """``{image_id: parse(path, line_no, fields)}`` from a file with one line per image id."""
    path = root / name
    out: dict[int, object] = {}
    for n, parts in _lines(root, name):
        image_id, value = parse(path, n, parts)
        if image_id not in ids:
            raise DatasetError(f"{path}:{n}: image id {image_id} is not in images.txt")
        if image_id in out:
            raise DatasetError(f"{path}:{n}: image id {image_id} appears twice")
        out[image_id] = value
    missing = sorted(ids - set(out))
    if missing:
        raise DatasetError(f"{path}: no line for image id {missing[0]} (and {len(missing) - 1} more)")
    return out


class CUB200(Dataset):
    """One split of CUB-200-2011 from its directory, images resized to ``image_size``.

    Args:
        root: the ``CUB_200_2011`` folder (with ``images.txt``, ``images/``, ``parts/``, ...).
        split: ``"train"`` or ``"test"`` (``train_test_split.txt``).
        image_size: ``(H, W)`` (or an int) every image is resized to (the paper: 448).
        max_pixels: refuse an image whose header declares more pixels.

    ``ds[i]`` is ``(image, label)``: float32 ``(3, H, W)`` in ``[0, 1]`` (grey images
    repeated into three channels) and an int64 class index in ``[0, num_classes)``
    (``class_id - 1``). At the resized scale: ``ds.boxes`` ``(N, 4)`` ``(x0, y0, x1, y1)``,
    ``ds.part_locs`` ``(N, P, 2)`` ``(x, y)`` and ``ds.part_visible`` ``(N, P)`` bool.
    ``ds.classes`` and ``ds.part_names`` are the names; ``ds.image_ids`` the CUB ids.

    Raises:
        DatasetError: a missing or malformed file (naming the file and line), an image that is not
            a readable PNG/JPEG header, or a box outside its image.
        ValueError: a bad argument.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_size: int | tuple[int, int] = 448,
        max_pixels: int = MAX_PIXELS,
    ):
        self.root = Path(root)
        self.split = check_choice("split", split, CUB_SPLITS)
        self.image_size = check_size("image_size", image_size)
        self.max_pixels = check_int("max_pixels", max_pixels)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: not a directory (a CUB-200-2011 folder, with {CUB_FILES[0]}, is needed)")
        root = self.root
        images_txt = root / "images.txt"
        paths: dict[int, str] = {}
        for n, parts in _lines(root, "images.txt"):
            _fields(images_txt, n, parts, 2, "'<image_id> <path>'")
            image_id = _int(images_txt, n, "image_id", parts[0])
            rel = parts[1]
            if image_id in paths:
                raise DatasetError(f"{images_txt}:{n}: image id {image_id} appears twice")
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise DatasetError(f"{images_txt}:{n}: path must be relative to images/ without '..', got {rel!r}")
            paths[image_id] = rel
        if not paths:
            raise DatasetError(f"{images_txt}: lists no images")
        ids = set(paths)

        classes_txt = root / "classes.txt"
        classes: list[str] = []
        for n, parts in _lines(root, "classes.txt"):
            _fields(classes_txt, n, parts, 2, "'<class_id> <name>'", at_least=True)
            cid = _int(classes_txt, n, "class_id", parts[0])
            if cid != len(classes) + 1:
                raise DatasetError(
                    f"{classes_txt}:{n}: class ids must run 1, 2, ... in order; expected {len(classes) + 1}, got {cid}"
                )
            classes.append(" ".join(parts[1:]))
        if not classes:
            raise DatasetError(f"{classes_txt}: lists no classes")

        def label(path, n, parts):
            _fields(path, n, parts, 2, "'<image_id> <class_id>'")
            cid = _int(path, n, "class_id", parts[1])
            if cid > len(classes):
                raise DatasetError(f"{path}:{n}: class_id {cid} is not in classes.txt (1..{len(classes)})")
            return _int(path, n, "image_id", parts[0]), cid - 1

        def is_train(path, n, parts):
            _fields(path, n, parts, 2, "'<image_id> <is_training_image>'")
            if parts[1] not in ("0", "1"):
                raise DatasetError(f"{path}:{n}: is_training_image must be 0 or 1, got {parts[1]!r}")
            return _int(path, n, "image_id", parts[0]), parts[1] == "1"

        def box(path, n, parts):
            _fields(path, n, parts, 5, "'<image_id> <x> <y> <width> <height>'")
            x, y, w, h = (_float(path, n, f, v) for f, v in zip(("x", "y", "width", "height"), parts[1:]))
            if w <= 0 or h <= 0:
                raise DatasetError(f"{path}:{n}: width and height must be > 0, got {w} and {h}")
            return _int(path, n, "image_id", parts[0]), (x, y, x + w, y + h, n)

        labels = _by_id(root, "image_class_labels.txt", ids, label)
        train = _by_id(root, "train_test_split.txt", ids, is_train)
        boxes = _by_id(root, "bounding_boxes.txt", ids, box)

        parts_txt = root / "parts/parts.txt"
        part_names: list[str] = []
        for n, parts in _lines(root, "parts/parts.txt"):
            _fields(parts_txt, n, parts, 2, "'<part_id> <name>'", at_least=True)
            pid = _int(parts_txt, n, "part_id", parts[0])
            if pid != len(part_names) + 1:
                raise DatasetError(
                    f"{parts_txt}:{n}: part ids must run 1, 2, ... in order; expected {len(part_names) + 1}, got {pid}"
                )
            part_names.append(" ".join(parts[1:]))
        locs_txt = root / "parts/part_locs.txt"
        locs: dict[tuple[int, int], tuple[float, float, bool]] = {}
        for n, parts in _lines(root, "parts/part_locs.txt"):
            _fields(locs_txt, n, parts, 5, "'<image_id> <part_id> <x> <y> <visible>'")
            image_id = _int(locs_txt, n, "image_id", parts[0])
            pid = _int(locs_txt, n, "part_id", parts[1])
            if image_id not in ids:
                raise DatasetError(f"{locs_txt}:{n}: image id {image_id} is not in images.txt")
            if pid > len(part_names):
                raise DatasetError(f"{locs_txt}:{n}: part_id {pid} is not in parts/parts.txt (1..{len(part_names)})")
            if parts[4] not in ("0", "1"):
                raise DatasetError(f"{locs_txt}:{n}: visible must be 0 or 1, got {parts[4]!r}")
            if (image_id, pid) in locs:
                raise DatasetError(f"{locs_txt}:{n}: image {image_id}, part {pid} appears twice")
            locs[(image_id, pid)] = (
                _float(locs_txt, n, "x", parts[2]),
                _float(locs_txt, n, "y", parts[3]),
                parts[4] == "1",
            )

        chosen = sorted(i for i in ids if train[i] == (self.split == "train"))
        h_out, w_out = self.image_size
        self.image_ids = tuple(chosen)
        self.paths = tuple(root / "images" / paths[i] for i in chosen)
        self.classes = tuple(classes)
        self.part_names = tuple(part_names)
        self.labels = torch.tensor([labels[i] for i in chosen], dtype=torch.int64)
        self.original_sizes: list[tuple[int, int]] = []
        n_parts = len(part_names)
        self.boxes = torch.zeros(len(chosen), 4)
        self.part_locs = torch.zeros(len(chosen), n_parts, 2)
        self.part_visible = torch.zeros(len(chosen), n_parts, dtype=torch.bool)
        for j, (image_id, path) in enumerate(zip(chosen, self.paths)):
            if not path.is_file():
                raise DatasetError(f"{images_txt}: image id {image_id}: {path} is missing")
            header = read_image_header(path, self.max_pixels)
            w, h = header.width, header.height
            self.original_sizes.append((h, w))
            x0, y0, x1, y1, line = boxes[image_id]
            if x0 < -BOX_SLACK or y0 < -BOX_SLACK or x1 > w + BOX_SLACK or y1 > h + BOX_SLACK:
                raise DatasetError(
                    f"{root / 'bounding_boxes.txt'}:{line}: box ({x0}, {y0}, {x1}, {y1}) lies outside "
                    f"image id {image_id}'s {w}x{h} pixels"
                )
            sx, sy = w_out / w, h_out / h
            self.boxes[j] = torch.tensor([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
            for p in range(n_parts):
                if (image_id, p + 1) not in locs:
                    raise DatasetError(f"{locs_txt}: no line for image id {image_id}, part {p + 1}")
                x, y, vis = locs[(image_id, p + 1)]
                self.part_locs[j, p] = torch.tensor([x * sx, y * sy])
                self.part_visible[j, p] = vis

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"CUB200(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, image_size=({h}, {w}))"

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        i = range(len(self))[index]
        x = read_image(self.paths[i], self.max_pixels)
        if tuple(x.shape[-2:]) != self.original_sizes[i]:
            raise DatasetError(f"{self.paths[i]}: changed since the dataset was opened")
        return resize_image(convert_channels(x, 3), self.image_size), self.labels[i]


__all__ = ["CUB200", "CUB_FILES", "CUB_SPLITS"]
