"""Record a session to XDF: raw streams, markers, decoded outputs and clock offsets.

:class:`SessionRecorder` is the service a session (or ``neurocast record``) drives: ``start()``,
then ``add_stream()`` for each source stream, ``write_chunk()`` for every chunk and
``write_result()`` for every decoded result (from any thread, never blocking on the disk),
then ``stop()``. A writer thread owns the file: it serialises what was handed to it and makes
it durable (``fsync``) every ``flush_interval_s`` seconds, so a process killed at any moment
leaves a file that pyxdf reads up to the last flush.

What the file holds
-------------------
- every raw stream (type ``MEG`` when it has MEG channels, else ``EEG``) with each sample's
  original source-clock timestamp, values in SI units (volts, tesla, tesla/metre) and the
  channels' label, MNE type, unit and position (millimetres, XDF convention) plus MNE's coil
  type and full ``loc`` vector, so that an MNE ``Info`` can be rebuilt;
- one string marker stream per raw stream (``<name>-markers``, type ``Markers``);
- one irregular stream per model and result kind: ``probabilities`` as float32 (one channel
  per class), ``retrieval`` as JSON strings of the top-k images (or of the embedding when no
  gallery is attached), ``embedding`` as float32, and ``translation`` as a float32 signal
  stream at the model's output rate (each result adds only the samples newer than the
  previous one, since consecutive windows overlap);
- ClockOffset chunks for each stream from the chunks' (results') ``clock_offset`` (LSL's
  ``time_correction``): one when recording starts, one whenever the offset changes and at
  least one every ``clock_offset_interval_s`` seconds of stream time.

Failure
-------
A failed write (disk full, file size limit, I/O error) stops the recording: the status turns
``failed`` with a reason that names the error and how much of the file is readable, further
``write_*`` calls return False, and the caller goes on (decoding is never stopped by the
recorder). The file is cut back to its last complete batch. The same happens when the disk
cannot keep up and more than ``max_pending_bytes`` wait to be written.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.engine.results import Result
from neurocast.streaming.recording.content import OUTPUT_TYPES, channel_meta, prepare_result
from neurocast.streaming.recording.xdf import ChannelFormat, XDFWriter
from neurocast.streaming.sources.base import (
    Chunk,
    Marker,
    StreamInfo,
    local_clock,
)

logger = logging.getLogger(__name__)

RecorderState = Literal["idle", "recording", "stopped", "failed"]

_BATCH_BYTES = 16 * 2**20  # flush early when this much is serialised, to bound memory


@dataclass(frozen=True)
class RecorderStatus:
    """Where a recording stands.

    Attributes
    ----------
    state : str
        ``"idle"`` (not started), ``"recording"``, ``"stopped"`` (closed cleanly, footers
        written) or ``"failed"`` (see ``reason``).
    path : str
        The XDF file.
    reason : str | None
        Why the recording failed, for users; None otherwise.
    bytes_written : int
        Bytes durably in the file (complete chunks only).
    n_samples : int
        Raw samples handed to the recorder.
    n_samples_durable : int
        Raw samples in the file and synced to disk (what survives a crash).
    n_results : int
        Decoded results handed to the recorder.
    duration_s : float
        Local-clock seconds since :meth:`SessionRecorder.start`.
    writer_cpu_s : float
        CPU time the writer thread has used, in seconds.
    """

    state: RecorderState
    path: str
    reason: str | None
    bytes_written: int
    n_samples: int
    n_samples_durable: int
    n_results: int
    duration_s: float
    writer_cpu_s: float


@dataclass
class _RawStream:
    data_id: int
    marker_id: int
    last_offset: float | None = None
    last_offset_time: float = -np.inf


@dataclass
class _OutputStream:
    stream_id: int
    last_offset: float | None = None
    last_offset_time: float = -np.inf
    last_timestamp: float = -np.inf


@dataclass
class _Item:
    """One thing for the writer thread, prepared in the caller's thread."""

    what: Literal["stream", "chunk", "result"]
    key: str
    nbytes: int
    stream: StreamInfo | None = None
    fmt: ChannelFormat = "float32"
    timestamps: NDArray[np.float64] | None = None
    values: Any = None
    clock_offset: float = 0.0
    markers: list[Marker] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


class SessionRecorder:
    """Record raw streams, markers and decoded results of a session to one XDF file.

    Parameters
    ----------
    path : str | Path
        The XDF file to create.
    overwrite : bool
        Replace an existing file (default: refuse with FileExistsError at :meth:`start`).
    flush_interval_s : float
        Longest time, in seconds, between a write call and its data being durable (fsync).
    boundary_interval_s : float
        A Boundary chunk is written about this often (readers resynchronise on them).
    clock_offset_interval_s : float
        A ClockOffset chunk per stream at least this often, in seconds of stream time.
    max_pending_bytes : int
        When more than this waits to be written (the disk cannot keep up), the recording
        fails rather than using unbounded memory.
    on_failure : callable | None
        Called once, from the writer thread, with the reason when the recording fails.
    header : dict | None
        Extra file header fields (text), e.g. ``{"session": "abc"}``.

    Notes
    -----
    Thread-safe: every public method may be called from any thread. ``write_chunk`` and
    ``write_result`` copy what they need and return at once (microseconds); the disk is only
    touched by the writer thread. Items are written in the order the calls were made.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        flush_interval_s: float = 0.5,
        boundary_interval_s: float = 10.0,
        clock_offset_interval_s: float = 5.0,
        max_pending_bytes: int = 256 * 2**20,
        on_failure: Callable[[str], None] | None = None,
        header: dict[str, str] | None = None,
    ) -> None:
        if not 0 < flush_interval_s <= 1.0:
            raise ValueError(f"flush_interval_s must be in (0, 1], got {flush_interval_s}.")
        self.path = Path(path)
        self.overwrite = overwrite
        self.flush_interval_s = flush_interval_s
        self.boundary_interval_s = boundary_interval_s
        self.clock_offset_interval_s = clock_offset_interval_s
        self.max_pending_bytes = max_pending_bytes
        self.on_failure = on_failure
        self.header = dict(header or {})
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._state: RecorderState = "idle"
        self._reason: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._writer: XDFWriter | None = None
        self._bytes_written = 0
        self._n_samples = 0
        self._n_durable = 0
        self._n_serialised = 0  # raw samples serialised but not yet flushed (writer thread)
        self._n_results = 0
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._cpu_s = 0.0
        self._keys: set[str] = set()
        # owned by the writer thread
        self._raw: dict[str, _RawStream] = {}
        self._outputs: dict[tuple[str, str, int], _OutputStream] = {}

    def start(self) -> None:
        """Create the file, write its header and start the writer thread.

        Raises
        ------
        FileExistsError
            If the file exists and ``overwrite`` is False.
        OSError
            If the file cannot be created.
        RuntimeError
            If the recorder was started before.
        """
        with self._cond:
            if self._state != "idle":
                raise RuntimeError(f"The recorder of {self.path} was already started.")
            header = {"recorder": "neurocast", **self.header}
            self._writer = XDFWriter(self.path, overwrite=self.overwrite, header=header)
            self._bytes_written = self._writer.bytes_written
            self._state = "recording"
            self._started_at = local_clock()
            self._thread = threading.Thread(
                target=self._run, name="neurocast-recorder", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> RecorderStatus:
        """Write what is queued, the stream footers and a final boundary, and close the file.

        Safe to call more than once and after a failure (then it only reports the status).

        Parameters
        ----------
        timeout : float
            Longest wait for the writer thread, in seconds.

        Returns
        -------
        status : RecorderStatus
            The final status (``"stopped"`` or ``"failed"``).
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "The recorder of %s did not finish within %.0f s.", self.path, timeout
                )
        return self.status

    def __enter__(self) -> SessionRecorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def status(self) -> RecorderStatus:
        """The current status (cheap; any thread)."""
        with self._cond:
            end = self._stopped_at if self._stopped_at is not None else local_clock()
            return RecorderStatus(
                state=self._state,
                path=str(self.path),
                reason=self._reason,
                bytes_written=self._bytes_written,
                n_samples=self._n_samples,
                n_samples_durable=self._n_durable,
                n_results=self._n_results,
                duration_s=0.0 if self._started_at is None else end - self._started_at,
                writer_cpu_s=self._cpu_s,
            )

    @property
    def recording(self) -> bool:
        """True while writes are accepted."""
        return self._state == "recording" and not self._stopping

    # ------------------------------------------------------------------ writes

    def add_stream(
        self,
        stream: StreamInfo,
        *,
        key: str | None = None,
        channel_format: ChannelFormat = "float32",
    ) -> str:
        """Declare a raw stream (and its marker stream).

        Parameters
        ----------
        stream : StreamInfo
            The source's description: channels, types, units, positions, rate.
        key : str | None
            Name to pass to :meth:`write_chunk` (default: the stream's source id or name,
            made unique).
        channel_format : str
            Sample format in the file: ``float32`` (default; 24-bit precision) or
            ``double64``.

        Returns
        -------
        key : str
            The key of this stream.
        """
        with self._cond:
            base = key or stream.source_id or stream.name
            key = base
            k = 1
            while key in self._keys:
                k += 1
                key = f"{base}#{k}"
            self._keys.add(key)
            self._enqueue(_Item("stream", key, 0, stream=stream, fmt=channel_format))
        return key

    def write_chunk(self, chunk: Chunk, key: str | None = None) -> bool:
        """Queue a chunk of a raw stream (samples, timestamps, clock offset, markers).

        Parameters
        ----------
        chunk : Chunk
            As the source delivered it; its arrays are copied.
        key : str | None
            From :meth:`add_stream`; may be omitted when there is exactly one raw stream.

        Returns
        -------
        accepted : bool
            False when the recorder is not recording (stopped, failed or not started).
        """
        data = np.array(chunk.data, copy=True)
        ts = np.array(chunk.timestamps, dtype=np.float64, copy=True)
        item = _Item(
            "chunk",
            key or "",
            data.nbytes + ts.nbytes,
            timestamps=ts,
            values=data,
            clock_offset=float(chunk.clock_offset),
            markers=list(chunk.markers),
        )
        with self._cond:
            if item.key == "":
                if len(self._keys) != 1:
                    raise ValueError("Name the stream: the recorder has several (or none).")
                item.key = next(iter(self._keys))
            elif item.key not in self._keys:
                raise KeyError(f"No recorded stream {item.key!r}; call add_stream() first.")
            accepted = self._enqueue(item)
            if accepted:
                self._n_samples += ts.size
            return accepted

    def write_result(self, result: Result) -> bool:
        """Queue a decoded result as a sample of its model's output stream.

        Returns
        -------
        accepted : bool
            False when the recorder is not recording, or the result's kind is unknown.
        """
        prepared = prepare_result(result)
        if prepared is None:
            return False
        nbytes = int(getattr(prepared.get("values"), "nbytes", 256))
        item = _Item("result", result.model, nbytes, result=prepared)
        with self._cond:
            accepted = self._enqueue(item)
            if accepted:
                self._n_results += 1
            return accepted

    def _enqueue(self, item: _Item) -> bool:
        """Append under the lock; fails the recording when too much waits."""
        if self._state != "recording" or self._stopping:
            return False
        pending = self._queued_bytes + (self._writer.pending_bytes if self._writer else 0)
        if pending + item.nbytes > self.max_pending_bytes:
            self._fail_locked(
                f"the disk could not keep up: more than {self.max_pending_bytes / 2**20:.0f} MiB "
                f"waited to be written to {self.path}; the file is readable up to byte "
                f"{self._bytes_written}"
            )
            return False
        self._queue.append(item)
        self._queued_bytes += item.nbytes
        self._cond.notify()
        return True

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        writer = self._writer
        assert writer is not None
        cpu0 = time.thread_time()
        next_flush = time.monotonic() + self.flush_interval_s
        next_boundary = time.monotonic() + self.boundary_interval_s
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping and self._state == "recording":
                        wait = next_flush - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    if self._state != "recording":
                        return
                    items = list(self._queue)
                    self._queue.clear()
                    self._queued_bytes = 0
                    stopping = self._stopping
                for item in items:
                    self._serialise(writer, item)
                now = time.monotonic()
                if stopping:
                    writer.close()
                    with self._cond:
                        self._n_durable += self._n_serialised
                        self._n_serialised = 0
                        self._bytes_written = writer.bytes_written
                        self._state = "stopped"
                        self._stopped_at = local_clock()
                    return
                if now >= next_flush or writer.pending_bytes > _BATCH_BYTES:
                    if writer.pending_bytes:
                        if now >= next_boundary:
                            # boundaries only at the end of a batch (see xdf.py, Durability)
                            writer.write_boundary()
                            next_boundary = now + self.boundary_interval_s
                        writer.flush()
                    next_flush = now + self.flush_interval_s
                    with self._cond:
                        self._n_durable += self._n_serialised
                        self._n_serialised = 0
                        self._bytes_written = writer.bytes_written
                        self._cpu_s = time.thread_time() - cpu0
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, "error")
            why = {
                errno.ENOSPC: "the disk is full",
                errno.EFBIG: "the file size limit was reached",
                errno.EDQUOT: "the disk quota is exhausted",
            }.get(exc.errno or 0, exc.strerror or str(exc))
            with self._cond:
                self._fail_locked(
                    f"{why} ({name}) while writing {self.path}; the file is readable up to "
                    f"byte {writer.bytes_written}"
                )
            writer.abandon()
        except Exception as exc:  # a bug must not take the session down with it
            logger.exception("The recorder of %s failed", self.path)
            with self._cond:
                self._fail_locked(f"{type(exc).__name__}: {exc}")
            writer.abandon()
        finally:
            if not writer.closed:  # failed from another thread (the disk could not keep up)
                writer.abandon()
            with self._cond:
                self._cpu_s = time.thread_time() - cpu0
                if writer.closed and self._state == "failed":
                    self._bytes_written = writer.bytes_written
                if self._stopped_at is None:
                    self._stopped_at = local_clock()
            self._notify_failure()

    def _fail_locked(self, reason: str) -> None:
        if self._state != "recording":
            return
        self._state = "failed"
        self._reason = f"Recording stopped: {reason}."
        self._queue.clear()
        self._queued_bytes = 0
        self._cond.notify_all()
        logger.error("%s", self._reason)

    def _notify_failure(self) -> None:
        if self._state == "failed" and self.on_failure is not None:
            try:
                self.on_failure(self._reason or "")
            except Exception:
                logger.exception("on_failure callback of the recorder failed")

    def _serialise(self, writer: XDFWriter, item: _Item) -> None:
        try:
            if item.what == "stream":
                assert item.stream is not None
                self._raw[item.key] = self._add_raw(writer, item.stream, item.fmt)
            elif item.what == "chunk":
                self._write_chunk(writer, item)
            else:
                self._write_result(writer, item.result)
        except (ValueError, TypeError, KeyError) as exc:
            # a malformed chunk or result is left out; the recording goes on
            logger.warning("Not recorded (%s): %s", item.what, exc)

    @staticmethod
    def _add_raw(writer: XDFWriter, stream: StreamInfo, fmt: ChannelFormat) -> _RawStream:
        info = stream.info
        types = info.get_channel_types()
        channels = [channel_meta(ch, t) for ch, t in zip(info["chs"], types, strict=True)]
        desc: dict[str, object] = {}
        if stream.simulated:
            desc["simulated"] = "true"
        if info.get("description"):
            desc["description"] = str(info["description"])
        dev_head_t = info.get("dev_head_t")
        if dev_head_t is not None:
            desc["dev_head_t"] = " ".join(repr(float(v)) for v in dev_head_t["trans"].ravel())
        stream_type = "MEG" if any(t in ("mag", "grad") for t in types) else "EEG"
        data_id = writer.add_stream(
            name=stream.name,
            type=stream_type,
            channel_count=len(channels),
            nominal_srate=stream.sfreq,
            channel_format=fmt,
            source_id=stream.source_id,
            channels=channels,
            desc=desc,
        )
        marker_id = writer.add_stream(
            name=f"{stream.name}-markers",
            type="Markers",
            channel_count=1,
            nominal_srate=0.0,
            channel_format="string",
            source_id=f"{stream.source_id or stream.name}-markers",
            desc={"simulated": "true"} if stream.simulated else None,
        )
        return _RawStream(data_id, marker_id)

    def _write_chunk(self, writer: XDFWriter, item: _Item) -> None:
        raw = self._raw[item.key]
        ts = item.timestamps
        assert ts is not None
        if ts.size == 0 and not item.markers:
            return
        collection = float(ts[-1]) if ts.size else item.markers[-1].timestamp
        if self._offset_due(raw, item.clock_offset, collection):
            for sid in (raw.data_id, raw.marker_id):
                writer.write_clock_offset(sid, collection, item.clock_offset)
            raw.last_offset, raw.last_offset_time = item.clock_offset, collection
        if ts.size:
            writer.write_samples(raw.data_id, ts, item.values)
            self._n_serialised += ts.size
        if item.markers:
            stamps = [m.timestamp for m in item.markers]
            writer.write_samples(raw.marker_id, stamps, [[m.value] for m in item.markers])

    def _offset_due(self, s: _RawStream | _OutputStream, offset: float, t: float) -> bool:
        return (
            s.last_offset is None
            or offset != s.last_offset
            or t - s.last_offset_time >= self.clock_offset_interval_s
        )

    def _write_result(self, writer: XDFWriter, r: dict[str, Any]) -> None:
        key = (r["model"], r["kind"], r["n_channels"])
        out = self._outputs.get(key)
        if out is None:
            out = _OutputStream(
                writer.add_stream(
                    name=f"{r['model']}-{r['kind']}",
                    type=OUTPUT_TYPES[r["kind"]],
                    channel_count=r["n_channels"],
                    nominal_srate=r["srate"],
                    channel_format=r["fmt"],
                    source_id=f"neurocast-model:{r['model']}:{r['kind']}",
                    channels=r["channels"],
                    desc={"model": r["model"], "kind": r["kind"], **r["desc"]},
                )
            )
            self._outputs[key] = out
        ts: NDArray[np.float64] = r["timestamps"]
        values = r["values"]
        if r["kind"] == "translation":
            # consecutive windows overlap: keep only samples after the last one written
            keep = ts > out.last_timestamp + 0.5 / r["srate"]
            ts = ts[keep]
            values = values[keep]
            if ts.size == 0:
                return
        if self._offset_due(out, r["clock_offset"], float(ts[-1])):
            writer.write_clock_offset(out.stream_id, float(ts[-1]), r["clock_offset"])
            out.last_offset, out.last_offset_time = r["clock_offset"], float(ts[-1])
        writer.write_samples(out.stream_id, ts, values)
        out.last_timestamp = float(ts[-1])
