"""The ``stnkit`` command line (also ``python -m stnkit``)."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    path = run_demo(args.out, n=args.n, seed=args.seed)
    print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main_bench

    if args.repeat is not None and args.repeat < 1:
        raise SystemExit(f"stnkit: --repeat must be >= 1, got {args.repeat}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"stnkit: --threads must be >= 1, got {args.threads}")
    main_bench(args.out, threads=args.threads, quick=args.quick, repeat=args.repeat, compile=args.compile)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stnkit",
        description="Spatial transformer networks for PyTorch: warps, distorted-MNIST data, training.",
    )
    parser.add_argument("--version", action="version", version=f"stnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="warp the bundled digits with every transform family and write a PNG")
    demo.add_argument("--out", default="demo.png", help="output PNG (default: demo.png)")
    demo.add_argument("--n", type=int, default=8, help="number of digits (default: 8)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_cmd_demo)

    from .training.cli import add_parsers as add_training_parsers

    add_training_parsers(sub)

    bench = sub.add_parser(
        "bench",
        help="stnkit's warps and training steps against the fastest peer, timed side by side",
        description="Warps (stnkit vs F.affine_grid + F.grid_sample and kornia), training steps as ratios "
        "to the CNN, generator throughput. The full suite takes several minutes; --quick takes seconds.",
    )
    bench.add_argument("--quick", action="store_true", help="toy sizes, a few repeats (seconds; no thresholds)")
    bench.add_argument("--repeat", type=int, default=None, help="timed rounds per comparison (default: 15, quick 3)")
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    bench.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time a torch.compile'd ST-CNN step (default: on for the full suite, off with --quick)",
    )
    bench.add_argument("--out", default=None, help="write the report as JSON, and markdown beside it (.md)")
    bench.set_defaults(func=_cmd_bench)
    from .data.cli import add_parser as add_data_parser

    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
