"""``neurocast replay FILE.xdf``: every stream of an XDF recording as a live LSL stream.

Called by :mod:`neurocast.clients.cli.replay` for ``.xdf`` files (see
:class:`~neurocast.streaming.recording.replay.XDFPlayer`).
"""

from __future__ import annotations

import argparse
import sys

from neurocast.clients.cli.exit_codes import EXIT_USAGE
from neurocast.clients.cli.playback import play
from neurocast.streaming.recording.read import XDFFormatError


def run_xdf(args: argparse.Namespace) -> int:
    """Replay ``args.file`` over LSL at ``args.speed`` (``--name`` prefixes stream names)."""
    from neurocast.streaming.recording.replay import XDFPlayer

    if args.to != "lsl" or args.loop:
        print("neurocast replay: XDF files replay to LSL only, without --loop.", file=sys.stderr)
        return EXIT_USAGE
    player = XDFPlayer(
        args.file,
        speed=args.speed,
        name_prefix=args.name or "",
        wait_for_consumer=args.wait,
        chunk_s=min(args.chunk_ms, 1000.0) / 1e3,
    )

    def announce() -> None:
        scan = player.scan
        if scan is not None and scan.truncated:
            print(f"neurocast replay: {scan.message()}", file=sys.stderr, flush=True)
        names = ", ".join(repr(n) for n in player.stream_names)
        print(
            f"Replaying {args.file} ({len(player.stream_names)} streams: {names}) to LSL at "
            f"{args.speed:g}x. Ctrl-C stops.",
            flush=True,
        )

    return play(player, announce, [((XDFFormatError, OSError), EXIT_USAGE)])
