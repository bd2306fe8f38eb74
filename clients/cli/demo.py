"""``neurocast demo``: the service, a simulator session and the dashboard in one command.

Starts the server on loopback with the demo models shipped in the package, creates a session
that decodes the embedded simulator, and opens the dashboard in a browser. With ``--headless``
(or when no display is available) it prints the decoded results instead, one line each, and
exits by itself after ``--seconds``: per printed window, the class probabilities, the top-3
retrieved pictures with the picture the simulator presented, and the correlation of the
translated MEG with the simulated MEG (:mod:`neurocast.clients.cli.demo_lines`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import webbrowser
from pathlib import Path

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK

DEMO_PREFIX = "demo"
DEMO_GALLERY = "demo-images"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="decode the embedded simulator live (dashboard, or printed when headless)",
        description=(
            "Start the service with a simulator session running the demo models and open the "
            "dashboard; --headless prints the decoded results (all SIMULATED) instead."
        ),
    )
    parser.add_argument(
        "--headless", action="store_true", help="print results instead of opening a browser"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="stop after this long (default: 30 when headless, until Ctrl+C otherwise)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument(
        "--decimate", type=int, default=4, help="print every n-th result per model (default 4)"
    )
    parser.set_defaults(func=run)


def has_display() -> bool:
    """True when a browser window can be shown (a desktop session, macOS or Windows)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    """Serve, start the simulator session, then show or print the results."""
    from neurocast.catalog import PACKAGED_DIR
    from neurocast.clients.cli.demo_lines import DemoLines
    from neurocast.clients.cli.http_log import quiet_http_log
    from neurocast.clients.client import Client
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.registry import ModelRegistry
    from neurocast.server.runner import ServerThread
    from neurocast.streaming.sources.specs import SimulatorSpec
    from neurocast.wire.schemas import OutputName

    registry = ModelRegistry.discover(None)
    demo = [m.id for m in registry.infos() if m.packaged and m.id.startswith(DEMO_PREFIX)]
    if not demo:
        print(
            "neurocast demo: no demo model is installed (the package's models/artifacts holds "
            "none). Build it with `neurocast train demo` (or `make models`), then run the "
            "demo again.",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    quiet_http_log(args)
    headless = args.headless or not has_display()
    seconds = args.seconds if args.seconds is not None else (30.0 if headless else None)
    # the demo's session is its own: kept in a folder of this run, never restored by a later
    # `neurocast serve`
    state = tempfile.TemporaryDirectory(prefix="neurocast-demo-")
    settings = Settings(
        host="127.0.0.1", port=args.port, state_dir=Path(state.name), restore_sessions=False
    )
    token = settings.effective_token
    server = ServerThread(create_app(settings, registry), port=args.port)
    with server, Client(server.url, token=token) as client:
        # the simulator presents the shipped pictures the retrieval model was trained on
        gallery = PACKAGED_DIR / f"{DEMO_GALLERY}.npz"
        spec = SimulatorSpec(
            modality="both", embeddings_path=str(gallery) if gallery.is_file() else None
        )
        session = client.create_session(spec, demo, name="neurocast demo (SIMULATED)")
        if session.status == "failed":
            print(f"neurocast demo: the simulator failed: {session.error}", file=sys.stderr)
            return EXIT_FAILURE
        dashboard = f"{server.url}/dashboard/?session={session.id}#token={token}"
        print(f"neurocast demo: decoding SIMULATED data with {', '.join(demo)}", flush=True)
        print(f"dashboard: {dashboard}", flush=True)
        deadline = None if seconds is None else time.monotonic() + seconds
        if not headless:
            webbrowser.open(dashboard)
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
            return EXIT_OK
        outputs: list[OutputName] = [
            "probabilities", "retrieval", "translation", "events", "signal",
        ]  # fmt: skip
        lines = DemoLines(args.decimate)
        with client.stream(session.id, outputs) as stream:
            while deadline is None or time.monotonic() < deadline:
                remaining = None if deadline is None else max(0.01, deadline - time.monotonic())
                try:
                    message = stream.receive(timeout=remaining)
                except (TimeoutError, StopIteration):
                    break
                line = lines.line(message)
                if line:
                    print(line, flush=True)
    return EXIT_OK
