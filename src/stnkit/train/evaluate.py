"""Evaluation: the test set, error rates, confusion matrices, how well a transformer recovers pose, and
registration's measures (Dice of the labels, folding, end-point error)."""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._checks import check_choice
from .._io import save_figure
from ..data import dataset_info, load_digits, open_dataset, open_pairs
from ..data.folder import VAL_SEED_OFFSET
from ..geometry import base_grid, field_to_pixels, folding_fraction, get_transform, warp_field
from ..models import STClassifier, transformer_families
from .config import TrainConfig
from .losses import mean_corner_error


def load_test_set(
    config: TrainConfig,
    *,
    dataset: str | None = None,
    split: str = "test",
    seed: int | None = None,
    data_dir: str | os.PathLike | None = None,
    size: int | None = None,
    digits: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """The fixed distorted digits a model trained with ``config`` is tested on.

    Every argument left out comes from ``config``: its ``dataset``, ``test_seed``
    and ``data_dir`` (``split="train"`` distorts the training digits the same way).
    ``size`` keeps the first ``size`` digits (all of them when ``None`` or when the
    split has fewer); ``digits`` (images, labels) replaces the split by your own
    28x28 digits. Training (``config.test_size``), ``stnkit eval``, ``stnkit show``
    and the reproduction figures all load their test digits here.

    A registration dataset (``shapes2d``, ``shapes3d``) has no digits: its test set is ``size`` pairs
    (default: the dataset's, :class:`~stnkit.data.DatasetInfo` ``sizes``) drawn from the seed, of side
    ``config.volume_size``; ``split="val"`` gives its validation pairs instead, the fixed draw of
    ``test_seed`` + :data:`~stnkit.data.folder.VAL_SEED_OFFSET` that training validates on (``size``
    default: ``config.val_size``), never a test or a training pair.
    """
    name = dataset or config.dataset
    info = dataset_info(name)
    if info.task == "registration":
        check_choice("split", split, ("test", "val"))
        if split == "val":
            n = size if size is not None else config.val_size
            first = config.test_seed + VAL_SEED_OFFSET
        else:
            n = size if size is not None else info.sizes[1]
            first = config.test_seed
        return open_pairs(name, n, seed=first if seed is None else seed, size=config.volume_size)
    if digits is None:
        digits = load_digits(split, config.data_dir if data_dir is None else data_dir)
    images, labels = digits
    if size is not None:
        images, labels = images[:size], labels[:size]
    return open_dataset(name, images, labels, seed=config.test_seed if seed is None else seed)


def check_input_size(config: TrainConfig, images: Tensor) -> None:
    """Refuse ``images`` whose size is not the canvas of the dataset a model was trained on (``config``)."""
    canvas = dataset_info(config.dataset).canvas_size
    if tuple(images.shape[-2:]) != (canvas, canvas):
        raise ValueError(
            f"the model takes {canvas}x{canvas} images (trained on {config.dataset!r}), "
            f"got {images.shape[-2]}x{images.shape[-1]}; pass --dataset NAME to distort source digits"
        )


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Logits ``(N, classes)`` (``(N, K, classes)`` for ``K`` labels per sample) for images ``(N, C, H, W)``, in batches."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, num_classes: int = 10) -> dict:
    """Error %, per-class error %, and the confusion matrix (rows: true, columns: predicted).

    ``labels`` ``(N,)``, or ``(N, K)`` for ``K`` labels per sample (a digit sequence): then
    the error and the confusion matrix count every label, and ``sequence_error`` (%) counts
    a sample wrong when any of its labels is.
    """
    labels = labels.long()
    if labels.ndim not in (1, 2) or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels must have shape ({images.shape[0]},) or ({images.shape[0]}, K), got {tuple(labels.shape)}"
        )
    return error_report(predict_logits(model, images).argmax(-1), labels, num_classes)


@torch.no_grad()
def evaluate_dataset(model: nn.Module, dataset, num_classes: int | None = None, batch_size: int = 64) -> dict:
    """:func:`evaluate` on a map-style dataset of ``(image, label)``, read in batches (never all in
    memory at once); ``num_classes`` defaults to the model's number of outputs."""
    model.eval()
    preds, labels = [], []
    device = next(model.parameters()).device
    for x, y in DataLoader(dataset, batch_size=batch_size):
        preds.append(model(x.to(device)).argmax(-1).cpu())
        labels.append(torch.as_tensor(y).long())
    if not preds:
        raise ValueError("the dataset to evaluate on is empty")
    pred = torch.cat(preds)
    if num_classes is None:
        num_classes = int(model(x[:1].to(device)).shape[-1])
    return error_report(pred, torch.cat(labels), num_classes)


def error_report(pred: Tensor, labels: Tensor, num_classes: int) -> dict:
    """Error %, per-class error % and the confusion matrix of predicted classes ``pred`` against ``labels``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    sequence_error = None
    if labels.ndim == 2:
        sequence_error = round(100.0 * float((pred != labels).any(1).float().mean()), 3)
        pred, labels = pred.flatten(), labels.flatten()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    conf.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for c in range(num_classes):
        n = int(conf[c].sum())
        per_class[str(c)] = round(100.0 * (n - int(conf[c, c])) / n, 3) if n else None
    result = {
        "n": int(labels.numel()),
        "error": round(100.0 * float((pred != labels).float().mean()), 3),
        "per_class_error": per_class,
        "confusion": conf.tolist(),
    }
    if sequence_error is not None:
        result["sequence_error"] = sequence_error
    return result


@torch.no_grad()
def pose_spread(
    model: nn.Module, images: Tensor, gt_params: Tensor, gt_transform: str, grid: int = 7, transformer: int = 0
) -> dict:
    """The pose spread: how consistently the transformer brings digits to one canonical pose.

    The transformer's output point ``p`` reads the canvas at ``T_st(p)``, which
    shows the source digit at ``T_gt(T_st(p))`` (ground truth from the
    generator). A transformer that recovers the pose sends ``p`` to the same
    digit location for every sample. We report the RMS spread of that location
    across samples, averaged over a ``grid x grid`` set of output points, in
    pixels of the 28x28 source digit, and the same spread without the
    transformer (``T_gt(p)``: the raw variability of the distortion).

    ``transformer`` picks one of parallel transformers (the first by default). With
    several digits per sample (``addition``), ``gt_params`` are one digit's (one
    channel's): a small spread says the transformer follows that digit.

    Returns ``{"spread_st_px": ..., "spread_identity_px": ...}``, kept under the
    key ``"pose_spread"`` of a run's ``results.json`` (``"pose_recovery"`` in runs
    written before the name was unified; :func:`~stnkit.train.report.read_pose_spread`
    reads both).
    """
    families = transformer_families(model)
    if not families:
        raise ValueError("pose spread needs a model with a spatial transformer (st-fcn or st-cnn)")
    assert isinstance(model, STClassifier)
    model.eval()
    _, params = model.warp_input(images)
    gt_family = get_transform(gt_transform)
    pts = base_grid((grid, grid), dtype=images.dtype).view(1, -1, 2).expand(images.shape[0], -1, -1)
    gt_params = gt_params.to(images.dtype)
    k = transformer
    through_st = gt_family.transform_points(gt_params, families[k].transform_points(params[k], pts))
    without = gt_family.transform_points(gt_params, pts)

    def spread(p: Tensor) -> float:
        dev = (p - p.mean(0, keepdim=True)).pow(2).sum(-1).mean(0).sqrt()  # RMS over samples, per point
        return float(dev.mean()) * 14.0  # normalised units -> pixels of the 28x28 digit

    return {"spread_st_px": round(spread(through_st), 3), "spread_identity_px": round(spread(without), 3)}


def channel_pose_spread(model: STClassifier, dataset, n: int = 500) -> dict:
    """For samples of several digits, one per channel (``addition``): the :func:`pose_spread` of every
    transformer against every channel's digit, ``{"transformer 1": {"channel 1": {...}, ...}, ...}``.

    A transformer that has learned to attend to one digit has a small spread for that
    channel and a large one for the other (the paper's 2xST-FCN, appendix A.1).
    """
    images, params = dataset.images[:n], dataset.params[:n]
    return {
        f"transformer {k + 1}": {
            f"channel {c + 1}": pose_spread(model, images, params[:, c], dataset.transform, transformer=k)
            for c in range(params.shape[1])
        }
        for k in range(len(transformer_families(model)))
    }


def warp_labels(labels: Tensor, u: Tensor, num_classes: int) -> Tensor:
    """Label maps ``(B, *spatial)`` warped by fields ``u``: one-hot, linear interpolation, argmax."""
    onehot = F.one_hot(labels.long(), num_classes).movedim(-1, 1).to(u.dtype)
    return warp_field(onehot, u).argmax(1)


def label_dice(a: Tensor, b: Tensor, num_classes: int) -> Tensor:
    """The mean Dice ``(B,)`` over the foreground labels ``1 .. num_classes - 1`` present in ``a`` or ``b``."""
    scores = []
    present = []
    for k in range(1, num_classes):
        ak, bk = (a == k).flatten(1), (b == k).flatten(1)
        total = (ak.sum(1) + bk.sum(1)).double()
        scores.append(torch.where(total > 0, 2 * (ak & bk).sum(1).double() / total.clamp_min(1), 0.0))
        present.append(total > 0)
    scores_, present_ = torch.stack(scores, 1), torch.stack(present, 1)
    return (scores_.sum(1) / present_.sum(1).clamp_min(1)).float()


@torch.no_grad()
def registration_metrics(
    u: Tensor, moving_labels: Tensor, fixed_labels: Tensor, num_classes: int, true_field: Tensor | None = None
) -> dict[str, Tensor]:
    """Per pair ``(B,)``, how well the field ``u`` (stnkit's convention, ``align_corners=False``) registers:

    * ``dice_before``, ``dice``: the mean Dice of the foreground labels, moving against fixed, before and
      after warping the moving labels by ``u`` (:func:`warp_labels`);
    * ``folding``: the % of voxels where the map folds (:func:`~stnkit.geometry.folding_fraction`);
    * ``epe``: with ``true_field``, the mean end-point error in voxels, ``|u - true_field|`` over the fixed
      image's foreground (``fixed_labels > 0``; the background has no contrast to register).
    """
    out = {
        "dice_before": label_dice(moving_labels, fixed_labels, num_classes),
        "dice": label_dice(warp_labels(moving_labels, u, num_classes), fixed_labels, num_classes),
        "folding": 100.0 * folding_fraction(u),
    }
    if true_field is not None:
        err = field_to_pixels(u - true_field.to(u.dtype)).norm(dim=1).flatten(1)
        fg = (fixed_labels > 0).flatten(1).to(err.dtype)
        out["epe"] = (err * fg).sum(1) / fg.sum(1).clamp_min(1)
    return out


@torch.no_grad()
def evaluate_registration(model: nn.Module, dataset, num_classes: int, batch_size: int = 4) -> dict:
    """:func:`registration_metrics` of a registration model (pairs ``(B, 2, *spatial)`` to fields) on a
    dataset of ``(pair, ground truth)``: the means over pairs, and the model's seconds per pair."""
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    n, seconds = 0, 0.0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        start = time.perf_counter()
        u = model(x.to(device)).cpu()
        seconds += time.perf_counter() - start
        m = registration_metrics(u, y["moving_labels"], y["fixed_labels"], num_classes, y["field"])
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v.double().sum())
        n += x.shape[0]
    if n == 0:
        raise ValueError("the dataset to evaluate on is empty")
    result = {k: round(v / n, 4) for k, v in sums.items()}
    return {"n": n, **result, "seconds_per_pair": round(seconds / n, 4)}


def confusion_png(confusion: list, path, title: str = "", classes=None) -> None:
    """The confusion matrix as a PNG (rows: true, columns: predicted), axes labelled with ``classes`` when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(confusion)
    grow = max(1.0, conf.shape[0] / 10)  # 10 classes fit the base size; more (the 19 sums of addition) widen it
    fig, ax = plt.subplots(figsize=(5.2 * grow, 4.6 * grow))
    im = ax.imshow(np.log1p(conf), cmap="Blues")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=6, color="k" if i != j else "w")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(conf.shape[1]))
    ax.set_yticks(range(conf.shape[0]))
    if classes is not None:
        names = [c if len(c) <= 12 else c[:11] + "…" for c in classes]
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set_yticklabels(names, fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def evaluate_homography(model: nn.Module, dataset, batch_size: int = 64) -> dict:
    """The mean corner error (px) of a homography network ``model`` on a map-style dataset of
    ``(patch pair, corner offsets)``, averaged over samples: ``{"error": ..., "n": ...}``."""
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        total += float(mean_corner_error(model(x), y)) * len(y)
        n += len(y)
    if n == 0:
        raise ValueError("the dataset to evaluate on is empty")
    return {"error": total / n, "n": n}
