"""``neurocast replay FILE --to lsl|fieldtrip``: publish a recording as a live stream.

The file (anything :func:`mne.io.read_raw` reads, or a FieldTrip MAT file) is released at real
speed times ``--speed``, each sample no earlier than its time, with its annotations and
stim-channel events as markers: to LSL as an outlet named ``--name`` plus a string marker
outlet ``<name>-markers``; to a FieldTrip buffer at ``--host``/``--port`` as header, samples
and events.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurocast.clients.cli.arg_types import port_number, positive_float
from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_USAGE
from neurocast.clients.cli.playback import play
from neurocast.streaming.sources.base import SourceError
from neurocast.streaming.sources.fieldtrip.protocol import FieldTripError
from neurocast.streaming.sources.replay import FieldTripPlayer, LSLPlayer
from neurocast.streaming.sources.specs import ReplaySpec


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay`` command."""
    parser = subparsers.add_parser(
        "replay",
        help="publish a recording as a live LSL or FieldTrip stream",
        description=(
            "Replay a recording (FIF, EDF/BDF, BrainVision, EEGLAB, CTF, BTi/4D, KIT, FieldTrip "
            "MAT, ...) as a live stream at real speed (or --speed times faster), with its "
            "annotations and stim events as markers. Samples are published no earlier than "
            "their time and stamped with it. Exit code 2 if the file cannot be read, 1 if the "
            "destination cannot be reached."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the recording")
    parser.add_argument(
        "--to", choices=("lsl", "fieldtrip"), default="lsl", help="destination (default: lsl)"
    )
    parser.add_argument(
        "--speed", type=positive_float, default=1.0, help="replay speed; 1 is real time (default)"
    )
    parser.add_argument("--loop", action="store_true", help="start again at the end of the file")
    parser.add_argument(
        "--chunk-ms",
        type=positive_float,
        default=10.0,
        help="samples are published in chunks of this many milliseconds (default 10)",
    )
    parser.add_argument("--name", help="LSL stream name (default: the file name)")
    parser.add_argument("--source-id", help="LSL source id (default: neurocast-replay:NAME)")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="LSL: start the replay only once an inlet has connected",
    )
    parser.add_argument("--host", default="127.0.0.1", help="FieldTrip buffer host")
    parser.add_argument("--port", type=port_number, default=1972, help="FieldTrip buffer port")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.chunk_ms > 1000:
        print("neurocast replay: --chunk-ms must be at most 1000.", file=sys.stderr)
        return EXIT_USAGE
    if args.file.suffix.lower() == ".xdf":  # every stream of the file, with its own timing
        from neurocast.clients.cli.replay_xdf import run_xdf

        return run_xdf(args)
    spec = ReplaySpec(
        path=str(args.file), speed=args.speed, loop=args.loop, chunk_s=args.chunk_ms / 1e3
    )
    player: LSLPlayer | FieldTripPlayer
    if args.to == "lsl":
        player = LSLPlayer(
            spec, name=args.name, source_id=args.source_id, wait_for_consumer=args.wait
        )
        where = f"LSL stream {player.name!r} (markers on {player.name + '-markers'!r})"
    else:
        player = FieldTripPlayer(spec, host=args.host, port=args.port)
        where = f"FieldTrip buffer {args.host}:{args.port}"

    def announce() -> None:
        stream = player.source.stream_info
        print(
            f"Replaying {args.file} ({stream.n_channels} channels at {stream.sfreq:g} Hz"
            f"{', SIMULATED' if stream.simulated else ''}) to {where} at {args.speed:g}x"
            f"{', looping' if args.loop else ''}. Ctrl-C stops.",
            flush=True,
        )

    # an unreachable buffer, or one that goes away, is a failure at run time
    return play(
        player, announce, [(SourceError, EXIT_USAGE), ((OSError, FieldTripError), EXIT_FAILURE)]
    )
