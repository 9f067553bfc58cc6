"""``stnkit bench``: stnkit's speed against the fastest peer, measured side by side in one process.

Every comparison times its contenders **alternately** in one process (load
from other programs hits all of them alike), reports the median and the
quartiles over the repeats, and first checks that the contenders compute the
same thing (1e-4 on the same sample points; kornia's matrices come from
:func:`~stnkit.geometry.to_pixel_matrix`). Ratios are ``stnkit time /
fastest peer time``: below 1 stnkit is faster.

* **Warps** (``affine``, ``projective``, ``tps`` at 4x4 and 8x8 control points,
  and a 4x4 TPS warp against torch's affine warp for its cost):
  stnkit against ``F.affine_grid`` + ``F.grid_sample`` and kornia's
  ``warp_affine`` / ``warp_perspective`` / ``get_tps_transform`` +
  ``warp_image_tps`` (kornia is optional: ``pip install kornia``). Three modes:
  forward alone; forward + backward to the parameters (a transformer on the
  input images); forward + backward to the parameters and the input (a
  transformer deep in a network). kornia fits a different spline (its kernel
  centres are the target points), so for TPS only its speed is compared; the
  values of stnkit's TPS are checked against the thin-plate system solved
  directly (and against scipy in the test suite).
* **Training steps** on RTS-sized input (42x42, batch 128): forward, loss,
  backward and AdamW step of the CNN, the ST-CNN (localisation net on the full
  input and on a half-size copy), the ST-CNN with two transformers, the PyTorch
  tutorial's network with and without its transformer, each as a
  ratio to the CNN step timed beside it, with the activation memory the step
  saves for backward; and ``torch.compile`` against eager for the ST-CNN.
* **ResNet-18 behind a transformer** (``--only resnet``): a training step of the
  built-in ResNet-18 at 3x224x224, batch 16, 10 classes, alone and with an
  affine transformer in front (:func:`~stnkit.nn.with_transformer`, localisation
  net on the 56x56 copy), timed in a shuffled order each round; the ratio is the
  median of the rounds' with / without ratios. The transformer's pieces
  (localisation net, grid + grid_sample) are timed beside it.
* **Generators**: samples per second of each distorted-MNIST recipe.

``--only SECTION`` (repeatable: ``warps``, ``steps``, ``resnet``, ``generators``)
runs only those sections.

``stnkit bench --quick`` runs everything at toy sizes in seconds (the test
suite runs it); the full run writes ``benchmarks/results/bench.json`` and
``bench.md``. ``--device cuda`` times the warps and training steps on the GPU
(each call is synchronised before the clock stops; the generators stay on the
CPU, where the data loaders run them); the committed GPU report was written with
``--out benchmarks/results/bench_cuda.json``.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .geometry import (
    base_grid,
    from_voxelmorph,
    get_transform,
    integrate_velocity,
    to_monai,
    to_pixel_matrix,
    to_voxelmorph,
    warp,
    warp_field,
)
from .geometry.families import _tps_kernel

FULL_SIZES = [(256, 1, 28), (256, 1, 42), (256, 1, 60), (32, 3, 224)]
QUICK_SIZES = [(4, 1, 16)]
MODES = ("forward", "forward+backward", "forward+backward, input grad")
AGREE = 1e-4


def _kornia():
    try:
        import kornia.geometry.transform as kgt
    except ImportError:
        return None
    return kgt


def _sync(device: torch.device) -> Callable[[], None]:
    """What waits for ``device``'s queued work (nothing on the CPU, whose calls return when done)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeat: int,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    shuffle_seed: int | None = None,
    keep_times: bool = False,
) -> dict[str, dict]:
    """Median and quartiles (seconds) of each callable, the callables run in turn each round;
    on a GPU each call is timed until ``device`` has finished its work.

    ``shuffle_seed``: run the callables in a fresh random order each round (seeded), so none
    always runs right after another; ``None``: the dict's order every round. ``keep_times``:
    also return each round's seconds (``times_s``, in round order), for paired ratios."""
    sync = _sync(torch.device(device))
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    gen = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    for _ in range(repeat):
        if gen is not None:
            order = [order[i] for i in torch.randperm(len(order), generator=gen).tolist()]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        out[name] = {"median_s": statistics.median(t), "q1_s": q[0], "q3_s": q[2]}
        if keep_times:
            out[name]["times_s"] = list(t)
    return out


def _solved_tps_grid(targets: torch.Tensor, ctrl: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """The thin-plate spline through ``ctrl -> targets``, solving its linear system on the spot (a reference)."""
    k, b = ctrl.shape[0], targets.shape[0]
    dt = targets.dtype
    p = torch.cat([torch.ones(k, 1, dtype=dt), ctrl], 1)
    top = torch.cat([_tps_kernel(torch.cdist(ctrl, ctrl).pow(2)), p], 1)
    lmat = torch.cat([top, torch.cat([p.T, torch.zeros(3, 3, dtype=dt)], 1)], 0)
    rhs = torch.cat([targets, torch.zeros(b, 3, 2, dtype=dt)], 1)
    coef = torch.linalg.solve(lmat.expand(b, -1, -1), rhs)
    pts = base_grid(out_size, dtype=dt).view(-1, 2)
    basis = torch.cat([_tps_kernel(torch.cdist(pts, ctrl).pow(2)), torch.ones(len(pts), 1, dtype=dt), pts], 1)
    return (basis @ coef).view(b, *out_size, 2)


def _tps_check(family, params: torch.Tensor, size: tuple[int, int], why: str) -> tuple[float, dict]:
    """stnkit's TPS grid against the thin-plate system solved directly, in float64."""
    params = params.detach().cpu().double()
    with torch.no_grad():
        ours = family.grid(params, size)
        ref = _solved_tps_grid(family.targets(params), family.control_points, size)
    worst = float((ours - ref).abs().max())
    return worst, {
        "max_abs_difference": worst,
        "compared": f"stnkit's grid vs the thin-plate system solved directly ({why})",
    }


def _warp_contenders(op: str, x: torch.Tensor, gen: torch.Generator) -> tuple[dict, dict]:
    """``{name: (leaf parameters, fn(x, leaf) -> output)}`` for one warp, and the agreement check."""
    b, _, h, w = x.shape
    kgt = _kornia()
    if op in ("affine", "projective"):
        family = get_transform(op)
        params = family.random(b, strength=0.5, generator=gen).to(x.device)
        contenders = {"stnkit": (params, lambda x, p: warp(x, p, family))}
        if op == "affine":
            contenders["F.affine_grid + F.grid_sample"] = (
                params.view(b, 2, 3).clone(),
                lambda x, p: F.grid_sample(
                    x, F.affine_grid(p, list(x.shape), align_corners=False), align_corners=False
                ),
            )
        if kgt is not None:
            m = to_pixel_matrix(family.matrix(params), (h, w))
            if op == "affine":
                contenders["kornia warp_affine"] = (
                    m[:, :2].contiguous(),
                    lambda x, p: kgt.warp_affine(x, p, (h, w), align_corners=False),
                )
            else:
                contenders["kornia warp_perspective"] = (
                    m.contiguous(),
                    lambda x, p: kgt.warp_perspective(x, p, (h, w), align_corners=False),
                )
        with torch.no_grad():
            ref = warp(x, params, family)
            worst = max(float((fn(x, p) - ref).abs().max()) for p, fn in contenders.values())
        check = {"max_abs_difference": worst, "compared": "outputs of every contender"}
    elif op == "tps4 vs affine reference":
        # the cost of a 4x4 TPS warp next to torch's affine warp (different transforms: cost only)
        family = get_transform("tps", grid_size=4)
        params = family.random(b, strength=0.5, generator=gen).to(x.device)
        theta = get_transform("affine").random(b, strength=0.5, generator=gen).view(b, 2, 3).to(x.device)
        contenders = {
            "stnkit": (params, lambda x, p: warp(x, p, family)),
            "F.affine_grid + F.grid_sample": (
                theta,
                lambda x, p: F.grid_sample(
                    x, F.affine_grid(p, list(x.shape), align_corners=False), align_corners=False
                ),
            ),
        }
        worst, check = _tps_check(family, params, (h, w), "the peer warps an affine transform")
    else:
        grid_size = int(op.removeprefix("tps"))
        family = get_transform("tps", grid_size=grid_size)
        params = family.random(b, strength=0.5, generator=gen).to(x.device)
        contenders = {"stnkit": (params, lambda x, p: warp(x, p, family))}
        ctrl = family.control_points.float().to(x.device)
        if kgt is not None:
            targets = family.targets(params)

            def kornia_tps(x, dst):
                kernel, affine = kgt.get_tps_transform(dst, ctrl.expand(b, -1, -1))
                return kgt.warp_image_tps(x, ctrl.expand(b, -1, -1), kernel, affine, align_corners=False)

            contenders["kornia get_tps_transform + warp_image_tps"] = (targets.detach().clone(), kornia_tps)
        worst, check = _tps_check(family, params, (h, w), "kornia fits another spline")
    if worst > AGREE:
        raise RuntimeError(f"bench: contenders of {op} disagree by {worst:.3g} > {AGREE}")
    return contenders, check


def _mode_fn(mode: str, fn, x: torch.Tensor, leaf: torch.Tensor, upstream: torch.Tensor) -> Callable[[], object]:
    if mode == "forward":

        def run():
            with torch.no_grad():
                return fn(x, leaf)

        return run
    xi = x.detach().clone().requires_grad_(mode.endswith("input grad"))
    p = leaf.detach().clone().requires_grad_(True)

    def run_backward():
        p.grad = None
        xi.grad = None
        fn(xi, p).backward(upstream)

    return run_backward


WARP_OPS = ("affine", "projective", "tps4", "tps8", "tps4 vs affine reference")


def bench_warps(sizes, repeat: int, ops=WARP_OPS, device: torch.device | str = "cpu") -> list[dict]:
    rows = []
    for b, c, s in sizes:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(b, c, s, s, generator=gen).to(device)
        upstream = torch.randn(b, c, s, s, generator=gen).to(device)
        for op in ops:
            contenders, check = _warp_contenders(op, x, gen)
            for mode in MODES:
                fns = {name: _mode_fn(mode, fn, x, leaf, upstream) for name, (leaf, fn) in contenders.items()}
                # kornia's TPS is tens of times slower: fewer rounds keep the suite short
                reps = repeat if "kornia" not in " ".join(fns) or "tps" not in op else max(5, repeat // 3)
                timing = time_interleaved(fns, reps, device=device)
                peers = {k: v for k, v in timing.items() if k != "stnkit"}
                row = {
                    "op": op,
                    "batch": b,
                    "channels": c,
                    "size": s,
                    "mode": mode,
                    "repeat": reps,
                    "times": timing,
                    "check": check,
                }
                if peers:
                    fastest = min(peers, key=lambda k: peers[k]["median_s"])
                    row["fastest_peer"] = fastest
                    row["ratio"] = timing["stnkit"]["median_s"] / peers[fastest]["median_s"]
                rows.append(row)
    return rows


def _saved_bytes(step: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for backward during one step (the activation memory)."""
    total = 0
    seen: set = set()

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


def bench_steps(batch: int, size: int, repeat: int, compile: bool, device: torch.device | str = "cpu") -> dict:
    """One training step (forward, cross-entropy, backward, AdamW) of each model, as a ratio to the CNN's."""
    from .models import count_parameters, create

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    specs = {
        "cnn": dict(name="cnn"),
        "st-cnn": dict(name="st-cnn"),
        "st-cnn, --loc-downsample 2": dict(name="st-cnn", loc_downsample=2),
        "2x st-cnn, --loc-downsample 2": dict(name="st-cnn", num_transformers=2, loc_downsample=2),
        f"st-cnn, --loc-downsample 2 --st-size {size * 2 // 3}": dict(
            name="st-cnn", loc_downsample=2, st_size=size * 2 // 3
        ),
        "tutorial-cnn": dict(name="tutorial-cnn"),
        "tutorial-stn": dict(name="tutorial-stn"),
    }
    models, steps = {}, {}
    for label, spec in specs.items():
        torch.manual_seed(0)
        spec = dict(spec)
        models[label] = create(spec.pop("name"), in_size=size, **spec).to(device)
        steps[label] = _step_fn(models[label], x, y)
    if compile:
        torch.manual_seed(0)
        compiled = create("st-cnn", in_size=size, loc_downsample=2).to(device)
        start = time.perf_counter()
        steps["st-cnn, --loc-downsample 2, torch.compile"] = _step_fn(torch.compile(compiled), x, y)
        steps["st-cnn, --loc-downsample 2, torch.compile"]()
        _sync(torch.device(device))()
        compile_s = time.perf_counter() - start
        models["st-cnn, --loc-downsample 2, torch.compile"] = compiled
    timing = time_interleaved(steps, repeat, device=device)
    cnn = timing["cnn"]["median_s"]
    rows = []
    for label, t in timing.items():
        rows.append(
            {
                "model": label,
                "times": t,
                "ratio_to_cnn": t["median_s"] / cnn,
                "parameters": count_parameters(models[label]),
                "saved_activations_bytes": None if "compile" in label else _saved_bytes(steps[label]),
            }
        )
    out = {"batch": batch, "size": size, "repeat": repeat, "rows": rows}
    if compile:
        out["compile_seconds"] = compile_s
    return out


def _step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


RESNET = "resnet18"
RESNET_ST = "resnet18 + affine transformer"
RESNET_IG = "resnet18, input gradient too"  # what a transformer in front makes the backbone compute


def bench_resnet(batch: int, size: int, repeat: int, num_classes: int = 10, device: torch.device | str = "cpu") -> dict:
    """One training step (forward, cross-entropy, backward, AdamW) of the built-in ResNet-18 on
    ``(batch, 3, size, size)`` input, alone and behind an affine transformer
    (:func:`~stnkit.nn.with_transformer`, its localisation net on the default downsampled copy),
    timed in turn in a shuffled order each round; ``ratio`` = median of each round's
    with-transformer / backbone times (``ratio_of_medians`` beside it). Beside them, the
    backbone's step with its input's gradient computed too (``input_grad_ratio``): a
    transformer in front is trained through the warped image, so the backbone's stem conv
    must compute that gradient. ``parts``: the transformer's own pieces, forward + backward,
    timed the same way."""
    from .models import count_parameters
    from .models.backbones import resnet18
    from .nn import with_transformer

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    torch.manual_seed(0)
    plain = resnet18(num_classes=num_classes).to(device)
    torch.manual_seed(0)  # the same backbone weights behind the transformer
    st_model = with_transformer(resnet18(num_classes=num_classes), in_size=size).to(device)
    torch.manual_seed(0)
    plain_ig = resnet18(num_classes=num_classes).to(device)
    timing = time_interleaved(
        {
            RESNET: _step_fn(plain, x, y),
            RESNET_ST: _step_fn(st_model, x, y),
            # the backbone's step when its input needs a gradient, as it does behind a transformer
            RESNET_IG: _step_fn(plain_ig, x.clone().requires_grad_(True), y),
        },
        repeat,
        device=device,
        shuffle_seed=0,
        keep_times=True,
    )

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(timing[a]["times_s"], timing[b]["times_s"]))

    st = st_model.transformer
    upstream = torch.randn(batch, 3, size, size, generator=gen).to(device)
    loc_in = st.loc_input(x)
    params = st.predict_params(x).detach().requires_grad_(True)

    def transformer_alone():
        st.zero_grad(set_to_none=True)
        st(x).backward(upstream)

    def loc_net():
        st.zero_grad(set_to_none=True)
        st.head(st.localization(st.loc_input(x)).flatten(1)).sum().backward()

    def sampler():
        params.grad = None
        F.grid_sample(x, st.grid(params, (size, size)), align_corners=False).backward(upstream)

    parts = time_interleaved(
        {
            "transformer alone": transformer_alone,
            f"localisation net on {tuple(loc_in.shape[-2:])}": loc_net,
            f"grid + grid_sample at {size}x{size}x3": sampler,
        },
        repeat,
        device=device,
        shuffle_seed=1,
    )
    rows = [
        {"model": RESNET, "times": _no_rounds(timing[RESNET]), "parameters": count_parameters(plain)},
        {"model": RESNET_ST, "times": _no_rounds(timing[RESNET_ST]), "parameters": count_parameters(st_model)},
        {"model": RESNET_IG, "times": _no_rounds(timing[RESNET_IG]), "parameters": count_parameters(plain_ig)},
    ]
    return {
        "batch": batch,
        "size": size,
        "num_classes": num_classes,
        "loc_size": list(st.loc_size) if st.loc_size else None,
        "repeat": repeat,
        "rows": rows,
        "round_times_s": {k: timing[k]["times_s"] for k in (RESNET, RESNET_ST, RESNET_IG)},
        "ratio": paired(RESNET_ST, RESNET),
        "ratio_of_medians": timing[RESNET_ST]["median_s"] / timing[RESNET]["median_s"],
        # the share of the overhead the backbone's own input gradient (its stem conv's) accounts for
        "input_grad_ratio": paired(RESNET_IG, RESNET),
        "ratio_to_input_grad": paired(RESNET_ST, RESNET_IG),
        "parts": [
            {"part": k, "times": v, "share_of_step": v["median_s"] / timing[RESNET]["median_s"]}
            for k, v in parts.items()
        ],
    }


def _no_rounds(t: dict) -> dict:
    return {k: v for k, v in t.items() if k != "times_s"}


def bench_distortions(n: int, repeat: int) -> list[dict]:
    from .data import DISTORTIONS, get_distortion
    from .data.mnist import bundled_mnist

    raw, _ = bundled_mnist()
    digits = torch.from_numpy(raw[:n].astype("float32") / 255.0).unsqueeze(1)
    rows = []
    for name in DISTORTIONS:
        gen = get_distortion(name)
        t = time_interleaved({name: lambda gen=gen: gen(digits, torch.Generator().manual_seed(0))}, repeat, 1)[name]
        rows.append({"dataset": name, "samples": len(digits), "times": t, "samples_per_s": len(digits) / t["median_s"]})
    return rows


# ---- volumes and dense fields (``--only volumes``) -------------------------------------------------------------

VOLUME_FULL_SIZES = [(b, c, s) for s in (64, 128) for b in (1, 4) for c in (1, 3)]
VOLUME_QUICK_SIZES = [(2, 3, 8)]
VOLUME_OPS = ("dense warp", "3-D affine", "integrate_velocity, 7 steps")
VOLUME_MODES = ("forward", "forward+backward")
MONAI_WARP = "MONAI Warp"
MONAI_DVF2DDF = "MONAI DVF2DDF"
VXM_WARP = "VoxelMorph SpatialTransformer"
VXM_INT = "VoxelMorph IntegrateVelocityField"
TORCH_AFFINE = "F.affine_grid + F.grid_sample"
KORNIA_AFFINE3D = "kornia warp_affine3d"
_MMAP_THRESHOLD = "131072"  # every block above 128 KiB its own mapping, unmapped when freed: RSS follows live tensors


def _monai_blocks():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import monai.networks.blocks as blocks
    except ImportError:
        return None
    return blocks


def _voxelmorph_nn():
    try:
        import voxelmorph.nn.modules as vxm
    except ImportError:
        return None
    return vxm


def _smooth_field(b: int, s: int, amplitude: float, gen: torch.Generator) -> torch.Tensor:
    """A smooth random field ``(b, 3, s, s, s)`` (normalised units): 4^3 Gaussian values upsampled trilinearly."""
    coarse = amplitude * torch.randn(b, 3, 4, 4, 4, generator=gen)
    return F.interpolate(coarse, size=(s, s, s), mode="trilinear", align_corners=True)


def _voxel_matrix_3d(theta: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """stnkit's ``(B, 4, 4)`` normalised matrix (output to input, ``align_corners=False``) as kornia's ``(B, 3, 4)``
    voxel matrix (source to destination, voxel centres at integer ``(x, y, z)`` indices)."""
    d, h, w = size
    n = torch.eye(4, dtype=torch.float64)  # voxel index -> normalised coordinate (align_corners=False)
    for k, m in enumerate((w, h, d)):
        n[k, k], n[k, 3] = 2.0 / m, 1.0 / m - 1.0
    dst_to_src = torch.linalg.inv(n) @ theta.double() @ n
    return torch.linalg.inv(dst_to_src)[:, :3].to(theta.dtype)


def _volume_contenders(op: str, b: int, c: int, s: int, device) -> tuple[dict, torch.Tensor, dict]:
    """``({name: (leaf, fn(leaf) -> output)}, upstream gradient, agreement check)`` for one volume op; the
    inputs are seeded, so a memory subprocess builds the same ones."""
    gen = torch.Generator().manual_seed(0)
    size = (s, s, s)
    x = torch.rand(b, c, *size, generator=gen).to(device)
    blocks, vxm, kgt = _monai_blocks(), _voxelmorph_nn(), _kornia()
    if op == "dense warp":
        u = _smooth_field(b, s, 0.1, gen).to(device)
        contenders = {"stnkit": (u, lambda f: warp_field(x, f))}
        if blocks is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Using PyTorch native grid_sample"
                monai_warp = blocks.Warp(mode="bilinear", padding_mode="zeros")
            contenders[MONAI_WARP] = (to_monai(u), lambda f: monai_warp(x, f))
        if vxm is not None:
            vxm_warp = vxm.SpatialTransformer()
            contenders[VXM_WARP] = (to_voxelmorph(u), lambda f: vxm_warp(x, f))
        with torch.no_grad():
            ref = warp_field(x, u)
            worst = max(float((fn(p) - ref).abs().max()) for p, fn in contenders.values())
        check = {"max_abs_difference": worst, "compared": "warped volumes, same field in each one's convention"}
        upstream = torch.randn(b, c, *size, generator=gen).to(device)
    elif op == "3-D affine":
        family = get_transform("affine", dims=3)
        params = family.random(b, strength=0.5, generator=gen).to(device)
        contenders = {
            "stnkit": (params, lambda p: warp(x, p, family)),
            TORCH_AFFINE: (
                params.view(b, 3, 4).clone(),
                lambda p: F.grid_sample(x, F.affine_grid(p, list(x.shape), align_corners=False), align_corners=False),
            ),
        }
        if kgt is not None:
            # kornia normalises voxel matrices with (size - 1): its align_corners=True frame samples voxel indices
            m = _voxel_matrix_3d(family.matrix(params), size).contiguous()
            contenders[KORNIA_AFFINE3D] = (m, lambda p: kgt.warp_affine3d(x, p, size, align_corners=True))
        with torch.no_grad():
            ref = warp(x, params, family)
            worst = max(float((fn(p) - ref).abs().max()) for p, fn in contenders.values())
        check = {"max_abs_difference": worst, "compared": "outputs of every contender"}
        upstream = torch.randn(b, c, *size, generator=gen).to(device)
    elif op == "integrate_velocity, 7 steps":
        v = _smooth_field(b, s, 0.1, gen).to(device)
        contenders = {"stnkit": (v, lambda f: integrate_velocity(f, 7, padding_mode="zeros"))}
        to_stnkit = {"stnkit": lambda out: out}
        if blocks is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dvf2ddf = blocks.DVF2DDF(num_steps=7)
            contenders[MONAI_DVF2DDF] = (to_monai(v), lambda f: dvf2ddf(f))
            to_stnkit[MONAI_DVF2DDF] = from_voxelmorph  # the same convention as MONAI's (fields.to_monai)
        if vxm is not None:
            vxm_int = vxm.IntegrateVelocityField(steps=7)
            contenders[VXM_INT] = (to_voxelmorph(v), lambda f: vxm_int(f))
            to_stnkit[VXM_INT] = from_voxelmorph
        with torch.no_grad():
            ref = integrate_velocity(v, 7, padding_mode="zeros")
            worst = max(float((to_stnkit[k](fn(p)) - ref).abs().max()) for k, (p, fn) in contenders.items())
        check = {"max_abs_difference": worst, "compared": "displacement fields, converted to stnkit's convention"}
        upstream = torch.randn(b, 3, *size, generator=gen).to(device)
    else:
        raise ValueError(f"op must be one of {', '.join(VOLUME_OPS)}, got {op!r}")
    if worst > AGREE:
        raise RuntimeError(f"bench: contenders of {op} at {b}x{c}x{s}^3 disagree by {worst:.3g} > {AGREE}")
    return contenders, upstream, check


def _volume_call(
    mode: str, fn, leaf: torch.Tensor, upstream: torch.Tensor
) -> tuple[Callable[[], object], torch.Tensor]:
    """One call of ``mode`` (``forward`` without autograd, or ``forward+backward`` to the parameters or field;
    the volume needs no gradient, as in registration), and its leaf."""
    if mode == "forward":

        def run():
            with torch.no_grad():
                return fn(leaf)

        return run, leaf
    p = leaf.detach().clone().requires_grad_(True)

    def run_backward():
        p.grad = None
        fn(p).backward(upstream)

    return run_backward, p


def _volume_cases(sizes) -> list[tuple[str, int, int, int]]:
    """``(op, b, c, s)`` to run: integration has no image, so once per batch and size (at the first ``c``)."""
    cases, seen = [], set()
    for b, c, s in sizes:
        for op in VOLUME_OPS:
            if op.startswith("integrate"):
                if (b, s) in seen:
                    continue
                seen.add((b, s))
            cases.append((op, b, c, s))
    return cases


def _rss_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/self/status")


def _volume_memory_child() -> None:
    """In a fresh process (``sys.argv[1]``: a JSON spec): for every op and contender of one setting, one
    forward + backward call's peak above the resident set before it (VmHWM, reset through /proc/self/clear_refs
    just before; the call is the contender's first at that size, so what it builds and keeps, identity grids or
    meshgrids, counts) and the bytes it keeps after its gradient is dropped; prints them as JSON."""
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    out: dict = {}
    # first everything once at 8^3: what a process sets up on its first call and first backward pass (thread
    # pools, kernels) is then not billed to whichever contender runs first
    for size, record in (((spec["b"], spec["c"], 8), {}), ((spec["b"], spec["c"], spec["s"]), out)):
        for op in spec["ops"]:
            _volume_memory_op(op, *size, record)
    print(json.dumps(out))


def _volume_memory_op(op: str, b: int, c: int, s: int, out: dict) -> None:
    contenders, upstream, _ = _volume_contenders(op, b, c, s, "cpu")
    for name, (leaf, fn) in contenders.items():
        run, p = _volume_call("forward+backward", fn, leaf, upstream)
        gc.collect()
        # a kernel control file, not a file of data: the high-water mark starts again at the RSS
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
        before = _rss_bytes("VmRSS")
        run()
        peak = max(0, _rss_bytes("VmHWM") - before)
        p.grad = None
        gc.collect()
        out[f"{op}|{name}"] = {"peak_bytes": peak, "kept_bytes": _rss_bytes("VmRSS") - before}


def _volume_memory(b: int, c: int, s: int, ops: list[str]) -> dict:
    """:func:`_volume_memory_child` for one setting in a subprocess (``{}`` where the platform has no /proc)."""
    if not Path("/proc/self/clear_refs").exists():
        return {}
    spec = json.dumps({"b": b, "c": c, "s": s, "ops": ops, "threads": torch.get_num_threads()})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": _MMAP_THRESHOLD}
    code = "from stnkit.bench import _volume_memory_child; _volume_memory_child()"
    done = subprocess.run([sys.executable, "-c", code, spec], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench: the memory subprocess failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_volumes(sizes, repeat: int, device: torch.device | str = "cpu", memory: bool = True) -> list[dict]:
    """Dense-field warps, 3-D affine warps and velocity integration against MONAI, VoxelMorph, torch and kornia
    (those installed), each ``(op, batch, channels, size)`` in ``forward`` and ``forward+backward`` modes: medians
    of rounds in a shuffled order, ``ratio`` = the median over rounds of stnkit / fastest peer (paired), and
    ``memory`` (CPU only, forward + backward) from a subprocess per setting (:func:`_volume_memory_child`)."""
    dev = torch.device(device)
    rows = []
    cases = _volume_cases(sizes)
    mem: dict = {}
    if memory and dev.type == "cpu":
        for b, c, s in sizes:
            ops = [op for op, *setting in cases if tuple(setting) == (b, c, s)]
            mem[(b, c, s)] = _volume_memory(b, c, s, ops)
    for i, (op, b, c, s) in enumerate(cases):
        contenders, upstream, check = _volume_contenders(op, b, c, s, dev)
        for mode in VOLUME_MODES:
            fns = {name: _volume_call(mode, fn, leaf, upstream)[0] for name, (leaf, fn) in contenders.items()}
            # a round of the largest settings takes seconds to minutes: about 10 s of rounds, never fewer than 3
            start = time.perf_counter()
            for fn in fns.values():
                fn()
            _sync(dev)()
            reps = max(min(repeat, 3), min(repeat, int(10.0 / max(time.perf_counter() - start, 1e-9))))
            timing = time_interleaved(fns, reps, warmup=0, device=dev, shuffle_seed=i, keep_times=True)
            row = {
                "op": op,
                "batch": b,
                "channels": 3 if op.startswith("integrate") else c,
                "size": s,
                "mode": mode,
                "repeat": reps,
                "times": timing,
                "check": check,
            }
            peers = [k for k in timing if k != "stnkit"]
            if peers:
                fastest = min(peers, key=lambda k: timing[k]["median_s"])
                row["fastest_peer"] = fastest
                pairs = zip(timing["stnkit"]["times_s"], timing[fastest]["times_s"])
                row["ratio"] = statistics.median(a / b for a, b in pairs)
                row["ratio_of_medians"] = timing["stnkit"]["median_s"] / timing[fastest]["median_s"]
            found = mem.get((b, c, s), {})
            if found and mode == "forward+backward":
                row["memory"] = {k: found[f"{op}|{k}"] for k in contenders}
            rows.append(row)
    return rows


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def _volumes_summary(rows: list[dict]) -> list[str]:
    """One line per op: in how many rows stnkit is faster than the fastest peer, the ratios' range, and
    in how many its peak memory is at most the lowest peer's."""
    lines = []
    for op in dict.fromkeys(r["op"] for r in rows):
        mine = [r for r in rows if r["op"] == op and "ratio" in r]
        if not mine:
            continue
        ratios = [r["ratio"] for r in mine]
        text = (
            f"- {op}: stnkit faster than the fastest peer in {sum(x < 1 for x in ratios)} of {len(ratios)} rows, "
            f"at least 1.5x faster in {sum(x <= 1 / 1.5 for x in ratios)} (ratio {min(ratios):.2f}-{max(ratios):.2f})"
        )
        mem = [r["memory"] for r in mine if r.get("memory")]
        if mem:
            low = sum(
                m["stnkit"]["peak_bytes"] <= min(v["peak_bytes"] for k, v in m.items() if k != "stnkit") for m in mem
            )
            text += f"; peak memory at most the lowest peer's in {low} of {len(mem)} forward + backward rows"
        lines.append(text + ".")
    return ["", *lines] if lines else []


def _volumes_markdown(report: dict) -> list[str]:
    lines = _volumes_summary(report["volumes"]) + [
        "",
        "| op | B x C x size | mode | stnkit ms | fastest peer | peer ms | ratio | stnkit / peer peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["volumes"]:
        peer = r.get("fastest_peer")
        mem = r.get("memory")
        mem_text = "-"
        if mem and peer:
            mem_text = f"{_mb(mem['stnkit']['peak_bytes'])} / {_mb(mem[peer]['peak_bytes'])}"
        lines.append(
            f"| {r['op']} | {r['batch']}x{r['channels']}x{r['size']}^3 | {r['mode']} | {_ms(r['times']['stnkit'])} | "
            f"{peer or '-'} | {_ms(r['times'][peer]) if peer else '-'} | "
            + (f"**{r['ratio']:.2f}** | " if peer else "- | ")
            + f"{mem_text} |"
        )
    peers = sorted({k for r in report["volumes"] for k in r["times"] if k != "stnkit"})
    lines += [
        "",
        "Every contender, median ms; forward + backward also (peak MB above the resident set during one "
        "call, MB the call keeps once the gradient is dropped):",
        "",
    ]
    lines += ["| op | B x C x size | mode | " + " | ".join(["stnkit", *peers]) + " |"]
    lines += ["|---|---|---|" + "---|" * (len(peers) + 1)]
    for r in report["volumes"]:
        cells = []
        for k in ["stnkit", *peers]:
            if k not in r["times"]:
                cells.append("-")
                continue
            cell = f"{r['times'][k]['median_s'] * 1e3:.2f}"
            if r.get("memory"):
                m = r["memory"][k]
                cell += f" ({_mb(m['peak_bytes'])}, {_mb(m['kept_bytes'])})"
            cells.append(cell)
        lines.append(
            f"| {r['op']} | {r['batch']}x{r['channels']}x{r['size']}^3 | {r['mode']} | " + " | ".join(cells) + " |"
        )
    return lines


# the sections of the report, by their --only name: (report key, runner(quick, repeat, compile, device))
SECTIONS: dict[str, tuple[str, Callable[..., object]]] = {
    "warps": ("warps", lambda q, r, c, d: bench_warps(QUICK_SIZES if q else FULL_SIZES, r, device=d)),
    "steps": ("training_step", lambda q, r, c, d: bench_steps(8 if q else 128, 28 if q else 42, r, c, device=d)),
    "resnet": ("resnet", lambda q, r, c, d: bench_resnet(2 if q else 16, 96 if q else 224, r, device=d)),
    # generators run on the CPU, where the data loaders run them
    "generators": ("generators", lambda q, r, c, d: bench_distortions(64 if q else 8000, 1 if q else 3)),
    # not in the default run (about an hour at 128^3 on 2 cores): --only volumes
    "volumes": (
        "volumes",
        lambda q, r, c, d, sizes=None, batches=None: bench_volumes(_volume_sizes(q, sizes, batches), r, d),
    ),
}
DEFAULT_SECTIONS = ("warps", "steps", "resnet", "generators")


def _volume_sizes(quick: bool, sizes, batches=None) -> list[tuple[int, int, int]]:
    """The ``(B, C, size)`` settings of the volumes section: the quick one, or the full grid at ``sizes``
    (edge lengths; default 64 and 128) and ``batches`` (default 1 and 4), 1 and 3 channels."""
    if quick:
        return VOLUME_QUICK_SIZES
    if sizes is None and batches is None:
        return VOLUME_FULL_SIZES
    return [(b, c, s) for s in sizes or (64, 128) for b in batches or (1, 4) for c in (1, 3)]


def run_bench(
    quick: bool = False,
    repeat: int | None = None,
    compile: bool | None = None,
    device: str = "cpu",
    only: list[str] | tuple[str, ...] | None = None,
    volume_sizes: list[int] | tuple[int, ...] | None = None,
    volume_batches: list[int] | tuple[int, ...] | None = None,
) -> dict:
    """The report of the sections of :data:`DEFAULT_SECTIONS`, or of the ``only`` ones (``["resnet"]``);
    ``volume_sizes``: the volumes section's edge lengths (default 64 and 128)."""
    repeat = repeat or (3 if quick else 15)
    compile = (not quick) if compile is None else compile
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device must be one this machine has (cpu, or cuda with a GPU), got {device!r}")
    names = list(DEFAULT_SECTIONS) if only is None else list(only)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise ValueError(f"only must name sections among {', '.join(SECTIONS)}, got {names!r}")
    if volume_sizes is not None and (
        not volume_sizes or any(isinstance(v, bool) or not isinstance(v, int) or v < 8 for v in volume_sizes)
    ):
        raise ValueError(f"volume_sizes must be edge lengths of at least 8 voxels, got {volume_sizes!r}")
    if volume_batches is not None and (
        not volume_batches or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in volume_batches)
    ):
        raise ValueError(f"volume_batches must be batch sizes of at least 1, got {volume_batches!r}")
    started = datetime.datetime.now(datetime.timezone.utc)
    report = {
        "quick": quick,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(dev),
        "machine": _machine(),
    }
    if only is not None:
        report["only"] = names
    load_start = _load_average()
    for name in SECTIONS:  # the report's order, whatever the order of only
        if name in names:
            key, runner = SECTIONS[name]
            extra = {"sizes": volume_sizes, "batches": volume_batches} if name == "volumes" else {}
            report[key] = runner(quick, repeat, compile, dev, **extra)
    report["seconds"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    if load_start is not None:
        # other programs' load on the machine: the interleaving spreads it over the contenders alike
        report["load_average"] = {"start": load_start, "end": _load_average(), "cpus": os.cpu_count()}
    return report


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kgt = _kornia()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "kornia": None if kgt is None else __import__("kornia").__version__,
        "monai": _version("monai"),
        "voxelmorph": _version("voxelmorph"),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _version(dist: str) -> str | None:
    """An installed distribution's version, ``None`` where it is not installed (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _ms(t: dict) -> str:
    return f"{t['median_s'] * 1e3:.2f} ({t['q1_s'] * 1e3:.2f}-{t['q3_s'] * 1e3:.2f})"


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Measured {report['date']} on {m['cpu']}, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"kornia {m['kornia'] or 'not installed'}"
        + (f", GPU {m['cuda']}" if m["cuda"] else "")
        + (f"; warps and training steps timed on {report['device']}" if report.get("device", "cpu") != "cpu" else "")
        + (
            f", MONAI {m.get('monai') or 'not installed'}, VoxelMorph {m.get('voxelmorph') or 'not installed'}"
            if "volumes" in report
            else ""
        )
        + ". Median ms (quartiles) over interleaved repeats; ratio = stnkit / fastest peer (< 1: stnkit faster).",
    ]
    if "load_average" in report:
        la = report["load_average"]
        lines[0] += (
            f" Load average (1 min) {la['start'][0]} at the start and {la['end'][0]} at the end on "
            f"{la['cpus']} CPUs (other programs' load included)."
        )
    if "warps" in report:
        lines += _warps_markdown(report)
    if "training_step" in report:
        lines += _steps_markdown(report["training_step"])
    if "resnet" in report:
        lines += _resnet_markdown(report["resnet"])
    if "volumes" in report:
        lines += _volumes_markdown(report)
    if "generators" in report:
        lines += ["", "| generator | samples | samples/s |", "|---|---|---|"]
        for r in report["generators"]:
            lines.append(f"| {r['dataset']} | {r['samples']:,} | {r['samples_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def _warps_markdown(report: dict) -> list[str]:
    lines = [
        "",
        "| warp | B x C x size | mode | stnkit ms | fastest peer | peer ms | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["warps"]:
        peer = r.get("fastest_peer")
        lines.append(
            f"| {r['op']} | {r['batch']}x{r['channels']}x{r['size']} | {r['mode']} | {_ms(r['times']['stnkit'])} | "
            f"{peer or '-'} | {_ms(r['times'][peer]) if peer else '-'} | "
            + (f"**{r['ratio']:.2f}** |" if peer else "- |")
        )
    return lines


def _steps_markdown(st: dict) -> list[str]:
    lines = [
        "",
        f"Training step (forward, cross-entropy, backward, AdamW), batch {st['batch']}, "
        f"{st['size']}x{st['size']} input:",
        "",
        "| model | parameters | step ms | ratio to CNN | saved activations MB |",
        "|---|---|---|---|---|",
    ]
    for r in st["rows"]:
        mem = r["saved_activations_bytes"]
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {_ms(r['times'])} | **{r['ratio_to_cnn']:.2f}** | "
            f"{'-' if mem is None else f'{mem / 2**20:.1f}'} |"
        )
    if "compile_seconds" in st:
        lines += ["", f"torch.compile took {st['compile_seconds']:.0f} s before its first step."]
    return lines


def _resnet_markdown(rn: dict) -> list[str]:
    loc = "the input itself" if rn["loc_size"] is None else "a {}x{} copy".format(*rn["loc_size"])
    lines = [
        "",
        f"ResNet-18 training step (forward, cross-entropy, backward, AdamW), batch {rn['batch']}, "
        f"3x{rn['size']}x{rn['size']} input, {rn['num_classes']} classes, with and without an affine "
        f"transformer in front (localisation net on {loc}), {rn['repeat']} rounds in a shuffled order: "
        f"with / without **{rn['ratio']:.3f}** (median of the rounds' ratios; ratio of medians "
        f"{rn['ratio_of_medians']:.3f}). The backbone alone but with its input's gradient computed too "
        f"(which a transformer in front needs: it trains through the warped image) takes "
        f"{rn['input_grad_ratio']:.3f}x the step, and the transformer step is {rn['ratio_to_input_grad']:.3f}x that.",
        "",
        "| model | parameters | step ms |",
        "|---|---|---|",
    ]
    for r in rn["rows"]:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {_ms(r['times'])} |")
    lines += ["", "| transformer part (forward + backward) | ms | share of the ResNet-18 step |", "|---|---|---|"]
    for p in rn["parts"]:
        lines.append(f"| {p['part']} | {_ms(p['times'])} | {p['share_of_step']:.3f} |")
    return lines


def main_bench(out: str | None, threads: int | None = None, quick: bool = False, **kwargs) -> dict:
    """Run :func:`run_bench` (``kwargs``: ``repeat``, ``compile``, ``device``, ``only``, ``volume_sizes``,
    ``volume_batches``),
    print its markdown,
    and write the JSON report to ``out`` with the markdown beside it."""
    if threads:
        torch.set_num_threads(threads)
    report = run_bench(quick=quick, **kwargs)
    md = to_markdown(report)
    print(md)
    if out:
        from ._io import atomic_write_text

        path = Path(out)
        atomic_write_text(path, json.dumps(report, indent=2) + "\n")
        atomic_write_text(path.with_suffix(".md"), md)
        print(f"wrote {path} and {path.with_suffix('.md')}")
    return report
