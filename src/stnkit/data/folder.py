"""Your own images: a folder of class subfolders, or a CSV manifest, as train/val/test datasets.

:func:`open_image_data` takes a folder or a ``.csv`` and returns an :class:`ImageData`
with ``.train``, ``.val`` and ``.test`` (each an :class:`ImageFolderDataset`),
``.classes``, ``.in_channels`` and ``.image_size``. Every sample is
``(image, label)``: float32 ``(C, H, W)`` in ``[0, 1]`` and an int64 scalar.

Sources
-------
* **Folder**: ``ROOT/<class>/<image>``; class names are the sorted subfolder names,
  a class's index is its position. If ``ROOT`` holds ``train/``, ``val/`` or
  ``test/``, those are the splits (``ROOT/train/<class>/...``), and a missing ``val/``
  or ``test/`` is carved from ``train/`` as below. Hidden entries (``.name``) and
  files that are not ``.png``/``.jpg``/``.jpeg`` (a README, ``Thumbs.db``) are
  ignored; an image file of a format not read (``.gif``, ``.bmp``, ``.tif``,
  ``.webp``), a nested folder inside a class folder, a loose image next to the class
  folders or an empty class folder is an error that names it.
* **CSV manifest**: a header with ``path,label`` and optionally ``split``;
  ``path`` relative to the CSV's folder (or absolute), ``label`` a class name (any
  string; classes are the sorted distinct labels), ``split`` one of
  ``train``/``val``/``test`` on every row.

Without given splits, each class's images are split by a SHA-256 key of
``(test_seed, path)``: the ``round(n * test_fraction)`` smallest keys are test, the next
``round(n * val_fraction)`` are validation, the rest training (defaults 10 % and
10 %). Stratified per class, identical on every machine (no random generator), and
adding an image to a class moves at most two of its other images between splits.

Images
------
PNG and JPEG, recognised by their content (the first bytes), whatever the suffix.
Every file is treated as hostile: only regular files are opened (a FIFO or device is
refused, and files are opened non-blocking, so nothing can hang), and the declared
width and height are read from the header (PNG's IHDR, JPEG's frame header) when
the data are opened, before any pixel is decoded; more than ``max_pixels``
(default 40 megapixels) is refused.

* Grey (1, 2, 4, 8 or 16 bit) and RGB. 16-bit grey PNGs keep their 16 bits
  (``value / 65535``, never clipped to 8 bits); 16-bit colour or grey+alpha PNGs are
  decoded by Pillow to 8 bits per channel (the high byte: correctly scaled to
  ``[0, 1]``, in steps of 1/255).
* Alpha (``RGBA``, ``LA``, palettes and ``tRNS`` transparency) is composited onto
  **white**: ``c * a + (1 - a)``. A transparent pixel of a scanned page, a logo or a
  drawing shows the paper it lay on; black would turn every transparent margin into
  ink.
* ``in_channels`` is 1 when every image is grey (grey or grey+alpha PNG, a palette
  of grey entries only, a one-component JPEG), else 3; ``channels=1`` or ``3`` forces
  it: grey images are repeated into three channels, colour ones turned to luminance
  ``0.299 R + 0.587 G + 0.114 B``. CMYK and 12-bit JPEGs are refused.

Resize policy (``image_size=(H, W)``, ``--image-size H W``)
-----------------------------------------------------------
The whole image is resized to ``H x W`` (bilinear with antialiasing,
``align_corners=False``, as :func:`~stnkit.data.fit_to_canvas` and ``stnkit
predict`` do); the aspect ratio is not kept. Why: every pixel of the image stays in
the frame, nothing is cropped, and no padding colour has to be invented (the border
colour of a photo is not its background, and a pad would be a second, artificial
background the transformer must learn to ignore). An anisotropic stretch is an
affine map, which a spatial transformer can undo. An image already ``H x W`` is not
resampled at all. Without ``image_size`` every image must have one size, else the
error names two files of different sizes and says to pass ``--image-size``.

Images are decoded lazily in ``__getitem__`` (opening reads only the headers), with
an optional in-memory cache of the last ``cache_size`` decoded images per process.

Normalisation is **not** applied: samples are raw intensities in ``[0, 1]``. Use
:func:`channel_stats` on the training split and normalise inside the model after the
spatial transformer, so that what the transformer samples outside the image is
the raw background (0), never ``-mean / std``.

Distortions (``distort="r" | "rts" | "p" | "e"``)
------------------------------------------------
stnkit's distorted-MNIST recipes applied to your images on the fly, at the image's
own size (``warp(image, params, transform, out_size=(H, W))``, zeros outside, then
clamped to ``[0, 1]``). The parameters are exactly the draw of
:class:`~stnkit.data.DistortedMNIST` with the same ``seed``, ``epoch`` and number of
samples (:meth:`~stnkit.data.Distortion.draw` from a generator seeded by
:func:`~stnkit.data.dataset.stream_seed`), in normalised coordinates:

=====  =============  ================================================================
name   ground truth   on an ``H x W`` image
=====  =============  ================================================================
r      affine         rotation about the centre, angle ~ U[-90, 90] degrees
rts    affine         rotation ~ U[-45, 45] deg, then the image shrunk to ``s / 1.5``
                      of the frame, ``s ~ U[0.7, 1.2]``, its centre uniform where the
                      unrotated shrunk image stays inside (MNIST's 28 px digit on its
                      42 px canvas, at the frame's own size)
p      projective     shrink by ``s ~ U[0.75, 1]``, then the four image corners move by
                      N(0, 5/28 of the side) in x and in y
e      tps            shrink by ``s ~ U[0.75, 1]``, then a 4x4 grid of control points
                      moves by N(0, 1.5/28 of the side)
=====  =============  ================================================================

``r`` and ``rts`` are rigid in pixels: on a non-square image the similarity of the
draw is conjugated by the aspect ratio (``diag(W, H)``) and the translation kept as a
fraction of each side, so the ground truth is ``affine``; on a square image it is
the similarity matrix itself. ``p`` and ``e`` move points by fractions of each side.
Training sets (``fresh=True``) draw anew in :meth:`ImageFolderDataset.set_epoch`;
validation and test sets keep one fixed draw (``fresh=False``). In
:func:`open_image_data` the seeds follow ``stnkit train``: training ``seed``, test
``test_seed`` (default ``seed``), validation ``test_seed + 1000``.

The same set through the folder route and the IDX route
-------------------------------------------------------
``stnkit data make NAME --split S --format imagefolder --out OUT`` writes
``OUT/S/<label>/<index>.png`` (8-bit grey) with the very uint8 pixels of the IDX
route's ``images-idx3-ubyte.gz`` (``round(255 x)``, :func:`~stnkit.data.export.to_uint8`),
and ``index`` is the sample's position in the IDX file, zero-padded. Both routes
divide the uint8 values by 255 in float32, so the tensors are bit-identical. The
order: with ``order="auto"`` (the default) a split whose file names are all
distinct integers (these files) is read in the order of those integers, which is
the IDX order, so sample ``i`` is the same on both routes; otherwise (or with
``order="class"``) by class, then file name, as torchvision's ``ImageFolder``. The
test error does not depend on the order (the set is evaluated whole); training with
``--deterministic`` is the same on both routes only if the order is (use
``order="auto"`` or ``"index"``) and the split into train/val is the same.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import operator
import os
import stat
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_choice, check_int, check_number, check_size
from .._io import _fsync, write_staged
from ..geometry import get_transform, warp
from .dataset import check_fresh, stream_seed
from .distortions import get_distortion
from .idx import DatasetError, ImageFileError, open_regular

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# image formats a user may expect to be read; refused by name rather than silently skipped
UNREAD_SUFFIXES = (".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".heic", ".jp2")
MAX_PIXELS = 40_000_000
MAX_MANIFEST_BYTES = 256 << 20  # millions of rows
DISTORTS = ("r", "rts", "p", "e")
ORDERS = ("auto", "class", "index")
VAL_SEED_OFFSET = 1_000  # as stnkit train: validation draws never share the test's
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_MAX_JPEG_SEGMENTS = 4096
_LUMA = (0.299, 0.587, 0.114)


# -- files: regular files only, opened without blocking ---------------------------------------
# -- headers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares: ``format`` (``png``/``jpeg``), ``width``, ``height``,
    ``grey`` (no colour channels), ``bit_depth`` (bits per sample)."""

    format: str
    width: int
    height: int
    grey: bool
    bit_depth: int


def _png_header(f, path) -> ImageHeader:
    data = f.read(25)  # after the signature: length, "IHDR", 13 bytes, CRC
    if len(data) < 25 or data[4:8] != b"IHDR" or struct.unpack(">I", data[:4])[0] != 13:
        raise ImageFileError(f"{path}: truncated or corrupt PNG (no IHDR header)")
    width, height, depth, colour = struct.unpack(">IIBB", data[8:18])
    valid = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if colour not in valid or depth not in valid[colour]:
        raise ImageFileError(f"{path}: PNG colour type {colour} with bit depth {depth} is not a valid PNG")
    grey = colour in (0, 4)
    if colour == 3:  # a palette: grey if every entry is
        grey = _png_palette_is_grey(f, path)
    return ImageHeader("png", width, height, grey, depth)


def _png_palette_is_grey(f, path) -> bool:
    for _ in range(10_000):
        head = f.read(8)
        if len(head) < 8:
            break
        length, tag = struct.unpack(">I4s", head)
        if tag == b"PLTE":
            if length % 3 or length > 768:
                raise ImageFileError(f"{path}: corrupt PNG palette ({length} bytes)")
            pal = np.frombuffer(f.read(length), dtype=np.uint8)
            if pal.size != length:
                break
            pal = pal.reshape(-1, 3)
            return bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())
        if tag in (b"IDAT", b"IEND"):
            break
        f.seek(length + 4, os.SEEK_CUR)
    raise ImageFileError(f"{path}: palette PNG without a palette (PLTE chunk) before its data")


def _jpeg_header(f, path) -> ImageHeader:
    f.seek(2)
    for _ in range(_MAX_JPEG_SEGMENTS):
        b = f.read(1)
        while b == b"\xff":  # fill bytes
            b = f.read(1)
            if b != b"\xff":
                break
        if not b:
            break
        marker = b[0]
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            break
        raw = f.read(2)
        if len(raw) < 2:
            break
        length = struct.unpack(">H", raw)[0]
        if length < 2:
            break
        if marker in _JPEG_SOF:
            data = f.read(6)
            if len(data) < 6:
                break
            precision, height, width, comps = struct.unpack(">BHHB", data)
            if precision != 8:
                raise ImageFileError(f"{path}: JPEG with {precision}-bit samples; only 8-bit JPEGs are read")
            if comps not in (1, 3):
                raise ImageFileError(
                    f"{path}: JPEG with {comps} components (CMYK?); a grey or RGB (YCbCr) JPEG is needed"
                )
            return ImageHeader("jpeg", width, height, comps == 1, 8)
        f.seek(length - 2, os.SEEK_CUR)
    raise ImageFileError(f"{path}: truncated or corrupt JPEG (no frame header)")


def read_image_header(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """The header of a PNG or JPEG file (by content), refused if it declares more than ``max_pixels``.

    Reads a few bytes (a PNG's first 33, a JPEG's markers up to its frame header),
    never the pixels.

    Raises:
        ImageFileError: not a regular file, neither PNG nor JPEG, a corrupt or
            truncated header, a side of 0 pixels or more than ``max_pixels`` pixels.
        FileNotFoundError, PermissionError: as ``open``.
    """
    with open_regular(path) as f:
        magic = f.read(8)
        if magic == PNG_SIGNATURE:
            header = _png_header(f, path)
        elif magic[:3] == b"\xff\xd8\xff":
            header = _jpeg_header(f, path)
        else:
            raise ImageFileError(f"{path}: not a PNG or JPEG file (starts with {magic[:8]!r})")
    w, h = header.width, header.height
    if w == 0 or h == 0 or w * h > max_pixels:
        raise ImageFileError(f"{path}: image declares {w}x{h} pixels; expected 1 to {max_pixels:,} pixels (max_pixels)")
    return header


# -- decoding --------------------------------------------------------------------------------
def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading PNG/JPEG images needs Pillow: pip install pillow (or stnkit[train])") from None
    return Image


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Tensor:
    """A PNG or JPEG file as float32 ``(C, H, W)`` in ``[0, 1]``: ``C = 1`` grey, ``C = 3`` colour.

    Alpha is composited onto white; 16-bit grey keeps 16 bits. The header is
    checked (:func:`read_image_header`) before Pillow decodes anything.

    Raises:
        ImageFileError: as :func:`read_image_header`, or pixels Pillow cannot
            decode (corrupt, truncated).
        ImportError: Pillow is not installed.
    """
    header = read_image_header(path, max_pixels)
    Image = _pillow()
    try:
        with open_regular(path) as f, Image.open(f) as im:
            if im.size != (header.width, header.height):
                raise ImageFileError(
                    f"{path}: decoder sees {im.size[0]}x{im.size[1]} pixels, header declares "
                    f"{header.width}x{header.height}"
                )
            return _to_tensor(im, header, path)
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError, zlib.error) as err:
        if isinstance(err, (ImageFileError, FileNotFoundError, PermissionError)):
            raise
        raise ImageFileError(f"{path}: not a readable {header.format.upper()} (corrupt or truncated: {err})") from None


def _to_tensor(im, header: ImageHeader, path) -> Tensor:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I") and header.grey:
        arr = np.asarray(im).astype(np.int64)
        scale = 65535 if header.bit_depth == 16 else 255
        if arr.min() < 0 or arr.max() > scale:
            raise ImageFileError(f"{path}: grey values outside 0..{scale}")
        return torch.from_numpy(arr.astype(np.float32)).div_(float(scale))[None]
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageFileError(f"{path}: image mode {mode} is not grey or RGB(A)")
    arr = torch.from_numpy(np.array(im, dtype=np.uint8))
    x = arr.float().div_(255.0)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()
    if x.shape[0] in (2, 4):  # composite onto white
        alpha = x[-1:]
        x = x[:-1] * alpha + (1.0 - alpha)
    if header.grey and x.shape[0] == 3:  # a grey palette or grey + tRNS, read as RGBA
        x = x[:1]
    return x


def convert_channels(x: Tensor, channels: int) -> Tensor:
    """``(C, H, W)`` with ``C`` 1 or 3 as ``channels`` channels (grey repeated, colour to luminance)."""
    if x.shape[0] == channels:
        return x
    if channels == 3:
        return x.expand(3, -1, -1).contiguous()
    r, g, b = x.double().unbind(0)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).clamp_(0.0, 1.0).float()[None]


def resize_image(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``(C, H, W)`` resized to ``size`` (bilinear, antialiased, aspect not kept); unchanged if already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


# -- listing: folders and CSV manifests ------------------------------------------------------
@dataclass(frozen=True)
class ImageList:
    """Labelled image files: ``paths``, ``labels`` (indices into ``classes``), and each file's
    ``splits`` entry (``"train"``/``"val"``/``"test"`` given by the folder or CSV, or ``None``)."""

    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    splits: tuple[str | None, ...]
    source: str


def _visible(entries):
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _class_files(folder: Path) -> list[Path]:
    files = []
    for e in _visible(os.scandir(folder)):
        suffix = os.path.splitext(e.name)[1].lower()
        if e.is_dir():
            raise DatasetError(f"{folder}: holds a folder {e.name!r}; put images directly in the class folder")
        if suffix in UNREAD_SUFFIXES:
            raise DatasetError(f"{Path(e.path)}: {suffix} images are not read; convert to PNG or JPEG")
        if suffix in IMAGE_SUFFIXES:
            try:
                regular = stat.S_ISREG(os.stat(e.path).st_mode)
            except OSError as err:
                raise DatasetError(f"{Path(e.path)}: cannot be read ({err.strerror})") from None
            if not regular:
                raise ImageFileError(f"{Path(e.path)} is not a regular file; an image must be a regular file")
            files.append(Path(e.path))
    if not files:
        raise DatasetError(f"class folder {folder} holds no .png/.jpg/.jpeg image")
    return files


def _classes_of(folder: Path) -> dict[str, list[Path]]:
    """``{class: files}`` of a folder of class folders."""
    entries = _visible(os.scandir(folder))
    dirs = [e for e in entries if e.is_dir()]
    loose = [e.name for e in entries if not e.is_dir() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    if loose:
        raise DatasetError(
            f"{folder}: image {loose[0]!r} lies next to the class folders; put every image in {folder}/<class>/"
        )
    if not dirs:
        raise DatasetError(f"{folder}: no class folders; expected {folder}/<class>/<image>.png")
    return {e.name: _class_files(Path(e.path)) for e in dirs}


def scan_image_folder(root: str | os.PathLike) -> ImageList:
    """The labelled images of a folder: ``ROOT/<class>/*`` or ``ROOT/{train,val,test}/<class>/*``.

    Classes are the sorted class-folder names (the union over the splits; with a
    ``train/``, each must have a folder there; without one, e.g. a test set alone,
    the training split is empty); files are listed by class, then name. Only the
    directory entries are read, not the images.

    Raises:
        DatasetError: see the module docstring (no class folders, an empty class,
            a nested folder, a loose image, an unread format, a class missing from
            ``train/``, split folders mixed with class folders).
        FileNotFoundError, NotADirectoryError: ``root``.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder (expected a folder of class folders, or a .csv)")
    top = [e for e in _visible(os.scandir(root)) if e.is_dir()]
    split_dirs = [e.name for e in top if e.name in SPLITS]
    if split_dirs:
        others = [e.name for e in top if e.name not in SPLITS]
        if others:
            raise DatasetError(
                f"{root}: holds split folders ({', '.join(split_dirs)}) and other folders ({', '.join(others)}); "
                "put every class under train/, val/, test/"
            )
        per_split = {s: _classes_of(root / s) for s in SPLITS if s in split_dirs}
        for s, found in per_split.items():
            extra = sorted(set(found) - set(per_split.get("train", found)))
            if extra:
                raise DatasetError(f"{root / s}: class {extra[0]!r} has no folder in {root / 'train'}")
    else:
        per_split = {None: _classes_of(root)}
    classes = tuple(sorted({c for found in per_split.values() for c in found}))
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, splits = [], [], []
    for s, found in per_split.items():
        for c in sorted(found):
            paths += found[c]
            labels += [index[c]] * len(found[c])
            splits += [s] * len(found[c])
    return ImageList(classes, tuple(paths), tuple(labels), tuple(splits), str(root))


def read_image_manifest(path: str | os.PathLike) -> ImageList:
    """The labelled images of a CSV manifest: header ``path,label[,split]``, paths relative to its folder.

    Raises:
        DatasetError: no header or a missing/unknown column, a row of the wrong
            length, an empty path or label, a split other than train/val/test,
            a repeated path, a listed file that is not a regular file, no rows.
    """
    path = Path(path)
    with open_regular(path, "a CSV manifest") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_MANIFEST_BYTES:
            raise DatasetError(f"{path}: manifest is {size:,} bytes; at most {MAX_MANIFEST_BYTES:,} are read")
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    if "path" not in header or "label" not in header:
        raise DatasetError(f"{path}: header must name the columns path,label[,split], got {','.join(header)!r}")
    unknown = [h for h in header if h not in ("path", "label", "split")]
    if unknown or len(set(header)) != len(header):
        bad = unknown[0] if unknown else "a repeated column"
        raise DatasetError(f"{path}: header must be path,label[,split], got {bad!r} in {','.join(header)!r}")
    col = {h: i for i, h in enumerate(header)}
    folder = path.parent
    entries, seen = [], {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DatasetError(
                f"{path}, line {line}: expected {len(header)} fields ({','.join(header)}), got {len(row)}"
            )
        file, label = row[col["path"]].strip(), row[col["label"]].strip()
        split = row[col["split"]].strip() if "split" in col else None
        if not file or not label:
            raise DatasetError(f"{path}, line {line}: empty {'path' if not file else 'label'}")
        if split is not None and split not in SPLITS:
            raise DatasetError(f"{path}, line {line}: split must be train, val or test, got {split!r}")
        if file in seen:
            raise DatasetError(f"{path}, line {line}: {file!r} is listed again (first on line {seen[file]})")
        seen[file] = line
        full = folder / file
        try:
            regular = stat.S_ISREG(os.stat(full).st_mode)
        except FileNotFoundError:
            raise DatasetError(f"{path}, line {line}: no such image {full}") from None
        except OSError as err:
            raise DatasetError(f"{path}, line {line}: {full} cannot be read ({err.strerror})") from None
        if not regular:
            raise DatasetError(f"{path}, line {line}: {full} is not a regular file")
        entries.append((full, label, split))
    if not entries:
        raise DatasetError(f"{path}: no images listed (only a header)")
    classes = tuple(sorted({label for _, label, _ in entries}))
    index = {c: i for i, c in enumerate(classes)}
    train_classes = {label for _, label, s in entries if s == "train"}
    if "split" in col:
        if not train_classes:
            raise DatasetError(f"{path}: the split column names no train image")
        missing = [c for c in classes if c not in train_classes]
        if missing:
            raise DatasetError(f"{path}: class {missing[0]!r} has no train image")
    return ImageList(
        classes,
        tuple(e[0] for e in entries),
        tuple(index[e[1]] for e in entries),
        tuple(e[2] for e in entries),
        str(path),
    )


def _split_key(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"stnkit-image-split:{seed}:{name}".encode()).digest()[:8], "big")


def assign_splits(
    images: ImageList, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, np.ndarray]:
    """Indices into ``images`` of each split: given splits kept, the missing ones carved per class.

    A file without a split (or a training file, when ``val``/``test`` is not given at
    all) goes to test, val or train by its SHA-256 key (see the module docstring).
    Every class keeps at least one training image.
    """
    check_int("seed", seed, low=0)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=1.0)
    test_fraction = check_number("test_fraction", test_fraction, low=0.0, high=1.0)
    given = set(images.splits) - {None}
    carve = [s for s in ("test", "val") if s not in given]
    fraction = {"test": test_fraction, "val": val_fraction}
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    pool: dict[int, list[int]] = {}
    for i, (label, split) in enumerate(zip(images.labels, images.splits)):
        if split is None or (split == "train" and carve):
            pool.setdefault(label, []).append(i)
        else:
            out[split].append(i)
    root = Path(images.source)
    root = root.parent if root.is_file() else root
    for label, members in sorted(pool.items()):
        n = len(members)
        counts = {s: int(np.floor(n * fraction[s] + 0.5)) for s in carve}
        if n - sum(counts.values()) < 1:
            raise DatasetError(
                f"{images.source}: class {images.classes[label]!r} has {n} image(s); val_fraction {val_fraction} "
                f"and test_fraction {test_fraction} leave none for training"
            )
        keyed = sorted(members, key=lambda i: (_split_key(seed, _rel(images.paths[i], root)), i))
        start = 0
        for s in carve:
            out[s] += keyed[start : start + counts[s]]
            start += counts[s]
        out["train"] += keyed[start:]
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in out.items()}


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def order_indices(images: ImageList, indices: np.ndarray, order: str = "auto") -> np.ndarray:
    """``indices`` in the order a dataset serves them: ``"class"`` (class, then name: the listing's
    order), ``"index"`` (by the integer each file name is; an error unless all are distinct
    integers), ``"auto"`` (``"index"`` when possible, else ``"class"``)."""
    check_choice("order", order, ORDERS)
    if order == "class" or indices.size == 0:
        return indices
    stems = [images.paths[i].stem for i in indices]
    numbers = [int(s) if s.isdecimal() and s.isascii() else None for s in stems]
    if None in numbers or len(set(numbers)) != len(numbers):
        if order == "index":
            bad = stems[numbers.index(None)] if None in numbers else "a repeated number"
            raise DatasetError(
                f"{images.source}: order='index' needs every file name to be a distinct integer, got {bad!r}"
            )
        return indices
    return indices[np.argsort(np.array(numbers, dtype=np.int64), kind="stable")]


# -- the dataset -----------------------------------------------------------------------------
def _rigid_affine(params: Tensor, size: tuple[int, int]) -> Tensor:
    """Similarity parameters of a square frame as pixel-rigid affine parameters ``(N, 6)`` on an ``H x W`` frame."""
    h, w = size
    m = get_transform("similarity").matrix(params.double())
    a, t = m[:, :2, :2], m[:, :2, 2:]
    d = torch.tensor([float(w) / h, 1.0], dtype=torch.float64)
    lin = a * d[None, None, :] / d[None, :, None]  # D^-1 A D with D = diag(W, H) / H
    trans = lin @ torch.linalg.solve(a, t)  # the centre shift c = -A^-1 t, kept per axis
    return torch.cat([lin, trans], dim=2).reshape(-1, 6).float()


class ImageFolderDataset(Dataset):
    """Labelled image files as a map-style dataset of ``(image, label)``, decoded lazily.

    Args:
        paths: the image files (PNG or JPEG).
        labels: one class index per file.
        classes: the class names.
        image_size: ``(H, W)`` of every sample.
        channels: 1 or 3 (grey images repeated, colour ones to luminance).
        resize: resize images of another size to ``image_size`` (bilinear,
            antialiased); ``False``: such an image is an error.
        distort: ``None`` or one of ``r``, ``rts``, ``p``, ``e`` (see the module docstring).
        seed: the seed of the distortions.
        fresh: a new draw each epoch (:meth:`set_epoch`; training) or one fixed draw.
        cache_size: decoded images kept in memory (per process), 0 for none.
        max_pixels: refuse an image whose header declares more pixels.

    ``ds[i]`` is float32 ``(channels, H, W)`` in ``[0, 1]`` (raw, not normalised)
    and an int64 scalar. With distortions, ``ds.params`` ``(N, P)`` is the current
    draw's ground truth in family ``ds.transform``.
    """

    def __init__(
        self,
        paths,
        labels,
        classes,
        *,
        image_size,
        channels: int,
        resize: bool = True,
        distort: str | None = None,
        seed: int = 0,
        fresh: bool = False,
        cache_size: int = 0,
        max_pixels: int = MAX_PIXELS,
    ):
        self.paths = tuple(Path(p) for p in paths)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
        self.classes = tuple(classes)
        if self.labels.shape[0] != len(self.paths):
            raise ValueError(f"labels must have {len(self.paths)} entries (one per path), got {self.labels.shape[0]}")
        if len(self.paths) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), the class indices")
        self.image_size = check_size("image_size", image_size)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.channels = channels
        if not isinstance(resize, bool):
            raise TypeError(f"resize must be a bool, got {type(resize).__name__}")
        self.resize = resize
        self.cache_size = check_int("cache_size", cache_size, low=0)
        self.max_pixels = check_int("max_pixels", max_pixels)
        self._cache: OrderedDict[int, Tensor] = OrderedDict()
        self.fresh = check_fresh(fresh)
        stream_seed(seed, None)  # validates seed
        self.seed = seed
        self.epoch: int | None = None
        self.distort = None if distort is None else check_choice("distort", distort, DISTORTS)
        self.transform: str | None = None
        self.params: Tensor | None = None
        if self.distort is not None:
            self.distortion = get_distortion(self.distort)
            self.transform = "affine" if self.distort in ("r", "rts") else self.distortion.transform
            self._family = get_transform(self.transform, **self.distortion._family_options())
            if len(self.paths):
                self._redraw(0 if fresh else None)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (
            f"ImageFolderDataset(n={len(self)}, classes={len(self.classes)}, image_size=({h}, {w}), "
            f"channels={self.channels}, distort={self.distort!r}, seed={self.seed}, fresh={self.fresh})"
        )

    def _redraw(self, epoch: int | None) -> None:
        g = torch.Generator().manual_seed(stream_seed(self.seed, epoch))
        params = self.distortion.draw(len(self.paths), g).params
        self.params = _rigid_affine(params, self.image_size) if self.transform == "affine" else params
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """Re-draw every distortion for ``epoch`` (``fresh=True`` with ``distort``); else a no-op."""
        stream_seed(self.seed, epoch)  # validates epoch
        if self.distort is not None and self.fresh and epoch != self.epoch and len(self.paths):
            self._redraw(epoch)

    def load(self, index: int) -> Tensor:
        """Image ``index`` decoded, with ``channels`` channels, at ``image_size`` (no distortion)."""
        i = self._index(index)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        path = self.paths[i]
        x = read_image(path, self.max_pixels)
        if not self.resize and tuple(x.shape[-2:]) != self.image_size:
            h, w = x.shape[-2:]
            raise DatasetError(
                f"{path}: image is {w}x{h} pixels, the others {self.image_size[1]}x{self.image_size[0]}; "
                "pass --image-size H W to resize"
            )
        x = resize_image(convert_channels(x, self.channels), self.image_size)
        if self.cache_size:
            self._cache[i] = x
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return x

    def _index(self, index) -> int:
        i = operator.index(index)
        n = len(self.paths)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return i % n

    def __getitem__(self, index) -> tuple[Tensor, Tensor]:
        i = self._index(index)
        x = self.load(i)
        if self.distort is not None:
            x = warp(x[None], self.params[i : i + 1], self._family, out_size=self.image_size)[0].clamp_(0.0, 1.0)
        return x, self.labels[i]


@dataclass
class ImageData:
    """The splits of a folder or CSV of images, and what a model needs to know about them."""

    train: ImageFolderDataset
    val: ImageFolderDataset
    test: ImageFolderDataset
    classes: tuple[str, ...]
    in_channels: int
    image_size: tuple[int, int]
    source: str

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)


def open_image_data(
    path: str | os.PathLike,
    image_size=None,
    channels: int | None = None,
    seed: int = 0,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    distort: str | None = None,
    test_seed: int | None = None,
    order: str = "auto",
    cache_size: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> ImageData:
    """Train, validation and test datasets of a folder of class folders or a ``.csv`` manifest.

    Args:
        path: a folder (``ROOT/<class>/...`` or ``ROOT/{train,val,test}/<class>/...``) or a ``.csv``.
        image_size: ``(H, W)`` (or an int) to resize every image to; ``None``: all
            images must have one size, which is kept; ``"median"``: the median height and
            width of the images (``stnkit train --data`` without ``--image-size``).
        channels: ``None`` (1 if every image is grey, else 3), 1 or 3.
        seed: the seed of the training distortions.
        val_fraction, test_fraction: per class, when the split is not given.
        distort: ``None`` or ``r``, ``rts``, ``p``, ``e``, applied to every split.
        test_seed: the seed of the carved splits and of the test draw (default ``seed``); validation
            draws use ``test_seed + 1000``.
        order: ``auto``, ``class`` or ``index`` (see :func:`order_indices`).
        cache_size: decoded images each dataset keeps in memory.
        max_pixels: the largest image (width x height) read.

    Every file's header is read (and checked) here; no pixel is decoded.
    """
    path = Path(path)
    images = (
        read_image_manifest(path) if path.suffix.lower() == ".csv" and not path.is_dir() else scan_image_folder(path)
    )
    max_pixels = check_int("max_pixels", max_pixels)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    median = isinstance(image_size, str) and image_size == "median"
    size = None if image_size is None or median else check_size("image_size", image_size)
    test_seed = seed if test_seed is None else test_seed
    check_int("test_seed", test_seed, low=0)
    check_choice("order", order, ORDERS)
    headers = [read_image_header(p, max_pixels) for p in images.paths]
    if size is None and median:  # the median height and width (each rounded down to an int)
        size = (int(np.median([h.height for h in headers])), int(np.median([h.width for h in headers])))
        if all((h.height, h.width) == size for h in headers):
            median = False  # one size for all: nothing to resize
    if size is None:
        first = headers[0]
        for p, h in zip(images.paths, headers):
            if (h.width, h.height) != (first.width, first.height):
                raise DatasetError(
                    f"images differ in size: {images.paths[0]} is {first.width}x{first.height}, "
                    f"{p} is {h.width}x{h.height}; pass --image-size H W to resize them all"
                )
        size = (first.height, first.width)
    in_channels = channels if channels is not None else (1 if all(h.grey for h in headers) else 3)
    # the held-out images are fixed by test_seed: runs of several seeds are tested on the same images
    split = assign_splits(images, test_seed, val_fraction, test_fraction)
    seeds = {"train": seed, "val": test_seed + VAL_SEED_OFFSET, "test": test_seed}
    sets = {}
    for s in SPLITS:
        idx = order_indices(images, split[s], order)
        sets[s] = ImageFolderDataset(
            [images.paths[i] for i in idx],
            [images.labels[i] for i in idx],
            images.classes,
            image_size=size,
            channels=in_channels,
            resize=image_size is not None,
            distort=distort,
            seed=seeds[s],
            fresh=s == "train",
            cache_size=cache_size,
            max_pixels=max_pixels,
        )
    return ImageData(sets["train"], sets["val"], sets["test"], images.classes, in_channels, size, str(path))


def channel_stats(dataset, max_images: int = 1000) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean, std)`` float32 ``(C,)`` of a dataset's images (use the training split).

    At most ``max_images`` samples, evenly spaced over the dataset (deterministic:
    no random subsample); every pixel counts once; ``std`` is the population
    standard deviation, floored at 1e-3 so that a constant channel does not divide by 0.
    """
    max_images = check_int("max_images", max_images)
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty; channel_stats needs at least one image")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_images)).round().astype(np.int64))
    total = sq = None
    count = 0
    for i in idx:
        x = dataset[int(i)][0].double()
        flat = x.reshape(x.shape[0], -1)
        s, q = flat.sum(1), (flat * flat).sum(1)
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += flat.shape[1]
    mean = total / count
    var = (sq / count - mean * mean).clamp_(min=0.0)
    return mean.float(), var.sqrt().clamp_(min=1e-3).float()


# -- writing an image folder -----------------------------------------------------------------
def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of an ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 or uint16 image (numpy and zlib only)."""
    img = np.asarray(image)
    if img.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"image must be uint8 or uint16, got {img.dtype}")
    if img.ndim == 2:
        colour = 0
    elif img.ndim == 3 and img.shape[2] in (2, 3, 4):
        colour = {2: 4, 3: 2, 4: 6}[img.shape[2]]
    else:
        raise ValueError(f"image must have shape (H, W) or (H, W, 2|3|4), got {img.shape}")
    h, w = img.shape[:2]
    depth = 8 if img.dtype == np.uint8 else 16
    rows = np.ascontiguousarray(img.astype(">u2") if depth == 16 else img).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows.view(np.uint8)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_image_folder(
    images: np.ndarray, labels: np.ndarray, out: str | os.PathLike, info: dict | None = None
) -> Path:
    """Write uint8 ``(N, H, W)`` images as ``OUT/<label>/<index>.png`` (8-bit grey), index zero-padded.

    ``out`` must not exist or be an empty folder (nothing is ever overwritten or
    deleted). The files go to a hidden ``.OUT.part`` folder next to it, which becomes
    ``out`` once complete (every file and folder flushed to disk first), so a reader
    never sees half a set and a killed run leaves only the hidden folder. ``info`` is written
    as ``out/info.json`` (ignored by the reader).
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"images must be uint8 (N, H, W) with N labels, got {images.dtype} {images.shape}, {labels.shape}"
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} already exists and is not an empty folder; choose a new --out (nothing is overwritten)"
        )
    width = max(5, len(str(images.shape[0] - 1)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.part"
    if tmp.exists():
        raise FileExistsError(f"{tmp} exists (an interrupted write?); remove it and run again")
    tmp.mkdir()
    done = False
    try:
        for label in np.unique(labels):
            (tmp / str(int(label))).mkdir()
        for i in range(images.shape[0]):
            path = tmp / str(int(labels[i])) / f"{i:0{width}d}.png"
            write_staged(path, png_bytes(images[i]))
        if info is not None:
            write_staged(tmp / "info.json", (json.dumps(info, indent=2) + "\n").encode())
        for sub in (*tmp.iterdir(), tmp):
            if sub.is_dir():
                _fsync(sub, directory=True)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
        _fsync(out.parent, directory=True)
        done = True
    finally:
        if not done:
            _remove_tree(tmp)
    return out


def _remove_tree(folder: Path) -> None:
    """Remove a folder this module created (its own staging folder only)."""
    if not folder.is_dir():
        return
    for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir() and not sub.is_symlink():
            sub.rmdir()
        else:
            sub.unlink()
    folder.rmdir()


__all__ = [
    "ImageData",
    "ImageFolderDataset",
    "ImageHeader",
    "ImageList",
    "assign_splits",
    "channel_stats",
    "open_image_data",
    "order_indices",
    "png_bytes",
    "read_image",
    "read_image_header",
    "read_image_manifest",
    "scan_image_folder",
    "write_image_folder",
]
