"""``stnkit register FIXED MOVING --out DIR``: align two images or volumes (docs/registration.md)."""

from __future__ import annotations

import argparse
import os
import sys


class _Progress:
    """Per pyramid level: a tqdm bar on a terminal (when tqdm is installed), one line per level otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.tty = not quiet and sys.stderr.isatty() and os.environ.get("TQDM_DISABLE", "") in ("", "0")
        self.first = None
        if self.tty:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                self.tty = False

    def __call__(self, info: dict) -> None:
        if self.quiet:
            return
        size = "x".join(str(s) for s in reversed(info["size"]))
        label = f"{info['stage']} level {info['level']}/{info['levels']} ({size})"
        if not info["done"]:
            if info["step"] == 1:
                self.first = info["loss"]
                if self.tty:
                    from tqdm import tqdm

                    self.bar = tqdm(total=info["steps"], desc=label, file=sys.stderr, leave=True, dynamic_ncols=True)
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{info['loss']:.4f}")
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            first = info["loss"] if self.first is None else self.first
            print(
                f"{label}: loss {first:.4f} -> {info['loss']:.4f} in {info['step']} steps", file=sys.stderr, flush=True
            )
        self.first = None


def _level_steps(flag: str, text: str, levels: int, parse) -> int | list[int]:
    """``--steps``' value: one number for every level, or one per level joined by 'x' (coarsest first)."""
    try:
        value = parse(text)
    except ValueError:
        raise ValueError(
            f"{flag} must be a number or one number per level joined by 'x' (as 100x50x0), got {text!r}"
        ) from None
    numbers = value if isinstance(value, list) else [value]
    for n in numbers:
        if n < 0:
            raise ValueError(f"{flag} must be >= 0, got {n}")
    if isinstance(value, list) and len(value) != levels:
        raise ValueError(f"{flag} {text} gives {len(value)} levels' steps but --levels is {levels}")
    return value


def _cmd_register(args: argparse.Namespace) -> int:
    from ..data.volumes import read_volume
    from ..registration import register
    from ..registration.core import parse_level_steps
    from ..registration.outputs import check_out, write_outputs

    if not 1 <= args.levels <= 8:
        raise ValueError(f"--levels must be in 1..8, got {args.levels}")
    steps = _level_steps("--steps", args.steps, args.levels, parse_level_steps)
    field_steps = (
        None
        if args.field_steps is None
        else _level_steps("--field-steps", args.field_steps, args.levels, parse_level_steps)
    )
    if not args.smooth >= 0:
        raise ValueError(f"--smooth must be >= 0, got {args.smooth}")
    out = check_out(args.out, args.overwrite)
    fixed = read_volume(args.fixed)
    moving = read_volume(args.moving)
    if fixed.dims != moving.dims:
        raise ValueError(
            f"FIXED {args.fixed} is {fixed.dims}-D ({fixed.describe()}) and MOVING {args.moving} is {moving.dims}-D "
            f"({moving.describe()}): both must be 2-D or both 3-D"
        )
    if not args.quiet:
        print(
            f"fixed {fixed.describe()}, moving {moving.describe()}: {args.transform}, loss {args.loss}", file=sys.stderr
        )
    settings = {
        "transform": args.transform,
        "loss": args.loss,
        "smooth": args.smooth,
        "levels": args.levels,
        "steps": steps,
        "field_steps": steps if field_steps is None else field_steps,
        "optimizer": args.optimizer,
        "overlap_only": args.overlap_only,
        "seed": args.seed,
    }
    result = register(
        fixed,
        moving,
        args.transform,
        loss=args.loss,
        smooth=args.smooth,
        levels=args.levels,
        steps=steps,
        field_steps=field_steps,
        optimizer=args.optimizer,
        overlap_only=args.overlap_only,
        seed=args.seed,
        progress=_Progress(args.quiet),
    )
    paths = write_outputs(out, result, fixed, moving, settings)
    names = ", ".join(p.name for p in paths.values())
    print(f"wrote {out}: {names} ({args.transform}, {result.seconds:.1f} s)")
    return 0


# the choices of stnkit.registration (REGISTRATION_TRANSFORMS, OPTIMIZERS, nn.similarity.SIMILARITIES), spelled
# out so that `stnkit --help` does not import torch (tests/registration/test_cli.py checks they agree)
TRANSFORMS = ("rigid", "affine", "dense", "velocity")
OPTIMIZERS = ("lbfgs", "adam")
LOSSES = ("mse", "ncc", "mi")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "register",
        help="align MOVING to FIXED (rigid, affine, dense or velocity field) and write the warped image and transform",
        description="Aligns MOVING to FIXED by optimising the transform through stnkit's warps on a pyramid: a rigid "
        "or affine transform in world millimetres, then (dense, velocity) a field. Reads NIfTI (.nii, .nii.gz), .npy "
        "and PNG/JPEG; honours the NIfTI header. Writes the warped image on FIXED's grid, the transform as JSON and in "
        "ITK's text format, the field, and a figure (see docs/registration.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("fixed", metavar="FIXED", help="the reference image or volume")
    p.add_argument("moving", metavar="MOVING", help="the image or volume to align to FIXED")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--transform", choices=TRANSFORMS, default="affine", help="what to optimise")
    p.add_argument("--loss", choices=LOSSES, default="ncc", help="similarity")
    p.add_argument("--smooth", type=float, default=1.0, help="weight of the field's smoothness penalty")
    p.add_argument("--levels", type=int, default=3, help="pyramid levels (each halves the resolution)")
    p.add_argument(
        "--steps",
        default="100",
        help="optimiser steps per pyramid level: one number, or one per level from the coarsest, joined by 'x' "
        "(as ANTs: 100x50x0; 0 skips a level)",
    )
    p.add_argument(
        "--field-steps",
        default=None,
        help="steps per level of the dense or velocity field (same form as --steps; default: --steps)",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs", help="of the rigid/affine stage")
    p.add_argument(
        "--overlap-only",
        action="store_true",
        help="count the similarity only where FIXED's points read inside MOVING (ITK's metrics' convention)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of mutual information's voxel sample")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier registration's files in OUT")
    p.add_argument(
        "--quiet", action="store_true", help="no progress (a bar on a terminal, one line per level otherwise)"
    )
    p.set_defaults(func=_cmd_register)
