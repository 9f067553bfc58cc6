"""The ``stnkit`` command line (also ``python -m stnkit``)."""

from __future__ import annotations

import argparse
import sys

from .. import __version__


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    if not 1 <= args.n <= 64:
        raise SystemExit(f"stnkit: --n must be an int in [1, 64] (digits drawn), got {args.n}")

    path = run_demo(args.out, n=args.n, seed=args.seed)
    print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import main_bench

    if args.repeat is not None and args.repeat < 1:
        raise SystemExit(f"stnkit: --repeat must be >= 1, got {args.repeat}")
    if args.volume_size and min(args.volume_size) < 8:
        raise SystemExit(f"stnkit: --volume-size must be >= 8, got {min(args.volume_size)}")
    if args.volume_batch and min(args.volume_batch) < 1:
        raise SystemExit(f"stnkit: --volume-batch must be >= 1, got {min(args.volume_batch)}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"stnkit: --threads must be >= 1, got {args.threads}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("stnkit: --device cuda needs a GPU that torch can see, and this machine has none")
    main_bench(
        args.out,
        threads=args.threads,
        quick=args.quick,
        repeat=args.repeat,
        compile=args.compile,
        device=args.device,
        only=args.only,
        volume_sizes=args.volume_size,
        volume_batches=args.volume_batch,
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (subcommands' parsers are of the same class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stnkit",
        description="Spatial transformer networks for PyTorch: warps, training on distorted MNIST or on your own images "
        "with your own backbone, pictures of what the transformer does, export, the papers' experiments.",
    )
    parser.add_argument("--version", action="version", version=f"stnkit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the Python traceback instead of one line"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="warp the bundled digits with every transform family and write a PNG")
    demo.add_argument("--out", default="demo.png", help="output PNG (default: demo.png)")
    demo.add_argument("--n", type=int, default=8, help="number of digits (default: 8)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_cmd_demo)

    from .train import add_parsers as add_training_parsers

    add_training_parsers(sub)
    from .register import add_parser as add_register_parser

    add_register_parser(sub)

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
    bench.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where warps and training steps run (default: cpu)"
    )
    bench.add_argument(
        "--only",
        action="append",
        choices=("warps", "steps", "resnet", "generators", "volumes"),
        default=None,
        help="run only this section (repeatable; default: all but volumes). resnet: a ResNet-18 step at 3x224x224, "
        "batch 16, with and without an affine transformer in front; volumes: dense-field warps, 3-D affine warps and "
        "velocity integration at 64^3 and 128^3 against MONAI, VoxelMorph, torch and kornia, with peak memory "
        "(about an hour on 2 cores)",
    )
    bench.add_argument(
        "--volume-size",
        type=int,
        action="append",
        default=None,
        metavar="N",
        help="the volumes section's edge length (repeatable; default: 64 and 128; at least 8)",
    )
    bench.add_argument(
        "--volume-batch",
        type=int,
        action="append",
        default=None,
        metavar="B",
        help="the volumes section's batch size (repeatable; default: 1 and 4)",
    )
    bench.add_argument("--out", default=None, help="write the report as JSON, and markdown beside it (.md)")
    bench.set_defaults(func=_cmd_bench)
    from ..data.cli import add_parser as add_data_parser

    add_data_parser(sub)
    for plugin in _plugins():
        plugin(sub)
    return parser


def _plugins():
    """The ``add_parsers(sub)`` of every installed package that registers commands under the
    ``stnkit.commands`` entry point (stnkit's own paper experiments, ``stnkit reproduce``, do)."""
    from importlib.metadata import entry_points

    return [ep.load() for ep in sorted(entry_points(group="stnkit.commands"), key=lambda ep: ep.name)]


def _message(err: BaseException) -> str:
    """An error as one line: an ``OSError`` as ``FILE: reason``, anything else as its message."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _quiet_pipe() -> int:
    """The reader went away (``stnkit ... | head``): stop quietly, as ``cat`` does."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; an error ends it with one line on stderr (``--debug``: the traceback).

    A Ctrl-C ends it with ``stnkit: interrupted`` and status 130 (during training: with how to
    resume), a closed pipe quietly."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except KeyboardInterrupt:
        if "--debug" in argv:
            raise
        print("stnkit: interrupted", file=sys.stderr)
        return 130  # the shell's status for a Ctrl-C
    except BrokenPipeError:
        return _quiet_pipe()


def _main(argv: list[str]) -> int:
    parser = build_parser()
    # --debug is global but may stand anywhere (`stnkit eval x.ckpt --debug` too)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    args = parser.parse_args([a for a in argv[:end] if a != "--debug"] + argv[end:])
    args.debug = debug
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    from ..data import DatasetError, DownloadError

    try:
        return int(args.func(args) or 0)
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except (DatasetError, DownloadError, OSError, ValueError, TypeError) as err:
        # bad input: a missing, unreadable or refused file, a value out of range (stnkit's own errors
        # are ValueError or OSError subclasses)
        if args.debug:
            raise
        print(f"stnkit: {_message(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        if args.debug:
            raise
        print(
            f"stnkit: unexpected {type(err).__name__}: {_message(err)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
