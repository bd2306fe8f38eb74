"""EEG–MEG mutual information against sensor distance.

How much a scalp EEG electrode tells about a nearby MEG sensor bounds what any EEG→MEG
translator can do. The EEG super-resolution study (see ``../shared/docs/DESIGN.md``, model
family 4) reported that mutual information between EEG and MEG sensors falls by about half
from 2 to 4 cm and flattens beyond 8 cm; this module measures the same curve on any recording
holding both modalities, with scikit-learn's k-nearest-neighbour estimator
(Kraskov et al. 2004, via :func:`sklearn.feature_selection.mutual_info_regression`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mne
import numpy as np
from numpy.typing import NDArray

_NATS_TO_BITS = 1.0 / np.log(2.0)


@dataclass(frozen=True)
class MIResult:
    """Mutual information of EEG–MEG sensor pairs.

    Attributes
    ----------
    eeg_names, meg_names : list of str
        Channel names of each pair (same length as ``mi_bits``).
    meg_types : list of str
        ``"mag"`` or ``"grad"`` for each pair.
    distance_cm : ndarray, shape (n_pairs,)
        Distance between the electrode and the sensor in head coordinates, in centimetres.
    mi_bits : ndarray, shape (n_pairs,)
        Mutual information maximised over lags, in bits.
    best_lag_ms : ndarray, shape (n_pairs,)
        Lag of the MEG signal relative to the EEG at which the maximum was found, in ms.
    sfreq_hz : float
        Sampling rate of the analysed signals.
    n_samples : int
        Samples per signal used by the estimator.
    null_bits : ndarray, shape (n_pairs,)
        MI of the same pairs with MEG circularly shifted by half the recording: the level an
        unrelated pair reaches with this estimator, signal length and spectrum.
    description : str
        Where the data came from (file name, "SIMULATED" for simulated data).
    bins_cm : ndarray, shape (n_bins + 1,)
        Edges of the distance bins of :meth:`binned`, in centimetres.
    """

    eeg_names: list[str]
    meg_names: list[str]
    meg_types: list[str]
    distance_cm: NDArray[np.float64]
    mi_bits: NDArray[np.float64]
    best_lag_ms: NDArray[np.float64]
    sfreq_hz: float
    n_samples: int
    null_bits: NDArray[np.float64]
    description: str = ""
    bins_cm: NDArray[np.float64] = field(default_factory=lambda: np.arange(2.0, 24.1, 2.0))

    def binned(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
        """Median MI per distance bin.

        Returns
        -------
        centers_cm : ndarray
            Bin centres in cm.
        median_bits : ndarray
            Median MI of the pairs in each bin (NaN for an empty bin).
        counts : ndarray
            Pairs per bin.
        """
        edges = self.bins_cm
        centers = (edges[:-1] + edges[1:]) / 2
        idx = np.digitize(self.distance_cm, edges) - 1
        med = np.full(centers.shape, np.nan)
        counts = np.zeros(centers.shape, dtype=np.int64)
        for b in range(centers.size):
            sel = self.mi_bits[idx == b]
            counts[b] = sel.size
            if sel.size:
                med[b] = float(np.median(sel))
        return centers, med, counts

    def summary(self) -> dict[str, float]:
        """Figures that describe the decay: MI near 3 cm and 5 cm, their ratio, the far level."""
        d, mi = self.distance_cm, self.mi_bits

        def around(lo: float, hi: float) -> float:
            sel = (d >= lo) & (d < hi)
            return float(np.median(mi[sel])) if sel.any() else float("nan")

        near, mid, far = around(2.0, 4.0), around(4.0, 6.0), around(8.0, np.inf)
        return {
            "mi_bits_2_4cm": near,
            "mi_bits_4_6cm": mid,
            "mi_bits_beyond_8cm": far,
            "ratio_4_6_vs_2_4": mid / near if near > 0 else float("nan"),
            "mi_bits_null": float(np.median(self.null_bits)),
            "n_pairs": float(d.size),
        }


def sensor_positions_head(info: mne.Info, picks: NDArray[np.int64]) -> NDArray[np.float64]:
    """Positions of channels in head coordinates, in metres.

    MEG sensor locations are stored in device coordinates and are moved to head coordinates
    with ``info["dev_head_t"]``. Recordings without that transform (FieldTrip MAT files read
    with ``info=None``) already hold sensor positions in head coordinates, and are used as-is.

    Parameters
    ----------
    info : mne.Info
        The recording's measurement info.
    picks : ndarray of int
        Indices of the channels.

    Returns
    -------
    pos : ndarray, shape (n_picks, 3)
        Positions in head coordinates, in metres.
    """
    pos = np.array([info["chs"][p]["loc"][:3] for p in picks], dtype=np.float64)
    is_meg = np.array([info["chs"][p]["kind"] == mne.io.constants.FIFF.FIFFV_MEG_CH for p in picks])
    trans = info["dev_head_t"]
    if is_meg.any() and trans is not None:
        pos[is_meg] = mne.transforms.apply_trans(trans, pos[is_meg])
    return pos


def eeg_meg_mutual_info(
    raw: mne.io.BaseRaw,
    *,
    l_freq_hz: float | None = 1.0,
    h_freq_hz: float | None = 40.0,
    max_lag_ms: float = 20.0,
    lag_step_ms: float | None = None,
    n_pairs: int | None = 1500,
    n_neighbors: int = 3,
    seed: int = 0,
) -> MIResult:
    """EEG–MEG mutual information per sensor pair, maximised over lags.

    Parameters
    ----------
    raw : mne.io.Raw
        A recording with EEG and MEG channels with positions; bad channels are left out.
    l_freq_hz, h_freq_hz : float | None
        Band-pass applied to both modalities first (zero-phase FIR, MNE defaults).
    max_lag_ms : float
        MEG is shifted from ``-max_lag_ms`` to ``+max_lag_ms`` relative to EEG; the largest MI
        over these lags is kept (volume conduction is instantaneous, so the maximum should sit
        near zero lag; a distant maximum hints at a timing problem in the data).
    lag_step_ms : float | None
        Step between lags; None means one sample.
    n_pairs : int | None
        Pairs to analyse, drawn at random without replacement (all pairs when None).
        A full 60 × 306 analysis is 18,360 pairs and takes minutes on 2 cores.
    n_neighbors : int
        Neighbours of the Kraskov estimator.
    seed : int
        Seed of the pair draw and of the estimator's jitter.

    Returns
    -------
    result : MIResult
        MI in bits, distances in cm.

    Raises
    ------
    ValueError
        If the recording lacks good EEG or MEG channels, or their positions.
    """
    raw, n_eeg = _filtered_pair_channels(raw, l_freq_hz, h_freq_hz)
    info = raw.info
    data = raw.get_data()
    pos = sensor_positions_head(info, np.arange(len(info["ch_names"])))
    if not np.isfinite(pos).all() or np.allclose(pos[:n_eeg], 0) or np.allclose(pos[n_eeg:], 0):
        raise ValueError("EEG and MEG channels need positions (a montage and sensor locations).")

    sfreq = float(info["sfreq"])
    step = 1 if lag_step_ms is None else max(1, round(lag_step_ms * sfreq / 1e3))
    max_lag = round(max_lag_ms * sfreq / 1e3)
    lags = np.arange(-max_lag, max_lag + 1, step)

    rng = np.random.default_rng(seed)
    all_pairs = np.array([(i, j) for i in range(n_eeg) for j in range(n_eeg, data.shape[0])])
    if n_pairs is not None and n_pairs < len(all_pairs):
        all_pairs = all_pairs[np.sort(rng.choice(len(all_pairs), n_pairs, replace=False))]

    # z-scoring makes the estimator's neighbour search scale-free across volts and tesla
    z = (data - data.mean(axis=1, keepdims=True)) / data.std(axis=1, keepdims=True)
    mi, best_lag, null = _mi_over_lags(z, all_pairs, lags, n_neighbors, seed)
    d = np.linalg.norm(pos[all_pairs[:, 0]] - pos[all_pairs[:, 1]], axis=1) * 100.0
    names = info["ch_names"]
    types = raw.get_channel_types()
    return MIResult(
        eeg_names=[names[i] for i in all_pairs[:, 0]],
        meg_names=[names[j] for j in all_pairs[:, 1]],
        meg_types=[types[j] for j in all_pairs[:, 1]],
        distance_cm=d,
        mi_bits=np.maximum(mi, 0.0) * _NATS_TO_BITS,
        best_lag_ms=best_lag / sfreq * 1e3,
        sfreq_hz=sfreq,
        n_samples=z.shape[1] - 2 * max_lag,
        null_bits=np.maximum(null, 0.0) * _NATS_TO_BITS,
        description=str(info.get("description") or ""),
    )


def _filtered_pair_channels(
    raw: mne.io.BaseRaw, l_freq_hz: float | None, h_freq_hz: float | None
) -> tuple[mne.io.BaseRaw, int]:
    """A band-passed copy holding the good EEG channels, then the good MEG channels.

    Returns
    -------
    raw : mne.io.Raw
        The copy (data loaded).
    n_eeg : int
        Its first ``n_eeg`` channels are EEG.

    Raises
    ------
    ValueError
        If the recording lacks good EEG or MEG channels.
    """
    eeg = mne.pick_types(raw.info, meg=False, eeg=True, exclude="bads")
    meg = mne.pick_types(raw.info, meg=True, eeg=False, exclude="bads")
    if eeg.size == 0 or meg.size == 0:
        raise ValueError(
            f"Mutual information needs both EEG and MEG channels; this recording has "
            f"{eeg.size} EEG and {meg.size} MEG channels (bad channels excluded)."
        )
    raw = raw.copy().pick(np.concatenate([eeg, meg])).load_data()
    if l_freq_hz is not None or h_freq_hz is not None:
        raw.filter(l_freq_hz, h_freq_hz, verbose="error")
    return raw, int(eeg.size)


def _mi_over_lags(
    z: NDArray[np.float64],
    pairs: NDArray[np.int64],
    lags: NDArray[np.int64],
    n_neighbors: int,
    seed: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per (EEG, MEG) pair, the MI maximised over lags, its lag and the shifted-signal null.

    Parameters
    ----------
    z : ndarray, shape (n_channels, n_times)
        Z-scored signals.
    pairs : ndarray of int, shape (n_pairs, 2)
        EEG and MEG row of each pair.
    lags : ndarray of int
        MEG shifts in samples (symmetric about zero); every lag reads the same EEG samples.
    n_neighbors : int
        Neighbours of the Kraskov estimator.
    seed : int
        Seed of the estimator's jitter.

    Returns
    -------
    mi, best_lag, null : ndarray, shape (n_pairs,)
        MI in nats, the lag in samples where it peaks, and the null level in nats.
    """
    from sklearn.feature_selection import mutual_info_regression

    max_lag = int(np.abs(lags).max())
    n = z.shape[1] - 2 * max_lag
    mi = np.full(len(pairs), -np.inf)
    best = np.zeros(len(pairs))
    null = np.zeros(len(pairs))
    # one estimator call per MEG sensor and lag serves every EEG electrode paired with it
    for j_meg in np.unique(pairs[:, 1]):
        rows = np.flatnonzero(pairs[:, 1] == j_meg)
        x = z[pairs[rows, 0], max_lag : max_lag + n].T
        for lag in lags:
            y = z[j_meg, max_lag + lag : max_lag + lag + n]
            vals = mutual_info_regression(x, y, n_neighbors=n_neighbors, random_state=seed)
            better = vals > mi[rows]
            mi[rows[better]] = vals[better]
            best[rows[better]] = lag
        shifted = np.roll(z[j_meg], z.shape[1] // 2)[max_lag : max_lag + n]
        null[rows] = mutual_info_regression(x, shifted, n_neighbors=n_neighbors, random_state=seed)
    return mi, best, null


def plot_mi_vs_distance(results: dict[str, MIResult], path: str) -> None:
    """Scatter of MI against distance with binned medians, one colour per recording.

    Parameters
    ----------
    results : dict
        Label (e.g. the file name, with "SIMULATED" for simulated data) → result.
    path : str
        Output PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, kind in zip(axes, ("mag", "grad"), strict=True):
        for k, (label, res) in enumerate(results.items()):
            sel = np.array(res.meg_types) == kind
            if not sel.any():
                continue
            color = f"C{k}"
            ax.scatter(res.distance_cm[sel], res.mi_bits[sel], s=4, alpha=0.25, color=color)
            sub = MIResult(
                [],
                [],
                [],
                res.distance_cm[sel],
                res.mi_bits[sel],
                res.best_lag_ms[sel],
                res.sfreq_hz,
                res.n_samples,
                res.null_bits[sel],
            )
            c, med, _ = sub.binned()
            ax.plot(c, med, "-o", color=color, label=label)
            ax.axhline(float(np.median(sub.null_bits)), color=color, ls=":", lw=1)
        ax.set_title(f"EEG – MEG ({'magnetometers' if kind == 'mag' else 'gradiometers'})")
        ax.set_xlabel("electrode–sensor distance (cm)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mutual information, max over lags (bits)")
    axes[0].legend(fontsize=8, title="dotted: shifted-signal null level", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
