"""Requests paired with the reply they expect and its parser.

:class:`Operation` lets the asyncio client, the blocking connection and the source share one
definition of each command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from numpy.typing import ArrayLike, NDArray

from neurocast.streaming.sources.fieldtrip.events import Event, pack_events, parse_events
from neurocast.streaming.sources.fieldtrip.header import Header, pack_header, parse_header
from neurocast.streaming.sources.fieldtrip.protocol import (
    NORESPONSE,
    REPLIES,
    UNTIL_NEWEST,
    ByteOrder,
    Command,
    Counts,
    FieldTripRequestError,
    MessageDef,
    pack_data,
    pack_message,
    pack_selection,
    pack_wait_request,
    parse_counts,
    parse_data,
    protocol_error,
)

T = TypeVar("T")


def _no_payload(body: bytes, order: ByteOrder) -> None:
    return None


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One request, the reply it expects and how to read that reply.

    Attributes
    ----------
    command : Command
        The request code.
    body : bytes
        The request payload, native byte order.
    parse : callable
        ``parse(reply_body, reply_order)`` gives the result.
    idempotent : bool
        Repeating it on a new connection cannot change the buffer (safe to retry after a
        dropped connection).
    wait_s : float
        How long the server may legitimately take before answering (WAIT_DAT's timeout).
    refused : str
        What an error reply most likely means, for the error message.
    """

    command: Command
    body: bytes
    parse: Callable[[bytes, ByteOrder], T]
    idempotent: bool
    refused: str
    wait_s: float = 0.0

    @property
    def expects_reply(self) -> bool:
        """False for the ``*_NORESPONSE`` variants."""
        return self.command not in NORESPONSE

    def request(self) -> bytes:
        """The complete request message."""
        return pack_message(self.command, self.body)

    def result(self, reply: MessageDef, body: bytes) -> T:
        """Check the reply code and parse the reply.

        Raises
        ------
        FieldTripRequestError
            If the server answered with its error reply.
        FieldTripProtocolError
            If the reply is not the one this request expects, or is malformed.
        """
        ok, err = REPLIES[NORESPONSE.get(self.command, self.command)]
        if reply.command == err:
            raise FieldTripRequestError(
                f"The FieldTrip buffer refused {self.command.name}: {self.refused}",
                self.command,
                reply.command,
            )
        if reply.command != ok:
            raise protocol_error(
                f"Expected {ok.name} or {err.name} in reply to {self.command.name}, got "
                f"command 0x{reply.command:04x}."
            )
        return self.parse(body, reply.order)


def _selection(first: int | None, last: int | None) -> bytes:
    if first is None and last is None:
        return b""
    return pack_selection(first or 0, UNTIL_NEWEST if last is None else last)


def _op_put(
    command: Command, quiet: Command, body: bytes, noresponse: bool, refused: str
) -> Operation[None]:
    """A PUT request (``quiet`` is its ``*_NORESPONSE`` variant); never retried."""
    return Operation(quiet if noresponse else command, body, _no_payload, False, refused)


def op_put_header(header: Header, *, noresponse: bool = False) -> Operation[None]:
    """PUT_HDR: replace the header; the server drops all samples and events."""
    return _op_put(
        Command.PUT_HDR,
        Command.PUT_HDR_NORESPONSE,
        pack_header(header),
        noresponse,
        "the header was not stored.",
    )


def op_put_data(samples: ArrayLike, *, noresponse: bool = False) -> Operation[None]:
    """PUT_DAT: append samples (samples x channels)."""
    return _op_put(
        Command.PUT_DAT,
        Command.PUT_DAT_NORESPONSE,
        pack_data(samples),
        noresponse,
        "no header exists yet, or the samples' channel count or data type differs from the "
        "header's, or the block is larger than the server's ring. Put a matching header first.",
    )


def op_put_events(events: Iterable[Event], *, noresponse: bool = False) -> Operation[None]:
    """PUT_EVT: append events."""
    return _op_put(
        Command.PUT_EVT,
        Command.PUT_EVT_NORESPONSE,
        pack_events(events),
        noresponse,
        "no header exists yet, or an event is malformed.",
    )


def op_get_header() -> Operation[Header]:
    """GET_HDR: the header with the current sample and event counts."""
    return Operation(
        Command.GET_HDR,
        b"",
        parse_header,
        True,
        "no header has been written yet (a writer must put one first).",
    )


def _op_get_range(
    command: Command,
    parse: Callable[[bytes, ByteOrder], T],
    what: str,
    first: int | None,
    last: int | None,
) -> Operation[T]:
    """GET_DAT or GET_EVT of ``what`` (samples or events) ``first`` to ``last`` inclusive."""
    span = f"all held {what}" if first is None and last is None else f"{what} {first}..{last}"
    return Operation(
        command,
        _selection(first, last),
        parse,
        True,
        f"{span} are not available: not written yet, dropped from the server's ring, or no "
        "header exists.",
    )


def op_get_data(first: int | None = None, last: int | None = None) -> Operation[NDArray[Any]]:
    """GET_DAT: samples ``first`` to ``last`` inclusive (all held samples when both are None)."""
    return _op_get_range(Command.GET_DAT, parse_data, "samples", first, last)


def op_get_events(first: int | None = None, last: int | None = None) -> Operation[list[Event]]:
    """GET_EVT: events ``first`` to ``last`` inclusive (all held events when both are None)."""
    return _op_get_range(Command.GET_EVT, parse_events, "events", first, last)


def op_flush(what: Literal["header", "data", "events"]) -> Operation[None]:
    """FLUSH_HDR (header, samples and events), FLUSH_DAT or FLUSH_EVT."""
    cmd = {"header": Command.FLUSH_HDR, "data": Command.FLUSH_DAT, "events": Command.FLUSH_EVT}
    return Operation(cmd[what], b"", _no_payload, False, "there is no header to flush.")


def op_wait_data(nsamples: int, nevents: int, timeout_ms: int) -> Operation[Counts]:
    """WAIT_DAT: block until more than ``nsamples`` samples or ``nevents`` events exist, or
    ``timeout_ms`` milliseconds pass; returns the current counts."""
    return Operation(
        Command.WAIT_DAT,
        pack_wait_request(nsamples, nevents, timeout_ms),
        parse_counts,
        True,
        "no header has been written yet.",
        wait_s=timeout_ms / 1000.0,
    )
