"""Sensor arrays, head model and forward solutions for the simulator (:mod:`.physics`).

The default geometry needs no files: 64 EEG electrodes of the 10-05 system projected onto a
spherical head fitted to MNE's template montage, and a Neuromag VectorView-like MEG helmet of
102 sites, each with one magnetometer (``FIFFV_COIL_VV_MAG_T3``) and two orthogonal planar
gradiometers (``FIFFV_COIL_VV_PLANAR_T1``), so that MNE's forward model integrates over the
real coil geometries. A FIF file can supply real sensor geometry instead (:func:`load_info`).

Forward solutions are computed with :func:`mne.make_forward_solution` in a multi-shell
spherical conductor (:func:`mne.make_sphere_model`) and cached in memory and on disk
(:func:`forward_gain`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mne
import numpy as np
from mne.io.constants import FIFF
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

Modality = Literal["eeg", "meg", "both"]

#: The 64 electrodes of the extended 10-20 system used by the PhysioNet EEG Motor
#: Movement/Imagery recordings (names as after ``mne.datasets.eegbci.standardize``), so models
#: trained on simulated EEG see the channel set of that public data set.
DEFAULT_EEG_CHANNELS: tuple[str, ...] = (
    "Fp1", "Fpz", "Fp2", "AF7", "AF3", "AFz", "AF4", "AF8", "F7", "F5", "F3", "F1", "Fz", "F2",
    "F4", "F6", "F8", "FT7", "FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "FT8", "T9", "T7",
    "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "T8", "T10", "TP7", "CP5", "CP3", "CP1", "CPz",
    "CP2", "CP4", "CP6", "TP8", "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7",
    "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2", "Iz",
)  # fmt: skip

# Neuromag VectorView helmet, measured on the MNE sample recording: its magnetometers lie on
# a sphere of radius 122 mm centred at (0, 15, -11) mm in device coordinates, reaching 112°
# from the vertex at the back and sides but only 79° over the face.
HELMET_CENTER_DEVICE_M = np.array([0.0, 0.015, -0.011])
HELMET_RADIUS_M = 0.122
N_MEG_SITES = 102
_HELMET_THETA_MAX_DEG = 112.0
_HELMET_FACE_CUT_DEG = 33.0

#: Head digitization points needed to fit the head sphere to them.
MIN_HEADSHAPE_POINTS = 20
#: The scalp stays at least this far (metres) inside every MEG sensor.
MIN_SENSOR_CLEARANCE_M = 0.015
_HELMET_SCALP_GAP_M = 0.025

_CACHE_VERSION = "1"


def template_montage() -> mne.channels.DigMontage:
    """MNE's template 10-05 montage (343 electrodes on the Colin27 head)."""
    # MNE 1.13 renamed "standard_1005" to "colin27_1005" (same positions)
    name = (
        "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    )
    return mne.channels.make_standard_montage(name)


@dataclass(frozen=True)
class _TemplateHead:
    """Template electrode and fiducial positions (head coordinates, m) and the fitted sphere."""

    positions: dict[str, NDArray[np.float64]]
    fiducials: dict[str, NDArray[np.float64]]
    origin: NDArray[np.float64]
    radius: float


@functools.lru_cache(maxsize=1)
def _template_head() -> _TemplateHead:
    montage = template_montage()
    info = mne.create_info(montage.ch_names, 1000.0, "eeg")
    info.set_montage(montage)
    positions = {ch["ch_name"]: ch["loc"][:3].copy() for ch in info["chs"]}
    names = {
        FIFF.FIFFV_POINT_NASION: "nasion",
        FIFF.FIFFV_POINT_LPA: "lpa",
        FIFF.FIFFV_POINT_RPA: "rpa",
    }
    fiducials = {
        names[d["ident"]]: np.asarray(d["r"], dtype=float)
        for d in info["dig"]
        if d["kind"] == FIFF.FIFFV_POINT_CARDINAL
    }
    radius, origin, _ = mne.bem.fit_sphere_to_headshape(
        info, dig_kinds=("eeg",), units="m", verbose="error"
    )
    return _TemplateHead(positions, fiducials, np.asarray(origin, dtype=float), float(radius))


def template_directions(names: Sequence[str]) -> NDArray[np.float64]:
    """Unit vectors from the template head's centre towards 10-05 electrode sites.

    Parameters
    ----------
    names : sequence of str
        10-05 electrode names (e.g. ``"O1"``, ``"C3"``).

    Returns
    -------
    directions : ndarray, shape (n, 3)
        Unit vectors in head coordinates, used to place sources under named scalp sites.
    """
    head = _template_head()
    missing = [n for n in names if n not in head.positions]
    if missing:
        raise ValueError(
            f"Unknown 10-05 electrode names {missing}: use names of "
            "neurocast.streaming.sources.simulator.geometry.template_montage().ch_names."
        )
    d = np.array([head.positions[n] for n in names]) - head.origin
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _helmet_sites() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Positions (device frame, metres) and outward normals of the 102 helmet sites."""
    # a sunflower spiral on a unit disc, mapped area-preservingly onto a cap whose edge is
    # lower at the back and sides than over the face
    i = np.arange(N_MEG_SITES) + 0.5
    rho2 = i / N_MEG_SITES
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i + np.pi / 2  # first turn starts towards the nose
    theta_max = np.radians(
        _HELMET_THETA_MAX_DEG - _HELMET_FACE_CUT_DEG * np.clip(np.sin(phi), 0.0, None) ** 2
    )
    theta = np.arccos(1.0 - rho2 * (1.0 - np.cos(theta_max)))
    normals = np.c_[np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]
    return HELMET_CENTER_DEVICE_M + HELMET_RADIUS_M * normals, normals


def default_info(
    sfreq: float,
    modality: Modality = "both",
    eeg_channels: Sequence[str] | None = None,
) -> mne.Info:
    """Sensor geometry of the simulator when no recording supplies one.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    modality : {"eeg", "meg", "both"}
        Which sensors to include; MEG channels come first.
    eeg_channels : sequence of str | None
        10-05 electrode names; None uses :data:`DEFAULT_EEG_CHANNELS`.

    Returns
    -------
    info : mne.Info
        EEG electrodes of the template montage projected onto the scalp of the spherical head
        (:func:`default_sphere`); 102 MEG sites named ``MEGxxx1`` (magnetometer), ``MEGxxx2``
        and ``MEGxxx3`` (planar gradiometers measuring orthogonal gradients), in device
        coordinates, with ``dev_head_t`` centring the helmet on the head.
    """
    eeg_names = list(DEFAULT_EEG_CHANNELS if eeg_channels is None else eeg_channels)
    use_eeg = modality in ("eeg", "both")
    use_meg = modality in ("meg", "both")
    if use_eeg:
        if not eeg_names:
            raise ValueError(
                "eeg_channels is empty; give 10-05 electrode names or use modality='meg'."
            )
        if len(set(eeg_names)) != len(eeg_names):
            raise ValueError("eeg_channels contains duplicate names.")
        directions = template_directions(eeg_names)
    else:
        eeg_names = []
    meg_names: list[str] = []
    if use_meg:
        for site in range(N_MEG_SITES):
            code = f"{site // 4 + 1:02d}{site % 4 + 1}"
            meg_names += [f"MEG{code}1", f"MEG{code}2", f"MEG{code}3"]
    types = ["mag", "grad", "grad"] * (len(meg_names) // 3) + ["eeg"] * len(eeg_names)
    info = mne.create_info(meg_names + eeg_names, sfreq, types)
    head = _template_head()
    if use_meg:
        _place_helmet(info["chs"][: len(meg_names)])
    if use_eeg:
        scalp = default_sphere()["layers"][-1]["rad"]
        ch_pos = {n: head.origin + scalp * d for n, d in zip(eeg_names, directions, strict=True)}
        info.set_montage(
            mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="head", **head.fiducials)
        )
    with info._unlock():
        info["dev_head_t"] = mne.transforms.Transform(
            "meg", "head", mne.transforms.translation(*(head.origin - HELMET_CENTER_DEVICE_M))
        )
    return info


def _place_helmet(chs: list[dict]) -> None:
    """Set coil positions, orientations and types of MEG channels (mag, grad, grad per site)."""
    positions, normals = _helmet_sites()
    for site, (r, ez) in enumerate(zip(positions, normals, strict=True)):
        ex = np.cross([0.0, 0.0, 1.0], ez)
        norm = np.linalg.norm(ex)
        ex = ex / norm if norm > 1e-9 else np.array([1.0, 0.0, 0.0])
        ey = np.cross(ez, ex)
        # coil frame in loc: position, ex, ey, ez (the normal); a planar gradiometer measures
        # the gradient along its own ex, so the site's two gradiometers use ey and ex
        for k, (cx, cy) in enumerate(((ex, ey), (ey, -ex), (ex, ey))):
            ch = chs[3 * site + k]
            ch["loc"][:] = np.concatenate([r, cx, cy, ez])
            ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
            ch["coil_type"] = FIFF.FIFFV_COIL_VV_MAG_T3 if k == 0 else FIFF.FIFFV_COIL_VV_PLANAR_T1


@functools.lru_cache(maxsize=1)
def default_sphere() -> mne.bem.ConductorModel:
    """The four-shell spherical head fitted to the template 10-05 electrode positions."""
    head = _template_head()
    return mne.make_sphere_model(head.origin, head.radius, verbose="error")


def load_info(path: str | os.PathLike[str], sfreq: float, modality: Modality = "both") -> mne.Info:
    """Real sensor geometry from a FIF recording.

    Parameters
    ----------
    path : path-like
        A FIF file (raw, epochs, evoked, ...) whose measurement info holds MEG and/or EEG
        channels with positions, e.g. ``sample_audvis_raw.fif``.
    sfreq : float
        Sampling rate in Hz of the simulated stream (the file's own rate is ignored).
    modality : {"eeg", "meg", "both"}
        Which of the file's sensors to keep.

    Returns
    -------
    info : mne.Info
        The file's MEG (magnetometers and gradiometers, no reference sensors) and EEG
        channels in the file's order, with its ``dev_head_t`` and digitization; bad-channel
        marks, projectors and compensation matrices are dropped (simulated data has no
        environmental noise for them to act on), and so is the measurement date.

    Raises
    ------
    ValueError
        If the file cannot be read or lacks the requested sensors or their positions.
    """
    try:
        info = mne.io.read_info(path, verbose="error")
    except Exception as exc:  # MNE's readers raise many types on foreign files
        raise ValueError(
            f"Cannot read sensor geometry from {path!s}: {exc}. Give a FIF file recorded with the "
            "sensors to simulate (e.g. sample_audvis_raw.fif)."
        ) from exc
    meg = modality in ("meg", "both")
    eeg = modality in ("eeg", "both")
    picks = mne.pick_types(info, meg=meg, eeg=eeg, ref_meg=False, exclude=())
    types = {info.get_channel_types([int(p)])[0] for p in picks}
    if meg and not types & {"mag", "grad"}:
        raise ValueError(f"{path!s} has no MEG channels; use modality='eeg'.")
    if eeg and "eeg" not in types:
        raise ValueError(f"{path!s} has no EEG channels; use modality='meg'.")
    out = mne.pick_info(info, picks, verbose="error")
    locs = np.array([ch["loc"][:3] for ch in out["chs"]])
    no_pos = [
        ch["ch_name"]
        for ch, r in zip(out["chs"], locs, strict=True)
        if not np.all(np.isfinite(r)) or not np.any(r)
    ]
    if no_pos:
        raise ValueError(
            f"{path!s}: channels {no_pos[:5]}{'...' if len(no_pos) > 5 else ''} have no "
            "position, so their fields cannot be computed; use a file with digitized sensors."
        )
    if meg and out["dev_head_t"] is None:
        raise ValueError(f"{path!s} has MEG channels but no device-to-head transform.")
    with out._unlock():
        out["sfreq"] = float(sfreq)
        out["lowpass"] = float(sfreq) / 2.0
        out["highpass"] = 0.0
        out["bads"] = []
        out["projs"] = []
        out["comps"] = []
        # the simulated stream was not measured when the file was
        out["meas_date"] = None
        out["file_id"] = None
        out["meas_id"] = None
    return out


def head_sphere(info: mne.Info) -> mne.bem.ConductorModel:
    """A spherical head for the sensors in ``info``.

    Fitted to the head digitization when there are enough points (at least
    :data:`MIN_HEADSHAPE_POINTS`); otherwise centred on the MEG helmet (a sphere fitted to
    the MEG sensors) or, without MEG, on the EEG electrodes. The scalp is then kept at least
    :data:`MIN_SENSOR_CLEARANCE_M` inside every MEG sensor.
    """
    head = [
        d["r"]
        for d in info["dig"] or []
        if d["kind"] in (FIFF.FIFFV_POINT_EXTRA, FIFF.FIFFV_POINT_EEG)
        and d["coord_frame"] == FIFF.FIFFV_COORD_HEAD
    ]
    meg = _meg_positions_head(info)
    if len(head) >= MIN_HEADSHAPE_POINTS:
        radius, origin, _ = mne.bem.fit_sphere_to_headshape(info, units="m", verbose="error")
        origin = np.asarray(origin, dtype=float)
    elif len(meg):
        origin, helmet = _fit_sphere(meg)
        radius = helmet - _HELMET_SCALP_GAP_M
    else:
        eeg = np.array([ch["loc"][:3] for ch in info["chs"] if ch["kind"] == FIFF.FIFFV_EEG_CH])
        origin, radius = _fit_sphere(eeg)
    if len(meg):
        radius = min(
            radius, float(np.linalg.norm(meg - origin, axis=1).min()) - MIN_SENSOR_CLEARANCE_M
        )
    return mne.make_sphere_model(origin, float(radius), verbose="error")


def _meg_positions_head(info: mne.Info) -> NDArray[np.float64]:
    picks = mne.pick_types(info, meg=True, ref_meg=False, exclude=())
    if not len(picks) or info["dev_head_t"] is None:
        return np.zeros((0, 3))
    locs = np.array([info["chs"][p]["loc"][:3] for p in picks])
    return mne.transforms.apply_trans(info["dev_head_t"], locs)


def _fit_sphere(points: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """Least-squares sphere through points: centre (m) and radius (m)."""
    # |p|^2 = 2 p.c + (R^2 - |c|^2) is linear in c and the constant
    a = np.c_[2 * points, np.ones(len(points))]
    sol, *_ = np.linalg.lstsq(a, np.sum(points**2, axis=1), rcond=None)
    centre = sol[:3]
    return centre, float(np.sqrt(sol[3] + centre @ centre))


def default_cache_dir() -> Path:
    """Where forward solutions are cached: ``$NEUROCAST_CACHE_DIR``, else ``~/.cache/neurocast``."""
    env = os.environ.get("NEUROCAST_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neurocast"


_MEMORY_CACHE: dict[str, NDArray[np.float64]] = {}


def _geometry_key(
    info: mne.Info,
    sphere: mne.bem.ConductorModel,
    rr: NDArray[np.float64],
    nn: NDArray[np.float64],
) -> str:
    h = hashlib.sha256()
    h.update(f"{_CACHE_VERSION}|{mne.__version__}|".encode())
    for ch in info["chs"]:
        h.update(f"{ch['ch_name']}|{int(ch['kind'])}|{int(ch['coil_type'])}|".encode())
        h.update(np.round(np.asarray(ch["loc"], dtype=float), 9).tobytes())
    if info["dev_head_t"] is not None:
        h.update(np.round(info["dev_head_t"]["trans"], 9).tobytes())
    h.update(np.round(np.asarray(sphere["r0"], dtype=float), 9).tobytes())
    for layer in sphere["layers"]:
        h.update(np.round([layer["rad"], layer["sigma"]], 9).tobytes())
    h.update(np.round(rr, 9).tobytes())
    h.update(np.round(nn, 9).tobytes())
    return h.hexdigest()[:32]


def forward_gain(
    info: mne.Info,
    sphere: mne.bem.ConductorModel,
    rr: NDArray[np.float64],
    nn: NDArray[np.float64],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> NDArray[np.float64]:
    """Fixed-orientation lead field of current dipoles, cached in memory and on disk.

    Parameters
    ----------
    info : mne.Info
        Sensors (MEG in device coordinates with ``dev_head_t``, EEG in head coordinates).
    sphere : ConductorModel
        Spherical head model in head coordinates.
    rr : ndarray, shape (n_sources, 3)
        Dipole positions in head coordinates, metres.
    nn : ndarray, shape (n_sources, 3)
        Unit dipole orientations.
    cache_dir : path-like | None
        Folder for cached solutions (None: :func:`default_cache_dir`). Solutions are keyed by
        a hash of the sensor, head and source geometry and of the MNE version.

    Returns
    -------
    gain : ndarray, shape (n_channels, n_sources)
        Sensor signal per unit dipole moment: V/(A·m) for EEG (reference at infinity),
        T/(A·m) for magnetometers, T/(m·A·m) for gradiometers, rows in ``info`` order.
    """
    rr = np.ascontiguousarray(rr, dtype=float)
    nn = np.ascontiguousarray(nn, dtype=float)
    key = _geometry_key(info, sphere, rr, nn)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "forward" / f"{key}.npy"
    gain: NDArray[np.float64] | None = None
    if path.is_file():
        try:
            gain = np.load(path)
            if gain.shape != (len(info["ch_names"]), len(rr)):
                gain = None
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable cached forward solution %s: %s", path, exc)
            gain = None
    if gain is None:
        gain = _compute_gain(info, sphere, rr, nn)
        _save_atomic(path, gain)
    _MEMORY_CACHE[key] = gain
    return gain


def _compute_gain(
    info: mne.Info,
    sphere: mne.bem.ConductorModel,
    rr: NDArray[np.float64],
    nn: NDArray[np.float64],
) -> NDArray[np.float64]:
    types = set(info.get_channel_types())
    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), verbose="error")
    # trans=None: the source space is given in head coordinates (a sphere model needs no MRI)
    fwd = mne.make_forward_solution(
        info,
        None,
        src,
        sphere,
        meg=bool(types & {"mag", "grad"}),
        eeg="eeg" in types,
        verbose="error",
    )
    if fwd["nsource"] != len(rr):
        raise RuntimeError(
            f"The forward model kept {fwd['nsource']} of {len(rr)} sources; all sources must lie "
            "inside the innermost shell of the head model."
        )
    rows = {name: i for i, name in enumerate(fwd["sol"]["row_names"])}
    free = fwd["sol"]["data"][[rows[n] for n in info["ch_names"]]]
    # free orientation: three columns (x, y, z in head coordinates) per source
    return np.einsum("csk,sk->cs", free.reshape(free.shape[0], len(rr), 3), nn)


def _save_atomic(path: Path, gain: NDArray[np.float64]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, gain)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("Could not cache the forward solution in %s: %s", path.parent, exc)
