"""Client-supplied file paths, checked against the data root before anything opens them.

A path in a request (``POST /v1/decode``, a replay or simulator source) is resolved here, at
the HTTP boundary, so that the managers only ever see files inside the data root.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import status

from neurocast.server.errors import ApiError
from neurocast.streaming.sources.specs import ReplaySpec, SimulatorSpec, SourceSpec


def resolve_under_root(root: Path | None, path: str) -> Path:
    """Resolve a client-supplied path that must stay inside the data root.

    Parameters
    ----------
    root : Path | None
        The configured data root (already resolved); None means path access is disabled.
    path : str
        Relative to the root, or absolute but inside it.

    Returns
    -------
    resolved : Path
        The absolute path of an existing file inside ``root``.

    Raises
    ------
    ApiError
        403 when path access is disabled or the path leaves the root (``..``, symlinks,
        absolute paths elsewhere); 404 when the file does not exist.
    """
    if root is None:
        raise ApiError(
            status.HTTP_403_FORBIDDEN,
            "path_access_disabled",
            "This server reads files by path only under a data root, and none is configured: "
            "upload the file instead, or start the server with --data-root / NEUROCAST_DATA_ROOT.",
        )
    if "\0" in path:
        raise ApiError(status.HTTP_400_BAD_REQUEST, "bad_path", "The path contains a NUL byte.")
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root):
        raise ApiError(
            status.HTTP_403_FORBIDDEN,
            "path_outside_data_root",
            f"The path {path!r} resolves outside the data root; give a path relative to the "
            f"data root, without '..' or links leading out of it.",
        )
    if not candidate.is_file():
        raise ApiError(
            status.HTTP_404_NOT_FOUND,
            "file_not_found",
            f"No file {path!r} under the data root.",
        )
    return candidate


def resolve_source(root: Path | None, spec: SourceSpec) -> SourceSpec:
    """The spec with its file paths (replayed file, simulator geometry) resolved under ``root``.

    Raises
    ------
    ApiError
        As :func:`resolve_under_root`.
    """
    if isinstance(spec, ReplaySpec):
        return spec.model_copy(update={"path": str(resolve_under_root(root, spec.path))})
    if isinstance(spec, SimulatorSpec) and spec.info_path is not None:
        resolved = resolve_under_root(root, spec.info_path)
        return spec.model_copy(update={"info_path": str(resolved)})
    return spec
