"""Errors the service turns into clear 4xx responses, and path checks under the data root."""

from __future__ import annotations

from pathlib import Path

from fastapi import status


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message saying what to do.

    Parameters
    ----------
    status_code : int
        HTTP status of the response.
    code : str
        Machine-readable error code (``ErrorResponse.code``).
    detail : str
        What went wrong and what to do about it.
    """

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail


def not_found(what: str, ident: str, listing: str) -> ApiError:
    """A 404 for an unknown ``what`` (session, job, model), pointing at where to list them."""
    return ApiError(
        status.HTTP_404_NOT_FOUND,
        f"unknown_{what}",
        f"No {what} with id {ident!r}; list them with GET {listing}.",
    )


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
