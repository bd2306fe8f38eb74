"""Finding the LSL stream a selector describes."""

from __future__ import annotations

import logging
import time

import pylsl

from neurocast.streaming.sources.base import SourceError, local_clock
from neurocast.streaming.sources.specs import LSLStreamSelector

logger = logging.getLogger(__name__)

_POLL_S = 0.01  # how often a resolver is asked for what it found


def _xpath_literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise SourceError(
        f"The LSL selector value {value!r} holds both quote characters, which LSL's query "
        "language cannot express; select the stream by another field."
    )


def describe_selector(sel: LSLStreamSelector) -> str:
    """The selector's fields as text for messages, e.g. ``name='EEG' and type='EEG'``."""
    parts = [f"{f}={v!r}" for f in ("name", "type", "source_id") if (v := getattr(sel, f))]
    return " and ".join(parts)


def _poll(resolver: pylsl.ContinuousResolver, timeout_s: float, stop_early: bool) -> list:
    # a continuous resolver, polled, keeps to the timeout and returns as soon as a stream
    # answers (liblsl's one-shot resolve sometimes overruns short timeouts by seconds)
    deadline = local_clock() + timeout_s
    while True:
        found = resolver.results()
        remaining = deadline - local_clock()
        if (found and stop_early) or remaining <= 0:
            return found
        time.sleep(min(_POLL_S, remaining))


def _describe_visible(wait_s: float) -> str:
    streams = _poll(pylsl.ContinuousResolver(), wait_s, stop_early=False)
    if not streams:
        return (
            "No LSL stream is visible at all: check that the outlet runs, that both sides use "
            "the same LSL configuration (LSLAPICFG, SessionID) and that the network lets LSL's "
            "discovery through (multicast, or KnownPeers in lsl_api.cfg)."
        )
    lines = [
        f"  name={s.name()!r} type={s.type()!r} source_id={s.source_id()!r} "
        f"({s.channel_count()} channels at {s.nominal_srate():g} Hz on {s.hostname()!r})"
        for s in streams
    ]
    return "Streams visible now:\n" + "\n".join(lines)


def predicate(sel: LSLStreamSelector) -> str:
    """The selector as an LSL query (XPath predicate) for a resolver."""
    return " and ".join(
        f"{f}={_xpath_literal(v)}" for f in ("name", "type", "source_id") if (v := getattr(sel, f))
    )


def _find(sel: LSLStreamSelector, timeout_s: float) -> list[pylsl.StreamInfo]:
    return _poll(pylsl.ContinuousResolver(pred=predicate(sel)), timeout_s, stop_early=True)


def resolve_stream(sel: LSLStreamSelector, timeout_s: float) -> pylsl.StreamInfo:
    """Find the LSL stream a selector describes.

    Parameters
    ----------
    sel : LSLStreamSelector
        Name, type and/or source id; every field given must match.
    timeout_s : float
        How long to look, in seconds.

    Returns
    -------
    info : pylsl.StreamInfo
        The first matching stream (a warning names the others when several match).

    Raises
    ------
    SourceError
        If nothing matches within ``timeout_s``; the message lists the streams that are
        visible.
    """
    found = _find(sel, timeout_s)
    if not found:
        raise SourceError(
            f"No LSL stream with {describe_selector(sel)} was found within {timeout_s:g} s. "
            + _describe_visible(min(1.0, timeout_s))
        )
    if len(found) > 1:
        logger.warning(
            "%d LSL streams match %s; using source_id=%r. Select by source_id to choose.",
            len(found),
            describe_selector(sel),
            found[0].source_id(),
        )
    return found[0]
