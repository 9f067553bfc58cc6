"""stnkit.data.cub: the CUB-200-2011 directory as distributed, on a fixture written in that layout."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stnkit.data.cub import CUB200
from stnkit.data.idx import DatasetError

CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
PARTS = ("back", "beak", "left eye")


def write_cub(root: Path, per_class: int = 4) -> Path:
    """A tiny CUB_200_2011 folder: 3 classes, ``per_class`` images each (JPEG and PNG, 40x30 and 48x36 px)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "parts").mkdir()
    images, labels, split, boxes, locs = [], [], [], [], []
    image_id = 0
    for c, name in enumerate(CLASSES, 1):
        (root / "images" / name).mkdir()
        for j in range(per_class):
            image_id += 1
            w, h = (40, 30) if j % 2 == 0 else (48, 36)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            ext = "jpg" if j % 2 == 0 else "png"
            rel = f"{name}/{name}_{j:04d}.{ext}"
            Image.fromarray(pixels).save(root / "images" / rel, format="JPEG" if ext == "jpg" else "PNG")
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {1 if j < per_class // 2 else 0}")
            boxes.append(f"{image_id} 4.0 3.0 {w - 10}.0 {h - 8}.0")
            for p in range(1, len(PARTS) + 1):
                locs.append(f"{image_id} {p} {5.0 * p} {2.0 * p + 1} {int(p != 3)}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CLASSES, 1)))
    (root / "parts" / "parts.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(PARTS, 1)))
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    return root


@pytest.fixture
def cub(tmp_path):
    return write_cub(tmp_path / "CUB_200_2011")


def test_splits_labels_and_lazy_images(cub):
    train, test = CUB200(cub, "train", image_size=32), CUB200(cub, "test", image_size=32)
    assert len(train) == len(test) == 6
    assert set(train.image_ids).isdisjoint(test.image_ids)
    assert train.classes == CLASSES and train.part_names == PARTS and train.num_classes == 3
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    x, y = train[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and int(y) == 0
    assert 0.0 <= float(x.min()) <= float(x.max()) <= 1.0


def test_boxes_and_parts_are_scaled_with_the_image(cub):
    ds = CUB200(cub, "train", image_size=(60, 80))
    # image 1 is 40x30: box (4, 3, 4 + 30, 3 + 22) scaled by (80 / 40, 60 / 30)
    assert torch.allclose(ds.boxes[0], torch.tensor([8.0, 6.0, 68.0, 50.0]))
    # image 2 is 48x36: part 2 at (10, 5) scaled by (80 / 48, 60 / 36)
    assert torch.allclose(ds.part_locs[1, 1], torch.tensor([10 * 80 / 48, 5 * 60 / 36]))
    assert ds.part_visible[0].tolist() == [True, True, False]


def test_the_image_matches_an_independent_resize(cub):
    ds = CUB200(cub, "train", image_size=(30, 40))  # image 1 at its own size: no resampling
    png = np.asarray(Image.open(ds.paths[1]).convert("RGB"), dtype=np.float32) / 255.0
    ds2 = CUB200(cub, "train", image_size=(36, 48))
    assert torch.allclose(ds2[1][0], torch.from_numpy(png).permute(2, 0, 1), atol=1e-6)
    jpg = np.asarray(Image.open(ds.paths[0]).convert("RGB"), dtype=np.float32) / 255.0
    assert torch.allclose(ds[0][0], torch.from_numpy(jpg).permute(2, 0, 1), atol=1e-6)


@pytest.mark.parametrize(
    "file,edit,pattern",
    [
        (
            "images.txt",
            lambda t: t.replace("1 001", "x 001", 1),
            r"images\.txt:1: image_id must be an integer, got 'x'$",
        ),
        (
            "image_class_labels.txt",
            lambda t: t.replace("2 1\n", "2 9\n", 1),
            r"image_class_labels\.txt:2: class_id 9 is not in classes\.txt \(1\.\.3\)$",
        ),
        (
            "train_test_split.txt",
            lambda t: t.replace("3 0", "3 2", 1),
            r"train_test_split\.txt:3: is_training_image must be 0 or 1, got '2'$",
        ),
        (
            "bounding_boxes.txt",
            lambda t: t.replace("1 4.0 3.0 30.0", "1 4.0 3.0 300.0", 1),
            r"bounding_boxes\.txt:1: box .* lies outside image id 1's 40x30 pixels$",
        ),
        (
            "bounding_boxes.txt",
            lambda t: t.replace("1 4.0 3.0 30.0 22.0", "1 4.0 3.0", 1),
            r"bounding_boxes\.txt:1: expected '<image_id> <x> <y> <width> <height>', got 3 fields",
        ),
        (
            "bounding_boxes.txt",
            lambda t: "\n".join(t.splitlines()[1:]) + "\n",
            r"bounding_boxes\.txt: no line for image id 1 \(and 0 more\)$",
        ),
        (
            "classes.txt",
            lambda t: t.replace("2 002", "5 002"),
            r"classes\.txt:2: class ids must run 1, 2, \.\.\. in order; expected 2, got 5$",
        ),
        (
            "parts/part_locs.txt",
            lambda t: t.replace("1 2 10.0 5.0 1", "1 2 10.0 5.0 7"),
            r"part_locs\.txt:2: visible must be 0 or 1, got '7'$",
        ),
        (
            "parts/part_locs.txt",
            lambda t: t.replace("1 2 10.0 5.0 1", "1 9 10.0 5.0 1"),
            r"part_locs\.txt:2: part_id 9 is not in parts/parts\.txt \(1\.\.3\)$",
        ),
        (
            "images.txt",
            lambda t: t.replace("001.Black_footed_Albatross/001.Black_footed_Albatross_0000.jpg", "../x.jpg", 1),
            r"images\.txt:1: path must be relative to images/ without '\.\.'",
        ),
    ],
)
def test_malformed_files_are_one_line_errors_naming_file_and_line(cub, file, edit, pattern):
    path = cub / file
    path.write_text(edit(path.read_text()))
    with pytest.raises(DatasetError, match=pattern) as info:
        CUB200(cub, "train", image_size=32)
    assert "\n" not in str(info.value)


def test_missing_files_and_bad_images_are_refused_before_decoding(cub, tmp_path):
    with pytest.raises(DatasetError, match=r"not a directory"):
        CUB200(tmp_path / "nowhere")
    (cub / "parts" / "parts.txt").unlink()
    with pytest.raises(DatasetError, match=r"parts\.txt: missing \(not a CUB-200-2011 directory"):
        CUB200(cub)


def test_a_huge_or_corrupt_image_is_refused_from_its_header(cub):
    ds = CUB200(cub, "train", image_size=32)
    ds.paths[0].write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)  # a JPEG without a frame header
    with pytest.raises(DatasetError, match=r"truncated or corrupt JPEG"):
        CUB200(cub, "train", image_size=32)
    with pytest.raises(DatasetError, match=r"declares 40x30 pixels; expected 1 to 100 pixels"):
        CUB200(cub, "test", image_size=32, max_pixels=100)
