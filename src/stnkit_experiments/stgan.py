"""``stnkit reproduce stgan``: ST-GAN's sequential adversarial warps on a compositing benchmark with known truth.

Lin et al. (CVPR 2018) place a foreground object into a background with a
generator that only predicts warp parameters (:class:`~stnkit.nn.IterativeWarpGenerator`,
homographies composed over ``steps`` steps), trained adversarially against a
discriminator that sees real images and composites, never a pair of the two. Here
the benchmark is :class:`~stnkit.data.CompositingScenes`: a box in a room under a
random perspective camera, its image perturbed by a random homography, so the
result is measurable: the mean distance (px) of the box's eight vertices from
where they belong (:func:`~stnkit.data.compositing.placement_error`), before the
generator (the perturbation's own error) and after each of its steps.

Rows:

The perturbation is the foreground's initial placement ``p_0`` (``init``): every step composes its
update after it and samples the unperturbed foreground once with the accumulated warp, so a fake is
resampled once, as the perturbed image itself is.

* ``st-gan``: an adversarial loss on the composites (by default the non-saturating
  GAN loss against a spectral-normalised critic; ``loss="wgan-gp"``, ST-GAN's
  WGAN-GP, costs a double backward of the critic per critic update, several plain
  critic updates' time on a CPU); the steps are trained one after the other, step ``k`` with steps ``1..k-1`` fixed (ST-GAN's
  sequential training), the discriminator carried on from stage to stage; a small
  penalty on each update's distance from the identity (parameter space).
  The fake scenes (seed 0) and the real scenes (seed 1) are independent draws.
* ``supervised``: the same generator, steps trained one after the other on the
  true corners (the placement error itself as the loss): an upper bound that
  uses what the adversarial row never sees. With ``sup_redraw`` (the default) every
  update draws fresh perturbations of its batch's boxes
  (:func:`~stnkit.data.compositing.draw_perturbations`), as the authors' pretraining
  perturbs correctly placed foregrounds afresh, instead of the scenes' fixed ones.
* ``st-gan-from-supervised``: the authors' released code's protocol (the warp
  predictor pretrained with supervision, then adversarial steps): the adversarial
  row started from the ``supervised`` row's finished generator (trained first when
  it is not finished), each step then trained adversarially as in ``st-gan``.

Every stage is a checkpoint (``OUT/runs/stgan-ROW/stage-K.pt`` and its results
``stage-K.json``): an interrupted run resumes at the first unfinished stage and a
finished one is never trained again. Validation scenes (seed 2) are reported
beside the test scenes (seed 3); the recipe (:data:`STGAN_DEFAULTS`) was not
tuned on the test scenes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit._checks import check_choice, check_int, check_number
from stnkit._io import atomic_write_text
from stnkit.data.compositing import CompositingScenes, draw_perturbations, placement_error
from stnkit.geometry import warp
from stnkit.nn import CompositeDiscriminator, IterativeWarpGenerator, composite

ROWS = ("st-gan", "supervised", "st-gan-from-supervised")
ADVERSARIAL_ROWS = ("st-gan", "st-gan-from-supervised")
LOSSES = ("ns", "wgan-gp")
SPLIT_SEEDS = {"fake": 0, "real": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class StganConfig:
    """The recipe of both rows."""

    size: int = 64
    loc_size: int = 64  # the localisation nets read the composite at full size (chosen on validation: 32 before)
    steps: int = 3
    train_size: int = 1500  # fake scenes; as many real ones, drawn independently
    val_size: int = 200
    test_size: int = 300
    perturb: float = 0.3
    batch_size: int = 32
    loss: str = "ns"  # "ns": non-saturating GAN, spectral-normalised critic; "wgan-gp"
    gan_iters: int = 500  # generator updates per step
    critic_iters: int = 1  # critic updates per generator update
    d_warmup: float = 0.2  # critic updates before the first step, a fraction of gan_iters
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    gp_weight: float = 10.0  # wgan-gp only
    update_weight: float = 0.3  # the authors' released code's dplambda (indoor/options.py)
    sup_iters: int = 1000
    sup_redraw: bool = True  # supervised: fresh perturbations for every update (else the scenes' fixed ones)
    lr_sup: float = 1e-3
    disc_width: int = 16
    seed: int = 0

    def __post_init__(self):
        check_choice("loss", self.loss, LOSSES)
        check_int("size", self.size, low=16)
        check_int("loc_size", self.loc_size, low=8, high=self.size)
        for name in ("steps", "train_size", "val_size", "test_size", "batch_size", "gan_iters", "sup_iters"):
            check_int(name, getattr(self, name))
        check_int("critic_iters", self.critic_iters)
        check_int("disc_width", self.disc_width)
        check_int("seed", self.seed, low=0)
        check_number("perturb", self.perturb, low=0.0, high=0.5)
        check_number("d_warmup", self.d_warmup, low=0.0)
        for name in ("lr_g", "lr_d", "lr_sup"):
            if check_number(name, getattr(self, name), low=0.0) == 0.0:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        check_number("gp_weight", self.gp_weight, low=0.0)
        check_number("update_weight", self.update_weight, low=0.0)
        if not isinstance(self.sup_redraw, bool):
            raise TypeError(f"sup_redraw must be a bool, got {type(self.sup_redraw).__name__} {self.sup_redraw!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StganConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


STGAN_DEFAULTS = StganConfig()

# each StganConfig option that `stnkit reproduce stgan` sets, and its flag (a refusal names the flag)
CLI_FLAGS = {
    "train_size": "--train-size",
    "val_size": "--val-size",
    "test_size": "--test-size",
    "batch_size": "--batch-size",
    "size": "--image-size",
    "steps": "--stgan-steps",
    "gan_iters": "--stgan-iters",
    "sup_iters": "--stgan-sup-iters",
    "loss": "--stgan-loss",
    "loc_size": "--stgan-loc-size",
    "perturb": "--stgan-perturb",
    "sup_redraw": "--stgan-sup-redraw",
    "critic_iters": "--stgan-critic-iters",
    "disc_width": "--stgan-disc-width",
    "lr_d": "--stgan-lr-d",
    "lr_g": "--stgan-lr-g",
    "d_warmup": "--stgan-critic-warmup",
    "update_weight": "--stgan-update-weight",
}


def cli_args(config: StganConfig) -> list[str]:
    """The ``stnkit reproduce stgan`` flags that give ``config`` (those that differ from the defaults)."""
    args: list[str] = []
    for key, flag in CLI_FLAGS.items():
        value = getattr(config, key)
        if value == getattr(STGAN_DEFAULTS, key):
            continue
        if key == "size":
            args += [flag, str(value), str(value)]
        elif isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


# -- data -----------------------------------------------------------------------------------------
def _u8(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round_().to(torch.uint8)


def render_split(n: int, seed: int, config: StganConfig) -> dict:
    """A split rendered once: uint8 backgrounds ``(N, 3, S, S)`` and unperturbed foregrounds ``(N, 4, S, S)``,
    the perturbations ``(N, 8)`` and the vertices ``(N, 8, 2)``."""
    ds = CompositingScenes(n, seed=seed, size=config.size, perturb=config.perturb)
    bg = torch.empty(n, 3, config.size, config.size, dtype=torch.uint8)
    fg = torch.empty(n, 4, config.size, config.size, dtype=torch.uint8)
    for i in range(n):
        bg[i], fg[i] = _u8(ds.background(i)), _u8(ds.foreground(i))
    return {"bg": bg, "fg": fg, "perturbations": ds.perturbations, "vertices": ds.vertices, "boxes": ds.boxes}


def load_data(config: StganConfig) -> dict:
    sizes = {"fake": config.train_size, "real": config.train_size, "val": config.val_size, "test": config.test_size}
    return {s: render_split(sizes[s], SPLIT_SEEDS[s], config) for s in SPLIT_SEEDS}


def fake_batch(split: dict, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The unperturbed foregrounds, the backgrounds and the perturbations (the initial placements) of ``idx``.

    A fake image is the foreground sampled once with its placement (``composite(warp(fg, P), bg)``);
    the generator composes its updates after ``P`` and samples the foreground once with the result."""
    fg = split["fg"][idx].float().div_(255.0)
    return fg, split["bg"][idx].float().div_(255.0), split["perturbations"][idx]


def real_batch(split: dict, idx: Tensor, g: torch.Generator | None = None) -> Tensor:
    """Real images: the unperturbed foregrounds over their backgrounds; with ``g``, each foreground is
    resampled at a random sub-pixel shift (uniform, at most half a pixel along each axis), so that a
    fake's resampling blur does not tell it from a real image."""
    fg = split["fg"][idx].float().div_(255.0)
    if g is not None:
        size = fg.shape[-1]
        shift = (torch.rand(len(idx), 2, generator=g) - 0.5) * (2.0 / size)  # +-0.5 px, normalised
        fg = warp(fg, shift, "translation")
    return composite(fg, split["bg"][idx].float().div_(255.0))


# -- the models -----------------------------------------------------------------------------------
def build_generator(config: StganConfig) -> IterativeWarpGenerator:
    torch.manual_seed(config.seed)
    return IterativeWarpGenerator(
        steps=config.steps, transform="projective", in_size=config.size, loc_size=config.loc_size
    )


def build_discriminator(config: StganConfig) -> CompositeDiscriminator:
    torch.manual_seed(config.seed + 1)
    return CompositeDiscriminator(3, config.size, width=config.disc_width, spectral_norm=config.loss == "ns")


@torch.no_grad()
def step_params(gen: IterativeWarpGenerator, split: dict, steps: int, batch: int = 100) -> list[Tensor]:
    """The composed warp after each of the first ``steps`` steps for every scene of ``split``."""
    gen.eval()
    n = split["bg"].shape[0]
    out: list[list[Tensor]] = [[] for _ in range(steps)]
    for i in range(0, n, batch):
        idx = torch.arange(i, min(i + batch, n))
        fg, bg, pert = fake_batch(split, idx)
        for k, p in enumerate(gen(fg, bg, init=pert, steps=steps)):
            out[k].append(p)
    return [torch.cat(p) for p in out]


def errors(gen: IterativeWarpGenerator, split: dict, steps: int, size: int) -> list[float]:
    """Mean placement error (px): before the generator, then after each of the first ``steps`` steps."""
    params = [split["perturbations"], *step_params(gen, split, steps)] if steps else [split["perturbations"]]
    return [placement_error(p, split["vertices"], size).mean().item() for p in params]


def gradient_penalty(disc: nn.Module, real: Tensor, fake: Tensor, g: torch.Generator) -> Tensor:
    """WGAN-GP's ``(||grad D(x)|| - 1)^2`` at random points between real and fake images."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=g)
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


# -- one stage ------------------------------------------------------------------------------------
def _stage_inputs(gen: IterativeWarpGenerator, split: dict, k: int) -> Tensor:
    """The fixed warp after the placement and steps ``1..k`` (``k`` steps done) for every scene."""
    return step_params(gen, split, k)[-1] if k else split["perturbations"]


def _generate(gen: IterativeWarpGenerator, k: int, fg: Tensor, bg: Tensor, before: Tensor):
    dp = gen.update(k, fg, bg, before)
    return gen.family.compose(before, dp), dp


def _critic_step(gen, disc, opt_d, data, k, before, config, g) -> float:
    n_fake, n_real = data["fake"]["bg"].shape[0], data["real"]["bg"].shape[0]
    fi = torch.randint(n_fake, (config.batch_size,), generator=g)
    ri = torch.randint(n_real, (config.batch_size,), generator=g)
    fg, bg, pert = fake_batch(data["fake"], fi)
    with torch.no_grad():
        if k is None:  # the critic's warm-up: the perturbed placements as they are
            fake = gen.composite(fg, bg, pert)
        else:
            params, _ = _generate(gen, k, fg, bg, before[fi])
            fake = gen.composite(fg, bg, params)
    real = real_batch(data["real"], ri, g)
    if config.loss == "wgan-gp":
        loss = disc(fake).mean() - disc(real).mean() + config.gp_weight * gradient_penalty(disc, real, fake, g)
    else:  # the non-saturating GAN's critic: the logistic loss of real vs fake
        loss = F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()
    opt_d.zero_grad()
    loss.backward()
    opt_d.step()
    return loss.item()


def train_gan_stage(gen, disc, opt_d, data, k: int, config: StganConfig, log=print) -> list[dict]:
    """Step ``k`` (0-based) of the adversarial row; the other steps stay fixed. Returns the loss history."""
    g = torch.Generator().manual_seed(config.seed * 1000 + 17 * (k + 1))
    for p in gen.parameters():
        p.requires_grad_(False)
    params_k = gen.step_parameters(k)
    for p in params_k:
        p.requires_grad_(True)
    opt_g = torch.optim.Adam(params_k, lr=config.lr_g, betas=(0.5, 0.9))
    before = _stage_inputs(gen, data["fake"], k)
    ident = gen.family.identity(1)
    history = []
    gen.train()
    disc.train()
    if k == 0:
        for _ in range(round(config.d_warmup * config.gan_iters)):
            _critic_step(gen, disc, opt_d, data, None, None, config, g)
    n_fake = data["fake"]["bg"].shape[0]
    for it in range(config.gan_iters):
        for _ in range(config.critic_iters):
            d_loss = _critic_step(gen, disc, opt_d, data, k, before, config, g)
        fi = torch.randint(n_fake, (config.batch_size,), generator=g)
        fg, bg, _ = fake_batch(data["fake"], fi)
        params, dp = _generate(gen, k, fg, bg, before[fi])
        for p in disc.parameters():
            p.requires_grad_(False)
        score = disc(gen.composite(fg, bg, params))
        adv = -score.mean() if config.loss == "wgan-gp" else F.softplus(-score).mean()
        for p in disc.parameters():
            p.requires_grad_(True)
        penalty = ((dp - ident) ** 2).sum(dim=1).mean()
        loss = adv + config.update_weight * penalty
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if (it + 1) % 50 == 0 or it + 1 == config.gan_iters:
            with torch.no_grad():
                err = placement_error(params, data["fake"]["vertices"][fi], config.size)
            history.append(
                {
                    "iter": it + 1,
                    "d_loss": d_loss,
                    "g_adv": adv.item(),
                    "update": penalty.item(),
                    "train_error": err.mean().item(),
                }
            )
            if (it + 1) % 200 == 0 or it + 1 == config.gan_iters:
                h = history[-1]
                log(
                    f"st-gan step {k + 1}: iter {it + 1}/{config.gan_iters} critic {h['d_loss']:.3f} "
                    f"adv {h['g_adv']:.3f} update {h['update']:.4f} batch error {h['train_error']:.2f} px"
                )
    return history


def train_supervised_stage(gen, data, k: int, config: StganConfig, log=print) -> list[dict]:
    """Step ``k`` of the supervised bound: the placement error of the true corners as the loss."""
    g = torch.Generator().manual_seed(config.seed * 1000 + 31 * (k + 1))
    for p in gen.parameters():
        p.requires_grad_(False)
    params_k = gen.step_parameters(k)
    for p in params_k:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params_k, lr=config.lr_sup)
    split = data["fake"]
    before = None if config.sup_redraw else _stage_inputs(gen, split, k)
    n = split["bg"].shape[0]
    history = []
    gen.train()
    for it in range(config.sup_iters):
        fi = torch.randint(n, (config.batch_size,), generator=g)
        fg, bg, _ = fake_batch(split, fi)
        if before is None:  # a fresh perturbation of each box, then the fixed steps 1..k
            pert = draw_perturbations(split["boxes"][fi], config.perturb, config.size, g)
            with torch.no_grad():
                start = gen(fg, bg, init=pert, steps=k)[-1] if k else pert
        else:
            start = before[fi]
        params, _ = _generate(gen, k, fg, bg, start)
        loss = placement_error(params, split["vertices"][fi], config.size).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (it + 1) % 50 == 0 or it + 1 == config.sup_iters:
            history.append({"iter": it + 1, "train_error": loss.item()})
            if (it + 1) % 200 == 0 or it + 1 == config.sup_iters:
                log(f"supervised step {k + 1}: iter {it + 1}/{config.sup_iters} batch error {loss.item():.2f} px")
    return history


# -- a row, stage by stage, resumable -------------------------------------------------------------
def run_dir(out: Path, row: str, config: StganConfig) -> Path:
    return out / "runs" / f"stgan-{row}-s{config.seed}"


def _check_config(path: Path, config: StganConfig) -> None:
    meta = json.loads(path.read_text())
    if StganConfig.from_dict(meta["config"]) != config:
        raise SystemExit(
            f"stnkit reproduce stgan: {path} was written with other settings; delete {path.parent} to rerun"
        )


def train_row(out: Path, row: str, config: StganConfig, data_fn, log=print) -> dict:
    """Train ``row`` stage by stage (resuming at the first unfinished stage); write and return its results.

    ``st-gan-from-supervised`` starts from the ``supervised`` row's finished generator (``OUT/runs``),
    trained first when it is not finished."""
    run = run_dir(out, row, config)
    done = run / "results.json"
    if done.is_file():
        _check_config(done, config)
        return json.loads(done.read_text())
    gen = build_generator(config)
    if row == "st-gan-from-supervised":
        train_row(out, "supervised", config, data_fn, log)
        gen.load_state_dict(_load_state(out, "supervised", config)["generator"])
    run.mkdir(parents=True, exist_ok=True)
    disc = build_discriminator(config) if row in ADVERSARIAL_ROWS else None
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=(0.5, 0.9)) if disc is not None else None
    stages: list[dict] = []
    start = 0
    for k in range(config.steps, 0, -1):  # the last finished stage
        if (run / f"stage-{k}.json").is_file() and (run / f"stage-{k}.pt").is_file():
            _check_config(run / f"stage-{k}.json", config)
            state = torch.load(run / f"stage-{k}.pt", weights_only=True)
            gen.load_state_dict(state["generator"])
            if disc is not None:
                disc.load_state_dict(state["discriminator"])
                opt_d.load_state_dict(state["opt_d"])
            stages = [json.loads((run / f"stage-{j}.json").read_text()) for j in range(1, k + 1)]
            start = k
            log(f"{row}: resumed after step {k}")
            break
    data = data_fn()
    for k in range(start, config.steps):
        t0 = time.time()
        if row in ADVERSARIAL_ROWS:
            history = train_gan_stage(gen, disc, opt_d, data, k, config, log)
        else:
            history = train_supervised_stage(gen, data, k, config, log)
        seconds = time.time() - t0
        stage = {
            "row": row,
            "step": k + 1,
            "config": config.to_dict(),
            "fit_seconds": seconds,
            "val_error": errors(gen, data["val"], k + 1, config.size),
            "test_error": errors(gen, data["test"], k + 1, config.size),
            "history": history,
        }
        log(
            f"{row}: step {k + 1} done in {seconds:.0f} s; val error (px) "
            + " -> ".join(f"{e:.2f}" for e in stage["val_error"])
        )
        state = {"generator": gen.state_dict()}
        if disc is not None:
            state |= {"discriminator": disc.state_dict(), "opt_d": opt_d.state_dict()}
        torch.save(state, run / f"stage-{k + 1}.pt")
        atomic_write_text(run / f"stage-{k + 1}.json", json.dumps(stage, indent=2) + "\n")
        stages.append(stage)
    last = stages[-1]
    result = {
        "row": row,
        "config": config.to_dict(),
        "val_error": last["val_error"],
        "test_error": last["test_error"],
        "fit_seconds": sum(s["fit_seconds"] for s in stages),
        "stages": [{k: v for k, v in s.items() if k != "config"} for s in stages],
    }
    atomic_write_text(done, json.dumps(result, indent=2) + "\n")
    return result


def run_stgan(out: Path, config: StganConfig, rows=ROWS, log=print) -> dict:
    cache: dict = {}

    def data_fn() -> dict:  # rendered on first need, once
        if not cache:
            t0 = time.time()
            cache.update(load_data(config))
            log(f"rendered the scenes in {time.time() - t0:.0f} s")
        return cache

    if all((run_dir(out, r, config) / "results.json").is_file() for r in rows):
        log("every row is finished")
    for r in sorted(rows, key=lambda r: r != "supervised"):  # the bound first: st-gan-from-supervised starts from it
        train_row(out, r, config, data_fn, log)
        write_outputs(out, summarize(out, config, rows))
    return summarize(out, config, rows)


def summarize(out: Path, config: StganConfig, rows=ROWS) -> dict:
    results = {}
    for r in ROWS:  # the table's order
        if r not in rows:
            continue
        f = run_dir(out, r, config) / "results.json"
        if f.is_file():
            results[r] = json.loads(f.read_text())
    return {"experiment": "stgan", "config": config.to_dict(), "rows": results}


# -- reports --------------------------------------------------------------------------------------
def render_markdown(summary: dict, figure: str = "figures/stgan.png") -> str:
    c = StganConfig.from_dict(summary["config"])
    rows = summary["rows"]
    steps = range(1, c.steps + 1)
    head = "| row | split | perturbation (before) | " + " | ".join(f"after step {k}" for k in steps) + " | fit (min) |"
    rule = "|---|---|---|" + "---|" * c.steps + "---|"
    critic = (
        f"WGAN-GP (gradient penalty {c.gp_weight})"
        if c.loss == "wgan-gp"
        else "the non-saturating GAN loss with a spectral-normalised critic"
    )
    supervised = (
        f"`supervised` (upper bound): the same generator, {c.sup_iters} updates per step on the placement error "
        "of the true vertices, "
        + (
            "each update on fresh random perturbations of its batch's boxes (drawn as the scenes' are), "
            if c.sup_redraw
            else "on the training scenes' fixed perturbations, "
        )
        + f"Adam lr {c.lr_sup}, steps trained one after the other as well."
    )
    lines = [
        "# stgan: sequential adversarial warps (ST-GAN) on a box composited into a room",
        "",
        "Generated by `stnkit reproduce stgan --docs docs/results/stgan.md` from `results/stgan.json` (`--report-only` rewrites it from the "
        "finished rows); do not edit by hand (on the docs page, only the notes at its end are written by hand).",
        "",
        f"The benchmark (`stnkit.data.CompositingScenes`, {c.size}x{c.size} RGB): a closed room (tiled floor, "
        "walls with a skirting, ceiling; flat-shaded) and a box on the floor under a random pinhole camera "
        "inside the room (position, heading, 50-70 degree field of view), ray-cast with 3x3 supersampling. The "
        "box's image (premultiplied RGBA) is perturbed by a random homography that moves the corners of its "
        f"bounding box by Gaussian offsets of {c.perturb} x its width (x) and height (y), truncated at 2 standard "
        "deviations, the moved quad kept convex, "
        "and composited over the room; real images are renders with the box unperturbed, from independent "
        "scenes, the box resampled at a random sub-pixel shift (at most half a pixel) so that resampling blur "
        f"does not tell a fake from a real image. {c.train_size} fake scenes (seed 0), {c.train_size} real scenes (seed 1), {c.val_size} "
        f"validation (seed 2) and {c.test_size} test scenes (seed 3).",
        "",
        f"Generator: `stnkit.nn.IterativeWarpGenerator`, {c.steps} step{'s' if c.steps > 1 else ''}, homographies (`projective`) composed "
        "in parameter space, one localisation net per step (`default_localization` on the composite and the "
        "warped alpha, "
        + (f"at {c.loc_size} px" if c.loc_size == c.size else f"area-averaged to {c.loc_size} px")
        + "), identity heads; the perturbation is the foreground's initial placement p_0 and each step composes its "
        "update after it, so the unperturbed foreground is sampled once per step with the accumulated warp. `st-gan`: "
        + critic
        + f" against `stnkit.nn.CompositeDiscriminator` (width {c.disc_width}), "
        f"{round(c.d_warmup * c.gan_iters)} critic updates first, then per step {c.gan_iters} generator updates with {c.critic_iters} "
        f"critic updates each, Adam (lr {c.lr_g} / {c.lr_d}, betas 0.5, 0.9), batch {c.batch_size}, update "
        f"penalty {c.update_weight} x ||dp - identity||^2; step k trained with steps 1..k-1 fixed, the critic "
        "carried on; it starts at the identity and never sees a pair or the truth. " + supervised,
    ]
    if "st-gan-from-supervised" in rows:
        lines[-1] += (
            " `st-gan-from-supervised`: the authors' released code's protocol, the `supervised` row's finished "
            "generator as the start, then every step trained adversarially as in `st-gan` (a fresh critic)."
        )
    lines += [
        "",
        "Mean placement error (px): the mean distance of the box's 8 projected vertices from where they belong, "
        "before the generator (the perturbation's own error) and after each step.",
        "",
        head,
        rule,
    ]
    for r, res in rows.items():
        for split in ("test", "val"):
            e = res[f"{split}_error"]
            cells = " | ".join(f"{v:.2f}" for v in e)
            lines.append(f"| {r} | {split} | {cells} | {res['fit_seconds'] / 60:.1f} |")
    gan = rows.get("st-gan")
    if gan:
        e = gan["test_error"]
        best = min(e[1:]) if len(e) > 1 else e[0]
        verdict = (
            f"below the perturbation's error, by {e[0] - e[-1]:.2f} px"
            if e[-1] < e[0]
            else "not below the perturbation's error (a negative result)"
        )
        lines += [
            "",
            f"The adversarial row ends at {e[-1]:.2f} px on the test scenes against the perturbation's {e[0]:.2f} px: "
            f"{verdict}; its best step reaches {best:.2f} px.",
        ]
    fs, sup = rows.get("st-gan-from-supervised"), rows.get("supervised")
    if fs:
        e = fs["test_error"]
        text = f"The from-supervised row ends at {e[-1]:.2f} px on the test scenes (perturbation {e[0]:.2f} px)"
        if sup:
            s = sup["test_error"][-1]
            text += f"; its starting point, the supervised row, ends at {s:.2f} px: the adversarial steps " + (
                "improved on it." if e[-1] < s else "did not improve on it (they moved the boxes away)."
            )
        else:
            text += "."
        lines += ["", text]
    lines += [
        "",
        "The paper (Lin et al., CVPR 2018, arXiv:1803.01837) measures its indoor-furniture and glasses results "
        "by user studies and by pictures, not by a corner error, so it has no number to set beside this table: "
        "its abstract reports that the iterative warps with sequential training do better than a single generator "
        "trained naively. Its authors' released code (github.com/chenhsuanlin/spatial-transformer-GAN, "
        "indoor/options.py, train.sh) first pretrains the warp predictor with supervision, to undo random "
        "homography perturbations of correctly placed foregrounds (pretrain_homo.py, 200,000 iterations), then "
        "trains warps 1 to 4 adversarially one after the other with WGAN-GP (gradient penalty 10, 2 critic "
        "updates per generator update, batch 20, an update-norm penalty 0.3, 40,000 iterations per warp, "
        "120x160 images, on a GPU). The `st-gan` row here has no supervised pretraining; the `supervised` row "
        "plays the part of that pretraining as a bound"
        + ("; `st-gan-from-supervised` follows the released code's protocol" if fs else "")
        + f"; and it is CPU-sized: {c.gan_iters} generator updates per step on {c.size}x{c.size} renders.",
        "",
        f"![test composites: perturbed, after each step, supervised, truth]({figure})",
        "",
    ]
    return "\n".join(lines)


# on the --docs page, what follows this line is written by hand and kept when the page is regenerated
NOTES_MARKER = "<!-- notes: written by hand below this line, kept by stnkit reproduce stgan --docs -->"


def write_outputs(out: Path, summary: dict, docs: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "stgan.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "stgan.md", render_markdown(summary))
    if docs is not None:
        figure = os.path.relpath(out / "figures" / "stgan.png", docs.parent)
        old = docs.read_text() if docs.is_file() else ""
        notes = old[old.index(NOTES_MARKER) :] if NOTES_MARKER in old else ""
        atomic_write_text(docs, render_markdown(summary, figure) + ("\n" + notes if notes else ""))


def _load_state(out: Path, row: str, config: StganConfig) -> dict:
    return torch.load(run_dir(out, row, config) / f"stage-{config.steps}.pt", weights_only=True)


def _load_generator(out: Path, row: str, config: StganConfig) -> IterativeWarpGenerator | None:
    if not (run_dir(out, row, config) / f"stage-{config.steps}.pt").is_file():
        return None
    gen = build_generator(config)
    gen.load_state_dict(_load_state(out, row, config)["generator"])
    return gen.eval()


def make_figure(out: Path, summary: dict, n: int = 6) -> Path | None:
    """Test composites (``OUT/figures/stgan.png``): perturbed, after each adversarial step, the supervised
    bound's last step, the from-supervised row's last step, and the truth; the true vertices in red."""
    config = StganConfig.from_dict(summary["config"])
    gens = {r: _load_generator(out, r, config) for r in summary["rows"]}
    if not any(gens.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stnkit._io import save_figure

    n = min(n, config.test_size)
    split = render_split(n, SPLIT_SEEDS["test"], config)
    idx = torch.arange(n)
    fg, bg, pert = fake_batch(split, idx)
    rows: list[tuple[str, Tensor, Tensor | None]] = []
    rows.append(("perturbed", composite(warp(fg, pert, "projective"), bg), pert))
    if gens.get("st-gan") is not None:
        gen = gens["st-gan"]
        with torch.no_grad():
            for k, p in enumerate(gen(fg, bg, init=pert)):
                rows.append((f"st-gan step {k + 1}", gen.composite(fg, bg, p), p))
    for name in ("supervised", "st-gan-from-supervised"):
        if gens.get(name) is not None:
            gen = gens[name]
            with torch.no_grad():
                p = gen(fg, bg, init=pert)[-1]
                rows.append((name if name == "supervised" else "from-supervised", gen.composite(fg, bg, p), p))
    rows.append(("truth", real_batch(split, idx), None))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.7 * n, 1.8 * len(rows)), squeeze=False)
    for ri, (name, images, params) in enumerate(rows):
        err = None if params is None else placement_error(params, split["vertices"], config.size)
        for i in range(n):
            ax = axes[ri, i]
            ax.imshow(images[i].clamp(0, 1).permute(1, 2, 0).numpy())
            v = split["vertices"][i]
            ax.plot(v[:, 0], v[:, 1], "r.", ms=2)
            ax.set_title(name if err is None else f"{name}: {err[i]:.1f} px", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    path = save_figure(fig, out / "figures" / "stgan.png", dpi=90)
    plt.close(fig)
    return path


def config_with(**options) -> StganConfig:
    """:data:`STGAN_DEFAULTS` with ``options`` (those of :class:`StganConfig`)."""
    return replace(STGAN_DEFAULTS, **options)


__all__ = [
    "ADVERSARIAL_ROWS",
    "CLI_FLAGS",
    "ROWS",
    "STGAN_DEFAULTS",
    "StganConfig",
    "cli_args",
    "errors",
    "make_figure",
    "render_markdown",
    "run_stgan",
    "summarize",
    "train_row",
    "write_outputs",
]
