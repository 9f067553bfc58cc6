"""The one-line refusals that every ``stnkit reproduce`` target shares."""

from __future__ import annotations

import argparse
from dataclasses import replace

# the flags only table1 reads
TABLE1_FLAGS = ("--datasets", "--check", "--update-readme")


def refuse_table1_flags(args: argparse.Namespace, target: str, flags: tuple[str, ...] = TABLE1_FLAGS) -> None:
    """Refuse, in one line, any of ``flags`` (table1's own) given to another ``target``."""
    for flag in flags:
        if getattr(args, flag[2:].replace("-", "_")):
            raise SystemExit(f"stnkit reproduce {target}: {flag} applies to table1 only")


def rows_from(args: argparse.Namespace, target: str, valid, default=None, kind: str = "row") -> list[str]:
    """The rows of ``--models`` (all of ``valid``, or ``default``, when not given), each one of ``valid``."""
    rows = args.models.split(",") if args.models else list(valid if default is None else default)
    for r in rows:
        if r not in valid:
            raise SystemExit(f"stnkit reproduce {target}: unknown {kind} {r!r}; valid: {', '.join(valid)}")
    return rows


def refuse_others(target: str, given: dict, allowed: tuple[str, ...], also: str = "") -> None:
    """Refuse, in one line, the ``stnkit train`` options given that ``target`` does not read (``also``: the
    target's own flags, named after the ones it reads)."""
    other = sorted(set(given) - set(allowed) - {"model", "dataset", "seed"})  # dataset: budget's own option
    if other:
        flags = ", ".join("--" + o.replace("_", "-") for o in other)
        raise SystemExit(
            f"stnkit reproduce {target}: {flags} not read by this target (it reads: "
            f"{', '.join('--' + o.replace('_', '-') for o in allowed)}{also})"
        )


def config_from_flags(defaults, flags: dict, args: argparse.Namespace, options: dict, target: str, skip=()):
    """``defaults`` (a dataclass) with ``options`` and every flag of ``flags`` (field -> ``--flag``, those
    in ``skip`` left out) that was given; the config's own refusal in one line, named by the flag."""
    for key, flag in flags.items():
        if key in skip:
            continue
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            options[key] = value
    try:
        return replace(defaults, **options)
    except (TypeError, ValueError) as err:
        name, _, rest = str(err).partition(" ")
        raise SystemExit(f"stnkit reproduce {target}: {flags.get(name, name)} {rest}") from None
