"""``stnkit reproduce parts`` and ``stnkit reproduce cub``: the command-line side (options, one-line refusals)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from stnkit.data.cub import CUB_FILES
from stnkit.data.idx import DatasetError

from . import cub as rc
from . import parts as rp
from ._checks import config_from_flags, refuse_others, refuse_table1_flags, rows_from

# the stnkit train options each target reads (the others are refused when given)
PARTS_OPTIONS = ("epochs", "batch_size", "lr", "loc_lr_mult", "train_size", "val_size", "test_size")
CUB_OPTIONS = (
    "data_dir",
    "epochs",
    "batch_size",
    "lr",
    "loc_lr_mult",
    "backbone",
    "image_size",
    "train_size",
    "test_size",
)


def _positive(name: str, value, target: str):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise SystemExit(f"stnkit reproduce {target}: --{name.replace('_', '-')} must be > 0, got {value!r}")


def reproduce_finegrained(args: argparse.Namespace, out: Path, given: dict) -> int:
    refuse_table1_flags(args, args.experiment)
    if args.experiment == "parts":
        return _parts(args, out, given)
    return _cub(args, out, given)


def _parts(args, out: Path, given: dict) -> int:
    refuse_others("parts", given, PARTS_OPTIONS)
    rows = rows_from(args, args.experiment, rp.ROWS)
    options = {k: given[k] for k in PARTS_OPTIONS if k in given}
    if args.crop_size is not None:
        options["crop"] = args.crop_size
    for k, v in options.items():
        _positive(k, v, "parts")
    if args.seeds not in (None, 1):
        raise SystemExit("stnkit reproduce parts: one seed per row (--seeds 1)")
    config = config_from_flags(rp.PARTS_DEFAULTS, rp.CLI_FLAGS, args, options, "parts")
    if args.dry_run:
        for r in rows:
            print(rp.run_dir(out, r, config))
        return 0
    summary = rp.summarize(out, config, rows) if args.report_only else rp.run_parts(out, config, rows)
    rp.write_outputs(out, summary, Path(args.docs) if args.docs else None)
    figure = rp.make_figure(out, summary)
    print(rp.render_markdown(summary), end="")
    print(f"wrote {out / 'parts.json'}, {out / 'parts.md'}" + (f", {figure}" if figure else ""))
    return 0


def _cub(args, out: Path, given: dict) -> int:
    refuse_others("cub", given, CUB_OPTIONS)
    rows = rows_from(args, args.experiment, rc.ROWS)
    data_dir = given.get("data_dir")
    if data_dir is None:
        raise SystemExit(
            "stnkit reproduce cub: --data-dir DIR is needed (your CUB_200_2011 folder; it cannot be downloaded here)"
        )
    root = Path(data_dir)
    if not root.is_dir():
        raise SystemExit(f"stnkit reproduce cub: --data-dir {root} is not a directory")
    missing = [f for f in CUB_FILES if not (root / f).is_file()]
    if missing:
        raise SystemExit(
            f"stnkit reproduce cub: --data-dir {root} is not a CUB-200-2011 folder: no {', '.join(missing)}"
        )
    options = {}
    for k in ("epochs", "batch_size", "lr", "loc_lr_mult", "backbone", "train_size", "test_size"):
        if k in given:
            options[k] = given[k]
    if "image_size" in given:
        h, w = given["image_size"]
        if h != w:
            raise SystemExit(f"stnkit reproduce cub: --image-size must be square (the attention windows), got {h} {w}")
        options["image_size"] = h
    if args.crop_size is not None:
        options["crop"] = args.crop_size
    for k, v in options.items():
        if k != "backbone":
            _positive(k, v, "cub")
    config = replace(rc.CubConfig(), **options)
    if config.crop > config.image_size:
        raise SystemExit(
            f"stnkit reproduce cub: --crop-size {config.crop} must not exceed the image size {config.image_size}"
        )
    print(rc.backbone_note(config))
    if args.dry_run:
        for r in rows:
            print(out / "runs" / f"cub-{r}-s{config.seed}")
        return 0
    try:
        results = rc.run_cub(out, config, root, rows)
    except DatasetError as err:
        raise SystemExit(f"stnkit reproduce cub: {err}") from None
    except ValueError as err:  # a backbone that does not fit (e.g. too small an input for a ResNet)
        raise SystemExit(f"stnkit reproduce cub: {err}") from None
    print(rc.render_markdown(results), end="")
    print(f"wrote {out / 'cub.json'}, {out / 'cub.md'}")
    return 0
