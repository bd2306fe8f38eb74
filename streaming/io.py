"""One way to open a saved recording, whatever its format."""

from __future__ import annotations

from pathlib import Path

import mne


def read_recording(path: str | Path, *, preload: bool = False) -> mne.io.BaseRaw:
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

    Returns
    -------
    raw : mne.io.BaseRaw
        The recording.

    Raises
    ------
    ValueError
        If the file does not exist or MNE cannot read it; the message names the file and why.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder.")
    try:
        if path.suffix.lower() == ".mat":
            return mne.io.read_raw_fieldtrip(path, info=None)
        return mne.io.read_raw(path, preload=preload, verbose="error")
    except Exception as exc:  # readers raise many types on corrupt or foreign files
        raise ValueError(
            f"MNE cannot read {path} as a recording ({type(exc).__name__}: {exc}). Check that "
            "the file is complete and in a format mne.io.read_raw supports (FIF, EDF/BDF, "
            "BrainVision, EEGLAB, CTF, BTi/4D, KIT, or a FieldTrip raw MAT file)."
        ) from exc
