"""What the service's managers refuse, free of HTTP.

The registry, the session manager and the job manager raise these; the application maps each
class to an HTTP status in one place (:mod:`neurocast.server.errors`). Every error carries a
stable machine-readable ``code`` and a ``detail`` saying what to do about it.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors a request can run into.

    Parameters
    ----------
    code : str
        Machine-readable error code (``ErrorResponse.code``).
    detail : str
        What went wrong and what to do about it.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotFound(ServiceError):
    """No session, job, model or gallery image with the id a request names."""

    @classmethod
    def unknown(cls, what: str, ident: str, listing: str) -> NotFound:
        """``unknown_<what>``, pointing at the route that lists them."""
        return cls(f"unknown_{what}", f"No {what} with id {ident!r}; list them with GET {listing}.")


class InvalidInput(ServiceError):
    """A request the service cannot act on: an unknown model, an unreadable file, a source
    that cannot be built."""


class LimitReached(ServiceError):
    """A configured limit (sessions at once) would be exceeded."""


class Busy(LimitReached):
    """A queue is full for now; the request may succeed later.

    Parameters
    ----------
    code, detail : str
        As :class:`ServiceError`.
    retry_after_s : int
        Seconds after which trying again is likely to succeed.
    """

    def __init__(self, code: str, detail: str, retry_after_s: int) -> None:
        super().__init__(code, detail)
        self.retry_after_s = retry_after_s


class NotReady(ServiceError):
    """The resource exists but is not in a state that allows this (a job still running)."""
