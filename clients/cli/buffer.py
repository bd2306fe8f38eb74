"""``neurocast buffer``: run a FieldTrip realtime buffer server.

Acquisition software (``neuromag2ft``, ``acq2ftx``, amplifier drivers) or
``neurocast replay FILE --to fieldtrip`` writes into it; neurocast sessions with a
``{"kind": "fieldtrip"}`` source and any other FieldTrip client read from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``buffer`` command."""
    parser = subparsers.add_parser(
        "buffer",
        help="run a FieldTrip realtime buffer server",
        description=(
            "Serve the FieldTrip buffer protocol (header, samples and events in a bounded ring) "
            "until interrupted with Ctrl-C. Exit code 1 if the address cannot be bound."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=1972, help="TCP port (default 1972)")
    parser.add_argument(
        "--max-samples", type=int, default=600_000, help="samples kept (default 600000)"
    )
    parser.add_argument("--max-events", type=int, default=100, help="events kept (default 100)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from neurocast.streaming.sources.fieldtrip.server import FieldTripServer

    server = FieldTripServer(
        args.host, args.port, max_samples=args.max_samples, max_events=args.max_events
    )

    async def serve() -> None:
        await server.start()
        print(f"FieldTrip buffer on {args.host}:{server.port} (Ctrl-C to stop)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except OSError as exc:
        print(
            f"neurocast buffer: cannot listen on {args.host}:{args.port}: {exc}. Pass a free "
            "--port, or stop the program that holds this one."
        )
        return EXIT_FAILURE
    return EXIT_OK
