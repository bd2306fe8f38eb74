"""``neurocast record SOURCE --out FILE.xdf``: record a live source to XDF, without a server.

SOURCE is ``simulator``, ``lsl:NAME`` (an LSL stream by name), ``fieldtrip:HOST:PORT``, a
source spec as JSON (``'{"kind": "lsl", "type": "EEG", "marker_stream": "Markers"}'``, the
same specs as the REST API) or a ``.json`` file holding one, or a recording file to replay.
The raw stream, its markers and the clock offsets are written as they arrive and made durable
at least every second; Ctrl-C (or ``--seconds``) ends the recording cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from neurocast.clients.cli.arg_types import positive_float
from neurocast.clients.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from neurocast.streaming.recording.recorder import SessionRecorder
from neurocast.streaming.recording.tap import RecordingSource
from neurocast.streaming.sources.base import SourceError
from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.specs import (
    FieldTripSpec,
    LSLSpec,
    ReplaySpec,
    SimulatorSpec,
    SourceSpec,
)

_SPEC: TypeAdapter[SourceSpec] = TypeAdapter(SourceSpec)


def parse_source(text: str) -> SourceSpec:
    """The source spec a SOURCE argument names (see the module docstring).

    Raises
    ------
    ValueError
        If the text names no source; the message lists the accepted forms.
    """
    t = text.strip()
    try:
        if t.lower() in ("simulator", "sim"):
            return SimulatorSpec()
        if t.lower().startswith("lsl:") and len(t) > 4:
            return LSLSpec(name=t[4:])
        if t.lower().startswith("fieldtrip:"):
            host, _, port = t[len("fieldtrip:") :].rpartition(":")
            return FieldTripSpec(host=host or "127.0.0.1", port=int(port))
        if t.startswith("{"):
            return _SPEC.validate_json(t)
        path = Path(t)
        if path.suffix.lower() == ".json" and path.is_file():
            return _SPEC.validate_python(json.loads(path.read_text()))
        if path.is_file():
            return ReplaySpec(path=str(path))
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"invalid source {text!r}: {exc}") from None
    raise ValueError(
        f"no source {text!r}: give 'simulator', 'lsl:NAME', 'fieldtrip:HOST:PORT', a JSON "
        "source spec (or a .json file holding one) or a recording file"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``record`` command."""
    parser = subparsers.add_parser(
        "record",
        help="record a live source to an XDF file",
        description=(
            "Record a live source (its samples with their original timestamps, channel "
            "metadata, markers and clock offsets) to XDF. SOURCE: 'simulator', 'lsl:NAME', "
            "'fieldtrip:HOST:PORT', a JSON source spec or .json file, or a recording to "
            "replay. Exit code 2 for a bad source or an existing output, 1 if the source or "
            "the recording fails."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="what to record (see above)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.xdf", help="output")
    parser.add_argument(
        "--seconds", type=positive_float, help="stop after this long (default: Ctrl-C)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Record until ``--seconds`` pass, the source ends, or Ctrl-C."""
    try:
        spec = parse_source(args.source)
    except ValueError as exc:
        print(f"neurocast record: {exc}", file=sys.stderr)
        return EXIT_USAGE
    recorder = SessionRecorder(args.out, overwrite=args.force)
    try:
        recorder.start()
    except FileExistsError:
        print(f"neurocast record: {args.out} exists (--force overwrites it).", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"neurocast record: cannot create {args.out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    source = RecordingSource(open_source(spec), recorder)
    interrupted = False
    try:
        try:
            stream = source.open()
        except SourceError as exc:
            print(f"neurocast record: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        tag = " (SIMULATED)" if stream.simulated else ""
        print(
            f"Recording {stream.name!r}{tag}: {stream.n_channels} channels at "
            f"{stream.sfreq:g} Hz to {args.out}. Ctrl-C stops.",
            flush=True,
        )
        end = None if args.seconds is None else time.monotonic() + args.seconds
        while end is None or time.monotonic() < end:
            chunk = source.read(0.1)
            if chunk is None and source.status in ("stopped", "failed"):
                break
            if not recorder.recording:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        source.close()
        status = recorder.stop()
    if status.state == "failed":
        print(f"neurocast record: {status.reason}", file=sys.stderr)
        return EXIT_FAILURE
    print(
        f"Recorded {status.n_samples} samples ({status.bytes_written / 1e6:.1f} MB) to "
        f"{args.out}{' (interrupted)' if interrupted else ''}.",
        flush=True,
    )
    return EXIT_OK
