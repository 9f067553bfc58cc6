"""``stnkit reproduce parts``: parallel attention transformers on scenes whose class lies in two small parts.

The mechanism of the paper's fine-grained birds (Jaderberg et al. 2015, section 4.3: 2x and 4x
ST-CNN on CUB-200-2011, each transformer on a part such as the head or the body), on a benchmark
that runs here: :class:`~stnkit.data.PartsScenes` (128x128 RGB, clutter, two glyph parts, 16
classes, each part's box known). Rows, all at about one parameter count (stated in the results):

* ``cnn``: the backbone (:class:`~stnkit.models.finegrained.SmallConvNet`) alone on the whole
  scene, area-downsampled 2x (64x64);
* ``st-1x``, ``st-2x``, ``st-4x``: 1, 2, 4 parallel ``attention`` transformers (their localisation
  nets read the scene downsampled to ``loc_size``, 64x64) each cropping ``crop`` px (32) from the full scene into
  its own backbone, features concatenated (:func:`~stnkit.models.finegrained.parallel_st_cnn`); the
  backbones' width is chosen so that the whole model has the ``cnn`` row's parameter count.

Localisation (issue 28): with ``window_scale`` set, each transformer's localisation net is a
translation-equivariant heatmap (:class:`~stnkit.nn.HeatmapLocalization`, soft-argmax centre, uniform
at the start) and its window has that fixed scale; with ``part_weight`` > 0 each heatmap also pools
glyph scores under its softmax and a cross-entropy names its part's glyph (transformer ``t``: part A
for even ``t``, B for odd; the glyphs are the label's two halves, no box is used). Without
``window_scale``: the conv net :func:`~stnkit.models.finegrained.part_localization` and a regression
head (the first recipe, whose windows never covered a part; ``docs/experiments/parts_notes.md``).

Measured on the test scenes: accuracy, and per transformer how often its window covers part A, part B
(IoU > 0.5 with the part's box) and either; "divided" is the fraction of scenes where one transformer
covers part A and another part B. The training loop is this module's own (Adam, a cross-entropy on
the logits, one fixed draw of training scenes), resumable: a checkpoint each epoch, a finished row is
never trained again. Every choice of the recipe (:data:`PARTS_DEFAULTS`) was made on the validation
scenes (seed 1), never on the test scenes (seed 2); see ``docs/results/parts.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit._checks import check_int, check_number
from stnkit._io import atomic_write_text
from stnkit.data.parts import GLYPHS_A, GLYPHS_B, PARTS_CANVAS, PartsScenes
from stnkit.geometry import attention_box, box_iou
from stnkit.models.classifiers import count_parameters
from stnkit.models.finegrained import (
    SmallConvNet,
    parallel_st_cnn,
    part_localization,
    width_for_parameters,
)
from stnkit.nn import STClassifier
from stnkit.train.checkpoint import load_tensors, save_tensors

IOU_THRESHOLD = 0.5
ROWS = ("cnn", "st-1x", "st-2x", "st-4x")
ROW_TRANSFORMERS = {"cnn": 0, "st-1x": 1, "st-2x": 2, "st-4x": 4}
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class PartsConfig:
    """The recipe of every row (chosen on the validation scenes)."""

    train_size: int = 6000  # sweep 3: 1,500 -> 6,000 doubled st-2x's validation accuracy
    val_size: int = 300
    test_size: int = 500
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    loc_lr_mult: float = 1.0
    base_width: int = 24
    features: int = 32
    crop: int = 32
    base_size: int = 64
    loc_size: int = 64
    init_scale: float = 1.0
    init_spread: float = 0.0
    window_scale: float | None = 0.2  # a number: heatmap (soft-argmax) localisers, windows of this fixed scale
    part_weight: float = 10.0  # > 0 (with window_scale): each heatmap's pooled evidence names its part's glyph
    heatmap_temperature: float = 1.0  # with window_scale: the heatmaps' softmax temperature
    seed: int = 0

    def __post_init__(self):
        if self.window_scale is not None:
            check_number("window_scale", self.window_scale, low=1e-3, high=2.0)
        check_number("part_weight", self.part_weight, low=0.0)
        if self.part_weight > 0 and self.window_scale is None:
            raise ValueError("part_weight needs window_scale (heatmap localisers), got window_scale=None")
        check_int("loc_size", self.loc_size, low=4, high=PARTS_CANVAS)
        check_number("heatmap_temperature", self.heatmap_temperature, low=1e-3)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PartsConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


PARTS_DEFAULTS = PartsConfig()
# each PartsConfig option that `stnkit reproduce parts` sets with a flag of its own, and the flag
CLI_FLAGS = {
    "window_scale": "--parts-window-scale",
    "part_weight": "--parts-part-weight",
    "loc_size": "--parts-loc-size",
    "heatmap_temperature": "--parts-heatmap-temperature",
}


# -- the models -----------------------------------------------------------------------------------
def _small(width: int):
    def factory(in_channels: int, in_size, num_classes: int) -> nn.Module:
        return SmallConvNet(in_channels, num_classes, width)

    return factory


def baseline(config: PartsConfig, num_classes: int = PartsScenes.num_classes) -> nn.Module:
    """The backbone alone on the scene area-downsampled to ``base_size``."""
    k = PARTS_CANVAS // config.base_size
    return nn.Sequential(nn.AvgPool2d(k), SmallConvNet(3, num_classes, config.base_width))


def st_model(config: PartsConfig, k: int, width: int, num_classes: int = PartsScenes.num_classes) -> STClassifier:
    return parallel_st_cnn(
        _small(width),
        k,
        in_channels=3,
        in_size=PARTS_CANVAS,
        crop_size=config.crop,
        num_classes=num_classes,
        features=config.features,
        loc_size=config.loc_size,
        localization=lambda: part_localization(3),
        init_scale=config.init_scale,
        init_spread=config.init_spread,
        window_scale=config.window_scale,
        evidence_classes=len(GLYPHS_A) if config.part_weight > 0 else 0,
        heatmap_temperature=config.heatmap_temperature,
    )


def transformers_of(model: nn.Module) -> list:
    """The model's spatial transformers (none for ``cnn``)."""
    if not isinstance(model, STClassifier):
        return []
    t = model.transformer
    return list(t.transformers) if hasattr(t, "transformers") else [t]


def part_loss(model: nn.Module, kinds: Tensor) -> Tensor:
    """After a forward: the mean cross-entropy of each heatmap's pooled evidence against its part's glyph
    (transformer ``t`` is given part ``t % 2``: A, B, A, B; ``kinds`` ``(B, 2)``, the label's two glyphs)."""
    losses = []
    for t, st in enumerate(transformers_of(model)):
        ev = st.localization.heatmap.pooled_evidence  # (B, 1, 4)
        losses.append(F.cross_entropy(ev[:, 0], kinds[:, t % 2]))
    return torch.stack(losses).mean()


def build_row(row: str, config: PartsConfig) -> tuple[nn.Module, int | None]:
    """The row's model (seeded by ``config.seed``) and its backbones' width (``None`` for ``cnn``)."""
    k = ROW_TRANSFORMERS[row]
    if k == 0:
        torch.manual_seed(config.seed)
        return baseline(config), None
    target = count_parameters(baseline(config))
    width = width_for_parameters(lambda w: st_model(config, k, w), target, range(2, 4 * config.base_width))
    torch.manual_seed(config.seed)
    return st_model(config, k, width), width


# -- data -----------------------------------------------------------------------------------------
def render_set(n: int, seed: int) -> tuple[PartsScenes, Tensor]:
    """The scenes and their pixels, rendered once as uint8 ``(N, 3, 128, 128)``."""
    ds = PartsScenes(n, seed=seed)
    pixels = torch.empty(n, 3, PARTS_CANVAS, PARTS_CANVAS, dtype=torch.uint8)
    for i in range(n):
        pixels[i] = (ds[i][0] * 255).round_().to(torch.uint8)
    return ds, pixels


def _batches(pixels: Tensor, batch: int):
    for i in range(0, pixels.shape[0], batch):
        yield i, pixels[i : i + batch].float().div_(255.0)


# -- training -------------------------------------------------------------------------------------
def window_travel(config: PartsConfig) -> float:
    """The most a window parameter (a head bias) can move in the whole fit: Adam steps each parameter by at
    most about its learning rate, so ``lr * loc_lr_mult * steps``. Far below a part's side (0.32-0.44 in
    normalised units) the windows cannot reach the parts whatever the gradients say
    (issue 28: x0.1 gave 0.03 over 6 epochs of 1,500 scenes, and every window stayed at scale 1.00)."""
    steps = -(-config.train_size // config.batch_size) * config.epochs
    return config.lr * config.loc_lr_mult * steps


def make_optimizer(model: nn.Module, config: PartsConfig) -> torch.optim.Optimizer:
    """Adam; the localisation nets at ``lr * loc_lr_mult`` (as ``stnkit train --loc-lr-mult``)."""
    loc = [p for n, p in model.named_parameters() if n.startswith("transformer.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("transformer.")]
    groups = [{"params": rest, "lr": config.lr}]
    if loc:
        groups.append({"params": loc, "lr": config.lr * config.loc_lr_mult})
    return torch.optim.Adam(groups)


def _save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, meta: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        for name, value in opt.state.get(p, {}).items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(value)
    save_tensors(path, tensors, {**meta, "epoch": epoch})


def _load(path: Path, model: nn.Module, opt: torch.optim.Optimizer, config: PartsConfig) -> dict:
    tensors, meta = load_tensors(path)
    if PartsConfig.from_dict(meta.get("config", {})) != config:
        raise SystemExit(f"stnkit reproduce parts: {path} was written with other settings; delete it to start again")
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(model.parameters()):
        prefix = f"optim.{i}."
        state = {k.removeprefix(prefix): v.clone() for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            opt.state[p] = state
    return meta


@torch.no_grad()
def predict(model: nn.Module, pixels: Tensor, batch: int = 128) -> tuple[Tensor, list[Tensor]]:
    """Predicted classes ``(N,)`` and, for an ST model, each transformer's params ``(N, 3)``."""
    model.eval()
    preds, params = [], []
    for _, x in _batches(pixels, batch):
        if isinstance(model, STClassifier):
            out, p = model.warp_input(x)
            preds.append(model.classifier(out).argmax(1))
            params.append(torch.stack(p, dim=1))
        else:
            preds.append(model(x).argmax(1))
    return torch.cat(preds), ([] if not params else list(torch.cat(params).unbind(1)))


def _centre_in(win: Tensor, box: Tensor) -> float:
    """The % of windows ``(N, 4)`` whose centre lies inside the box ``(N, 4)`` (pixel edges)."""
    cx, cy = (win[:, 0] + win[:, 2]) / 2, (win[:, 1] + win[:, 3]) / 2
    inside = (cx > box[:, 0]) & (cx < box[:, 2]) & (cy > box[:, 1]) & (cy < box[:, 3])
    return 100.0 * inside.float().mean().item()


def coverage(params: list[Tensor], boxes: Tensor, canvas: int = PARTS_CANVAS) -> dict:
    """Per transformer, the % of scenes whose window covers part A / part B (IoU > 0.5) or either, and whose
    window centre lies inside part A's / B's box (``centre_in_a``, ``centre_in_b``: on the part whatever the
    window's size); and the % where one transformer covers part A and another part B (``divided``)."""
    covers = []
    per = []
    for p in params:
        win = attention_box(p, canvas)
        iou_a, iou_b = box_iou(win, boxes[:, 0]), box_iou(win, boxes[:, 1])
        a, b = iou_a > IOU_THRESHOLD, iou_b > IOU_THRESHOLD
        covers.append((a, b))

        per.append(
            {
                "part_a": 100.0 * a.float().mean().item(),
                "part_b": 100.0 * b.float().mean().item(),
                "either": 100.0 * (a | b).float().mean().item(),
                "mean_iou_a": iou_a.mean().item(),
                "mean_iou_b": iou_b.mean().item(),
                "mean_scale": p[:, 0].abs().mean().item(),
                "centre_in_a": _centre_in(win, boxes[:, 0]),
                "centre_in_b": _centre_in(win, boxes[:, 1]),
            }
        )
    n = boxes.shape[0]
    divided = torch.zeros(n, dtype=torch.bool)
    for i, (a, _) in enumerate(covers):
        for j, (_, b) in enumerate(covers):
            if i != j:
                divided |= a & b
    return {"per_transformer": per, "divided": 100.0 * divided.float().mean().item() if len(params) > 1 else None}


def train_row(run: Path, row: str, config: PartsConfig, data: dict, log=print) -> dict:
    """Train one row (resuming ``run/state.safetensors``); write and return ``run/results.json``."""
    done = run / "results.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if PartsConfig.from_dict(result["config"]) == config:
            return result
        raise SystemExit(f"stnkit reproduce parts: {done} was written with other settings; delete {run} to rerun")
    model, width = build_row(row, config)
    opt = make_optimizer(model, config)
    state = run / "state.safetensors"
    history: list[dict] = []
    start, seconds = 0, 0.0
    if state.is_file():
        meta = _load(state, model, opt, config)
        start, history, seconds = int(meta["epoch"]), list(meta["history"]), float(meta["seconds"])
        log(f"{row}: resumed after epoch {start}")
    train_ds, train_px = data["train"]
    val_ds, val_px = data["val"]
    labels = train_ds.labels
    for epoch in range(start, config.epochs):
        t0 = time.time()
        model.train()
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(labels), generator=g)
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            x = train_px[idx].float().div_(255.0)
            loss = F.cross_entropy(model(x), labels[idx])
            if config.part_weight > 0 and ROW_TRANSFORMERS[row] > 0:
                loss = loss + config.part_weight * part_loss(model, train_ds.kinds[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        pred, _ = predict(model, val_px)
        val_acc = 100.0 * (pred == val_ds.labels).float().mean().item()
        seconds += time.time() - t0
        history.append({"epoch": epoch + 1, "train_loss": total / len(order), "val_accuracy": val_acc})
        log(
            f"{row}: epoch {epoch + 1}/{config.epochs} loss {total / len(order):.3f} val acc {val_acc:.1f} % ({seconds:.0f} s)"
        )
        _save(state, model, opt, epoch + 1, {"config": config.to_dict(), "history": history, "seconds": seconds})
    test_ds, test_px = data["test"]
    pred, params = predict(model, test_px)
    val_pred, val_params = predict(model, val_px)
    result = {
        "row": row,
        "config": config.to_dict(),
        "transformers": ROW_TRANSFORMERS[row],
        "backbone_width": config.base_width if width is None else width,
        "parameters": count_parameters(model),
        "test_accuracy": 100.0 * (pred == test_ds.labels).float().mean().item(),
        "val_accuracy": history[-1]["val_accuracy"],
        "history": history,
        "fit_seconds": seconds,
        "test_coverage": coverage(params, test_ds.boxes) if params else None,
        "val_coverage": coverage(val_params, val_ds.boxes) if val_params else None,
    }
    torch.save(model.state_dict(), run / "model.pt")
    atomic_write_text(done, json.dumps(result, indent=2) + "\n")
    return result


def load_data(config: PartsConfig, splits=("train", "val", "test")) -> dict:
    sizes = {"train": config.train_size, "val": config.val_size, "test": config.test_size}
    return {s: render_set(sizes[s], SPLIT_SEEDS[s]) for s in splits}


def run_dir(out: Path, row: str, config: PartsConfig) -> Path:
    return out / "runs" / f"parts-{row}-s{config.seed}"


def run_parts(out: Path, config: PartsConfig, rows=ROWS, log=print) -> dict:
    t0 = time.time()
    todo = [r for r in rows if not (run_dir(out, r, config) / "results.json").is_file()]
    data = load_data(config) if todo else None
    log(f"rendered the scenes in {time.time() - t0:.0f} s" if todo else "every row is finished")
    for r in rows:
        if r in todo:
            run_dir(out, r, config).mkdir(parents=True, exist_ok=True)
            train_row(run_dir(out, r, config), r, config, data, log)
        write_outputs(out, summarize(out, config, rows))
    return summarize(out, config, rows)


def summarize(out: Path, config: PartsConfig, rows=ROWS) -> dict:
    results = {}
    for r in rows:
        f = run_dir(out, r, config) / "results.json"
        if f.is_file():
            results[r] = json.loads(f.read_text())
    summary = {"experiment": "parts", "config": config.to_dict(), "rows": results}
    recipe = out / "parts_recipe.json"  # the validation sweep (docs/experiments/parts_recipe_sweep2.py), if any
    if recipe.is_file():
        summary["recipe"] = json.loads(recipe.read_text())["rows"]
    return summary


# -- reports --------------------------------------------------------------------------------------
PAPER_CUB = {"ST-CNN 2x (CUB-200-2011)": 83.1, "ST-CNN 4x (CUB-200-2011)": 84.1}


def _result_lines(summary: dict, c: PartsConfig) -> list[str]:
    """The result in words, every number read from the rows (test scenes)."""
    rows = summary["rows"]
    if not rows:
        return []
    best = max(rows, key=lambda r: rows[r]["test_accuracy"])
    out = ["", f"Result (test scenes): the best accuracy is {best}'s, {rows[best]['test_accuracy']:.1f} %"]
    if "cnn" in rows:
        others = [r for r in rows if r != "cnn"]
        out[-1] += (
            "; against the backbone alone (cnn, "
            + f"{rows['cnn']['test_accuracy']:.1f} %): "
            + (
                ", ".join(f"{r} {rows[r]['test_accuracy'] - rows['cnn']['test_accuracy']:+.1f} points" for r in others)
                or "no st row"
            )
        )
    out[-1] += "."
    if c.part_weight > 0:
        for r in rows:
            cov = rows[r].get("test_coverage")
            if not cov:
                continue
            parts = []
            for t, p in enumerate(cov["per_transformer"]):
                own, other = ("part_a", "part_b") if t % 2 == 0 else ("part_b", "part_a")
                parts.append(
                    f"transformer {t} covers its part ({'AB'[t % 2]}) in {p[own]:.1f} % of the scenes and the other "
                    f"in {p[other]:.1f} %"
                )
            div = "" if cov["divided"] is None else f"; one window on A and another on B in {cov['divided']:.1f} %"
            out[-1] += f" {r}: " + "; ".join(parts) + div + "."
        if "st-1x" in rows:
            out[-1] += (
                " (st-1x's one window is given part A: it can name A's glyph, B's it can only guess, so its "
                "accuracy is bounded near a quarter of the scenes plus what the crop catches of B.)"
            )
    return out


def _pct(v) -> str:
    return "" if v is None else f"{v:.1f}"


def render_markdown(summary: dict) -> str:
    c = PartsConfig.from_dict(summary["config"])
    lines = [
        "# parts: parallel attention transformers on two-part scenes",
        "",
        "Generated by `stnkit reproduce parts --docs docs/results/parts.md` from `results/parts.json` "
        "(`--report-only` rewrites it from the finished rows); do not edit by hand.",
        "",
        "The benchmark (`stnkit.data.PartsScenes`): 128x128 RGB scenes, a smooth random background, 10 random "
        "strokes and 6 discs of clutter, and two glyphs at random positions, sides (0.16 to 0.22 of the canvas) "
        "and rotations (the full circle), in random bright colours: part A from set A, part B from set B. The "
        "class is the pair (A's glyph, B's glyph): 16 classes, roles fixed (an ordered pair of kinds; the "
        "positions are free), so both parts must be seen. Each part's box is the tight box of the pixels it "
        "paints. Deterministic by seed (training 0, validation 1, test 2).",
        "",
        "Rows: `cnn` is the backbone (`SmallConvNet`) alone on the scene downsampled to 64 px; `st-kx` is k "
        "parallel attention transformers (scale and translation; their localisation below), each crop through its own "
        "backbone, features concatenated into one linear layer (`stnkit.models.finegrained.parallel_st_cnn`), "
        "the backbones' width chosen so that the model has the `cnn` row's parameter count.",
        "",
        f"{c.train_size} training, {c.val_size} validation, {c.test_size} test scenes (128x128 RGB, 16 classes: "
        f"part A from {', '.join(GLYPHS_A)}; part B from {', '.join(GLYPHS_B)}), {c.epochs} epochs, "
        f"Adam lr {c.lr} (localisation nets x{c.loc_lr_mult}), batch {c.batch_size}, seed {c.seed}. "
        f"Crops {c.crop} px from the full scene; localisation nets read it at {c.loc_size} px; "
        f"the CNN reads it at {c.base_size} px. "
        + (
            f"Start windows: scale {c.init_scale}, centres +-{c.init_spread} (normalised); conv localisation nets "
            "(`part_localization`)."
            if c.window_scale is None
            else f"Localisation: one heatmap localiser per transformer (`stnkit.nn.HeatmapLocalization`: "
            "conv 3x3, pool, two dilated convs 3x3, a zero-initialised 1x1 score map, spatial softmax, soft-argmax "
            f"centre; uniform at the start, so every window starts at the middle); windows of fixed scale "
            f"{c.window_scale} ({c.window_scale * PARTS_CANVAS:.0f} of {PARTS_CANVAS} px)"
            + (
                f"; part loss weight {c.part_weight}: each heatmap also pools 4 glyph scores per position, and a "
                "cross-entropy names its part's glyph (transformer t: part A for even t, B for odd t; the glyphs are "
                "the label's two halves, no boxes are used), added to the classification loss."
                if c.part_weight > 0
                else "."
            )
        ),
        "",
        "Fit times: one CPU thread; the rows of this page were fitted on 2 cores shared with 3 other jobs, "
        "so they are inflated and not comparable with other pages' timings.",
        "",
        "| row | transformers | backbone width | parameters | test accuracy % | val accuracy % | fit (min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, res in summary["rows"].items():
        lines.append(
            f"| {r} | {res['transformers']} | {res['backbone_width']} | {res['parameters']:,} | "
            f"{res['test_accuracy']:.1f} | {res['val_accuracy']:.1f} | {res['fit_seconds'] / 60:.1f} |"
        )
    lines += [
        "",
        "Windows on the test scenes: % of scenes where transformer t's window covers part A or part B "
        f"(IoU > {IOU_THRESHOLD}), % where its window's centre lies inside part A's or B's box (on the part "
        "whatever the window's size), mean IoU with each part, mean window scale (1 = the whole scene); "
        "divided: % of scenes where one transformer covers part A and another part B.",
        "",
        "| row | transformer | covers A % | covers B % | either % | centre in A % | centre in B % | mean IoU A | "
        "mean IoU B | mean scale | divided % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, res in summary["rows"].items():
        cov = res.get("test_coverage")
        if not cov:
            continue
        for t, p in enumerate(cov["per_transformer"]):
            div = "" if cov["divided"] is None or t else f"{cov['divided']:.1f}"
            lines.append(
                f"| {r} | {t} | {p['part_a']:.1f} | {p['part_b']:.1f} | {p['either']:.1f} | "
                f"{_pct(p.get('centre_in_a'))} | {_pct(p.get('centre_in_b'))} | "
                f"{p['mean_iou_a']:.2f} | {p['mean_iou_b']:.2f} | {p['mean_scale']:.2f} | {div} |"
            )
    lines += _result_lines(summary, c)
    if summary.get("recipe"):
        lines += [
            "",
            "Recipe log (issue 28), every row on the validation scenes (seed 1, 300 scenes; 6 epochs unless the "
            "name says e20), st-kx rows as named. Sweep 2 (`docs/experiments/parts_recipe_sweep2.py`, log "
            "`parts_recipe_log2.txt`): the conv localisation net (`part_localization`: conv, pool, a 4x4 average "
            "pool, FC, a linear head) with learning-rate multipliers and start windows: its windows never covered "
            "a part (0 % in every row). "
            "Sweep 3 (`parts_recipe_sweep3.py`, log `parts_recipe_log3.txt`): heatmap localisers "
            "(`stnkit.nn.HeatmapLocalization`: conv heatmap, spatial softmax, soft-argmax centre; hm), the window's "
            "scale fixed (s025: 0.25, s020: 0.20), the localiser reading the scene at l64 px, t01: heatmap "
            "temperature 0.1, and pwN: the part loss at weight N (each heatmap's pooled evidence names its part's "
            "glyph, taken from the label). The recipe above is the last sweep-3 row. Notes: "
            "`docs/experiments/parts_notes.md`.",
            "",
            "| sweep | setting | training scenes | val accuracy % | val divided % | covers A % per transformer | "
            "covers B % per transformer | mean scale per transformer |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["recipe"]:
            div = "" if r["val_divided"] is None else f"{r['val_divided']:.1f}"
            lines.append(
                f"| {r.get('sweep', 2)} | {r['name']} | {r.get('train_size', 1500):,} | {r['val_accuracy']:.1f} | {div} | "
                + ", ".join(f"{v:.1f}" for v in r.get("val_part_a", []))
                + " | "
                + ", ".join(f"{v:.1f}" for v in r.get("val_part_b", []))
                + " | "
                + ", ".join(f"{v:.2f}" for v in r["val_mean_scale"])
                + " |"
            )
    lines += [
        "",
        "The paper (CUB-200-2011, ImageNet-pretrained Inception with batch norm, 448 px input): "
        + ", ".join(f"{k} {v} %" for k, v in PAPER_CUB.items())
        + "; not comparable with these numbers (another dataset): the parts rows show the mechanism.",
        "",
        "CUB-200-2011 itself: `stnkit reproduce cub --data-dir DIR` runs the 2x and 4x rows on a user's copy "
        "(no data or weights can be fetched here): each branch is the project's ResNet-18 from random "
        "initialisation unless `--backbone package.module:callable` names the user's own (e.g. pretrained) "
        "factory; 448 px images and 224 px crops unless `--image-size` and `--crop-size` say otherwise. It has "
        "not been run on CUB here; its test runs one epoch on a fixture in CUB's layout.",
        "",
        "![test scenes with each transformer's window](../../results/figures/parts.png)",
        "",
    ]
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict, docs: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "parts.json", json.dumps(summary, indent=2) + "\n")
    text = render_markdown(summary)
    atomic_write_text(out / "parts.md", text)
    if docs is not None:
        atomic_write_text(docs, text)


def make_figure(out: Path, summary: dict, n: int = 6) -> Path | None:
    """Test scenes with each transformer's window (``OUT/figures/parts.png``), one row per ST row."""
    rows = [r for r in summary["rows"] if ROW_TRANSFORMERS[r] > 0]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    from stnkit._io import save_figure

    config = PartsConfig.from_dict(summary["config"])
    ds = PartsScenes(config.test_size, seed=SPLIT_SEEDS["test"])  # the test set; its first n scenes
    x = torch.stack([ds[i][0] for i in range(n)])
    colours = ["tab:red", "tab:cyan", "tab:orange", "tab:green"]
    fig, axes = plt.subplots(len(rows), n, figsize=(2 * n, 2.1 * len(rows)), squeeze=False)
    for ri, r in enumerate(rows):
        model, _ = build_row(r, config)
        model.load_state_dict(torch.load(run_dir(out, r, config) / "model.pt", weights_only=True))
        model.eval()
        with torch.no_grad():
            logits_in, params = model.warp_input(x)
            pred = model.classifier(logits_in).argmax(1)
        for i in range(n):
            ax = axes[ri, i]
            ax.imshow(x[i].permute(1, 2, 0).numpy())
            for t, p in enumerate(params):
                x0, y0, x1, y1 = attention_box(p[i : i + 1], PARTS_CANVAS)[0].tolist()
                ax.add_patch(
                    patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colours[t % 4], lw=1.5)
                )
            ok = "ok" if int(pred[i]) == int(ds.labels[i]) else "wrong"
            ax.set_title(f"{r} ({ok})", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path = save_figure(fig, out / "figures" / "parts.png", dpi=80)
    plt.close(fig)
    return path


def config_with(**options) -> PartsConfig:
    """:data:`PARTS_DEFAULTS` with ``options`` (those of :class:`PartsConfig`)."""
    return replace(PARTS_DEFAULTS, **options)


__all__ = [
    "CLI_FLAGS",
    "PARTS_DEFAULTS",
    "ROWS",
    "PartsConfig",
    "build_row",
    "coverage",
    "part_loss",
    "make_figure",
    "render_markdown",
    "run_parts",
    "summarize",
    "train_row",
    "window_travel",
    "write_outputs",
]
