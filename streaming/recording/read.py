"""Reading XDF files back: a structural check that finds where a file stops being whole, and
pyxdf (the reference reader) over the whole part.

A recording cut short (a full disk, a killed process, a partial copy) ends in an incomplete
chunk. pyxdf reads many such files but fails on some cut points (inside a chunk's tag, a
stream header or a clock offset). :func:`scan_xdf` walks the chunk headers and finds the end
of the last complete chunk; :func:`load_xdf` hands pyxdf only the bytes before it and
reports where and why the rest was left out.
"""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyxdf

from neurocast.streaming.recording.xdf import (
    BOUNDARY_UUID,
    MAGIC,
    TAG_BOUNDARY,
    TAG_CLOCK_OFFSET,
    TAG_FILE_HEADER,
    TAG_SAMPLES,
    TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
)

_TAG_NAMES = {
    TAG_FILE_HEADER: "FileHeader",
    TAG_STREAM_HEADER: "StreamHeader",
    TAG_SAMPLES: "Samples",
    TAG_CLOCK_OFFSET: "ClockOffset",
    TAG_BOUNDARY: "Boundary",
    TAG_STREAM_FOOTER: "StreamFooter",
}
# content length each fixed-size chunk must have
_FIXED_LENGTH = {TAG_CLOCK_OFFSET: 20, TAG_BOUNDARY: 16}
_WITH_STREAM_ID = (TAG_STREAM_HEADER, TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_STREAM_FOOTER)


class XDFFormatError(ValueError):
    """The file is not an XDF file (wrong magic bytes or no file header)."""


@dataclass
class XDFScan:
    """Where an XDF file's complete chunks end.

    Attributes
    ----------
    path : Path
        The file.
    size : int
        File size in bytes.
    valid_end : int
        Bytes from the start of the file up to the end of the last complete chunk.
    truncated_at : int | None
        Byte offset of the first incomplete or damaged chunk; None when the file is whole.
    reason : str | None
        What is wrong at ``truncated_at``.
    n_chunks : int
        Complete chunks.
    headers : dict
        Stream id → the stream header's XML text, for every complete header.
    has_footers : bool
        True when at least one stream footer was found (the recording was closed).
    """

    path: Path
    size: int
    valid_end: int
    truncated_at: int | None = None
    reason: str | None = None
    n_chunks: int = 0
    headers: dict[int, str] = field(default_factory=dict)
    has_footers: bool = False

    @property
    def truncated(self) -> bool:
        """True when the file ends in an incomplete or damaged chunk."""
        return self.truncated_at is not None

    def message(self) -> str:
        """One sentence on where the file is cut and what is used, for users."""
        if self.truncated_at is None:
            return f"{self.path} is complete ({self.n_chunks} chunks)."
        return (
            f"{self.path} is truncated at byte {self.truncated_at} ({self.reason}); the "
            f"{self.valid_end} bytes before it ({self.n_chunks} complete chunks) are used and "
            f"the last {self.size - self.valid_end} bytes are ignored."
        )


def _varlen(buf: bytes, pos: int) -> tuple[int, int] | None:
    """Decode a variable-length integer at ``pos``: (value, next position) or None."""
    if pos >= len(buf):
        return None
    nbytes = buf[pos]
    if nbytes == 1 and pos + 2 <= len(buf):
        return buf[pos + 1], pos + 2
    if nbytes == 4 and pos + 5 <= len(buf):
        return struct.unpack_from("<I", buf, pos + 1)[0], pos + 5
    if nbytes == 8 and pos + 9 <= len(buf):
        return struct.unpack_from("<Q", buf, pos + 1)[0], pos + 9
    return None


def scan_xdf(path: str | Path) -> XDFScan:
    """Check an XDF file's chunk structure and find the end of its last complete chunk.

    Reads every chunk's header (length and tag) and skips its content; stream headers are
    parsed as XML, clock offsets and boundaries checked for their fixed length.

    Parameters
    ----------
    path : str | Path
        The file.

    Returns
    -------
    scan : XDFScan
        Where the complete chunks end and, when the file is cut short, why.

    Raises
    ------
    XDFFormatError
        If the file does not start with ``XDF:`` and a file header.
    OSError
        If it cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise XDFFormatError(f"{path} is not an XDF file (it does not start with 'XDF:').")
        scan = XDFScan(path=path, size=size, valid_end=4)
        pos = 4
        while pos < size:
            f.seek(pos)
            chunk = _chunk_header(f.read(15), pos)
            if isinstance(chunk, str):
                return _cut(scan, pos, chunk)
            tag, name, start, end = chunk
            if scan.n_chunks == 0 and tag != TAG_FILE_HEADER:
                raise XDFFormatError(f"{path} does not start with an XDF file header.")
            problem = _chunk_problem(f, scan, tag, name, start, end)
            if problem is not None:
                return _cut(scan, pos, problem)
            scan.n_chunks += 1
            pos = end
            scan.valid_end = pos
    if scan.n_chunks == 0:
        raise XDFFormatError(f"{path} has no XDF file header.")
    return scan


def _chunk_header(head: bytes, pos: int) -> tuple[int, str, int, int] | str:
    """The chunk at ``pos`` from its first bytes: (tag, tag name, content start, end).

    Returns why the header cannot be read instead (a string) when it is cut short or invalid.
    """
    decoded = _varlen(head, 0)
    if decoded is None:
        if head[:1] == b"\x00":
            return "an unfinished write"
        return "an incomplete or invalid chunk length"
    length, at = decoded
    if length < 2 or at + 2 > len(head):
        return "an incomplete or invalid chunk length"
    tag = struct.unpack_from("<H", head, at)[0]
    name = _TAG_NAMES.get(tag)
    if name is None:
        return f"an unknown chunk tag {tag}"
    return tag, name, pos + at + 2, pos + at + length


def _chunk_problem(
    f: BinaryIO, scan: XDFScan, tag: int, name: str, start: int, end: int
) -> str | None:
    """What is wrong with a chunk's content (None: it is whole); records stream headers.

    Parameters
    ----------
    f : binary file
        The open XDF file.
    scan : XDFScan
        The scan so far; stream headers and footers found are recorded in it.
    tag, name : int, str
        The chunk's tag and its name.
    start, end : int
        Byte offsets of the chunk's content and of its end.
    """
    if end > scan.size:
        return f"an incomplete {name} chunk: {end - scan.size} of its bytes are missing"
    content_len = end - start
    fixed = _FIXED_LENGTH.get(tag)
    if fixed is not None and content_len != fixed:
        return f"a {name} chunk of {content_len} bytes, not {fixed}"
    if tag in _WITH_STREAM_ID and content_len < 4:
        return f"a {name} chunk without a stream id"
    if tag in (TAG_FILE_HEADER, TAG_STREAM_HEADER, TAG_STREAM_FOOTER):
        f.seek(start)
        content = f.read(content_len)
        xml = content if tag == TAG_FILE_HEADER else content[4:]
        try:
            ET.fromstring(xml)
        except ET.ParseError as exc:
            return f"a {name} chunk with damaged XML ({exc})"
        if tag == TAG_STREAM_HEADER:
            sid = struct.unpack_from("<I", content)[0]
            scan.headers[sid] = xml.decode("utf-8", "replace")
        elif tag == TAG_STREAM_FOOTER:
            scan.has_footers = True
    elif tag == TAG_BOUNDARY:
        f.seek(start)
        if f.read(16) != BOUNDARY_UUID:
            return "a damaged Boundary chunk"
    return None


def _cut(scan: XDFScan, pos: int, reason: str) -> XDFScan:
    if pos == 4 and scan.n_chunks == 0:
        raise XDFFormatError(f"{scan.path} has no readable XDF file header ({reason}).")
    scan.truncated_at = pos
    scan.reason = reason
    return scan


class _Prefix(io.RawIOBase):
    """The first ``end`` bytes of a file, as a readable, seekable raw stream."""

    def __init__(self, path: Path, end: int) -> None:
        self._f = path.open("rb")
        self._end = end
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self._end - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._pos)
        got = self._f.readinto(memoryview(b)[:n])
        self._pos += got or 0
        return got or 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._f.close()
        super().close()


def load_xdf(
    path: str | Path, **kwargs: Any
) -> tuple[list[dict[str, Any]], dict[str, Any], XDFScan]:
    """Read an XDF file with pyxdf, up to its last complete chunk.

    Parameters
    ----------
    path : str | Path
        The file.
    **kwargs
        Passed to :func:`pyxdf.load_xdf` (e.g. ``dejitter_timestamps=False``,
        ``synchronize_clocks=False``).

    Returns
    -------
    streams : list of dict
        pyxdf's streams.
    header : dict
        pyxdf's file header.
    scan : XDFScan
        Where the file's complete chunks end; ``scan.message()`` says what was left out.

    Raises
    ------
    XDFFormatError
        If the file is not an XDF file.
    """
    scan = scan_xdf(path)
    reader = io.BufferedReader(_Prefix(scan.path, scan.valid_end))
    try:
        streams, header = pyxdf.load_xdf(reader, **kwargs)
    finally:
        reader.close()
    return streams, header, scan
