"""Session recordings: XDF files of a session's raw stream, markers and decoded outputs.

A recording is started on a running session (or at its creation with ``"record": true``) and
stopped on request, when the session is deleted and when the server shuts down (the footers
are written then). Files and their descriptions live under ``<state_dir>/recordings``, so they
are listed and downloadable after a restart; a recording that a killed server left open is
listed as ``stopped`` with the reason, and pyxdf reads it up to its last flush (at least every
second).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neurocast.server.exceptions import InvalidInput, NotFound, NotReady
from neurocast.streaming.recording.recorder import SessionRecorder
from neurocast.streaming.recording.tap import RecordingSource
from neurocast.wire.recordings import RecordingCreate, RecordingStatus

logger = logging.getLogger(__name__)

_INTERRUPTED = (
    "The server stopped before the recording was stopped; the file is readable up to its "
    "last flush (at most about a second before)."
)


def _log_failure(recording_id: str) -> Callable[[str], None]:
    def log(reason: str) -> None:
        logger.warning("Recording %s failed: %s", recording_id, reason)

    return log


@dataclass
class _Active:
    status: RecordingStatus
    recorder: SessionRecorder
    tap: RecordingSource


class RecordingManager:
    """Starts, stops and lists recordings; keeps their descriptions beside the files.

    Parameters
    ----------
    state_dir : Path
        The server's data directory; recordings go to its ``recordings`` folder.
    """

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "recordings"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}  # by session id
        self._done: dict[str, RecordingStatus] = {}  # by recording id
        self._load()

    # ------------------------------------------------------------------ on disk

    def _meta_path(self, recording_id: str) -> Path:
        return self.directory / f"{recording_id}.json"

    def file(self, recording_id: str) -> Path:
        """The XDF file of a recording (it may still be growing).

        Raises
        ------
        NotFound
            For an unknown id, or when its file was removed.
        """
        self.status(recording_id)
        path = self.directory / f"{recording_id}.xdf"
        if not path.is_file():
            raise NotFound("unknown_recording", f"The file of recording {recording_id!r} is gone.")
        return path

    def _save(self, status: RecordingStatus) -> None:
        tmp = self._meta_path(status.id).with_suffix(".tmp")
        tmp.write_text(status.model_dump_json())
        tmp.replace(self._meta_path(status.id))

    def _load(self) -> None:
        for meta in sorted(self.directory.glob("*.json")):
            try:
                status = RecordingStatus.model_validate_json(meta.read_text())
            except ValueError as exc:
                logger.warning("Unreadable recording description %s: %s", meta, exc)
                continue
            if status.state == "recording":  # the previous run ended without stopping it
                path = self.directory / f"{status.id}.xdf"
                size = path.stat().st_size if path.is_file() else 0
                status = status.model_copy(
                    update={"state": "stopped", "reason": _INTERRUPTED, "bytes_written": size}
                )
                self._save(status)
            self._done[status.id] = status

    # ------------------------------------------------------------------ control

    def start(
        self,
        session_id: str,
        tap: RecordingSource | None,
        options: RecordingCreate,
        models: list[str],
    ) -> RecordingStatus:
        """Start recording a session through its tap.

        Raises
        ------
        NotReady
            When the session is being recorded already.
        InvalidInput
            When the file cannot be created (the reason says why), or the session decodes on
            a Ray cluster (``tap`` is None: its stream never reaches this process).
        """
        if tap is None:
            raise InvalidInput(
                "recording_unsupported",
                f"Session {session_id!r} decodes in a Ray actor, so its stream never reaches "
                "this server; record it where it is acquired (neurocast record SOURCE --out "
                "FILE.xdf) or run it without --ray.",
            )
        with self._lock:
            if session_id in self._active:
                current = self._active[session_id].status.id
                raise NotReady(
                    "already_recording",
                    f"Session {session_id!r} is being recorded already (recording {current!r}); "
                    f"stop it with DELETE /v1/sessions/{session_id}/recording first.",
                )
            recording_id = uuid.uuid4().hex[:12]
            path = self.directory / f"{recording_id}.xdf"
            recorder = SessionRecorder(
                path,
                header={
                    "session": session_id,
                    "recording": recording_id,
                    "models": ",".join(models),
                },
                on_failure=lambda reason: logger.warning(
                    "Recording %s failed: %s", recording_id, reason
                ),
            )
            try:
                recorder.start()
            except OSError as exc:
                raise InvalidInput(
                    "recording_failed", f"Cannot create the recording file {path.name}: {exc}"
                ) from exc
            status = RecordingStatus(
                id=recording_id,
                session_id=session_id,
                state="recording",
                started_at=time.time(),
                raw=options.raw,
                outputs=options.outputs,
                bytes_written=0,
                n_samples=0,
                n_samples_durable=0,
                n_results=0,
                download=f"/v1/recordings/{recording_id}",
            )
            tap.attach(recorder, raw=options.raw, outputs=options.outputs)
            self._active[session_id] = _Active(status, recorder, tap)
            self._save(status)
        return self._current(self._active[session_id])

    def stop(self, session_id: str) -> RecordingStatus:
        """Stop a session's recording: detach it, write the footers, close the file.

        Raises
        ------
        NotFound
            When the session is not being recorded.
        """
        with self._lock:
            active = self._active.pop(session_id, None)
        if active is None:
            raise NotFound(
                "not_recording",
                f"Session {session_id!r} is not being recorded; start with "
                f"POST /v1/sessions/{session_id}/recording.",
            )
        active.tap.detach()
        active.recorder.stop()
        status = self._current(active).model_copy(update={"stopped_at": time.time()})
        with self._lock:
            self._done[status.id] = status
        self._save(status)
        return status

    def stop_if_recording(self, session_id: str) -> RecordingStatus | None:
        """:meth:`stop` when the session is being recorded, else None."""
        try:
            return self.stop(session_id)
        except NotFound:
            return None

    def shutdown(self) -> None:
        """Stop every recording (footers written)."""
        for session_id in list(self._active):
            self.stop_if_recording(session_id)

    # ------------------------------------------------------------------ listing

    @staticmethod
    def _current(active: _Active) -> RecordingStatus:
        rec = active.recorder.status
        state = rec.state if rec.state in ("recording", "stopped", "failed") else "recording"
        return active.status.model_copy(
            update={
                "state": state,
                "reason": rec.reason,
                "bytes_written": rec.bytes_written,
                "n_samples": rec.n_samples,
                "n_samples_durable": rec.n_samples_durable,
                "n_results": rec.n_results,
            }
        )

    def statuses(self) -> list[RecordingStatus]:
        """Every recording, oldest first."""
        with self._lock:
            out = [self._current(a) for a in self._active.values()] + list(self._done.values())
        return sorted(out, key=lambda s: s.started_at)

    def status(self, recording_id: str) -> RecordingStatus:
        """One recording.

        Raises
        ------
        NotFound
            For an unknown id.
        """
        with self._lock:
            for active in self._active.values():
                if active.status.id == recording_id:
                    return self._current(active)
            if recording_id in self._done:
                return self._done[recording_id]
        raise NotFound.unknown("recording", recording_id, "/v1/recordings")
