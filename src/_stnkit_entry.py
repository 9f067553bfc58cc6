"""The ``stnkit`` command's entry point: a Ctrl-C while the libraries load ends in one line, not a traceback.

Importing stnkit loads torch (a second or more); a SIGINT then would interrupt an import and print
Python's traceback. This module, which imports nothing heavy, catches SIGINT until :func:`stnkit.cli.main`
is loaded, then gives Ctrl-C back to Python (where the command line turns it into ``stnkit: interrupted``).
"""

import os
import signal
import sys


def _interrupted_while_loading(signum, frame):  # noqa: ARG001 - a signal handler's signature
    os.write(2, b"stnkit: interrupted\n")
    os._exit(130)  # nothing is written yet: nothing to clean up


def main() -> int:
    previous = signal.getsignal(signal.SIGINT)
    catch = previous is signal.default_int_handler  # not where the caller has SIGINT ignored (nohup, `cmd &`)
    if catch:
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    from stnkit.cli import main as cli_main

    if catch:
        signal.signal(signal.SIGINT, previous)
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
