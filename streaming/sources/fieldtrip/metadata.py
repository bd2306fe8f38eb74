"""Stream metadata in a FieldTrip buffer header, and markers as buffer events.

A header carries channel names and the sampling rate; neurocast adds an ASCII key/value
chunk (stream name, simulated or not) and, for Neuromag MEG, the whole ``mne.Info`` as a FIF
file in a Neuromag header chunk, as ``neuromag2ft`` provides it. Without a FIF chunk the
channel types are guessed from the channel names.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import mne
from mne.io.constants import FIFF

from neurocast.streaming.sources.base import Marker, StreamInfo
from neurocast.streaming.sources.fieldtrip.events import Event
from neurocast.streaming.sources.fieldtrip.header import Header, HeaderChunk
from neurocast.streaming.sources.fieldtrip.protocol import AUTO_SAMPLE, ChunkType, DataType

logger = logging.getLogger(__name__)

#: Keys of the ASCII key/value header chunk that carry neurocast's stream metadata.
KEY_STREAM_NAME = "neurocast_stream_name"
KEY_SIMULATED = "neurocast_simulated"


_NEUROMAG_COILS = {
    FIFF.FIFFV_COIL_NM_122,
    FIFF.FIFFV_COIL_VV_PLANAR_W,
    FIFF.FIFFV_COIL_VV_PLANAR_T1,
    FIFF.FIFFV_COIL_VV_PLANAR_T2,
    FIFF.FIFFV_COIL_VV_PLANAR_T3,
    FIFF.FIFFV_COIL_VV_MAG_W,
    FIFF.FIFFV_COIL_VV_MAG_T1,
    FIFF.FIFFV_COIL_VV_MAG_T2,
    FIFF.FIFFV_COIL_VV_MAG_T3,
}


def is_neuromag(info: mne.Info) -> bool:
    """True when ``info`` holds Neuromag/MEGIN (VectorView, TRIUX, Neuromag-122) MEG sensors."""
    return any(int(ch["coil_type"]) in _NEUROMAG_COILS for ch in info["chs"])


def _fif_from_info(info: mne.Info) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "header-info.fif"
        mne.io.write_info(path, info, verbose="error")
        return path.read_bytes()


def _info_from_fif(data: bytes) -> mne.Info:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "header-info.fif"
        path.write_bytes(data)
        return mne.io.read_info(path, verbose="error")


def _keyval_chunk(pairs: dict[str, str]) -> HeaderChunk:
    raw = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in pairs.items()) + b"\0"
    return HeaderChunk(ChunkType.ASCII_KEYVAL, raw)


def _keyvals(header: Header) -> dict[str, str]:
    data = header.chunk(ChunkType.ASCII_KEYVAL)
    if data is None:
        return {}
    parts = [p.decode("utf-8", "replace") for p in data.split(b"\0")]
    out = {}
    for k, v in zip(parts[::2], parts[1::2], strict=False):
        if not k:
            break
        out[k] = v
    return out


def header_from_stream_info(
    stream: StreamInfo, data_type: DataType | int = DataType.FLOAT32
) -> Header:
    """The header a writer puts for ``stream``.

    It holds the channel names (chunk 1), an ASCII key/value chunk (4) with the stream name
    and whether it is simulated, and, when the stream has Neuromag MEG sensors, the whole
    ``mne.Info`` as a FIF file in a Neuromag header chunk (8), as ``neuromag2ft`` provides it,
    so readers recover exact channel types, positions and calibration.

    Parameters
    ----------
    stream : StreamInfo
        The stream's metadata.
    data_type : DataType | int
        Type the samples will be sent as (float32 by default).
    """
    chunks = [
        _keyval_chunk(
            {KEY_STREAM_NAME: stream.name, KEY_SIMULATED: "true" if stream.simulated else "false"}
        )
    ]
    if is_neuromag(stream.info):
        chunks.append(HeaderChunk(ChunkType.NEUROMAG_HEADER, _fif_from_info(stream.info)))
    return Header.build(stream.sfreq, data_type, stream.ch_names, chunks=chunks)


@functools.cache
def _montage_names() -> frozenset[str]:
    # MNE 1.13 renamed the 10-05 template; older versions only know the old name
    name = "colin27_1005"
    if name not in mne.channels.get_builtin_montages():
        name = "standard_1005"
    return frozenset(n.lower() for n in mne.channels.make_standard_montage(name).ch_names)


_PREFIX_TYPES = (
    ("EEG", "eeg"),
    ("EOG", "eog"),
    ("ECG", "ecg"),
    ("EKG", "ecg"),
    ("EMG", "emg"),
    ("STI", "stim"),
    ("TRIG", "stim"),
    ("STATUS", "stim"),
    ("RESP", "resp"),
    ("MISC", "misc"),
)


def guess_channel_type(name: str) -> str:
    """MNE channel type from a channel name alone.

    ``MEG`` names ending in 1 are magnetometers and in 2 or 3 gradiometers (Neuromag naming);
    ``EEG``, ``EOG``, ``ECG``/``EKG``, ``EMG``, ``STI``/``TRIG``/``STATUS``, ``RESP`` and
    ``MISC`` prefixes give their types; names of the 10-05 system are EEG; anything else is
    ``misc``.
    """
    key = name.strip().upper()
    if key.startswith("MEG"):
        return "grad" if key[-1:] in ("2", "3") else "mag"
    for prefix, kind in _PREFIX_TYPES:
        if key.startswith(prefix):
            return kind
    return "eeg" if name.strip().lower() in _montage_names() else "misc"


def stream_info_from_header(header: Header, *, source_id: str) -> StreamInfo:
    """Stream metadata from a buffer header.

    The ``mne.Info`` is the one in the Neuromag header chunk when there is one that matches
    the channels; otherwise it is built from the channel names (``CH001``... when the header
    has none) with types from :func:`guess_channel_type`, without sensor positions.

    Parameters
    ----------
    header : Header
        The header read from the buffer.
    source_id : str
        Identifier of the buffer, e.g. ``"fieldtrip://127.0.0.1:1972"``.
    """
    names = header.channel_names or [f"CH{i + 1:03d}" for i in range(header.nchans)]
    info = None
    fif = header.neuromag_header
    if fif is not None:
        try:
            info = _info_from_fif(fif)
        except Exception as exc:  # a foreign FIF we cannot read: fall back to the names
            logger.warning("Ignoring the unreadable Neuromag header chunk (%s).", exc)
        listed = header.channel_names
        if info is not None and (
            info["nchan"] != header.nchans or (listed is not None and info["ch_names"] != listed)
        ):
            logger.warning(
                "The Neuromag header chunk describes other channels (%d) than the header (%d "
                "channels); building the channel info from the names instead.",
                info["nchan"],
                header.nchans,
            )
            info = None
    if info is None:
        info = mne.create_info(names, header.fsample, [guess_channel_type(n) for n in names])
    keys = _keyvals(header)
    return StreamInfo(
        name=keys.get(KEY_STREAM_NAME, f"FieldTrip buffer {source_id}"),
        info=info,
        simulated=keys.get(KEY_SIMULATED, "false") == "true",
        source_id=source_id,
    )


def marker_to_event(marker: Marker, sample: int = AUTO_SAMPLE) -> Event:
    """A buffer event for a marker: ``"type/value"`` text is split at the first ``/``
    (``"image/42"`` gives type ``"image"`` and value ``"42"``; text without ``/`` gives an
    empty type)."""
    kind, sep, value = marker.value.partition("/")
    return Event(kind, value, sample) if sep else Event("", marker.value, sample)


def event_to_marker(event: Event, timestamp: float) -> Marker:
    """A marker for a buffer event at ``timestamp`` seconds (see :attr:`Event.label`)."""
    return Marker(timestamp, event.label)
