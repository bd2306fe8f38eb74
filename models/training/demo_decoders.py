"""The demo's retrieval and translation models, trained on SIMULATED data by their recipes.

:func:`train_demo_retrieval` runs the retrieval recipe
(:func:`~neurocast.models.training.recipes.retrieval.fit_retrieval`) on the simulator's MEG
responses to the demo gallery's pictures (the subject the demo stream simulates) and exports
a brain module that searches that gallery. :func:`train_demo_translator` runs the translation
recipe (:func:`~neurocast.models.training.recipes.translator.train_translator`) on simulated
subjects other than the demo's and exports the EEG→MEG network. Both are small enough to ship
and to train on two cores within minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from neurocast.models.nets.brain_module import small_config
from neurocast.models.serving.artifact import Artifact
from neurocast.models.serving.gallery import Gallery
from neurocast.models.training.export import ArtifactAbout
from neurocast.models.training.recipes.retrieval import fit_retrieval
from neurocast.models.training.recipes.translator import SubjectSplit, train_translator
from neurocast.models.training.retrieval import RetrievalTrainConfig, export_retrieval
from neurocast.models.training.retrieval_data import preprocess_epochs, retrieval_spec
from neurocast.models.training.translation import TranslatorTrainConfig, export_translator
from neurocast.models.training.translation_data import TranslationWindow, simulator_spec
from neurocast.models.training.translation_scoring import evaluate_segment
from neurocast.streaming.sources.simulator.simulator import Simulator

DEMO_RETRIEVAL = "demo-retrieval"
DEMO_TRANSLATOR = "demo-translator"


@dataclass(frozen=True)
class DemoRetrievalConfig:
    """How the demo retrieval model is trained.

    Parameters
    ----------
    sfreq : float
        Simulation rate in Hz (the demo stream's).
    repeats : int
        Simulated trials per picture.
    test_repeats : int
        Of these, the trials per picture held out for measuring (the last ones).
    window_s, context_s : float
        Model window and the baseline span before it, in seconds.
    end_range_s : tuple of float
        First and last window end after image onset trained on, in seconds.
    max_epochs, patience : int
        Training epochs and early-stopping patience.
    seed : int
        Simulator, split and training seed; the simulated subject is ``subject_seed`` 0, the
        demo stream's.
    """

    sfreq: float = 1000.0
    repeats: int = 40
    test_repeats: int = 4
    window_s: float = 0.1
    context_s: float = 0.2
    end_range_s: tuple[float, float] = (0.1, 0.6)
    max_epochs: int = 20
    patience: int = 5
    seed: int = 0


def _repeat_index(labels: NDArray[np.integer]) -> NDArray[np.intp]:
    """How many earlier trials showed the same picture, for each trial."""
    seen: dict[int, int] = {}
    out = np.empty(len(labels), dtype=np.intp)
    for i, lab in enumerate(labels.tolist()):
        out[i] = seen.get(lab, 0)
        seen[lab] = out[i] + 1
    return out


def train_demo_retrieval(
    path: str, gallery: Gallery, config: DemoRetrievalConfig | None = None
) -> Artifact:
    """Train the demo brain module on SIMULATED MEG responses to the gallery's pictures.

    Parameters
    ----------
    path : str
        The artifact to write (the gallery must be saved beside it as ``<name>.npz``).
    gallery : Gallery
        The demo gallery; the simulator's evoked responses are driven by its embeddings.
    config : DemoRetrievalConfig | None
        Settings (defaults: the shipped model).

    Returns
    -------
    artifact : Artifact
        The written artifact; its metrics are measured on held-out trials.
    """
    c = config or DemoRetrievalConfig()
    emb = gallery.embeddings.astype(np.float32)
    sim = Simulator(
        sfreq=c.sfreq, modality="meg", seed=c.seed, subject_seed=0,
        image_embeddings=emb, image_ids=gallery.image_ids,
    )  # fmt: skip
    tmin = -(c.context_s + c.window_s + 0.3)
    raw = sim.simulate_image_epochs(n_repeats=c.repeats, tmin=tmin, tmax=c.end_range_s[1] + 0.1)
    spec = retrieval_spec(sim.stream_info.ch_names, context_s=c.context_s)
    epochs = preprocess_epochs(raw.data, sim.stream_info, spec, tmin, raw.labels)
    # the demo searches the pictures it shows, so whole trials (not pictures) are held out
    test = _repeat_index(raw.labels) >= c.repeats - c.test_repeats
    fit = fit_retrieval(
        epochs, sim.info, spec, emb, test,
        window_s=c.window_s, context_s=c.context_s, end_range_s=c.end_range_s,
        config=small_config(1),
        train_config=RetrievalTrainConfig(
            max_epochs=c.max_epochs, patience=c.patience, lr=1e-3, seed=c.seed
        ),
    )  # fmt: skip
    return export_retrieval(
        fit.module, path, gallery=gallery, info=sim.info, spec=fit.spec,
        geometry=fit.geometry, check_inputs=fit.check_inputs,
        about=ArtifactAbout(
            name=DEMO_RETRIEVAL,
            version="1",
            trained_on=(
                f"SIMULATED MEG responses ({len(sim.info['ch_names'])} channels, {c.sfreq:g} Hz, "
                f"subject_seed 0, seed {c.seed}) to the {gallery.n_images} pictures of gallery "
                f"{gallery.name!r}, {c.repeats} trials each"
            ),
            split=(
                f"test: the last {c.test_repeats} trials of every picture; early stopping on the "
                "trials of held-out pictures"
            ),
            seed=c.seed, metrics=fit.metrics,
            metrics_note=(
                "Held-out SIMULATED trials: rank of the shown picture among all gallery pictures, "
                f"per window end from {c.end_range_s[0]} to {c.end_range_s[1]} s after onset "
                "(mean and peak); ridge_*: RidgeCV on the same windows."
            ),
            simulated_training_data=True,
            description=(
                "Demo brain module retrieving the demo gallery's pictures from MEG, trained on "
                "SIMULATED data. Not a model of real brain data."
            ),
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class DemoTranslatorConfig:
    """How the demo EEG→MEG translator is trained.

    Parameters
    ----------
    n_train_subjects : int
        Simulated training subjects (seeds 1, 2, ...; validation and test take the next two).
    seconds : float
        Seconds simulated per subject.
    steps : int
        Maximum optimiser steps.
    base_channels, depth, lstm_hidden : int
        U-Net width at level 1, its levels and the Bi-LSTM units per direction.
    seed : int
        Training seed.
    """

    n_train_subjects: int = 4
    seconds: float = 30.0
    steps: int = 400
    base_channels: int = 16
    depth: int = 2
    lstm_hidden: int = 32
    seed: int = 0


def train_demo_translator(path: str, config: DemoTranslatorConfig | None = None) -> Artifact:
    """Train the demo EEG→MEG translator on SIMULATED subjects and export the network.

    Parameters
    ----------
    path : str
        The artifact to write.
    config : DemoTranslatorConfig | None
        Settings (defaults: the shipped model).

    Returns
    -------
    artifact : Artifact
        The written artifact; its metrics are median correlations on a held-out subject.
    """
    c = config or DemoTranslatorConfig()
    window = TranslationWindow(multiple=2**c.depth)
    spec = simulator_spec(None, None)
    n = c.n_train_subjects
    trained = train_translator(
        spec,
        window,
        SubjectSplit(train=list(range(1, n + 1)), val=[n + 1], test=[n + 2], seconds=c.seconds),
        TranslatorTrainConfig(max_steps=c.steps, n_threads=1, seed=c.seed),
        base_channels=c.base_channels,
        depth=c.depth,
        lstm_hidden=c.lstm_hidden,
    )
    metrics: dict[str, float] = {}
    for which in ("net", "ridge"):
        summary = evaluate_segment(trained.model, trained.test[0], which).summary()
        suffix = "" if which == "net" else "_ridge"
        for key in ("corr_mag", "corr_grad", "ev_mag", "ev_grad"):
            metrics[f"sim_{key}{suffix}"] = summary[key]
    return export_translator(
        trained.model,
        path,
        which="net",
        check_segment=trained.test[0],
        about=ArtifactAbout(
            name=DEMO_TRANSLATOR,
            seed=c.seed,
            metrics=metrics,
            metrics_note=(
                "Median over MEG sensors of the correlation (corr) and explained variance (ev) "
                "of translated against SIMULATED MEG of a held-out simulated subject (seed "
                f"{n + 2}), per magnetometers and gradiometers; *_ridge: the ridge baseline on "
                "the same windows."
            ),
        ),
        stream_sfreq=spec.sfreq,
    )
