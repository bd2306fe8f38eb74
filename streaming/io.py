"""Saved recordings: one way to open them, tell simulated ones, and name files safely."""

from __future__ import annotations

import re
from pathlib import Path

import mne

from neurocast.streaming.sources.base import SIMULATED_TAG

#: Runs of characters that are unsafe in a file name or an id that becomes one.
UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class RecordingNotFoundError(FileNotFoundError, ValueError):
    """The recording does not exist (a ValueError too, like every other unreadable file)."""


#: Names of the formats MNE picks by file extension, for messages.
FORMAT_NAMES = {
    ".fif": "FIF",
    ".gz": "FIF (gzipped)",
    ".edf": "EDF",
    ".bdf": "BDF",
    ".gdf": "GDF",
    ".vhdr": "BrainVision",
    ".set": "EEGLAB",
    ".mat": "FieldTrip MAT",
    ".ds": "CTF",
    ".sqd": "KIT",
    ".con": "KIT",
    ".cnt": "Neuroscan CNT",
    ".xdf": "XDF",
}
_EDF_HEADER = 256  # bytes of the fixed header, and of each signal's header


def format_name(path: Path) -> str:
    """The recording format its extension names (``EDF``, ``FIF``...), or the extension."""
    suffix = path.suffix.lower()
    return FORMAT_NAMES.get(suffix, f"a {suffix or 'extension-less'} file")


def edf_size_problem(path: Path) -> str | None:
    """Why an EDF/BDF file cannot be complete, from the sizes its header declares; else None.

    MNE reads a truncated EDF without complaint (it returns fewer samples, or fails deep in
    the reader), so the size the header promises is checked first.
    """
    fmt = path.suffix.lower()
    if fmt not in (".edf", ".bdf") or not path.is_file():
        return None
    size = path.stat().st_size
    kind = fmt[1:].upper()
    with path.open("rb") as f:
        fixed = f.read(_EDF_HEADER)
        try:
            n_signals = int(fixed[252:256].decode("ascii").strip())
            n_records = int(fixed[236:244].decode("ascii").strip())
            header_bytes = _EDF_HEADER * (1 + n_signals)
            f.seek(_EDF_HEADER + 216 * n_signals)
            per_record = [int(f.read(8).decode("ascii").strip()) for _ in range(n_signals)]
        except (ValueError, UnicodeDecodeError):
            return (
                f"expected {kind}: a {_EDF_HEADER}-byte header giving the number of signals "
                f"and records, then {_EDF_HEADER} bytes per signal; found {size:,} bytes whose "
                f"header cannot be read that way (not {kind}, or cut inside the header)"
            )
    sample_bytes = 3 if fmt == ".bdf" else 2
    record_bytes = sum(per_record) * sample_bytes
    expected = header_bytes + max(n_records, 0) * record_bytes
    if size < expected:
        return (
            f"expected {kind}: a {header_bytes:,}-byte header and {n_records:,} data records of "
            f"{record_bytes:,} bytes ({expected:,} bytes in all); found {size:,} bytes, so the "
            f"file is truncated; copy or export it again"
        )
    return None


def read_recording(
    path: str | Path, *, preload: bool = False, eegbci: bool = False
) -> mne.io.BaseRaw:
    """Read a recording with MNE.

    Anything :func:`mne.io.read_raw` reads (FIF, EDF/BDF, BrainVision, EEGLAB, CTF, BTi/4D,
    KIT, ...) plus FieldTrip ``ft_datatype_raw`` MAT files, which MNE reads with
    :func:`mne.io.read_raw_fieldtrip` (``info=None``: channel information comes from the file).

    Parameters
    ----------
    path : str | Path
        The file (for CTF, the ``.ds`` folder).
    preload : bool
        Load the data into memory now.
    eegbci : bool
        The file is from the PhysioNet EEG Motor Movement/Imagery dataset: standardise its
        channel names with :func:`mne.datasets.eegbci.standardize` and set the
        ``standard_1005`` montage.

    Returns
    -------
    raw : mne.io.BaseRaw
        The recording.

    Raises
    ------
    RecordingNotFoundError
        If the file does not exist (both a FileNotFoundError and a ValueError).
    ValueError
        If MNE cannot read it; the message names the file and why.
    """
    path = Path(path)
    if not path.exists():
        raise RecordingNotFoundError(
            f"{path}: no such file or folder; the recording does not exist."
        )
    try:
        if path.suffix.lower() == ".mat":
            raw = mne.io.read_raw_fieldtrip(path, info=None)
        else:
            raw = mne.io.read_raw(path, preload=preload, verbose="error")
    except Exception as exc:  # readers raise many types on corrupt or foreign files
        size = f"{path.stat().st_size:,} bytes" if path.is_file() else "a folder"
        raise ValueError(
            f"MNE cannot read {path} as {format_name(path)} (the format its extension names; "
            f"found {size}; the reader said {type(exc).__name__}: {exc}). Check that the file "
            "is complete and that its extension matches its format (FIF, EDF/BDF, "
            "BrainVision, EEGLAB, CTF, BTi/4D, KIT, or a FieldTrip raw MAT file)."
        ) from exc
    if eegbci:
        mne.datasets.eegbci.standardize(raw)
        raw.set_montage("standard_1005", verbose="error")
    return raw


def is_simulated(info: mne.Info) -> bool:
    """True when ``info`` describes simulated data.

    The simulator opens ``info["description"]`` of everything it writes with
    :data:`~neurocast.streaming.sources.base.SIMULATED_TAG`; a recording whose description
    starts with it is simulated, wherever it is read or replayed.
    """
    return (info["description"] or "").startswith(SIMULATED_TAG)


def safe_name(text: str) -> str:
    """``text`` with every run of characters unsafe in a file name replaced by ``_``."""
    return UNSAFE_NAME_CHARS.sub("_", text)
