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
        raise ValueError(
            f"MNE cannot read {path} as a recording ({type(exc).__name__}: {exc}). Check that "
            "the file is complete and in a format mne.io.read_raw supports (FIF, EDF/BDF, "
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
