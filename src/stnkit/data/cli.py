"""``stnkit data``: make, show and download datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .distortions import DISTORTIONS


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. angle=30 or scale=0.8,1.1), got {text!r}")

    def number(s: str):
        try:
            return int(s)
        except ValueError:
            try:
                return float(s)
            except ValueError:
                raise argparse.ArgumentTypeError(f"option {key}: expected a number, got {s!r}") from None

    parts = value.split(",")
    if len(parts) == 2:
        return key, (float(number(parts[0])), float(number(parts[1])))
    return key, number(value)


def _options(args) -> dict:
    return dict(args.opt or [])


def _fail(cmd: str, err: Exception) -> int:
    print(f"stnkit data {cmd}: error: {err}", file=sys.stderr)
    return 1


def _cmd_make(args: argparse.Namespace) -> int:
    from .export import make_dataset, make_image_folder

    make = make_image_folder if args.format == "imagefolder" else make_dataset
    try:
        manifest = make(args.name, args.split, args.seed, args.out, n=args.n, data_dir=args.data_dir, **_options(args))
    except (ValueError, TypeError, OSError) as err:
        return _fail("make", err)
    where = Path(args.out) / args.split if args.format == "imagefolder" else args.out
    print(
        f"wrote {manifest['count']} {args.name} {args.split} samples "
        f"({manifest['image_shape'][0]}x{manifest['image_shape'][1]}, ground truth: {manifest['recipe']['transform']}) "
        f"to {where}"
    )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from ..viz import save_png
    from .dataset import load_distorted
    from .export import preview

    out = Path(args.out or f"{args.name}.png")
    try:
        ds = load_distorted(args.name, args.split, args.seed, data_dir=args.data_dir, **_options(args))
        save_png(out, preview(ds.images, args.count))
    except (ValueError, TypeError, OSError) as err:
        return _fail("show", err)
    print(f"wrote {out} (first {min(args.count, len(ds))} {args.name} {args.split} samples, seed {args.seed})")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .download import DownloadError, download_mnist, read_checksums

    try:
        checksums = None if args.sha256_file is None else read_checksums(args.sha256_file)
        paths = download_mnist(
            args.dir, args.mirror, checksums=checksums, timeout=args.timeout, progress=not args.quiet
        )
    except (DownloadError, ValueError, OSError) as err:
        return _fail("download", err)
    except KeyboardInterrupt:
        print("\nstnkit data download: interrupted (no partial file left)", file=sys.stderr)
        return 130
    print(f"MNIST ready in {Path(args.dir)} ({len(paths)} files verified); use --data-dir {args.dir}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _common(p: argparse.ArgumentParser, split_default: str | None) -> None:
    p.add_argument("name", choices=DISTORTIONS, help="dataset: " + ", ".join(DISTORTIONS))
    if split_default is None:
        p.add_argument("--split", choices=("train", "test"), required=True, help="which digits")
    else:
        p.add_argument("--split", choices=("train", "test"), default=split_default, help=f"(default: {split_default})")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the distortions (default: 0)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the four MNIST IDX files (full MNIST); default: the bundled 8k digits",
    )
    p.add_argument(
        "--opt",
        action="append",
        type=_parse_option,
        metavar="KEY=VALUE",
        help="override a recipe option, e.g. --opt angle=30 --opt scale=0.8,1.1 (repeatable)",
    )


def add_parser(subparsers) -> None:
    """Add ``data`` (``make``, ``show``, ``download``) to the ``stnkit`` command line."""
    data = subparsers.add_parser("data", help="make, show and download the (distorted) MNIST datasets")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    make = sub.add_parser(
        "make",
        help="write a distorted split: IDX images and labels, ground-truth params (npz), manifest, preview PNG",
    )
    _common(make, None)
    make.add_argument("--n", type=_positive_int, default=None, help="only the first N digits of the split")
    make.add_argument("--out", required=True, help="output directory")
    make.add_argument(
        "--format",
        choices=("idx", "imagefolder"),
        default="idx",
        help="idx (default): IDX files, params, manifest, preview; imagefolder: OUT/SPLIT/<label>/<index>.png "
        "(8-bit grey, the IDX route's pixels; run once per split with the same --out)",
    )
    make.set_defaults(func=_cmd_make)

    show = sub.add_parser("show", help="write a montage of the first samples of a distorted split")
    _common(show, "test")
    show.add_argument("--count", type=_positive_int, default=64, help="samples in the montage (default: 64)")
    show.add_argument("--out", default=None, help="output PNG (default: NAME.png)")
    show.set_defaults(func=_cmd_show)

    from .download import DEFAULT_DIR, DEFAULT_MIRROR

    dl = sub.add_parser("download", help="download full MNIST (60k/10k) with SHA-256 verification")
    dl.add_argument("--mirror", default=DEFAULT_MIRROR, help=f"base URL (default: {DEFAULT_MIRROR})")
    dl.add_argument("--dir", default=DEFAULT_DIR, help=f"destination directory (default: {DEFAULT_DIR})")
    dl.add_argument("--timeout", type=float, default=60.0, help="seconds before a stalled connection fails")
    dl.add_argument(
        "--sha256-file",
        default=None,
        help="fetch and verify the files listed in this sha256sum-style file ('HASH  NAME' lines) "
        "instead of the four canonical MNIST files",
    )
    dl.add_argument("--quiet", action="store_true", help="no progress output")
    dl.set_defaults(func=_cmd_download)
