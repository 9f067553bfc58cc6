"""``stnkit reproduce cub --data-dir DIR``: the paper's 2x and 4x ST-CNN on CUB-200-2011 (a user's copy).

Jaderberg et al. 2015, section 4.3: 2 or 4 parallel ``attention`` transformers on the 448 px
image, each cropping 224 px into its own ImageNet-pretrained Inception (with batch norm), the
features concatenated into one softmax layer: 83.1 % (2x) and 84.1 % (4x) test accuracy.

What this target builds instead, said in its output: no pretrained weights can be fetched here,
so each branch is ``--backbone`` (default the project's ResNet-18, :mod:`stnkit.models.backbones`,
**randomly initialised** as torchvision documents it) or a user's ``package.module:callable``
factory, which may load the user's own pretrained weights. From random initialisation on
5,994 training images, expect far below the paper's numbers. Sizes scale down by options
(``--image-size``, ``--crop-size``). Training: Adam, the localisation nets at ``lr * loc_lr_mult``,
a checkpoint each epoch (resumable), one run per row; the results name the backbone, sizes and
initialisation. Reported per transformer: which annotated part (``parts/part_locs.txt``) its
window most often contains, and how often.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from stnkit._io import atomic_write_text
from stnkit.data.cub import CUB200
from stnkit.geometry import attention_box
from stnkit.models.backbones import BACKBONES, load_backbone
from stnkit.models.classifiers import count_parameters
from stnkit.models.finegrained import parallel_st_cnn

from .parts import _load, _save, make_optimizer

ROWS = ("st-2x", "st-4x")
ROW_TRANSFORMERS = {"st-2x": 2, "st-4x": 4}
PAPER = {"st-2x": 83.1, "st-4x": 84.1}
PAPER_BACKBONE = "ImageNet-pretrained Inception with batch normalisation (448 px input, 224 px crops)"


@dataclass(frozen=True)
class CubConfig:
    image_size: int = 448
    crop: int = 224
    backbone: str = "resnet18"
    features: int = 512
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    loc_lr_mult: float = 0.1
    init_scale: float = 0.5
    init_spread: float = 0.5
    train_size: int | None = None  # the first N training images (None: all)
    test_size: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CubConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def backbone_note(config: CubConfig) -> str:
    """What the user gets, in one sentence (printed and written to the results)."""
    if config.backbone in BACKBONES:
        what = (
            f"the project's {config.backbone} (stnkit.models.backbones), randomly initialised (no pretrained weights)"
        )
    else:
        what = f"your backbone factory {config.backbone!r}, with whatever initialisation it gives"
    return (
        f"backbone: {what}, one per transformer, {config.crop} px crops of {config.image_size} px images; "
        f"the paper used {PAPER_BACKBONE}"
    )


def build(config: CubConfig, k: int, num_classes: int):
    torch.manual_seed(config.seed)
    return parallel_st_cnn(
        load_backbone(config.backbone),
        k,
        in_channels=3,
        in_size=config.image_size,
        crop_size=config.crop,
        num_classes=num_classes,
        features=config.features,
        loc_size=max(8, config.image_size // 4),
        init_scale=config.init_scale,
        init_spread=config.init_spread,
    )


def _subset(ds, n):
    return ds if n is None or n >= len(ds) else Subset(ds, range(n))


@torch.no_grad()
def evaluate(model, ds, config: CubConfig) -> dict:
    """Test accuracy, and per transformer the part its window contains most often (visible parts only)."""
    model.eval()
    base = ds.dataset if isinstance(ds, Subset) else ds
    index = list(ds.indices) if isinstance(ds, Subset) else list(range(len(ds)))
    correct, inside, seen = 0, None, None
    for start in range(0, len(index), config.batch_size):
        idx = index[start : start + config.batch_size]
        x = torch.stack([base[i][0] for i in idx])
        y = base.labels[idx]
        out, params = model.warp_input(x)
        correct += int((model.classifier(out).argmax(1) == y).sum())
        locs, vis = base.part_locs[idx], base.part_visible[idx]  # (b, P, 2), (b, P)
        wins = torch.stack([attention_box(p, config.image_size) for p in params], dim=1)  # (b, k, 4)
        px, py = locs[:, None, :, 0], locs[:, None, :, 1]
        w = wins[..., None]
        hit = (px >= w[:, :, 0]) & (px <= w[:, :, 2]) & (py >= w[:, :, 1]) & (py <= w[:, :, 3]) & vis[:, None]
        inside = hit.sum(0) if inside is None else inside + hit.sum(0)
        seen = vis.sum(0) if seen is None else seen + vis.sum(0)
    frac = 100.0 * inside.float() / seen.clamp(min=1).float()  # (k, P)
    per = []
    for t in range(frac.shape[0]):
        best = int(frac[t].argmax())
        per.append({"part": base.part_names[best], "contains_percent": frac[t, best].item()})
    return {"accuracy": 100.0 * correct / max(1, len(index)), "per_transformer": per}


def run_row(out: Path, row: str, config: CubConfig, root: Path, log=print) -> dict:
    run = out / "runs" / f"cub-{row}-s{config.seed}"
    done = run / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    train = CUB200(root, "train", config.image_size)
    test = CUB200(root, "test", config.image_size)
    model = build(config, ROW_TRANSFORMERS[row], train.num_classes)
    opt = make_optimizer(model, config)
    state = run / "state.safetensors"
    start, seconds, history = 0, 0.0, []
    if state.is_file():
        meta = _load(state, model, opt, config)
        start, seconds, history = int(meta["epoch"]), float(meta["seconds"]), list(meta["history"])
    loader_set = _subset(train, config.train_size)
    for epoch in range(start, config.epochs):
        t0 = time.time()
        model.train()
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        total, n = 0.0, 0
        for x, y in DataLoader(loader_set, batch_size=config.batch_size, shuffle=True, generator=g):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(y), n + len(y)
        seconds += time.time() - t0
        history.append({"epoch": epoch + 1, "train_loss": total / max(1, n)})
        log(f"cub {row}: epoch {epoch + 1}/{config.epochs} loss {total / max(1, n):.3f} ({seconds:.0f} s)")
        _save(state, model, opt, epoch + 1, {"config": config.to_dict(), "history": history, "seconds": seconds})
    metrics = evaluate(model, _subset(test, config.test_size), config)
    result = {
        "row": row,
        "config": config.to_dict(),
        "backbone_note": backbone_note(config),
        "parameters": count_parameters(model),
        "train_images": len(loader_set),
        "test_images": len(_subset(test, config.test_size)),
        "test_accuracy": metrics["accuracy"],
        "per_transformer": metrics["per_transformer"],
        "paper_accuracy": PAPER[row],
        "history": history,
        "fit_seconds": seconds,
    }
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, json.dumps(result, indent=2) + "\n")
    return result


def render_markdown(results: dict) -> str:
    lines = [
        "# CUB-200-2011: 2x and 4x ST-CNN",
        "",
        "| row | parameters | train / test images | test accuracy % | paper % | windows (part most often inside, %) |",
        "|---|---|---|---|---|---|",
    ]
    note = ""
    for r, res in results.items():
        note = res["backbone_note"]
        wins = "; ".join(f"{p['part']} {p['contains_percent']:.0f}" for p in res["per_transformer"])
        lines.append(
            f"| {r} | {res['parameters']:,} | {res['train_images']} / {res['test_images']} | "
            f"{res['test_accuracy']:.1f} | {res['paper_accuracy']} | {wins} |"
        )
    return "\n".join([*lines, "", note, ""])


def run_cub(out: Path, config: CubConfig, root: Path, rows=ROWS, log=print) -> dict:
    results = {}
    for r in rows:
        results[r] = run_row(out, r, config, root, log)
        atomic_write_text(out / "cub.json", json.dumps({"experiment": "cub", "rows": results}, indent=2) + "\n")
        atomic_write_text(out / "cub.md", render_markdown(results))
    return results


__all__ = ["PAPER", "ROWS", "CubConfig", "backbone_note", "build", "evaluate", "render_markdown", "run_cub"]
