"""Running a replay from the command line: announce it once it has started, map its failures
to exit codes (shared by ``neurocast replay`` for recordings and for XDF files)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from neurocast.clients.cli.exit_codes import EXIT_OK
from neurocast.streaming.sources.replay import Player


def play(
    player: Player,
    announce: Callable[[], None],
    failures: list[tuple[type[Exception] | tuple[type[Exception], ...], int]],
) -> int:
    """Run a player to its end, announcing the replay once it has started.

    Parameters
    ----------
    player : Player
        The replay.
    announce : callable
        Prints what is replayed; called from another thread once the outlets exist, and not
        at all if the replay fails first.
    failures : list of (exception type(s), exit code)
        The errors reported as a message and an exit code, first match wins; others propagate.

    Returns
    -------
    exit_code : int
        ``EXIT_OK`` once the replay has ended, else the code of the failure.
    """
    started = threading.Event()
    failed = threading.Event()

    def announce_once_started() -> None:
        started.wait()
        if not failed.is_set():
            announce()

    threading.Thread(target=announce_once_started, daemon=True).start()
    try:
        n = player.run(started=started)
    except Exception as exc:
        code = next((c for kinds, c in failures if isinstance(exc, kinds)), None)
        if code is None:
            raise
        failed.set()
        print(f"neurocast replay: {exc}", file=sys.stderr)
        return code
    finally:
        started.set()  # the announcement thread ends either way
    print(f"Replayed {n} samples.", flush=True)
    return EXIT_OK
