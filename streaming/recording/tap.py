"""Where a live stream and its decoded results reach a recorder, while one is attached."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from neurocast.streaming.engine.results import Result
from neurocast.streaming.recording.recorder import SessionRecorder
from neurocast.streaming.sources.base import Chunk, Source, SourceStatus, StreamInfo


class RecordingSource:
    """A source whose chunks (and the results decoded from them) also go to a recorder.

    A recorder can be attached and detached while the source runs (a session's recording is
    started and stopped on request); with none attached the source reads as if unwrapped.

    Parameters
    ----------
    source : Source
        The source to read (unopened).
    recorder : SessionRecorder | None
        A started recorder to attach from the start (None: attach one later).
    raw : bool
        Record the raw stream and its markers; False records only the decoded results.

    Notes
    -----
    Reading costs the source's own read plus :meth:`SessionRecorder.write_chunk` (a copy of
    the chunk). A failed recording never fails the source.
    """

    def __init__(
        self, source: Source, recorder: SessionRecorder | None = None, *, raw: bool = True
    ) -> None:
        self.source = source
        self.recorder: SessionRecorder | None = None
        self.key: str | None = None
        self._raw = raw
        self._outputs: frozenset[str] | None = None
        self._opened = False
        self._lock = threading.Lock()
        if recorder is not None:
            self.attach(recorder, raw=raw)

    @property
    def stream_info(self) -> StreamInfo:
        """The wrapped source's stream."""
        return self.source.stream_info

    @property
    def status(self) -> SourceStatus:
        """The wrapped source's status."""
        return self.source.status

    def open(self) -> StreamInfo:
        """Open the source; declare its stream to an attached recorder."""
        stream = self.source.open()
        with self._lock:
            self._opened = True
            if self.recorder is not None and self._raw and self.key is None:
                self.key = self.recorder.add_stream(stream)
        return stream

    def read(self, timeout: float) -> Chunk | None:
        """Read a chunk from the source and hand a copy to the attached recorder."""
        chunk = self.source.read(timeout)
        recorder, key = self.recorder, self.key
        if chunk is not None and recorder is not None and key is not None:
            recorder.write_chunk(chunk, key)
        return chunk

    def close(self) -> None:
        """Close the source (the recorder is stopped by its owner)."""
        self.source.close()

    def attach(
        self,
        recorder: SessionRecorder,
        *,
        raw: bool = True,
        outputs: Collection[str] | None = None,
    ) -> None:
        """Start handing chunks and results to ``recorder`` (a started one).

        Parameters
        ----------
        recorder : SessionRecorder
            Where to write.
        raw : bool
            Record the raw stream and its markers.
        outputs : collection of str | None
            Result kinds to record (``"probabilities"``, ``"retrieval"``, ...); None: all.

        Raises
        ------
        RuntimeError
            If a recorder is attached already.
        """
        with self._lock:
            if self.recorder is not None:
                raise RuntimeError("A recorder is attached already; detach it first.")
            self._raw = raw
            self.key = (
                recorder.add_stream(self.source.stream_info) if raw and self._opened else None
            )
            self.recorder = recorder

    def detach(self) -> SessionRecorder | None:
        """Stop handing data to the attached recorder and return it (None if none was)."""
        with self._lock:
            recorder, self.recorder, self.key = self.recorder, None, None
        return recorder

    def results_to(self, sink: Callable[[Result], None]) -> Callable[[Result], None]:
        """A result sink that records each result, then hands it on to ``sink``."""

        def record_then(result: Result) -> None:
            recorder, outputs = self.recorder, self._outputs
            if recorder is not None and (outputs is None or result.kind in outputs):
                recorder.write_result(result)
            sink(result)

        return record_then
