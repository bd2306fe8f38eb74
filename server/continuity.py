"""What a session tells its clients about interruptions: a restart, a source gone quiet.

* After a server restart a session starts again from its saved definition; the stream then
  has a gap, so its results carry the issue :data:`RESTARTED_ISSUE` until one of each model
  has gone out while a client was subscribed (clients reconnect after the restart, and the
  first results they see must tell them of the gap).
* A source that has delivered nothing for longer than ``NEUROCAST_SOURCE_LOST_AFTER_S``
  keeps the session ``stalled`` (it is still waited for) with a reason in ``error``.
* A stream's ``source_id`` that is a file path is shown relative to the data root, so that
  responses never carry the server's folders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import local_clock
from neurocast.streaming.sources.specs import FieldTripSpec, LSLSpec, SourceSpec

#: The issue on the first result of each model after the session was restarted.
RESTARTED_ISSUE = "restarted"


class RestartMark:
    """A result sink adding :data:`RESTARTED_ISSUE` to each model's results until one of them
    went out while a client was listening.

    Parameters
    ----------
    sink : callable
        Where the results go on to (called from the decode thread).
    listening : callable
        True while at least one client is subscribed.
    """

    def __init__(self, sink: Callable[[Result], None], listening: Callable[[], bool]) -> None:
        self.sink = sink
        self.listening = listening
        self._told: set[str] = set()

    def __call__(self, result: Result) -> None:
        """Mark the result unless its model's gap was already told, then pass it on."""
        if result.model not in self._told:
            if self.listening():
                self._told.add(result.model)
            result.issues = [*result.issues, RESTARTED_ISSUE]
        self.sink(result)


class StallWatch:
    """How long a source has been stalled, and why the session says so once it is too long.

    Parameters
    ----------
    source : SourceSpec
        What the session reads (for the wording of the reason).
    lost_after_s : float
        Seconds of silence after which :meth:`update` returns a reason.
    """

    def __init__(self, source: SourceSpec, lost_after_s: float) -> None:
        self.source = source
        self.lost_after_s = lost_after_s
        self._since: float | None = None

    def update(self, stalled: bool) -> str | None:
        """Note whether the source is stalled now; the reason to show, if any."""
        if not stalled:
            self._since = None
            return None
        now = local_clock()
        if self._since is None:
            self._since = now
        silent = now - self._since
        if silent < self.lost_after_s:
            return None
        return (
            f"No samples from {_describe(self.source)} for {silent:.0f} s; the session keeps "
            "waiting and resumes when the source delivers again. Check that the device or its "
            "streaming program is running, or delete the session."
        )


def _describe(source: SourceSpec) -> str:
    if isinstance(source, LSLSpec):
        wanted = {"name": source.name, "type": source.type, "source_id": source.source_id}
        given = ", ".join(f"{k} {v!r}" for k, v in wanted.items() if v is not None)
        return f"the LSL stream ({given})"
    if isinstance(source, FieldTripSpec):
        return f"the FieldTrip buffer at {source.host}:{source.port}"
    return f"the {source.kind} source"


def public_source_id(source_id: str, data_root: Path | None) -> str:
    """``source_id`` as clients may see it.

    A path (alone or after a ``kind:`` prefix, as in ``replay:/data/sub-01_raw.fif``) under
    the data root becomes relative to it; any other absolute path is cut to its file name.
    """
    prefix, sep, rest = source_id.partition(":")
    if sep and rest.startswith("//"):  # a URL (fieldtrip://host:port), not a path
        return source_id
    if sep and Path(rest).is_absolute():
        return f"{prefix}:{_public_path(Path(rest), data_root)}"
    if Path(source_id).is_absolute():
        return _public_path(Path(source_id), data_root)
    return source_id


# an absolute path: a slash not after a word character, a dot, a slash or a colon (which
# leaves URLs such as fieldtrip://host:port alone)
_ABSOLUTE_PATH = re.compile(r"(?<![\w./:])/(?:[^\s'\"/:,;()]+/)*[^\s'\"/:,;()]+")


def public_text(text: str | None, data_root: Path | None) -> str | None:
    """A message as clients may see it: every absolute path in it relative to the data root,
    or cut to its file name (sources and readers name files as they were given them, which
    on the server are absolute paths)."""
    if text is None:
        return None
    return _ABSOLUTE_PATH.sub(lambda m: _public_path(Path(m.group(0)), data_root), text)


def _public_path(path: Path, data_root: Path | None) -> str:
    if data_root is not None and path.is_relative_to(data_root):
        return path.relative_to(data_root).as_posix()
    return path.name
