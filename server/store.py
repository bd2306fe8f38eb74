"""What the service keeps on disk so that a restart loses as little as possible.

Under the state directory (``NEUROCAST_STATE_DIR``)::

    jobs/<job id>/job.json           the job's status and what it decodes
    jobs/<job id>/results.<format>   a finished job's results (json, npz, parquet)
    sessions/<session id>.json       a live session's definition (what the client asked for)

Every file is written to a temporary name and renamed into place, so a crash (``kill -9``)
leaves either the previous or the new version, never half a file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None (logged) when it is missing or unreadable."""
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable state file %s: %s", path.name, exc)
        return None
    return value if isinstance(value, dict) else None


class StateStore:
    """The state directory: job folders and session definitions.

    Parameters
    ----------
    root : Path
        The state directory; created when missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs = root / "jobs"
        self.sessions = root / "sessions"
        for folder in (self.jobs, self.sessions):
            folder.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------- jobs

    def job_dir(self, job_id: str) -> Path:
        """The folder of one job."""
        return self.jobs / job_id

    def save_job(self, job_id: str, record: dict[str, Any]) -> None:
        """Write a job's record (its status and definition)."""
        write_atomic(self.job_dir(job_id) / "job.json", json.dumps(record).encode())

    def load_jobs(self) -> list[dict[str, Any]]:
        """Every job record found, oldest first."""
        records = []
        for folder in self.jobs.iterdir():
            record = read_json(folder / "job.json") if folder.is_dir() else None
            if record is not None and record.get("id") == folder.name:
                records.append(record)
        return sorted(records, key=lambda r: float(r.get("created_at", 0.0)))

    def forget_job(self, job_id: str) -> None:
        """Remove a job's folder and its results."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # --------------------------------------------------------------------------- sessions

    def save_session(self, session_id: str, definition: dict[str, Any]) -> None:
        """Write a session's definition."""
        write_atomic(self.sessions / f"{session_id}.json", json.dumps(definition).encode())

    def load_sessions(self) -> list[dict[str, Any]]:
        """Every session definition found, oldest first."""
        found = (read_json(p) for p in self.sessions.glob("*.json"))
        records = [r for r in found if r is not None and "id" in r and "request" in r]
        return sorted(records, key=lambda r: float(r.get("created_at", 0.0)))

    def forget_session(self, session_id: str) -> None:
        """Remove a session's definition (it was deleted)."""
        (self.sessions / f"{session_id}.json").unlink(missing_ok=True)
