"""Co-localisation with a spatial transformer and a triplet hinge loss (no box labels).

Jaderberg et al. 2015, appendix A.2. Given images ``I_n`` that all show a digit
of one (unknown) class, an ``attention`` transformer (scale and translation)
crops ``I_n^T = T(I_n)``; for random pairs ``(n, m)`` the loss is

    max(0, ||e(I_n^T) - e(I_m^T)||^2 - ||e(I_n^T) - e(I_n^rand)||^2 + margin)

with ``I_n^rand`` a randomly sampled patch of ``I_n`` and margin 1, so the crops of two
images of the same class are pulled closer together in the encoding ``e()``
than a crop is to a random patch of its own image. As in the paper:

* ``e()`` is the CNN trained for digit classification (section 4.1, stnkit's
  ``cnn``: conv 9x9 -> pool -> ReLU -> conv 7x7 -> pool -> ReLU -> linear), trained
  here on the plain 28x28 training digits and then frozen; the descriptor is the
  three layers of activations concatenated (the two hidden layers and the
  classification layer without softmax).
* The localisation net is a conv layer of eight 9x9 filters with stride 4,
  2x2 max-pooling with stride 2, two 8-unit fully connected layers, then the
  3-unit ``attention`` head (initialised to the identity).
* 100 images of one class form one problem; a box is correct when its IoU with
  the truth exceeds 0.5. The paper reports the fraction on the problem's own
  images (co-localisation is transductive); we report it there and on 100
  held-out canvases of the same class from the test digits.

Choices the paper does not state: the random patch is a 28x28 square (the
transformer's output size) at a uniform position on the canvas
(``rand_patch="fixed"``; ``"same"`` takes a window of the crop's own scale);
the optimiser (Adam, or SGD with momentum), learning rate, batch, number of
steps and ``bounded`` (the window's centre kept on the canvas, ``0 < s < 2``)
are ours.

What was found with the paper's setting (no setting tried localises from an
uninformed start; the triplet loss is lowest for windows that make all crops
alike, zoomed out past the canvas) is in ``docs/results/colocalization.md``.
Options beyond the paper (``ColocConfig``; each a flag of ``stnkit reproduce
colocalization``, ``CLI_FLAGS``):

* ``descriptor``, ``rand_patch``, ``init_scale`` (start window ``(s, 0, 0)``; 1 is
  the identity, the paper's and the default), ``lr``;
* the constraints of issue 28: ``learn_scale=False`` (the window keeps
  ``init_scale``; with ``1/3`` it is the digit's 28 of the canvas's 84 px, only
  its position is learnt), ``scale_range=(lo, hi)`` (``s`` kept in the range by a
  sigmoid), ``outside_weight`` (the loss adds ``outside_weight`` times
  :func:`outside_penalty`, stnkit's ``coverage_penalty`` of the crops' sampling
  grids: zero while a window is on the canvas) and ``encoder_augment`` (e()'s CNN
  trained on digits seen through random windows, :func:`augment_digits`);
* ``search_rounds`` (> 0: the label-free window search, :func:`search_windows`,
  before any gradient step; not the paper's method, which is gradient descent
  on the triplet loss alone): the triplet loss of every 28x28 window on a grid
  (``search_stride`` px) of each canvas against the other canvases' current
  crops (``search_first``: the first round against the start window's crops, or
  ``"best"``, against each other canvas's nearest window), alternating rounds as
  co-segmentation does; then the localisation net is regressed onto the
  searched windows for ``search_steps`` steps (:func:`fit_to_windows`) and
  trained with the triplet loss for ``epochs`` (which may be 0). No box is used,
  only the problem's set of same-class canvases, as the paper's setting allows;
* ``split``: ``"val"`` puts the problem on validation canvases made of other
  training digits (:func:`problem_canvases`), where recipes are chosen
  (``docs/experiments/colocalization/val/recipes.md``); ``"test"`` (the
  default) is where the reported numbers come from.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit._checks import check_choice, check_int, check_number, check_range
from stnkit._io import atomic_write_text
from stnkit.data import COLOC_KINDS, CoLocalization
from stnkit.data.colocalization import COLOC_CANVAS
from stnkit.data.dataset import as_digits, stream_seed
from stnkit.data.distortions import DIGIT_SIZE
from stnkit.geometry import attention_box, attention_from_box, box_iou, warp
from stnkit.models import CNN
from stnkit.nn import SpatialTransformer, coverage_penalty
from stnkit.train.checkpoint import load_tensors, save_tensors

IOU_THRESHOLD = 0.5
# Jaderberg et al. 2015, appendix A.2, Table 5: % of digits correctly co-localised
PAPER_COLOC = {"plain": "100", "cluttered": "75-93"}


# -- the loss and the encoder ------------------------------------------------------------------------
def triplet_hinge_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Mean over the batch of ``max(0, |a - p|^2 - |a - n|^2 + margin)`` for descriptors ``(B, D)``."""
    d_pos = (anchor - positive).pow(2).sum(1)
    d_neg = (anchor - negative).pow(2).sum(1)
    return F.relu(d_pos - d_neg + margin).mean()


DESCRIPTORS = ("concat", "softmax", "concat_l2", "logits_l2")
RAND_PATCHES = ("fixed", "same")
SPLITS = ("val", "test")


class DigitEncoder(nn.Module):
    """``e()`` from a trained :class:`~stnkit.models.CNN`, ``(B, D)``.

    ``descriptor="concat"`` (the paper's): the two hidden layers and the logits,
    concatenated. Ours: ``"concat_l2"``, the same scaled to unit length;
    ``"logits_l2"``, the logits (classification layer without softmax) scaled
    to unit length; ``"softmax"``, the class probabilities.
    """

    def __init__(self, cnn: CNN, descriptor: str = "concat"):
        super().__init__()
        self.cnn = cnn
        self.descriptor = check_choice("descriptor", descriptor, DESCRIPTORS)

    def forward(self, x: Tensor) -> Tensor:
        if self.descriptor == "softmax":
            return torch.softmax(self.cnn(x), dim=1)
        if self.descriptor == "logits_l2":
            return F.normalize(self.cnn(x), dim=1)
        f = self.cnn.features
        h1 = f[:3](x)  # conv, pool, ReLU
        h2 = f[3:6](h1)
        logits = self.cnn.classifier(h2.flatten(1))
        e = torch.cat([h1.flatten(1), h2.flatten(1), logits], dim=1)
        return F.normalize(e, dim=1) if self.descriptor == "concat_l2" else e


# The slots of the random streams in the seed's block of generator seeds (stream_seed): each apart from the
# canvases' (slot 10 * start + digit, start + n at most the ~6,000 digits of a class) and from one another,
# so that no stream repeats the draws of another. (Slot 0, which digit 0's training canvases use, once made
# loss_at's patches exactly the digits' own boxes; the training streams used slot epoch + 1 and the search's
# fit slot 1, the slots of other digits' canvases. torch's CPU generator keeps only the low 32 bits of a
# seed, so the slots stay inside the block rather than above 2**32.)
LOSS_AT_SLOT = 500_000  # loss_at's random patches
TRIPLET_SLOT = 600_000  # + epoch: the triplet epochs' pairs and random patches
SEARCH_FIT_SLOT = 700_000  # the batches of the net's fit to the searched windows
ENCODER_SLOT = 800_000  # + epoch: the encoder's batches (and augmentations)
MAX_COLOC_EPOCHS = 99_999  # the epochs' slots stay below the next stream's
# the version of these streams, recorded in every run's state and results: a run of other streams is refused
STREAMS = 2


def _stream(seed: int, slot: int) -> torch.Generator:
    """The generator of ``slot`` in ``seed``'s block of generator seeds (one of the slots above)."""
    return torch.Generator().manual_seed(stream_seed(seed, None) + slot)


# encoder_augment: each training digit seen through a random window, scale and shift uniform in these ranges
ENCODER_AUG_SCALE = (0.8, 1.2)  # attention scale: > 1 shows the digit smaller, < 1 larger
ENCODER_AUG_SHIFT = 0.25  # |tx|, |ty| in normalised units (0.25 = 3.5 px of the 28x28 frame)


def augment_digits(digits: Tensor, generator: torch.Generator) -> Tensor:
    """``digits`` ``(B, 1, 28, 28)`` each warped by a random ``attention`` window (``encoder_augment``).

    Scale uniform in ``ENCODER_AUG_SCALE``, each translation uniform in
    ``[-ENCODER_AUG_SHIFT, ENCODER_AUG_SHIFT]``: the slightly shifted and
    rescaled views of a digit that a window near it crops.
    """
    n = digits.shape[0]
    lo, hi = ENCODER_AUG_SCALE
    s = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=digits.dtype)
    t = (torch.rand((n, 2), generator=generator, dtype=digits.dtype) * 2.0 - 1.0) * ENCODER_AUG_SHIFT
    return warp(digits, torch.cat([s[:, None], t], dim=1), "attention", out_size=DIGIT_SIZE)


def train_encoder(
    images: object, labels: object, seed: int = 0, epochs: int = 1, batch_size: int = 64, augment: bool = False
) -> CNN:
    """The paper's MNIST CNN trained on 28x28 digits (Adam, lr 1e-3), deterministic by ``seed``; eval mode.

    ``augment``: every batch through :func:`augment_digits` (new windows each epoch).
    """
    digits = as_digits(images)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    torch.manual_seed(seed)
    cnn = CNN(1, DIGIT_SIZE)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)
    cnn.train()
    for epoch in range(epochs):
        g = _stream(seed, ENCODER_SLOT + epoch)
        order = torch.randperm(len(digits), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = augment_digits(digits[idx], g) if augment else digits[idx]
            loss = F.cross_entropy(cnn(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return cnn.eval()


def encoder_error(cnn: CNN, images: object, labels: object) -> float:
    """% classification error of the encoder's CNN on plain digits."""
    digits = as_digits(images)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    with torch.no_grad():
        pred = torch.cat([cnn(digits[i : i + 500]).argmax(1) for i in range(0, len(digits), 500)])
    return 100.0 * float((pred != labels).float().mean())


def load_or_train_encoder(path: Path, images, labels, seed: int, epochs: int, augment: bool = False) -> CNN:
    """The frozen encoder CNN cached in ``path`` (safetensors), trained first if the file is missing."""
    if path.is_file():
        tensors, meta = load_tensors(path)
        cnn = CNN(1, DIGIT_SIZE)
        cnn.load_state_dict(tensors)
        want = {"seed": seed, "epochs": epochs, "augment": augment, "slot": ENCODER_SLOT}
        if {k: meta.get(k) for k in want} != want:
            raise ValueError(f"{path} holds an encoder of {meta}, not {want}: delete it to train the encoder again")
        return cnn.eval()
    cnn = train_encoder(images, labels, seed=seed, epochs=epochs, augment=augment)
    save_tensors(path, cnn.state_dict(), {"seed": seed, "epochs": epochs, "augment": augment, "slot": ENCODER_SLOT})
    return cnn


def encoder_path(out: Path, seed: int, augment: bool) -> Path:
    """Where ``run_colocalization`` caches the encoder of ``seed`` (plain or augmented training)."""
    return out / "runs" / "colocalization" / f"encoder-{'aug-' if augment else ''}seed{seed}.safetensors"


# -- the transformer -----------------------------------------------------------------------------------
def coloc_localization() -> nn.Module:
    """The paper's co-localisation localisation net on an 84x84 canvas, without its 3-unit head: ``(B, 8)``."""
    pooled = ((COLOC_CANVAS - 9) // 4 + 1) // 2  # conv 9x9 stride 4, then max-pool 2
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=9, stride=4),
        nn.MaxPool2d(2, stride=2),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(8 * pooled * pooled, 8),
        nn.ReLU(inplace=True),
        nn.Linear(8, 8),
        nn.ReLU(inplace=True),
    )


def check_scale_range(scale_range: object, init_scale: float) -> tuple[float, float] | None:
    """``scale_range`` as ``(lo, hi)`` floats with ``0 < lo < hi`` and ``lo < init_scale < hi``, or ``None``."""
    if scale_range is None:
        return None
    lo, hi = check_range("scale_range", scale_range, low=0.0)
    if not 0.0 < lo < hi:
        raise ValueError(f"scale_range must be (lo, hi) with 0 < lo < hi, got {tuple(scale_range)}")
    if not lo < init_scale < hi:
        raise ValueError(f"init_scale must be in ({lo:g}, {hi:g}) when scale_range is set, got {init_scale}")
    return (lo, hi)


class ColocTransformer(SpatialTransformer):
    """The ``attention`` transformer of co-localisation: 84x84 canvas in, 28x28 crop out.

    ``bounded``: the window's centre on the canvas (``|tx|, |ty| < 1`` by ``tanh``)
    and, without ``scale_range``, ``s`` in ``(0, 2)`` (the family's ``bound``).
    ``scale_range`` ``(lo, hi)``: ``s = lo + (hi - lo) * sigmoid(raw)``, so the
    window's side stays between ``lo`` and ``hi`` of the canvas's (``(1/4, 1/2)``:
    21 to 42 px of 84); the translation is bounded as ``bounded`` says.
    ``init_scale``: the start, ``(s, tx, ty) = (init_scale, 0, 0)`` for every
    image (the head's weights are zero, its bias gives this window); ``1`` is
    the identity (the whole canvas), ``1/3`` a centred 28x28 window.
    """

    def __init__(self, bounded: bool = False, init_scale: float = 1.0, scale_range=None):
        init_scale = check_number("init_scale", init_scale, low=0.0)
        scale_range = check_scale_range(scale_range, init_scale)
        if bounded and scale_range is None and not 0.0 < init_scale < 2.0:
            raise ValueError(f"init_scale must be in (0, 2) when bounded, got {init_scale}")
        super().__init__(
            coloc_localization(),
            transform="attention",
            out_size=DIGIT_SIZE,
            in_channels=1,
            in_size=COLOC_CANVAS,
            bounded=bounded and scale_range is None,
        )
        self.scale_range = scale_range
        self.window_bounded = bool(bounded)
        with torch.no_grad():
            if scale_range is not None:  # s = lo + (hi - lo) * sigmoid(raw); the translation's bias stays 0
                lo, hi = scale_range
                u = (init_scale - lo) / (hi - lo)
                self.head.bias[0] = math.log(u / (1.0 - u))
            elif init_scale != 1.0:  # bounded: s = 1 + tanh(raw)
                self.head.bias[0] = math.atanh(init_scale - 1.0) if bounded else init_scale

    def predict_params(self, x: Tensor) -> Tensor:
        params = super().predict_params(x)
        if self.scale_range is None:
            return params
        lo, hi = self.scale_range
        s = lo + (hi - lo) * torch.sigmoid(params[:, :1])
        t = torch.tanh(params[:, 1:]) if self.window_bounded else params[:, 1:]
        return torch.cat([s, t], dim=1)


def coloc_transformer(bounded: bool = False, init_scale: float = 1.0, scale_range=None) -> ColocTransformer:
    """The co-localisation transformer (:class:`ColocTransformer`), as ``ColocConfig`` sets it up."""
    return ColocTransformer(bounded, init_scale, scale_range)


def outside_penalty(st: SpatialTransformer, params: Tensor) -> Tensor:
    """``coverage_penalty`` of the windows ``params`` ``(B, 3)``: 0 when every sampling point is on the canvas.

    The mean over the 28x28 sampling points of each window of the squared
    distance (normalised units) by which a point leaves the canvas.
    """
    return coverage_penalty(st.grid(params, COLOC_CANVAS))


def predicted_boxes(st: SpatialTransformer, canvases: Tensor) -> Tensor:
    """The boxes ``(N, 4)`` (pixel edges on the canvas) the transformer crops."""
    with torch.no_grad():
        params = torch.cat([st.predict_params(canvases[i : i + 256]) for i in range(0, len(canvases), 256)])
    return attention_box(params.double(), COLOC_CANVAS, DIGIT_SIZE, st.align_corners).float()


def random_patches(
    canvases: Tensor, generator: torch.Generator, size: int = DIGIT_SIZE, scale: Tensor | None = None
) -> Tensor:
    """A random patch of each canvas as a 28x28 crop.

    ``scale=None``: a ``size`` x ``size`` patch at a uniform integer position.
    ``scale`` ``(B,)``: a window of that ``attention`` scale (the crop's own size),
    its centre uniform over the positions that keep it on the canvas (or, for a
    window larger than the canvas, that keep the canvas inside it).
    """
    n = canvases.shape[0]
    if scale is not None:
        s = scale.detach().to(canvases.dtype)
        u = torch.rand((n, 2), generator=generator, dtype=canvases.dtype) * 2.0 - 1.0
        t = u * (1.0 - s.abs()).abs()[:, None]
        return warp(canvases, torch.cat([s[:, None], t], dim=1), "attention", out_size=DIGIT_SIZE)
    pos = torch.randint(0, COLOC_CANVAS - size + 1, (n, 2), generator=generator).double()
    boxes = torch.cat([pos, pos + size], dim=1)
    params = attention_from_box(boxes, COLOC_CANVAS).to(canvases.dtype)
    return warp(canvases, params, "attention", out_size=DIGIT_SIZE)


# -- the label-free window search (search_rounds > 0) --------------------------------------------------
SEARCH_FIRSTS = ("start", "best")  # the positives of the search's first round (search_windows' first)
SEARCH_FIT_LR = 3e-3  # Adam, regressing the net onto the searched windows (the supervised control's, trials.md)


def candidate_corners(stride: int) -> Tensor:
    """The search's candidate windows as top-left corners ``(K, 2)`` (x0, y0) of 28x28 boxes, px.

    Corners ``0, stride, 2 stride, ...`` and always ``84 - 28 = 56``, in x and y, so
    every window lies on the canvas.
    """
    last = COLOC_CANVAS - DIGIT_SIZE
    pos = torch.tensor(sorted(set(range(0, last + 1, stride)) | {last}), dtype=torch.long)
    y0, x0 = torch.meshgrid(pos, pos, indexing="ij")
    return torch.stack([x0.flatten(), y0.flatten()], dim=1)


def candidate_windows(stride: int) -> Tensor:
    """:func:`candidate_corners` as ``attention`` parameters ``(K, 3)`` (float64): windows of the digit's extent."""
    xy = candidate_corners(stride).double()
    return attention_from_box(torch.cat([xy, xy + DIGIT_SIZE], dim=1), COLOC_CANVAS)


def _encode_candidates(enc: nn.Module, canvases: Tensor, corners: Tensor) -> Tensor:
    """``enc`` of the 28x28 crop at every corner ``(K, 2)`` of every canvas ``(N, 1, 84, 84)``: ``(N, K, D)``.

    The windows lie on whole pixels, so a crop is a slice of the canvas (what
    ``warp`` samples there, without the interpolation).
    """
    out = []
    side = DIGIT_SIZE
    with torch.no_grad():
        for img in canvases:
            patches = img.unfold(1, side, 1).unfold(2, side, 1)  # (1, 57, 57, 28, 28): [c, y0, x0]
            crops = patches[0, corners[:, 1], corners[:, 0]][:, None]
            out.append(enc(crops.contiguous()))
    return torch.stack(out)


def _mean_hinge(d_pos: Tensor, d_neg: Tensor, margin: float) -> Tensor:
    """``mean_{m, j} max(0, d_pos[k, m] - d_neg[k, j] + margin)`` for each ``k``, exactly, by sorting ``d_neg``."""
    neg, _ = d_neg.sort(dim=1)  # (K, J)
    csum = torch.cat([torch.zeros_like(neg[:, :1]), neg.cumsum(1)], dim=1)  # (K, J + 1)
    v = (d_pos + margin).contiguous()  # the hinge is active for d_neg[k, j] < v
    count = torch.searchsorted(neg.contiguous(), v)  # (K, M): how many d_neg lie below v
    total = count * v - csum.gather(1, count)
    return total.sum(1) / (d_pos.shape[1] * d_neg.shape[1])


def search_windows(
    enc: nn.Module,
    canvases: Tensor,
    start: Tensor,
    rounds: int = 1,
    stride: int = 4,
    margin: float = 1.0,
    history: list | None = None,
    first: str = "start",
) -> tuple[Tensor, list[float]]:
    """The windows ``(N, 3)`` that minimise the triplet loss of each canvas, found by search; no box is used.

    Alternating, as co-segmentation does: in each round, for each canvas ``n`` and
    each candidate window ``k`` (:func:`candidate_windows`: the digit's 28 px,
    corners on a ``stride`` grid), the loss is the paper's hinge averaged over
    the other canvases' current crops ``m`` (the positives) and over the canvas's
    own candidate windows ``j`` (a random patch of it, in expectation: the
    negatives), ``mean_{m != n, j} max(0, |e_nk - e_m|^2 - |e_nk - e_nj|^2 + margin)``;
    each canvas takes its best candidate, all at once. The crops of round one are
    the ``start`` windows ``(N, 3)`` (the transformer's start), or with
    ``first="best"`` each other canvas's candidate nearest to ``e_nk`` (every
    canvas is assumed to hold a match somewhere; ``start`` is then unused). Returns the
    windows and each round's mean loss at them; ``history``, a list, gets each
    round's windows appended.
    """
    corners = candidate_corners(stride)
    windows = candidate_windows(stride)
    feats = _encode_candidates(enc, canvases, corners).double()  # (N, K, D)
    n = len(canvases)
    with torch.no_grad():
        start_crops = warp(canvases, start.to(canvases.dtype), "attention", out_size=DIGIT_SIZE)
        current = enc(start_crops).double()
    losses = []
    best = torch.zeros(n, dtype=torch.long)
    check_choice("first", first, SEARCH_FIRSTS)
    for r in range(rounds):
        loss_best = torch.empty(n, dtype=torch.float64)
        for i in range(n):
            if r == 0 and first == "best":  # (K, M): the nearest candidate of each other canvas
                others = torch.cat([feats[:i], feats[i + 1 :]])  # (M, K, D)
                d_pos = torch.cdist(feats[i], others.flatten(0, 1)).pow(2).view(len(windows), n - 1, -1).amin(2)
            else:
                others = torch.cat([current[:i], current[i + 1 :]])  # (M, D)
                d_pos = torch.cdist(feats[i], others).pow(2)  # (K, M)
            d_neg = torch.cdist(feats[i], feats[i]).pow(2)  # (K, J)
            hinge = _mean_hinge(d_pos, d_neg, margin)
            best[i] = hinge.argmin()
            loss_best[i] = hinge[best[i]]
        current = feats[torch.arange(n), best]
        losses.append(round(float(loss_best.mean()), 4))
        if history is not None:
            history.append(windows[best])
    return windows[best], losses


def fit_to_windows(
    st: SpatialTransformer,
    canvases: Tensor,
    targets: Tensor,
    steps: int,
    batch_size: int,
    seed: int,
    learn_scale: bool = True,
) -> list[float]:
    """Regress ``st``'s windows onto ``targets`` ``(N, 3)`` (Adam, ``SEARCH_FIT_LR``, MSE of the parameters).

    With ``learn_scale=False`` only the translation is fitted (the scale keeps its start).
    Returns the loss of every 50th step.
    """
    opt = torch.optim.Adam(st.parameters(), lr=SEARCH_FIT_LR)
    g = _stream(seed, SEARCH_FIT_SLOT)
    targets = targets.to(canvases.dtype)
    cols = slice(0, 3) if learn_scale else slice(1, 3)
    log = []
    st.train()
    for step in range(steps):
        idx = torch.randint(0, len(canvases), (batch_size,), generator=g)
        params = st.predict_params(canvases[idx])
        loss = F.mse_loss(params[:, cols], targets[idx][:, cols])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log.append(round(float(loss.detach()), 6))
    return log


def box_score(params: Tensor, ds: CoLocalization) -> dict:
    """``localisation_score``'s numbers for given windows ``params`` ``(N, 3)`` (e.g. the searched ones)."""
    iou = box_iou(attention_box(params.double(), COLOC_CANVAS, DIGIT_SIZE, False).float(), ds.boxes)
    return {
        "correct_percent": round(100.0 * float((iou > IOU_THRESHOLD).float().mean()), 2),
        "mean_iou": round(float(iou.mean()), 4),
        "n": len(ds),
    }


# -- one co-localisation run ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColocConfig:
    """One co-localisation problem and its optimisation."""

    digit: int = 0
    kind: str = "plain"
    n: int = 100  # images in the problem (the paper: 100)
    test_n: int = 100  # held-out canvases of the class (test digits)
    seed: int = 0
    epochs: int = 30  # one epoch: every image once as the anchor
    batch_size: int = 10
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    bounded: bool = True
    margin: float = 1.0
    encoder_epochs: int = 2
    descriptor: str = "concat"  # e(): the paper's "concat", or "softmax"
    rand_patch: str = "fixed"  # I_n^rand: a 28x28 patch ("fixed"), or a window of the crop's scale ("same")
    init_scale: float = 1.0  # the start window (s, 0, 0); 1 = the identity
    learn_scale: bool = True  # False: s stays at init_scale, only the window's position is learnt
    scale_range: tuple[float, float] | None = None  # (lo, hi): s = lo + (hi - lo) * sigmoid(raw)
    outside_weight: float = 0.0  # the loss adds this times outside_penalty of the crops' windows
    encoder_augment: bool = False  # e()'s CNN trained on randomly shifted and rescaled digits
    split: str = "test"  # "val": the validation canvases (recipes are chosen there); "test": the reported ones
    search_rounds: int = 0  # > 0: the label-free window search (search_windows) first, that many rounds
    search_stride: int = 4  # px between the search's candidate window positions
    search_steps: int = 300  # steps regressing the localisation net onto the searched windows, before the epochs
    search_first: str = "start"  # the search's first positives: the start window's crops, or "best" matches

    def __post_init__(self):
        check_int("digit", self.digit, low=0, high=9)
        check_choice("kind", self.kind, COLOC_KINDS)
        check_int("n", self.n, low=2)
        check_int("test_n", self.test_n, low=1)
        check_int("seed", self.seed, low=0)
        check_int("search_rounds", self.search_rounds, low=0)
        check_int("search_stride", self.search_stride, low=1, high=COLOC_CANVAS - DIGIT_SIZE)
        check_int("search_steps", self.search_steps, low=0)
        check_choice("search_first", self.search_first, SEARCH_FIRSTS)
        # with the search, the triplet epochs after it may be none (the searched windows, fitted, are the answer)
        check_int("epochs", self.epochs, low=0 if self.search_rounds > 0 else 1, high=MAX_COLOC_EPOCHS)
        check_int("batch_size", self.batch_size, low=1)
        check_int("encoder_epochs", self.encoder_epochs, low=1, high=MAX_COLOC_EPOCHS)
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_choice("descriptor", self.descriptor, DESCRIPTORS)
        check_choice("rand_patch", self.rand_patch, RAND_PATCHES)
        check_choice("split", self.split, SPLITS)
        for name in ("bounded", "learn_scale", "encoder_augment"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        check_number("lr", self.lr, low=0.0)
        check_number("momentum", self.momentum, low=0.0, high=1.0)
        check_number("margin", self.margin, low=0.0)
        check_number("init_scale", self.init_scale, low=0.0)
        check_number("outside_weight", self.outside_weight, low=0.0)
        # a JSON list and a tuple are one setting: keep the tuple, so that saved and given configs compare equal
        object.__setattr__(self, "scale_range", check_scale_range(self.scale_range, self.init_scale))
        if self.bounded and self.scale_range is None and not 0.0 < self.init_scale < 2.0:
            raise ValueError(f"init_scale must be in (0, 2) when bounded, got {self.init_scale}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ColocConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def problem_canvases(
    config: ColocConfig, train_digits: tuple, test_digits: tuple
) -> tuple[CoLocalization, CoLocalization]:
    """The problem's canvases and its held-out canvases, by ``config.split``.

    ``"test"`` (the reported numbers): the problem is made of the class's first
    ``n`` training digits, the held-out canvases of its first ``test_n`` test
    digits. ``"val"`` (where recipes are chosen): the problem is made of the
    class's next ``n`` training digits (from the ``n``-th), the held-out canvases
    of the ``test_n`` training digits after those; no digit of a ``"val"`` canvas
    is on a ``"test"`` canvas, and the positions and clutter differ too (they
    depend on the first digit's index). Like the test problem's digits, the val
    digits are among those the encoder was trained on; the test split's held-out
    digits are not.
    """
    c = config
    if c.split == "test":
        ds = CoLocalization(*train_digits, c.digit, c.kind, n=c.n, seed=c.seed)
        held = CoLocalization(*test_digits, c.digit, c.kind, n=c.test_n, seed=c.seed)
    else:
        ds = CoLocalization(*train_digits, c.digit, c.kind, n=c.n, seed=c.seed, start=c.n)
        held = CoLocalization(*train_digits, c.digit, c.kind, n=c.test_n, seed=c.seed, start=2 * c.n)
    return ds, held


def _pairs(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Every image once as the anchor, in random order, each with a random other image."""
    anchor = torch.randperm(n, generator=generator)
    other = torch.randint(0, n - 1, (n,), generator=generator)
    return anchor, other + (other >= anchor).long()


def _no_scale_grad(grad: Tensor) -> Tensor:
    grad = grad.clone()
    grad[0] = 0.0
    return grad


def make_optimizer(st: nn.Module, config: ColocConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(st.parameters(), lr=config.lr, momentum=config.momentum)
    return torch.optim.Adam(st.parameters(), lr=config.lr)


def _save_state(
    path: Path, st: nn.Module, opt: torch.optim.Optimizer, epoch: int, config: ColocConfig, losses, extra=None
) -> None:
    tensors = {f"model.{k}": v for k, v in st.state_dict().items()}
    for i, p in enumerate(st.parameters()):
        for name, value in opt.state.get(p, {}).items():  # SGD: momentum_buffer; Adam: step, exp_avg, exp_avg_sq
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(value)
    meta = {"epoch": epoch, "config": config.to_dict(), "losses": losses, "streams": STREAMS, **(extra or {})}
    save_tensors(path, tensors, meta)


def _load_state(path: Path, st: nn.Module, opt: torch.optim.Optimizer, config: ColocConfig) -> tuple[int, list, dict]:
    tensors, meta = load_tensors(path)
    if ColocConfig.from_dict(meta.get("config", {})) != config:
        raise ValueError(f"{path} was written with other settings ({meta.get('config')}); delete it to start again")
    if meta.get("streams") != STREAMS:
        raise ValueError(f"{path} was written with the random streams of an older stnkit; delete it to start again")
    st.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(st.parameters()):
        prefix = f"optim.{i}."
        state = {k.removeprefix(prefix): v.clone() for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            opt.state[p] = state
    return int(meta["epoch"]), list(meta.get("losses", [])), meta.get("search")


def localisation_score(st: SpatialTransformer, ds: CoLocalization) -> dict:
    """IoU of each predicted box with the truth, and the % of boxes with IoU > 0.5."""
    boxes = predicted_boxes(st, ds.images)
    iou = box_iou(boxes, ds.boxes)
    with torch.no_grad():
        params = torch.cat([st.predict_params(ds.images[i : i + 256]) for i in range(0, len(ds), 256)])
        outside = (st.grid(params, COLOC_CANVAS).abs() > 1).any(-1).float().mean()
    return {
        "correct_percent": round(100.0 * float((iou > IOU_THRESHOLD).float().mean()), 2),
        "mean_iou": round(float(iou.mean()), 4),
        "mean_scale": round(float(params[:, 0].mean()), 4),  # the window's side / the canvas's
        "outside_fraction": round(float(outside), 4),  # of the windows' sampling points, off the canvas
        "n": len(ds),
    }


def start_window_score(init_scale: float, ds: CoLocalization) -> dict:
    """``localisation_score`` of the start window ``(init_scale, 0, 0)``, the same for every canvas.

    The transformer's head starts with zero weights, so before training it
    crops this one centred window of every canvas: the score a window that
    never moves gets (the whole canvas, ``1``, has IoU 1/9 with every 28x28 box).
    """
    params = torch.tensor([[init_scale, 0.0, 0.0]], dtype=torch.float64).expand(len(ds), 3)
    iou = box_iou(attention_box(params, COLOC_CANVAS, DIGIT_SIZE, False).float(), ds.boxes)
    return {
        "correct_percent": round(100.0 * float((iou > IOU_THRESHOLD).float().mean()), 2),
        "mean_iou": round(float(iou.mean()), 4),
        "n": len(ds),
    }


def train_colocalization(
    config: ColocConfig,
    run_dir: str | Path,
    encoder: CNN,
    train_digits: tuple,
    test_digits: tuple,
    quiet: bool = True,
) -> dict:
    """Train one co-localisation problem in ``run_dir``; resumable, deterministic by ``config.seed``.

    ``train_digits`` / ``test_digits``: ``(images, labels)`` of the splits the
    problem's and the held-out canvases come from. ``run_dir/last.safetensors``
    holds the state after each epoch (a rerun goes on from it);
    ``results.json`` and ``model.safetensors`` are written at the end.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ds, test = problem_canvases(config, train_digits, test_digits)
    enc = DigitEncoder(encoder, config.descriptor).eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    torch.manual_seed(config.seed)
    st = coloc_transformer(config.bounded, config.init_scale, config.scale_range)
    if not config.learn_scale:  # the head's row 0 gives s: it keeps its start (zero weights, bias)
        for p in (st.head.weight, st.head.bias):
            p.register_hook(_no_scale_grad)
    opt = make_optimizer(st, config)
    last = run_dir / "last.safetensors"
    start_epoch, losses, search = 0, [], None
    t0 = time.time()
    if last.is_file():
        start_epoch, losses, search = _load_state(last, st, opt, config)
    elif config.search_rounds > 0:  # the search and the net's fit to it, saved as "epoch 0" (a rerun skips them)
        start = st.predict_params(ds.images[:1]).detach().double().expand(config.n, 3)
        history: list = []
        windows, search_losses = search_windows(
            enc,
            ds.images,
            start,
            config.search_rounds,
            config.search_stride,
            config.margin,
            history,
            config.search_first,
        )
        fit_log = fit_to_windows(
            st, ds.images, windows, config.search_steps, config.batch_size, config.seed, config.learn_scale
        )
        search = {
            "windows": box_score(windows, ds),
            "fitted": localisation_score(st, ds),
            "loss_per_round": search_losses,
            "correct_percent_per_round": [box_score(w, ds)["correct_percent"] for w in history],
            "fit_loss": fit_log,
            "seconds": round(time.time() - t0, 2),
        }
        _save_state(last, st, opt, 0, config, losses, {"search": search})
    for epoch in range(start_epoch, config.epochs):
        g = _stream(config.seed, TRIPLET_SLOT + epoch)
        anchor, other = _pairs(config.n, g)
        total = 0.0
        st.train()
        for i in range(0, config.n, config.batch_size):
            a, o = anchor[i : i + config.batch_size], other[i : i + config.batch_size]
            both = torch.cat([ds.images[a], ds.images[o]])
            crops, params = st(both, return_params=True)
            scale = params[: len(a), 0] if config.rand_patch == "same" else None
            rand = random_patches(ds.images[a], g, scale=scale)
            feats = enc(torch.cat([crops, rand]))
            fa, fo, fr = feats.split(len(a))
            loss = triplet_hinge_loss(fa, fo, fr, config.margin)
            if config.outside_weight > 0.0:
                loss = loss + config.outside_weight * outside_penalty(st, params)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(a)
        losses.append(round(total / config.n, 4))
        _save_state(last, st, opt, epoch + 1, config, losses, {"search": search} if search else None)
        if not quiet:
            print(f"{config.kind} digit {config.digit} epoch {epoch + 1}/{config.epochs}: loss {losses[-1]}")
    st.eval()
    save_tensors(run_dir / "model.safetensors", st.state_dict(), {"config": config.to_dict()})
    results = {
        "config": config.to_dict(),
        "streams": STREAMS,
        "train": localisation_score(st, ds),
        "held_out": localisation_score(st, test),
        "start": start_window_score(config.init_scale, ds),  # the untrained transformer's (one window for all)
        **({"search": search} if search else {}),
        "losses": losses,
        "fit_seconds": round(time.time() - t0, 2),
    }
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def load_transformer(path: str | Path) -> SpatialTransformer:
    """A trained co-localisation transformer from its ``model.safetensors`` (eval mode)."""
    tensors, meta = load_tensors(path)
    c = meta.get("config", {})
    scale_range = c.get("scale_range")
    init = 0.5 * sum(scale_range) if scale_range else 1.0  # any start: the weights are loaded over it
    st = coloc_transformer(bool(c.get("bounded", False)), init, scale_range)
    st.load_state_dict(tensors)
    return st.eval()


def loss_at_patches(canvases: Tensor, seed: int) -> Tensor:
    """The random patches :func:`loss_at` compares against, from slot :data:`LOSS_AT_SLOT` of ``seed``'s block."""
    return random_patches(canvases, _stream(seed, LOSS_AT_SLOT))


def loss_at(enc: nn.Module, ds: CoLocalization, params: Tensor, margin: float, seed: int) -> float:
    """The mean triplet loss over all ordered pairs ``(n, m)`` when the crops are ``params`` ``(N, 3)``.

    The random patches are drawn once from ``seed`` (:func:`loss_at_patches`). Evaluated at the truth
    (``attention_from_box(ds.boxes)``), at the identity and at the trained
    transformer, it tells whether the loss prefers the digit's box at all.
    """
    with torch.no_grad():
        crops = warp(ds.images, params.to(ds.images.dtype), "attention", out_size=DIGIT_SIZE)
        rand = loss_at_patches(ds.images, seed)
        fc, fr = enc(crops), enc(rand)
        d_pos = torch.cdist(fc.double(), fc.double()).pow(2)
        d_neg = (fc - fr).double().pow(2).sum(1)
        hinge = F.relu(d_pos - d_neg[:, None] + margin)
        off = ~torch.eye(len(ds), dtype=torch.bool)
        return round(float(hinge[off].mean()), 4)


# -- stnkit reproduce colocalization ------------------------------------------------------------------
COLOC_CLASSES = tuple(range(10))


def run_dir_of(out: Path, kind: str, digit: int, seed: int) -> Path:
    return out / "runs" / "colocalization" / kind / f"digit{digit}" / f"seed{seed}"


def run_colocalization(
    out: str | Path,
    kinds=COLOC_KINDS,
    classes=COLOC_CLASSES,
    seeds: int = 1,
    data_dir=None,
    quiet: bool = True,
    **options,
) -> dict:
    """Every (kind, class, seed) problem not yet finished, then ``colocalization.json`` / ``.md``.

    A run whose ``results.json`` exists is skipped (its settings must match),
    an interrupted run goes on from its ``last.safetensors``; the encoder is
    trained once per seed and cached in ``OUT/runs/colocalization/encoder-[aug-]seedS.safetensors``.
    """
    from stnkit.data import load_digits

    out = Path(out)
    train_digits, test_digits = load_digits("train", data_dir), load_digits("test", data_dir)
    start = time.time()
    for seed in range(seeds):
        base = ColocConfig(seed=seed, **options)
        enc_path = encoder_path(out, seed, base.encoder_augment)
        encoder = None
        for kind in kinds:
            for digit in classes:
                config = ColocConfig.from_dict({**base.to_dict(), "kind": kind, "digit": digit})
                run_dir = run_dir_of(out, kind, digit, seed)
                done = run_dir / "results.json"
                if done.is_file():
                    record = json.loads(done.read_text())
                    if ColocConfig.from_dict(record["config"]) != config:
                        raise ValueError(f"{done} was run with other settings; use another --out or delete it")
                    if record.get("streams") != STREAMS:
                        raise ValueError(
                            f"{done} was run with the random streams of an older stnkit; use another --out or delete it"
                        )
                    continue
                if encoder is None:
                    encoder = load_or_train_encoder(
                        enc_path, *train_digits, seed=seed, epochs=base.encoder_epochs, augment=base.encoder_augment
                    )
                result = train_colocalization(config, run_dir, encoder, train_digits, test_digits, quiet=quiet)
                ds = problem_canvases(config, train_digits, test_digits)[0]
                enc = DigitEncoder(encoder, config.descriptor).eval()
                st = load_transformer(run_dir / "model.safetensors")
                with torch.no_grad():
                    trained = torch.cat([st.predict_params(ds.images[i : i + 256]) for i in range(0, len(ds), 256)])
                truth = attention_from_box(ds.boxes.double(), COLOC_CANVAS)
                result["loss_at"] = {
                    "truth": loss_at(enc, ds, truth, config.margin, seed),
                    "identity": loss_at(enc, ds, st.family.identity(len(ds)), config.margin, seed),
                    "trained": loss_at(enc, ds, trained, config.margin, seed),
                }
                if encoder is not None:
                    result["encoder_test_error"] = round(encoder_error(encoder, *test_digits), 2)
                atomic_write_text(done, json.dumps(result, indent=2) + "\n")
                write_outputs(out, summarize_colocalization(out, kinds, classes, seeds))
                if not quiet:
                    print(f"{kind} digit {digit} seed {seed}: {result['train']['correct_percent']} % localised")
    summary = summarize_colocalization(out, kinds, classes, seeds)
    summary["wall_seconds_this_call"] = round(time.time() - start, 1)
    write_outputs(out, summary)
    return summary


def summarize_colocalization(out: Path, kinds=COLOC_KINDS, classes=COLOC_CLASSES, seeds: int = 1) -> dict:
    """Every finished run under ``out`` in one record: per kind and class, % localised (mean over seeds)."""
    runs = []
    for kind in kinds:
        for digit in classes:
            for seed in range(seeds):
                f = run_dir_of(Path(out), kind, digit, seed) / "results.json"
                if f.is_file():
                    r = json.loads(f.read_text())
                    runs.append({"kind": kind, "digit": digit, "seed": seed, **{k: r.get(k) for k in RUN_KEYS}})
    table: dict = {}
    for kind in kinds:
        for digit in classes:
            rs = [r for r in runs if r["kind"] == kind and r["digit"] == digit]
            if rs:
                table.setdefault(kind, {})[str(digit)] = {
                    split: round(sum(r[split]["correct_percent"] for r in rs) / len(rs), 2)
                    for split in ("train", "held_out")
                } | {"n_seeds": len(rs)}
    return {
        "description": "Jaderberg et al. 2015 appendix A.2 co-localisation, by `stnkit reproduce colocalization`",
        "runs_planned": len(kinds) * len(classes) * seeds,
        "runs_done": len(runs),
        "iou_threshold": IOU_THRESHOLD,
        "paper": PAPER_COLOC,
        "table": table,
        "runs": runs,
    }


RUN_KEYS = ("config", "train", "held_out", "start", "search", "loss_at", "fit_seconds", "encoder_test_error")


def _mean_percent_by_kind(runs: list[dict], value) -> str:
    """``"plain X %, cluttered Y %"``: the mean of ``value(run)`` over ``runs`` of each canvas kind present."""
    parts = []
    for kind in COLOC_KINDS:
        rs = [r for r in runs if r["kind"] == kind]
        if rs:
            parts.append(f"{kind} {sum(value(r) for r in rs) / len(rs):.1f} %")
    return ", ".join(parts)


def render_markdown(summary: dict) -> str:
    """colocalization.md: % of images whose box has IoU > 0.5, per class, beside the paper."""
    from stnkit.train.report import markdown_table

    kinds = [k for k in COLOC_KINDS]
    rows = []
    for kind in kinds:
        cells = summary["table"].get(kind, {})
        row = [kind]
        for d in COLOC_CLASSES:
            c = cells.get(str(d))
            row.append("–" if c is None else f"{c['train']:.0f} ({c['held_out']:.0f})")
        done = list(cells.values())
        mean = (
            f"{sum(c['train'] for c in done) / len(done):.1f} ({sum(c['held_out'] for c in done) / len(done):.1f})"
            if done
            else "–"
        )
        row += [mean, PAPER_COLOC[kind]]
        rows.append(row)
    lines = markdown_table(["canvas", *map(str, COLOC_CLASSES), "mean", "paper"], rows)
    losses = [r for r in summary["runs"] if r.get("loss_at")]
    splits = {r["config"].get("split", "test") for r in summary["runs"] if r.get("config")}
    held = (
        "training digits not on any test canvas (validation canvases)"
        if splits == {"val"}
        else "test digits"
        if splits <= {"test"}
        else "test digits or, for validation runs, training digits"
    )
    lines += [
        "",
        "% of a class's canvases whose predicted box has IoU > 0.5 with the digit's box "
        f"(in brackets: held-out canvases of the class made from {held}); mean over seeds. "
        f"Runs done: {summary['runs_done']}/{summary['runs_planned']}. Paper: Table 5 (T: 100 %, TC: 75-93 % by class).",
    ]
    starts = [r for r in summary["runs"] if r.get("start")]
    if starts:
        lines += [
            "",
            "A window that never moves (the transformer's start window, one for every canvas) "
            "localises, on the same canvases (mean over runs): "
            + _mean_percent_by_kind(starts, lambda r: r["start"]["correct_percent"])
            + ".",
        ]
    seeds = sorted({r["seed"] for r in summary["runs"]})
    if len(seeds) > 1:
        by_kind = []
        for kind in COLOC_KINDS:
            per_seed = []
            for seed in seeds:
                rs = [r for r in summary["runs"] if r["kind"] == kind and r["seed"] == seed]
                if rs:
                    per_seed.append(f"{sum(r['train']['correct_percent'] for r in rs) / len(rs):.1f}")
            if per_seed:
                by_kind.append(f"{kind} {' / '.join(per_seed)} %")
        lines += ["", f"Per seed ({', '.join(map(str, seeds))}; mean over classes): " + ", ".join(by_kind) + "."]
    searched = [r for r in summary["runs"] if r.get("search")]
    if searched:
        lines += [
            "",
            "The label-free window search alone (its windows on the same canvases, before the localisation net "
            "is fitted to them; mean over runs): "
            + _mean_percent_by_kind(searched, lambda r: r["search"]["windows"]["correct_percent"])
            + ".",
        ]
    fits = [r["fit_seconds"] for r in summary["runs"] if r.get("fit_seconds") is not None]
    if fits:
        wall = summary.get("wall_seconds_this_call")
        lines += [
            "",
            f"Fit: {sum(fits) / 60:.1f} min over {len(fits)} problems (sum of their training loops)"
            + (f"; the call that wrote this file took {wall / 60:.1f} min of wall clock." if wall else "."),
        ]
    configs = [r["config"] for r in summary["runs"] if r.get("config")]
    if configs:
        lines += ["", "Settings: " + "; ".join(_settings(configs)) + "."]
    if losses:
        lines += [
            "",
            "Triplet loss over all pairs of a problem at the true boxes, at the identity and at the trained "
            "transformer (mean over runs): "
            + ", ".join(
                f"{k} {sum(r['loss_at'][k] for r in losses) / len(losses):.2f}"
                for k in ("truth", "identity", "trained")
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


SETTING_NAMES = {
    "descriptor": "e()",
    "rand_patch": "random patch",
    "split": "canvases",
    "init_scale": "start window scale",
    "learn_scale": "scale learnt",
    "scale_range": "scale range",
    "outside_weight": "outside-canvas penalty weight",
    "encoder_augment": "encoder trained on shifted/rescaled digits",
    "search_rounds": "window search rounds (0: none)",
    "search_stride": "search stride px",
    "search_steps": "net fitted to the searched windows, steps",
    "search_first": "search's first positives",
    "bounded": "bounded",
    "optimizer": "optimiser",
    "lr": "learning rate",
    "batch_size": "pairs per step",
    "epochs": "epochs",
    "encoder_epochs": "encoder epochs",
    "margin": "margin",
}
SEARCH_DETAILS = ("search_stride", "search_steps", "search_first")
DESCRIPTOR_TEXT = {
    "concat": "concat (the paper: the CNN's two hidden layers and logits)",
    "concat_l2": "concat_l2 (the paper's concatenation scaled to unit length; not the paper's)",
    "logits_l2": "logits_l2 (the CNN's logits scaled to unit length; not the paper's)",
    "softmax": "softmax (the CNN's class probabilities; not the paper's)",
}


def _settings(configs: list[dict]) -> list[str]:
    """``name value`` for each setting, the values of all runs joined with ``/`` where they differ."""
    out = []
    searched = any(c.get("search_rounds", 0) > 0 for c in configs)
    for key, name in SETTING_NAMES.items():
        if not searched and key in SEARCH_DETAILS:  # no search in these runs: its knobs say nothing
            continue
        values = []
        for c in configs:
            v = c.get(key, getattr(ColocConfig, key))
            v = DESCRIPTOR_TEXT.get(v, v) if key == "descriptor" else v
            if v not in values:
                values.append(v)
        out.append(f"{name} {' / '.join(map(str, values))}")
    return out


def keep_wall_clock(out: Path, summary: dict) -> None:
    """Carry the wall clock of the call that trained the runs into a rewritten summary (same runs done)."""
    path = Path(out) / "colocalization.json"
    if path.is_file():
        prev = json.loads(path.read_text())
        if prev.get("runs_done") == summary["runs_done"] and "wall_seconds_this_call" in prev:
            summary["wall_seconds_this_call"] = prev["wall_seconds_this_call"]


def write_outputs(out: Path, summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "colocalization.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "colocalization.md", render_markdown(summary))


def make_figure(out: str | Path, summary: dict, per_kind: int = 6, data_dir=None) -> Path | None:
    """``out/figures/colocalization.png``: canvases with the true box (green) and the predicted box (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from stnkit._io import save_figure
    from stnkit.data import load_digits

    out = Path(out)
    done = [r for r in summary["runs"] if r["seed"] == 0]
    if not done:
        return None
    digits = load_digits("train", data_dir), load_digits("test", data_dir)
    kinds = [k for k in COLOC_KINDS if any(r["kind"] == k for r in done)]
    fig, axes = plt.subplots(len(kinds), per_kind, figsize=(1.6 * per_kind, 1.8 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        runs = [r for r in done if r["kind"] == kind]
        for j in range(per_kind):
            r = runs[j % len(runs)]
            ds = problem_canvases(ColocConfig.from_dict(r["config"]), *digits)[0]
            st = load_transformer(run_dir_of(out, kind, r["digit"], 0) / "model.safetensors")
            k = j // len(runs)
            box = predicted_boxes(st, ds.images[k : k + 1])[0].tolist()
            truth = ds.boxes[k].tolist()
            ax = axes[i, j]
            ax.imshow(ds.images[k, 0].numpy(), cmap="gray", vmin=0, vmax=1, extent=(0, COLOC_CANVAS, COLOC_CANVAS, 0))
            for b, colour in ((truth, "lime"), (box, "red")):
                ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color=colour, lw=1.2))
            # a box may reach past the canvas (a zoom out): show it, up to one canvas beyond
            lo = max(-COLOC_CANVAS, min(0.0, box[0], box[1])) - 1
            hi = min(2 * COLOC_CANVAS, max(COLOC_CANVAS, box[2], box[3])) + 1
            ax.set_xlim(lo, hi)
            ax.set_ylim(hi, lo)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{kind} {r['digit']}", fontsize=7)
    fig.suptitle("co-localisation: true box (green), predicted (red)", fontsize=9)
    fig.tight_layout()
    path = out / "figures" / "colocalization.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


# -- the recipe log: validation runs, one change at a time ---------------------------------------------
# `stnkit reproduce colocalization --coloc-recipe NAME`: ColocConfig options on top of its defaults
COLOC_RECIPES = {
    "paper": {},  # appendix A.2 as far as it is stated (the choices it leaves open: ColocConfig's docstring)
    # chosen on the validation canvases, one change at a time (docs/experiments/colocalization/val/recipes.md,
    # v3): the window fixed at the digit's 28 of 84 px, only its position learnt, and unit-length logits as e()
    "constrained": {"learn_scale": False, "init_scale": 1 / 3, "descriptor": "logits_l2"},
    # chosen on the validation canvases (recipes.md, v7; issue 28): constrained plus the label-free window search
    # (6 rounds, the first against each other canvas's nearest window), the net regressed onto the searched
    # windows, no triplet epoch after it; not the paper's gradient-only method
    "search": {
        "learn_scale": False,
        "init_scale": 1 / 3,
        "descriptor": "logits_l2",
        "search_rounds": 6,
        "search_first": "best",
        "epochs": 0,
    },
}
COLOC_DEFAULT_RECIPE = "search"
# each ColocConfig option that `stnkit reproduce colocalization` sets, and its flag
CLI_FLAGS = {
    "epochs": "--coloc-epochs",
    "lr": "--coloc-lr",
    "descriptor": "--coloc-descriptor",
    "rand_patch": "--coloc-rand-patch",
    "init_scale": "--coloc-init-scale",
    "learn_scale": "--coloc-fixed-scale",
    "scale_range": "--coloc-scale-range",
    "outside_weight": "--coloc-outside-weight",
    "encoder_augment": "--coloc-encoder-augment",
    "split": "--coloc-split",
    "search_rounds": "--coloc-search-rounds",
    "search_stride": "--coloc-search-stride",
    "search_steps": "--coloc-search-steps",
    "search_first": "--coloc-search-first",
}


def cli_args(config: dict) -> list[str]:
    """The ``stnkit reproduce colocalization`` flags that give ``config`` (those that differ from the defaults)."""
    default = ColocConfig()
    args = []
    for key, flag in CLI_FLAGS.items():
        value = ColocConfig.from_dict(config).to_dict()[key]
        if value == getattr(default, key):
            continue
        if isinstance(value, bool):  # learn_scale False -> --coloc-fixed-scale; encoder_augment True -> its flag
            args.append(flag)
        elif isinstance(value, (tuple, list)):
            args += [flag, ",".join(f"{v:g}" for v in value)]
        else:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def recipe_row(name: str, summary: dict) -> dict:
    """One recipe of the log from a validation summary (``colocalization.json`` of ``--coloc-split val`` runs)."""
    runs = summary["runs"]
    if not runs:
        raise ValueError(f"recipe {name!r} has no finished runs")
    configs = [r["config"] for r in runs]
    if any(c.get("split", "test") != "val" for c in configs):
        raise ValueError(f"recipe {name!r} holds test-split runs; the recipe log takes validation runs only")
    flags = {" ".join(cli_args({**c, "split": "test"})) for c in configs}
    if len(flags) != 1:
        raise ValueError(f"recipe {name!r} mixes settings: {sorted(flags)}")
    change = flags.pop()
    kinds = [k for k in COLOC_KINDS if any(r["kind"] == k for r in runs)]
    digits = sorted({r["digit"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    row = {"recipe": name, "change": change or "(defaults: the paper's setting)", "digits": digits, "seeds": seeds}
    for kind in kinds:
        rs = [r for r in runs if r["kind"] == kind]
        row[kind] = {
            "runs": len(rs),
            "localised_percent": round(sum(r["train"]["correct_percent"] for r in rs) / len(rs), 2),
            "per_run": [r["train"]["correct_percent"] for r in rs],
            "held_out_percent": round(sum(r["held_out"]["correct_percent"] for r in rs) / len(rs), 2),
            "mean_iou": round(sum(r["train"]["mean_iou"] for r in rs) / len(rs), 4),
            "mean_scale": round(sum(r["train"].get("mean_scale", math.nan) for r in rs) / len(rs), 3),
            "fit_seconds": round(sum(r["fit_seconds"] for r in rs) / len(rs), 1),
        }
    classes = ",".join(map(str, digits))
    row["command"] = (
        f"stnkit reproduce colocalization --coloc-recipe paper --coloc-split val --kinds {','.join(kinds)} --classes {classes} "
        f"--seeds {len(seeds)} {change} --out runs/coloc-val/{name}".replace("  ", " ")
    )
    return row


def write_recipe_log(folder: Path) -> str:
    """``folder/recipes.md`` and ``recipes.json`` from the validation summaries ``folder/*.json``; the markdown."""
    from stnkit.train.report import markdown_table

    folder = Path(folder)
    files = sorted(f for f in folder.glob("*.json") if f.name != "recipes.json")
    if not files:
        raise ValueError(f"recipe_log needs validation summaries (*.json) in {folder}, found none")
    rows = [recipe_row(f.stem, json.loads(f.read_text())) for f in files]
    table = []
    for r in rows:
        for kind in COLOC_KINDS:
            if kind in r:
                k = r[kind]
                per_run = ", ".join(f"{v:.0f}" for v in k["per_run"])
                table.append(
                    [
                        r["recipe"],
                        f"`{r['change']}`" if r["change"].startswith("--") else r["change"],
                        kind,
                        ",".join(map(str, r["digits"])),
                        str(len(r["seeds"])),
                        f"{k['localised_percent']:.1f} ({per_run})",
                        f"{k['held_out_percent']:.1f}",
                        f"{k['mean_iou']:.2f}",
                        f"{k['mean_scale']:.2f}",
                        f"{k['fit_seconds']:.0f} s",
                    ]
                )
    lines = [
        "# Co-localisation recipes (validation canvases)",
        "",
        "Generated by `stnkit reproduce colocalization --recipe-log "
        f"{folder.as_posix()}` from the `*.json` summaries beside this file, each written by the command "
        "in `recipes.json`. Every run is on the validation canvases (`--coloc-split val`: the problem made of "
        "the class's training digits n to 2n - 1, held out the next test_n: 100-199 and 200-299 by default; no test-split canvas): a recipe is chosen here, "
        "never on the test canvases. Localised: % of the problem's canvases whose window has IoU > 0.5 with "
        "the digit's box (mean over runs; each run's in brackets); held out: the same on canvases the "
        "transformer was not trained on; scale: the window's mean side / the canvas's (1/3 = the digit's 28 px).",
        "",
        *markdown_table(
            [
                "recipe",
                "change (vs the defaults)",
                "canvas",
                "digits",
                "seeds",
                "localised %",
                "held out %",
                "mean IoU",
                "scale",
                "fit / problem",
            ],
            table,
        ),
    ]
    md = "\n".join(lines) + "\n"
    atomic_write_text(folder / "recipes.md", md)
    atomic_write_text(folder / "recipes.json", json.dumps(rows, indent=2) + "\n")
    return md
