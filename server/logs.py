"""Keeping tokens out of the service's logs.

Browsers send the WebSocket token as ``?token=...``, and uvicorn writes request lines (its
access log, and the ``WebSocket ... [accepted]`` lines) with the query string. A filter on
uvicorn's loggers and on the handlers of the root logger replaces every ``token=`` value,
and the configured token wherever it appears, with ``***``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_TOKEN_PARAM = re.compile(r"(?i)(token=)[^&\s\"']+")
_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "neurocast")
MASK = "***"


class RedactTokens(logging.Filter):
    """Rewrites a record's message and arguments without tokens; never drops a record.

    Parameters
    ----------
    token : str | None
        The service's token, masked wherever it appears (None: only ``token=`` values).
    """

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = token

    def redact(self, text: str) -> str:
        """``text`` without tokens."""
        text = _TOKEN_PARAM.sub(rf"\g<1>{MASK}", text)
        if self.token:
            text = text.replace(self.token, MASK)
        return text

    def _clean(self, value: Any) -> Any:
        return self.redact(value) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place (arguments one by one: uvicorn's access formatter unpacks them)."""
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._clean(v) for k, v in record.args.items()}
        return True


def redact_logs(token: str | None) -> None:
    """Install :class:`RedactTokens` on uvicorn's and neurocast's loggers and on every handler
    they (and the root logger) have now; replaces the filter of an earlier call."""
    new = RedactTokens(token)
    targets: list[logging.Filterer] = []
    for name in (None, *_LOGGERS):
        log = logging.getLogger(name)
        targets.append(log)
        targets.extend(log.handlers)
    for target in targets:
        for old in [f for f in target.filters if isinstance(f, RedactTokens)]:
            target.removeFilter(old)
        target.addFilter(new)
