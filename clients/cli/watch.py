"""``neurocast watch``: a live text view of a session's results in the terminal."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from neurocast.wire.frames import SignalFrame
from neurocast.wire.schemas import (
    ALL_OUTPUTS,
    DroppedMessage,
    ErrorMessage,
    EventsMessage,
    ResultMessage,
    StatusMessage,
)

DEFAULT_OUTPUTS = "probabilities,retrieval,translation,events,status"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``watch`` command."""
    parser = subparsers.add_parser(
        "watch",
        help="print a session's live results",
        description="Subscribe to a session on a server and print one line per message.",
    )
    parser.add_argument("session", metavar="SESSION", help="session id (see GET /v1/sessions)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server")
    parser.add_argument("--token", help="the server's token (default NEUROCAST_TOKEN)")
    parser.add_argument(
        "--outputs",
        default=DEFAULT_OUTPUTS,
        help=f"comma-separated outputs (default {DEFAULT_OUTPUTS}; also embedding)",
    )
    parser.add_argument(
        "--decimate", type=int, default=1, help="print every n-th result per model (default 1)"
    )
    parser.add_argument("--seconds", type=float, help="stop after this long")
    parser.add_argument("--count", type=int, help="stop after this many results")
    parser.set_defaults(func=run)


def format_message(message: object, clock: Callable[[], float] | None = None) -> str | None:
    """One line of text for a stream message (None for messages not worth a line).

    Parameters
    ----------
    message : object
        A parsed stream message (:func:`neurocast.clients.streams.parse_message`).
    clock : callable | None
        The server's monotonic clock when it runs on this machine: the line then includes the
        delivery latency (now minus the result's ``ready_time``).
    """
    if isinstance(message, SignalFrame):
        n_ch, n_s = message.data.shape
        rms = float(np.sqrt(np.mean(np.square(message.data, dtype=np.float64)))) if n_s else 0.0
        meta = message.meta
        what = "signal" if meta.get("kind") == "signal" else "translated"
        body = f"{what} {n_ch} ch x {n_s} samples, rms {rms:.3g}"
        lat = meta.get("latency", {})
        return _result_line(meta.get("model", "?"), message, body, lat, clock)
    if isinstance(message, ResultMessage):
        body = _payload_text(message.kind, message.payload)
        return _result_line(message.model, message, body, message.latency.model_dump(), clock)
    if isinstance(message, EventsMessage):
        tag = "SIMULATED " if message.simulated else ""
        return "\n".join(f"{tag}event t={e.timestamp:.3f}s {e.value}" for e in message.events)
    if isinstance(message, StatusMessage):
        s = message.session
        tag = "SIMULATED " if s.simulated else ""
        error = f" ({s.error})" if s.error else ""
        return (
            f"{tag}status {s.status}{error}: {s.decode_rate_hz:.1f} windows/s, "
            f"{s.n_skipped} skipped, {s.dropped_messages} dropped"
        )
    if isinstance(message, DroppedMessage):
        return f"dropped {message.dropped} messages (this client read too slowly)"
    if isinstance(message, ErrorMessage):
        return f"error {message.code}: {message.detail}"
    return None


def _result_line(
    model: str,
    message: ResultMessage | SignalFrame,
    body: str,
    lat: dict[str, float],
    clock: Callable[[], float] | None,
) -> str:
    stages = [lat.get(k, 0.0) for k in ("acquisition_ms", "preprocessing_ms", "inference_ms")]
    latency = (
        f"latency {sum(stages):.1f} ms (acq {stages[0]:.1f}, pre {stages[1]:.1f}, "
        f"inf {stages[2]:.1f}"
    )
    if clock is not None:
        latency += f", delivery {(clock() - message.ready_time) * 1e3:.1f}"
    tag = "SIMULATED " if message.simulated else ""
    return f"{tag}t={message.t_window_end:.3f}s {model}: {body}  {latency})"


def _payload_text(kind: str, payload: dict[str, Any]) -> str:
    if kind == "probabilities":
        pairs = zip(payload.get("classes", []), payload.get("probabilities", []), strict=False)
        ranked = sorted(pairs, key=lambda cp: -float(cp[1]))
        return " | ".join(f"{c} {float(p):.2f}" for c, p in ranked)
    if kind == "retrieval":
        top = payload.get("topk", [])[:3]
        return "top: " + ", ".join(f"{t['label']}/{t['image_id']} {t['score']:.2f}" for t in top)
    if kind == "embedding":
        return f"embedding of {len(payload.get('embedding', []))} values"
    return kind


def run(args: argparse.Namespace) -> int:
    """Print messages until the session ends, --seconds pass or --count results arrive."""
    import httpx

    from neurocast.clients.calls import NeurocastError
    from neurocast.clients.cli.http_log import quiet_http_log
    from neurocast.clients.client import Client
    from neurocast.hosts import is_loopback
    from neurocast.streaming.sources.base import local_clock

    quiet_http_log(args)
    outputs: list[Any] = [o.strip() for o in args.outputs.split(",") if o.strip()]
    unknown = sorted(set(outputs) - set(ALL_OUTPUTS))
    if unknown:
        print(
            f"neurocast watch: unknown outputs {unknown}; choose from {list(ALL_OUTPUTS)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    clock = local_clock if is_loopback(httpx.URL(args.url).host) else None
    deadline = time.monotonic() + args.seconds if args.seconds else None
    n = 0
    with Client(args.url, token=args.token) as client:
        try:
            client.session(args.session)
        except NeurocastError as exc:
            print(f"neurocast watch: {exc.detail}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as exc:  # the server cannot be reached
            print(f"neurocast watch: cannot reach {args.url}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        with client.stream(args.session, outputs, decimate=args.decimate) as stream:
            while deadline is None or time.monotonic() < deadline:
                timeout = None if deadline is None else max(0.01, deadline - time.monotonic())
                try:
                    message = stream.receive(timeout=timeout)
                except TimeoutError:
                    break
                except StopIteration:
                    print("session ended", file=sys.stderr)
                    break
                line = format_message(message, clock)
                if line:
                    print(line, flush=True)
                if isinstance(message, ResultMessage | SignalFrame):
                    n += 1
                    if args.count and n >= args.count:
                        break
    return EXIT_OK
