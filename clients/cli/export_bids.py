"""``neurocast export-bids FILE.xdf --bids-root DIR --subject S --task T``: XDF to BIDS.

MEG (with any EEG recorded alongside) is written as FIF, EEG as EDF, the markers as
``events.tsv`` and the decoded outputs as TSV files under ``derivatives/neurocast``. A file
cut short (a full disk, a killed recorder) is exported up to its last complete chunk; the
byte offset where it stops being whole is reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurocast.clients.cli.exit_codes import EXIT_OK, EXIT_USAGE
from neurocast.streaming.recording.read import XDFFormatError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-bids`` command."""
    parser = subparsers.add_parser(
        "export-bids",
        help="write an XDF recording as a BIDS dataset",
        description=(
            "Export an XDF recording to BIDS with mne-bids: MEG as FIF, EEG as EDF, markers "
            "as events.tsv, decoded outputs as derivatives TSV. A truncated file is exported "
            "up to its last complete chunk (the byte offset is reported). Exit code 2 if the "
            "file cannot be read or the output exists."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE.xdf", help="the XDF recording")
    parser.add_argument("--bids-root", type=Path, required=True, help="the BIDS dataset folder")
    parser.add_argument("--subject", required=True, help="BIDS subject label")
    parser.add_argument("--task", required=True, help="BIDS task label")
    parser.add_argument("--session", help="BIDS session label")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; prints where the files went."""
    from neurocast.streaming.recording.bids import export_bids  # mne-bids loads slowly

    if not args.file.is_file():
        print(f"neurocast export-bids: no file {args.file}.", file=sys.stderr)
        return EXIT_USAGE
    try:
        export = export_bids(
            args.file,
            args.bids_root,
            args.subject,
            args.task,
            session=args.session,
            overwrite=args.overwrite,
        )
    except (XDFFormatError, ValueError, FileExistsError, OSError) as exc:
        print(f"neurocast export-bids: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if export.scan.truncated:
        print(f"neurocast export-bids: {export.scan.message()}", file=sys.stderr)
    for path in export.raw_paths:
        print(f"Wrote {path.fpath}")
    for tsv in export.derivative_files:
        print(f"Wrote {tsv}")
    return EXIT_OK
