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

    main_bench(args.out, threads=args.threads, batch=args.batch, size=args.size, repeat=args.repeat)
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

    bench = sub.add_parser("bench", help="speed of stnkit's warps, as ratios against reference code")
    bench.add_argument("--batch", type=int, default=64)
    bench.add_argument("--size", type=int, default=42)
    bench.add_argument("--repeat", type=int, default=20)
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    bench.add_argument("--out", default=None, help="write the report as JSON")
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
