"""Ring buffer: wraparound, time lookup, discontinuities, bad input and concurrent readers."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from neurocast.streaming.engine.ring import NotEnoughDataError, RingBuffer

SFREQ = 100.0


def ramp(start: int, n: int, n_channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose value is their absolute index (channel c adds c * 1e6) and their times."""
    idx = np.arange(start, start + n, dtype=np.float64)
    data = idx[:, None] + 1e6 * np.arange(n_channels)[None, :]
    return data.astype(np.float32), idx / SFREQ


def assert_ramp(window_data: np.ndarray, times: np.ndarray, start: int) -> None:
    """A window read from a ramp is exactly the ramp from ``start`` (nothing torn or shifted)."""
    n_channels, n = window_data.shape
    expected, expected_t = ramp(start, n, n_channels)
    np.testing.assert_array_equal(window_data, expected.T)
    np.testing.assert_array_equal(times, expected_t)


def test_wraparound_reads_without_reallocation() -> None:
    ring = RingBuffer(3, 50, SFREQ)
    data_id, times_id = id(ring._data), id(ring._times)
    written = 0
    for n in [7, 13, 1, 29, 50, 3, 17, 40, 11]:
        ring.write(*ramp(written, n))
        written += n
        for length in (1, 10, 50):
            if length <= written:
                w = ring.latest(length)
                assert w.start == written - length and w.stop == written
                assert_ramp(w.data, w.timestamps, written - length)
                assert w.valid
    assert (id(ring._data), id(ring._times)) == (data_id, times_id)
    assert ring.n_written == written
    assert ring.last_timestamp == (written - 1) / SFREQ


def test_chunk_larger_than_capacity_keeps_newest() -> None:
    ring = RingBuffer(3, 20, SFREQ)
    ring.write(*ramp(0, 55))
    assert ring.n_written == 55
    w = ring.latest(20)
    assert_ramp(w.data, w.timestamps, 35)
    with pytest.raises(NotEnoughDataError, match=r"overwritten|requested"):
        ring.read(30, 40)


def test_latest_window_ending_at_or_before_t() -> None:
    ring = RingBuffer(3, 64, SFREQ)
    ring.write(*ramp(0, 100))  # wraps: samples 36..99 are held
    # t between samples 79 (0.79 s) and 80 (0.80 s): the window ends with sample 79
    w = ring.latest(10, t=0.795)
    assert w.stop == 80 and w.t_end == pytest.approx(0.79)
    assert_ramp(w.data, w.timestamps, 70)
    # exactly on a sample: that sample is included
    assert ring.latest(5, t=0.80).stop == 81
    # after the newest sample: the newest window
    assert ring.latest(5, t=10.0).stop == 100
    # before the oldest held sample
    with pytest.raises(NotEnoughDataError, match="still held"):
        ring.latest(1, t=0.1)
    # ends in time but not enough history held before it
    with pytest.raises(NotEnoughDataError):
        ring.latest(20, t=0.40)


def test_window_before_enough_data_raises() -> None:
    ring = RingBuffer(3, 100, SFREQ)
    with pytest.raises(NotEnoughDataError):
        ring.latest(10)
    with pytest.raises(NotEnoughDataError, match="holds no samples"):
        ring.index_at(0.0)
    ring.write(*ramp(0, 5))
    with pytest.raises(NotEnoughDataError, match="only 5 have been written"):
        ring.latest(10)
    assert ring.latest(5).valid


def test_window_longer_than_capacity_is_refused() -> None:
    ring = RingBuffer(3, 10, SFREQ)
    ring.write(*ramp(0, 30))
    with pytest.raises(ValueError, match="larger capacity"):
        ring.latest(11)


def test_overwritten_range_is_detected() -> None:
    ring = RingBuffer(3, 32, SFREQ)
    ring.write(*ramp(0, 20))
    assert_ramp(ring.read(0, 10).data, ring.read(0, 10).timestamps, 0)
    ring.write(*ramp(20, 20))  # samples 0..7 are gone
    with pytest.raises(NotEnoughDataError, match="overwritten"):
        ring.read(0, 10)
    assert_ramp(ring.read(8, 18).data, ring.read(8, 18).timestamps, 8)


def test_read_overlapping_a_write_in_progress_is_refused() -> None:
    ring = RingBuffer(3, 32, SFREQ)
    ring.write(*ramp(0, 32))
    # the writer has announced 8 more samples: slots of samples 0..7 may be half rewritten
    ring._n_reserved = 40
    with pytest.raises(NotEnoughDataError, match="overwritten"):
        ring.read(4, 12)
    assert_ramp(ring.read(8, 32).data, ring.read(8, 32).timestamps, 8)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((5, 4), np.float32), r"expected \(n_samples, 3\)"),
        (np.zeros((5, 2), np.float32), r"expected \(n_samples, 3\)"),
        (np.zeros((2, 5, 3), np.float32), r"expected \(n_samples, 3\)"),
    ],
)
def test_wrong_channel_count_refused_and_buffer_unchanged(bad: np.ndarray, match: str) -> None:
    ring = RingBuffer(3, 20, SFREQ)
    ring.write(*ramp(0, 15))
    before = (ring._data.copy(), ring._times.copy(), ring.n_written, ring.issues)
    with pytest.raises(ValueError, match=match):
        ring.write(bad, np.arange(100, 100 + bad.shape[-2]) / SFREQ)
    assert ring.n_written == before[2]
    np.testing.assert_array_equal(ring._data, before[0])
    np.testing.assert_array_equal(ring._times, before[1])
    assert ring.issues == before[3]
    # the stream goes on
    ring.write(*ramp(15, 5))
    assert_ramp(ring.latest(20).data, ring.latest(20).timestamps, 0)


def test_timestamp_count_mismatch_refused() -> None:
    ring = RingBuffer(3, 20, SFREQ)
    data, t = ramp(0, 5)
    with pytest.raises(ValueError, match="5 samples but 4 timestamps"):
        ring.write(data, t[:4])
    assert ring.n_written == 0


@pytest.mark.parametrize(
    "times",
    [
        [0.0, 0.01, 0.01, 0.03],  # repeated
        [0.0, 0.02, 0.01, 0.03],  # backwards
        [0.0, 0.01, np.nan, 0.03],  # not a time at all
    ],
)
def test_non_monotonic_timestamps_within_chunk_refused(times: list[float]) -> None:
    ring = RingBuffer(3, 20, SFREQ)
    ring.write(*ramp(0, 3))
    with pytest.raises(ValueError, match=r"strictly increasing|finite"):
        ring.write(np.ones((4, 3), np.float32), np.array(times) + 1.0)
    assert ring.n_written == 3
    assert ring.issues == []


@pytest.mark.parametrize("bad_time", [np.nan, np.inf])
def test_non_finite_timestamp_refused(bad_time: float) -> None:
    ring = RingBuffer(3, 20, SFREQ)
    ring.write(*ramp(0, 3))
    with pytest.raises(ValueError, match="finite"):
        ring.write(np.ones((1, 3), np.float32), [bad_time])
    assert ring.n_written == 3
    assert ring.latest(3).valid


def test_gap_reported_and_windows_spanning_it_invalid() -> None:
    ring = RingBuffer(3, 100, SFREQ)
    ring.write(*ramp(0, 20))
    data, t = ramp(20, 20)
    issues = ring.write(data, t + 0.05)  # 5 samples missing before sample 20
    assert [(i.kind, i.index) for i in issues] == [("gap", 20)]
    assert issues[0].step_s == pytest.approx(0.06)
    assert not ring.read(15, 25).valid
    assert ring.read(10, 20).valid  # ends right before the gap
    assert ring.read(20, 30).valid  # starts right after it
    # a gap inside a chunk
    data, t = ramp(40, 10)
    t[5:] += 0.1
    issues = ring.write(data, t + 0.05)
    assert [(i.kind, i.index) for i in issues] == [("gap", 45)]
    assert [i.kind for i in ring.latest(10).issues] == ["gap"]
    assert [i.index for i in ring.issues] == [20, 45]


def test_clock_jumps_forward_and_backward() -> None:
    ring = RingBuffer(3, 200, SFREQ, jump_s=1.0)
    ring.write(*ramp(0, 30))
    data, t = ramp(30, 30)
    fwd = ring.write(data, t + 5.0)
    assert [i.kind for i in fwd] == ["clock_jump_forward"]
    assert fwd[0].step_s == pytest.approx(5.01)
    data, t = ramp(60, 30)
    back = ring.write(data, t - 10.0)  # the source's clock was reset
    assert [i.kind for i in back] == ["clock_jump_backward"]
    assert back[0].step_s < 0
    assert [i.kind for i in ring.read(20, 70).issues] == [
        "clock_jump_forward",
        "clock_jump_backward",
    ]
    assert ring.read(60, 90).valid
    # time lookups only search after the backward jump
    w = ring.latest(10, t=float(t[-1] - 10.0))
    assert w.stop == 90 and w.valid
    with pytest.raises(NotEnoughDataError):
        ring.latest(5, t=float(t[0] - 10.0 - 0.5))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_flagged_then_valid_again(bad_value: float) -> None:
    ring = RingBuffer(3, 100, SFREQ)
    ring.write(*ramp(0, 20))
    data, t = ramp(20, 10)
    data[3, 1] = bad_value
    data[5, 2] = bad_value
    issues = ring.write(data, t)
    assert [(i.kind, i.index, i.n_samples) for i in issues] == [("non_finite", 23, 3)]
    for a, b, valid in [(14, 24, False), (24, 26, False), (18, 23, True), (26, 30, True)]:
        assert ring.read(a, b).valid is valid, (a, b)
    ring.write(*ramp(30, 20))
    newest = ring.latest(10)
    assert newest.valid and np.isfinite(newest.data).all()


def test_float64_and_one_sample_chunks() -> None:
    ring = RingBuffer(3, 10, SFREQ)
    for i in range(25):
        data, t = ramp(i, 1)
        ring.write(data.astype(np.float64)[0], t)
    assert_ramp(ring.latest(10).data, ring.latest(10).timestamps, 15)


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="n_channels"):
        RingBuffer(0, 10, SFREQ)
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(3, 1, SFREQ)
    with pytest.raises(ValueError, match="sfreq"):
        RingBuffer(3, 10, 0.0)


@pytest.fixture
def fast_thread_switching() -> Iterator[None]:
    """Switch threads every microsecond so reads and writes interleave as much as possible."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("fast_thread_switching")
def test_one_writer_many_readers_never_tear() -> None:
    """Readers hammering a small buffer while it wraps get whole windows or a clear error."""
    ring = RingBuffer(4, 64, SFREQ)
    total = 400_000
    stop = threading.Event()
    errors: list[str] = []
    counts = {"whole": 0, "lapped": 0}
    lock = threading.Lock()

    def writer() -> None:
        rng = np.random.default_rng(1)
        written = 0
        while written < total:
            n = int(rng.integers(1, 40))
            ring.write(*ramp(written, n, 4))
            written += n
        stop.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        whole = lapped = 0
        while not stop.is_set():
            n = int(rng.integers(1, 64))
            try:
                if rng.random() < 0.5:
                    w = ring.latest(n)
                else:
                    newest = ring.last_timestamp
                    if newest is None:
                        continue
                    w = ring.latest(n, t=newest - rng.random() * 0.3)
            except NotEnoughDataError:
                lapped += 1
                continue
            try:
                assert_ramp(w.data, w.timestamps, w.start)
                assert w.valid, w.issues
            except AssertionError as exc:
                errors.append(f"torn window at {w.start}: {str(exc)[:300]}")
                stop.set()
                return
            whole += 1
        with lock:
            counts["whole"] += whole
            counts["lapped"] += lapped

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(s,)) for s in range(3)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(50)
    assert not errors, errors[0]
    assert counts["whole"] > 100  # the readers did read, concurrently with the writer
