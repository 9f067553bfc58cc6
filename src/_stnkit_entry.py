"""The ``stnkit`` command's entry point: a Ctrl-C at any moment ends in one line, not a traceback or a hang.

Importing stnkit loads torch (a second or more); a SIGINT then would interrupt an import and print
Python's traceback. This module, which imports nothing heavy, catches SIGINT until :func:`stnkit.cli.main`
is loaded, then gives Ctrl-C back to Python (where the command line turns it into ``stnkit: interrupted``).

From then on a Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread is, and where that is a
finaliser (an object's ``__del__``, a weakref callback, run by the garbage collector at any moment)
Python prints "Exception ignored in ..." and goes on: the Ctrl-C would be lost and a training would run
on. :func:`_resend_lost_interrupt` sends such a swallowed Ctrl-C again, so that it lands in the code the
finaliser interrupted.
"""

import os
import signal
import sys
import threading
import time


def _interrupted_while_loading(signum, frame):  # noqa: ARG001 - a signal handler's signature
    os.write(2, b"stnkit: interrupted\n")
    os._exit(130)  # nothing is written yet: nothing to clean up


def _send_interrupt_again():
    time.sleep(0.01)  # the finaliser has ended (or another swallows it: then it is sent again)
    signal.raise_signal(signal.SIGINT)  # its handler runs in the main thread, in the code that was running


def _resend_lost_interrupt(unraisable, _report=sys.unraisablehook):
    """``sys.unraisablehook``: a ``KeyboardInterrupt`` that Python could not raise (it came during a
    finaliser) is sent again, quietly, from a thread (sent from here, it would be raised in this hook and
    lost again); anything else is reported as Python would."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and callable(signal.getsignal(signal.SIGINT)):
        try:
            threading.Thread(target=_send_interrupt_again, name="stnkit-ctrl-c", daemon=True).start()
            return
        except RuntimeError:  # no new thread as Python shuts down: it is ending anyway, say so as Python would
            pass
    _report(unraisable)


def main() -> int:
    previous = signal.getsignal(signal.SIGINT)
    catching = previous is signal.default_int_handler  # not where the caller has SIGINT ignored (nohup, `cmd &`)
    if catching:
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    from stnkit.cli import main as cli_main

    signal.signal(signal.SIGINT, previous)
    if catching:
        sys.unraisablehook = _resend_lost_interrupt
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
