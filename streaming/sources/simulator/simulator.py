"""The simulator: a seeded stream of class blocks and image trials, and training epochs.

See :mod:`.physics` for the source model and the activity it renders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mne
import numpy as np
from mne.io.constants import FIFF
from numpy.typing import ArrayLike, NDArray

from neurocast.streaming.sources.base import SIMULATED_TAG, Marker, StreamInfo
from neurocast.streaming.sources.simulator.epochs import SimulatedEpochs
from neurocast.streaming.sources.simulator.geometry import (
    Modality,
    default_info,
    default_sphere,
    head_sphere,
    load_info,
)
from neurocast.streaming.sources.simulator.images import (
    check_image_set,
    default_image_set,
    image_ids_for,
    load_image_set,
    warn_on_norms,
)
from neurocast.streaming.sources.simulator.physics import (
    CLASS_NAMES,
    EVOKED_TAIL_S,
    RAMP_S,
    Renderer,
    Schedule,
    SourceModel,
    class_gains,
    cov_colour,
    white_noise_std,
)
from neurocast.streaming.sources.specs import SimulatorSpec

_MIN_SFREQ = 100.0
_RENDER_AHEAD_S = 0.2  # generate() renders at least this much at a time


class Simulator:
    """Physics-based MEG/EEG generator with class blocks, image trials and markers.

    Parameters
    ----------
    spec : SimulatorSpec | None
        Settings; keyword arguments given explicitly override its fields.
    seed, sfreq, modality, info_path, subject_seed, noise_cov_path, embeddings_path, \
eeg_channels, classes, block_s, image_duration_s
        See :class:`~neurocast.streaming.sources.specs.SimulatorSpec`.
    image_embeddings : array, shape (n_images, dim) | None
        Embeddings of the images shown in the stream (unit-norm rows give realistic
        amplitudes; the response scales with the norm). None: ``embeddings_path``, else
        :func:`~.images.default_image_set` seeded with ``subject_seed``.
    image_ids : sequence of str | None
        Ids of those images (marker ``"image/<id>"``); default ``img000``, ``img001``, ...
    noise_cov : mne.Covariance | None
        A noise covariance to draw sensor noise from instead of white noise (or give
        ``noise_cov_path``). Its channels are matched by name, ignoring spaces.
    background : bool
        Include the 1/f background activity.
    sensor_noise : bool
        Include sensor noise.
    cache_dir : path-like | None
        Forward-solution cache folder (see :func:`~.geometry.forward_gain`).

    Attributes
    ----------
    info : mne.Info
        Channels, positions and sampling rate; ``info["description"]`` says SIMULATED.
    stream_info : StreamInfo
        The same, as a simulated stream.
    class_names : list of str
        Classes in the order of :meth:`simulate_epochs` labels.
    image_ids : list of str
        Images shown in the stream.
    image_embeddings : ndarray, shape (n_images, dim)
        Their embeddings.
    start_time : float
        Source-clock time of sample 0 in seconds (0 unless set, e.g. to
        :func:`~neurocast.streaming.sources.base.local_clock` by :class:`.SimulatorSource`).
    """

    def __init__(
        self,
        spec: SimulatorSpec | None = None,
        *,
        seed: int | None = None,
        sfreq: float | None = None,
        modality: Modality | None = None,
        info_path: str | None = None,
        subject_seed: int | None = None,
        noise_cov_path: str | None = None,
        embeddings_path: str | None = None,
        eeg_channels: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        block_s: float | None = None,
        image_duration_s: float | None = None,
        image_embeddings: ArrayLike | None = None,
        image_ids: Sequence[str] | None = None,
        noise_cov: mne.Covariance | None = None,
        background: bool = True,
        sensor_noise: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        overrides = dict(
            seed=seed,
            sfreq=sfreq,
            modality=modality,
            info_path=info_path,
            subject_seed=subject_seed,
            noise_cov_path=noise_cov_path,
            embeddings_path=embeddings_path,
            eeg_channels=None if eeg_channels is None else list(eeg_channels),
            classes=None if classes is None else list(classes),
            block_s=block_s,
            image_duration_s=image_duration_s,
        )
        self.spec = _merged_spec(spec, overrides)
        sp = self.spec
        self.sfreq = float(sp.sfreq)
        self.seed = int(sp.seed)
        self.class_names = list(sp.classes if sp.classes is not None else CLASS_NAMES)
        self._class_gains = class_gains(self.class_names)
        if image_embeddings is None and sp.embeddings_path is not None:
            emb, ids = load_image_set(sp.embeddings_path)
        elif image_embeddings is None:
            emb, ids = default_image_set(seed=sp.subject_seed)
        else:
            emb = np.asarray(image_embeddings, dtype=np.float32)
            ids = image_ids_for(emb, image_ids)
        check_image_set(emb, ids)
        warn_on_norms(emb)
        self.image_embeddings = emb
        self.image_ids = ids

        info, self._model = self._sensors_and_sources(cache_dir)
        self._noise_colour = self._sensor_noise(noise_cov, info) if sensor_noise else None
        self._background = background
        self.info, self.stream_info = self._describe(info)
        self.start_time = 0.0
        self._start_stream()

    # -- construction helpers -------------------------------------------------------------

    def _sensors_and_sources(self, cache_dir: str | Path | None) -> tuple[mne.Info, SourceModel]:
        """The sensors (default montage or ``info_path``'s) and the subject's dipoles."""
        sp = self.spec
        if sp.info_path is not None:
            info = load_info(sp.info_path, self.sfreq, sp.modality)
            sphere = head_sphere(info)
        else:
            info = default_info(self.sfreq, sp.modality, sp.eeg_channels)
            sphere = default_sphere()
        model = SourceModel(info, sphere, sp.subject_seed, cache_dir)
        if any(t == "eeg" for t in info.get_channel_types()):
            with info._unlock():
                info["custom_ref_applied"] = FIFF.FIFFV_MNE_CUSTOM_REF_ON
        return info, model

    def _sensor_noise(self, cov: mne.Covariance | None, info: mne.Info) -> NDArray[np.float64]:
        """How white noise becomes sensor noise: from ``cov``, ``noise_cov_path`` or white."""
        path = self.spec.noise_cov_path
        if cov is None and path is not None:
            try:
                cov = mne.read_cov(path, verbose="error")
            except Exception as exc:  # MNE's readers raise many types on foreign files
                raise ValueError(f"Cannot read a noise covariance from {path}: {exc}.") from exc
        return cov_colour(cov, info) if cov is not None else white_noise_std(info, self.sfreq)

    def _describe(self, info: mne.Info) -> tuple[mne.Info, StreamInfo]:
        """``info`` labelled SIMULATED in its description, and the stream it describes."""
        subject = self.spec.subject_seed
        description = (
            f"{SIMULATED_TAG} data from the neurocast physics-based simulator (current dipoles "
            "in a spherical head, MNE forward model; classes "
            f"{', '.join(self.class_names)}; {len(self.image_ids)} images); seed={self.seed}, "
            f"subject_seed={subject}. Not a recording."
        )
        with info._unlock():
            info["description"] = description
        stream = StreamInfo(
            name=f"neurocast simulator ({SIMULATED_TAG})",
            info=info,
            simulated=True,
            source_id=f"neurocast-simulator:seed={self.seed}:subject={subject}",
        )
        return info, stream

    def _start_stream(self) -> None:
        """State of :meth:`generate`: nothing rendered yet, seeded plans of blocks and trials."""
        self._n_generated = 0
        # samples rendered but not yet returned by generate(), from sample _ahead_start on
        self._ahead = np.zeros((len(self.info["ch_names"]), 0), dtype=np.float32)
        self._ahead_start = 0
        self._pending: list[tuple[int, int, str]] = []
        self._render_block = max(1, round(_RENDER_AHEAD_S * self.sfreq))
        self._renderer = self._new_renderer(np.random.SeedSequence([self.seed, 0]))
        self._schedule = self._new_schedule(self.image_embeddings)
        plan = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        self._schedule.block_generator = self._block_plan(plan)
        trials = np.random.default_rng(np.random.SeedSequence([self.seed, 2]))
        self._schedule.trial_generator = self._trial_plan(trials, len(self.image_ids))

    def _new_renderer(
        self, seed: np.random.SeedSequence, *, noise: bool = True, rhythms: bool = True
    ) -> Renderer:
        return Renderer(
            self._model,
            self.sfreq,
            seed,
            self._noise_colour if noise else None,
            background=self._background and noise,
            rhythms=rhythms,
        )

    def _new_schedule(self, embeddings: NDArray[np.floating]) -> Schedule:
        return Schedule(self._model.image_responses(embeddings), self._class_gains, self.sfreq)

    def _block_plan(self, rng: np.random.Generator) -> Callable[[int], tuple[int, int]]:
        """Blocks of ``block_s`` ± 12.5 %, classes in shuffled cycles; first at sample 0."""
        order: list[int] = []
        first = True
        block = self.spec.block_s * self.sfreq

        def next_block(last_onset: int) -> tuple[int, int]:
            nonlocal first
            if not order:
                order.extend(rng.permutation(len(self.class_names)).tolist())
            cls = order.pop(0)
            if first:
                first = False
                return 0, cls
            return last_onset + round(block * rng.uniform(0.875, 1.125)), cls

        return next_block

    def _trial_plan(
        self, rng: np.random.Generator, n_images: int
    ) -> Callable[[int], tuple[int, int, int]]:
        """Images for ``image_duration_s`` every duration + 0.5-0.8 s, in shuffled cycles."""
        order: list[int] = []
        dur = max(1, round(self.spec.image_duration_s * self.sfreq))

        def next_trial(last_onset: int) -> tuple[int, int, int]:
            if not order:
                order.extend(rng.permutation(n_images).tolist())
            gap = rng.uniform(0.5, 0.8) * self.sfreq
            onset = round(0.5 * self.sfreq) if last_onset < 0 else last_onset + dur + round(gap)
            return onset, onset + dur, order.pop(0)

        return next_trial

    # -- streaming ------------------------------------------------------------------------

    @property
    def n_generated(self) -> int:
        """Samples generated so far by :meth:`generate` (the next sample's index)."""
        return self._n_generated

    def sample_times(self, start: int, n: int) -> NDArray[np.float64]:
        """Source-clock times in seconds of samples ``start .. start + n``."""
        return self.start_time + np.arange(start, start + n, dtype=np.float64) / self.sfreq

    def generate(self, n_samples: int) -> tuple[NDArray[np.float32], list[Marker]]:
        """The next ``n_samples`` of the stream.

        Consecutive calls continue seamlessly: any chunking of the same total gives the same
        data and markers.

        Parameters
        ----------
        n_samples : int
            Number of samples (>= 0).

        Returns
        -------
        data : ndarray, shape (n_channels, n_samples), float32
            Volts (EEG), tesla (mag), tesla/metre (grad).
        markers : list of Marker
            ``"class/<name>"`` at block onsets and ``"image/<id>"`` at image onsets within
            the chunk, stamped in seconds on the source clock (:attr:`start_time` at sample 0).
        """
        data, events = self._generate(n_samples)
        return data, [
            Marker(self.start_time + onset / self.sfreq, value) for onset, _, value in events
        ]

    def _generate(self, n_samples: int) -> tuple[NDArray[np.float32], list[tuple[int, int, str]]]:
        n = int(n_samples)
        if n < 0 or n != n_samples:
            raise ValueError(f"n_samples must be a non-negative integer, got {n_samples!r}.")
        start, stop = self._n_generated, self._n_generated + n
        rendered = self._ahead_start + self._ahead.shape[1]
        if stop > rendered:
            # render ahead in blocks: the cost of a render is mostly per call, not per sample
            data, events = self._render(rendered, max(stop - rendered, self._render_block))
            self._ahead = np.concatenate([self._ahead[:, start - self._ahead_start :], data], 1)
            self._ahead_start = start
            self._pending.extend(events)
        offset = start - self._ahead_start
        out = self._ahead[:, offset : offset + n]
        events = [e for e in self._pending if e[0] < stop]
        self._pending = [e for e in self._pending if e[0] >= stop]
        self._n_generated = stop
        return out, events

    def _render(self, start: int, n: int) -> tuple[NDArray[np.float32], list[tuple[int, int, str]]]:
        """Samples ``start .. start + n`` of the stream and the events starting in them."""
        sched = self._schedule
        sched.forget_before(start)
        sched.extend_to(start + n)
        data = self._renderer.render(start, n, sched)
        events = [
            (onset, dur, self._event_value(kind, idx))
            for onset, dur, kind, idx in sched.events(start, start + n)
        ]
        return data, events

    def _event_value(self, kind: str, index: int) -> str:
        sched = self._schedule
        if kind == "class":
            return f"class/{self.class_names[sched.block_classes[index]]}"
        return f"image/{self.image_ids[sched.trial_images[index]]}"

    def simulate_raw(
        self,
        seconds: float,
        *,
        progress: Callable[[int], Any] | None = None,
        chunk_s: float = 1.0,
    ) -> mne.io.RawArray:
        """The next ``seconds`` of the stream as a Raw object with annotations.

        Parameters
        ----------
        seconds : float
            Duration in seconds.
        progress : callable | None
            Called with the number of samples generated after each chunk (e.g.
            ``tqdm.update``).
        chunk_s : float
            Generation chunk in seconds (affects memory use, not the data).

        Returns
        -------
        raw : mne.io.RawArray
            Data in SI units; annotations ``"class/<name>"`` (lasting the block, clipped to
            the recording) and ``"image/<id>"`` (lasting the image display);
            ``raw.info["description"]`` says SIMULATED.
        """
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}.")
        total = max(1, round(seconds * self.sfreq))
        step = max(1, round(chunk_s * self.sfreq))
        first = self._n_generated
        pieces: list[NDArray[np.float32]] = []
        events: list[tuple[int, int, str]] = []
        done = 0
        while done < total:
            n = min(step, total - done)
            data, ev = self._generate(n)
            pieces.append(data)
            events.extend(ev)
            done += n
            if progress is not None:
                progress(n)
        raw = mne.io.RawArray(np.concatenate(pieces, axis=1), self.info.copy(), verbose="error")
        if events:
            onsets = np.array([(e[0] - first) / self.sfreq for e in events])
            durations = np.array(
                [min(e[1], first + total - e[0]) / self.sfreq for e in events], dtype=float
            )
            raw.set_annotations(
                mne.Annotations(onsets, durations, [e[2] for e in events], orig_time=None)
            )
        return raw

    # -- training sets --------------------------------------------------------------------

    def simulate_epochs(
        self,
        n_per_class: int,
        *,
        duration_s: float = 1.0,
        classes: Sequence[str] | None = None,
        noise: bool = True,
        seed: int | None = None,
    ) -> SimulatedEpochs:
        """Class-labelled epochs of sustained activity, as fast as the machine allows.

        Each epoch is cut from the steady part of its own class block (after the transition
        from the previous block). No images are shown. Independent of the stream: calling it
        does not advance :meth:`generate`.

        Parameters
        ----------
        n_per_class : int
            Epochs per class (shuffled order).
        duration_s : float
            Epoch length in seconds.
        classes : sequence of str | None
            Classes to simulate (default all of :attr:`class_names`).
        noise : bool
            Include background activity and sensor noise (False: rhythms only).
        seed : int | None
            Random seed (default: the simulator's seed).

        Returns
        -------
        epochs : SimulatedEpochs
            ``labels`` index :attr:`class_names`; ``times`` start at 0.
        """
        names = list(classes) if classes is not None else self.class_names
        unknown = [c for c in names if c not in self.class_names]
        if unknown:
            raise ValueError(f"Unknown classes {unknown}; this simulator has {self.class_names}.")
        if n_per_class < 1 or not duration_s > 0:
            raise ValueError("n_per_class must be >= 1 and duration_s positive.")
        seq = np.random.SeedSequence([self.seed if seed is None else seed, 3])
        rng = np.random.default_rng(seq.spawn(1)[0])
        labels = np.repeat([self.class_names.index(c) for c in names], n_per_class)
        labels = rng.permutation(labels)
        n_times = max(1, round(duration_s * self.sfreq))
        lead = round((RAMP_S + 0.2) * self.sfreq)
        sched = self._new_schedule(self.image_embeddings[:0])  # no images
        renderer = self._new_renderer(seq, noise=noise)
        out = np.empty((len(labels), len(self.info["ch_names"]), n_times), dtype=np.float32)
        slot = lead + n_times
        for i, cls in enumerate(labels):
            sched.block_onsets.append(i * slot)
            sched.block_classes.append(int(cls))
            out[i] = renderer.render(i * slot, slot, sched)[:, lead:]
            sched.forget_before((i + 1) * slot)
        return SimulatedEpochs(
            out,
            np.arange(n_times) / self.sfreq,
            self.info.copy(),
            labels.astype(np.int64),
            list(self.class_names),
            "class",
        )

    def simulate_image_epochs(
        self,
        embeddings: ArrayLike | None = None,
        *,
        image_indices: Sequence[int] | NDArray[np.integer] | None = None,
        n_repeats: int = 1,
        image_ids: Sequence[str] | None = None,
        tmin: float = -0.2,
        tmax: float = 1.0,
        noise: bool = True,
        seed: int | None = None,
    ) -> SimulatedEpochs:
        """Image-evoked epochs, as fast as the machine allows.

        Images are shown for ``image_duration_s``, far enough apart that each epoch holds one
        image's response only; the ongoing classes change in blocks as in the stream.
        Independent of the stream: calling it does not advance :meth:`generate`.

        Parameters
        ----------
        embeddings : array, shape (n_images, dim) | None
            Embeddings of the images (None: the stream's images). The same fixed linear map
            (per ``subject_seed`` and ``dim``) turns them into source patterns.
        image_indices : sequence of int | None
            Row of ``embeddings`` shown in each trial, in order. None: every image
            ``n_repeats`` times in shuffled order.
        n_repeats : int
            Repetitions per image when ``image_indices`` is None.
        image_ids : sequence of str | None
            Names of the rows (default the stream's ids when ``embeddings`` is None, else
            ``img000``, ...).
        tmin, tmax : float
            Epoch limits in seconds relative to image onset (both included).
        noise : bool
            Include background activity, ongoing rhythms and sensor noise (False: the
            evoked responses alone, exactly linear in the embeddings).
        seed : int | None
            Random seed (default: the simulator's seed).

        Returns
        -------
        epochs : SimulatedEpochs
            ``labels`` are rows of ``embeddings``; ``label_names`` their ids.
        """
        if embeddings is None:
            emb = self.image_embeddings
            ids = list(self.image_ids) if image_ids is None else list(image_ids)
        else:
            emb = np.asarray(embeddings, dtype=np.float64)
            ids = image_ids_for(emb, image_ids)
        check_image_set(np.asarray(emb), ids)
        if not tmax > tmin:
            raise ValueError(f"tmax must exceed tmin, got tmin={tmin}, tmax={tmax}.")
        seq = np.random.SeedSequence([self.seed if seed is None else seed, 4])
        rng_order, rng_blocks = (np.random.default_rng(s) for s in seq.spawn(2))
        order = _image_order(rng_order, len(ids), image_indices, n_repeats)
        first = round(tmin * self.sfreq)
        n_times = round(tmax * self.sfreq) - first + 1
        sched = self._new_schedule(np.asarray(emb))
        sched.block_generator = self._block_plan(rng_blocks)
        renderer = self._new_renderer(seq, noise=noise, rhythms=noise)
        return SimulatedEpochs(
            self._render_trials(renderer, sched, order, first, n_times),
            (first + np.arange(n_times)) / self.sfreq,
            self.info.copy(),
            order.astype(np.int64),
            ids,
            "image",
        )

    def _render_trials(
        self,
        renderer: Renderer,
        sched: Schedule,
        order: NDArray[np.int64],
        first: int,
        n_times: int,
    ) -> NDArray[np.float32]:
        """One epoch per image of ``order``, samples ``first`` to ``first + n_times`` from
        its onset: (n_epochs, n_channels, n_times)."""
        dur = max(1, round(self.spec.image_duration_s * self.sfreq))
        tail = round(EVOKED_TAIL_S * self.sfreq) + 1
        # consecutive trials: the previous response has faded before the next epoch starts
        soa = max(n_times, dur + tail - first)
        out = np.empty((len(order), len(self.info["ch_names"]), n_times), dtype=np.float32)
        lead = max(0, -first)  # first trial's pre-stimulus part
        for i, img in enumerate(order):
            onset = lead + i * soa
            sched.trial_onsets.append(onset)
            sched.trial_offsets.append(onset + dur)
            sched.trial_images.append(int(img))
            start = onset + first
            sched.extend_to(start + soa)
            out[i] = renderer.render(start, soa, sched)[:, :n_times]
            sched.forget_before(start + soa)
        return out


def _image_order(
    rng: np.random.Generator,
    n_images: int,
    image_indices: Sequence[int] | NDArray[np.integer] | None,
    n_repeats: int,
) -> NDArray[np.int64]:
    """Rows shown, trial by trial: ``image_indices``, or each image ``n_repeats`` times,
    shuffled."""
    if image_indices is None:
        if n_repeats < 1:
            raise ValueError(f"n_repeats must be >= 1, got {n_repeats}.")
        return rng.permutation(np.tile(np.arange(n_images), n_repeats))
    order = np.asarray(image_indices, dtype=np.int64).reshape(-1)
    if not len(order) or order.min() < 0 or order.max() >= n_images:
        raise ValueError(f"image_indices must be a non-empty list of rows 0..{n_images - 1}.")
    return order


def _merged_spec(spec: SimulatorSpec | None, overrides: dict[str, Any]) -> SimulatorSpec:
    """``spec`` with the overrides that are not None, validated (sfreq at least 100 Hz)."""
    base = spec.model_dump() if spec is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    merged = SimulatorSpec.model_validate({**base, **given})
    if merged.sfreq < _MIN_SFREQ:
        raise ValueError(f"sfreq must be at least {_MIN_SFREQ:g} Hz, got {merged.sfreq:g} Hz.")
    return merged
