"""Labelled trials from annotated recordings, for training decoders and for benchmarks.

A recording (anything :func:`mne.io.read_raw` reads) carries its trials as annotations, e.g.
``T1``/``T2`` in the PhysioNet EEG Motor Movement/Imagery files.
:func:`~neurocast.streaming.io.read_recording` loads one (optionally fixing EEGBCI channel names
and montage) and :func:`find_trials` turns the annotations named in an event map into trial
onsets and class labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import mne
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Trials:
    """Trial onsets and labels of one recording.

    Attributes
    ----------
    onsets : ndarray of int, shape (n_trials,)
        Onset of each trial in samples since the first sample of the recording.
    labels : ndarray of int, shape (n_trials,)
        Index into ``class_names``.
    class_names : list of str
        Class names in label order.
    sfreq : float
        Sampling rate of ``onsets`` in Hz.
    """

    onsets: NDArray[np.int64]
    labels: NDArray[np.int64]
    class_names: list[str]
    sfreq: float

    def __len__(self) -> int:
        return len(self.onsets)


def find_trials(raw: mne.io.BaseRaw, event_map: Mapping[str, str]) -> Trials:
    """Trials from annotations.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The recording.
    event_map : mapping of str to str
        Annotation description to class name, e.g. ``{"T1": "hands", "T2": "feet"}``; several
        descriptions may map to one class. Class order is the order of first appearance in the
        mapping's values.

    Returns
    -------
    trials : Trials
        One trial per matching annotation, in time order.

    Raises
    ------
    ValueError
        If none of the descriptions occurs in the recording, or a class has no trial.
    """
    class_names = list(dict.fromkeys(event_map.values()))
    name = raw.filenames[0] if raw.filenames and raw.filenames[0] else "the recording"
    present = sorted(set(raw.annotations.description))
    wanted = {d: i + 1 for i, d in enumerate(event_map) if d in present}
    if not wanted:
        raise ValueError(
            f"None of the events {sorted(event_map)} occurs in {name}; its annotations are "
            f"{present}. Map some of them to class names (e.g. T1=hands)."
        )
    events, _ = mne.events_from_annotations(raw, event_id=wanted, verbose="error")
    code_to_desc = {code: d for d, code in wanted.items()}
    onsets = (events[:, 0] - raw.first_samp).astype(np.int64)
    labels = np.array(
        [class_names.index(event_map[code_to_desc[c]]) for c in events[:, 2]], dtype=np.int64
    )
    order = np.argsort(onsets, kind="stable")
    missing = [c for k, c in enumerate(class_names) if not (labels == k).any()]
    if missing:
        raise ValueError(f"Classes {missing} have no trial in {name}.")
    return Trials(onsets[order], labels[order], class_names, float(raw.info["sfreq"]))
