"""A blocking writer of a stream into a FieldTrip buffer (replay, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

from neurocast.streaming.sources.base import Marker, StreamInfo
from neurocast.streaming.sources.fieldtrip.client import BlockingConnection
from neurocast.streaming.sources.fieldtrip.events import Event
from neurocast.streaming.sources.fieldtrip.header import Header
from neurocast.streaming.sources.fieldtrip.metadata import header_from_stream_info, marker_to_event
from neurocast.streaming.sources.fieldtrip.operations import (
    op_put_data,
    op_put_events,
    op_put_header,
)
from neurocast.streaming.sources.fieldtrip.protocol import AUTO_SAMPLE, DEFAULT_PORT, DataType


class FieldTripWriter:
    """Write a stream into a FieldTrip buffer over a blocking socket (TCP_NODELAY).

    Parameters
    ----------
    host : str
        Server address.
    port : int
        Server port.
    timeout_s : float
        Seconds allowed to connect and for each reply.
    data_type : DataType | int
        Type the samples are sent as (float32 by default, as ``neuromag2ft`` sends them).

    Examples
    --------
    >>> with FieldTripWriter("127.0.0.1", 1972) as ft:  # doctest: +SKIP
    ...     ft.put_header(stream_info)
    ...     ft.put_data(chunk)  # (n_samples, n_channels)
    ...     ft.put_events([Marker(t, "stim/5")])
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout_s: float = 10.0,
        data_type: DataType | int = DataType.FLOAT32,
    ) -> None:
        self.data_type = DataType(data_type)
        self._conn = BlockingConnection(host, port, timeout_s)
        self.header: Header | None = None
        self.n_samples = 0
        self._t_zero: float | None = None

    def __enter__(self) -> FieldTripWriter:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection.

        Raises
        ------
        FieldTripConnectionError
            If the server cannot be reached.
        """
        self._conn.connect()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._conn.close()

    def put_header(self, stream_info: StreamInfo) -> Header:
        """Put the header of ``stream_info`` (see :func:`header_from_stream_info`).

        The server drops the samples and events it held. Returns the header sent.
        """
        header = header_from_stream_info(stream_info, self.data_type)
        self._conn.run(op_put_header(header))
        self.header, self.n_samples, self._t_zero = header, 0, None
        return header

    def put_data(self, samples: ArrayLike, timestamps: ArrayLike | None = None) -> int:
        """Append samples.

        Parameters
        ----------
        samples : array, shape (n_samples, n_channels)
            Converted to the writer's data type.
        timestamps : array, shape (n_samples,) | None
            Their times in seconds. The first chunk given with timestamps fixes the time of
            sample 0, which :meth:`put_events` uses to place markers on samples.

        Returns
        -------
        n_samples : int
            Samples written since the header.
        """
        if self.header is None:
            raise ValueError("Put a header (put_header) before putting samples.")
        arr = np.asarray(samples)
        if arr.ndim != 2 or arr.shape[1] != self.header.nchans:
            raise ValueError(
                f"Samples have shape {arr.shape}; the header declares {self.header.nchans} "
                "channels, so give an array of shape (n_samples, n_channels)."
            )
        self._conn.run(op_put_data(arr.astype(self.data_type.dtype(), copy=False)))
        if timestamps is not None and self._t_zero is None and arr.shape[0]:
            first = float(np.asarray(timestamps, dtype=np.float64).reshape(-1)[0])
            self._t_zero = first - self.n_samples / self.header.fsample
        self.n_samples += arr.shape[0]
        return self.n_samples

    def put_events(self, markers: Iterable[Marker | Event]) -> None:
        """Append markers (or buffer events, sent as they are).

        A marker becomes an event (see :func:`marker_to_event`) on the sample at its time when
        :meth:`put_data` received timestamps, otherwise on the server's current sample count.
        """
        if self.header is None:
            raise ValueError("Put a header (put_header) before putting events.")
        events = []
        for m in markers:
            if isinstance(m, Event):
                events.append(m)
                continue
            sample = AUTO_SAMPLE
            if self._t_zero is not None:
                sample = max(0, round((m.timestamp - self._t_zero) * self.header.fsample))
            events.append(marker_to_event(m, sample))
        if events:
            self._conn.run(op_put_events(events))
