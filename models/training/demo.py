"""Classifiers trained on the embedded simulator: the shipped demo model and benchmark models.

:func:`train_simulated_classifier` records a continuous SIMULATED stream from
:class:`~neurocast.streaming.sources.simulator.simulator.Simulator` (class blocks ``rest`` /
``speech`` / ``motor``) and runs the classifier recipe
(:func:`~neurocast.models.training.recipes.classifier.train_classifier`: scalogram windows
inside the class blocks exactly as the decode engine will cut them, validation on held-out
blocks, early stopping), measuring its balanced accuracy on a second stream of another seed
(the same simulated subject) before exporting it. :func:`build_demo_models` writes the small
models that ship with the package (``models/artifacts/``: the classifier, the demo gallery,
the retrieval brain module and the EEG→MEG translator; rebuild them with
``neurocast train demo``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mne
import numpy as np

from neurocast.models.serving.artifact import Artifact
from neurocast.models.serving.schema import InputSpec
from neurocast.models.training.classifier import TrainConfig, export_classifier
from neurocast.models.training.demo_decoders import (
    DEMO_RETRIEVAL,
    DEMO_TRANSLATOR,
    DemoRetrievalConfig,
    DemoTranslatorConfig,
    train_demo_retrieval,
    train_demo_translator,
)
from neurocast.models.training.demo_gallery import build_demo_gallery
from neurocast.models.training.export import ArtifactAbout
from neurocast.models.training.recipes.classifier import (
    ClassifierRecipe,
    LabelledRecording,
    TrainedClassifier,
    train_classifier,
)
from neurocast.models.training.trials import find_trials
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.preprocessing.scalogram import ScalogramSpec
from neurocast.streaming.sources.simulator.simulator import Simulator

logger = logging.getLogger(__name__)

# the shipped artifacts live in the models package itself, beside serving/ and training/
ARTIFACT_DIR = Path(__file__).resolve().parents[1] / "artifacts"
DEMO_CLASSIFIER = "demo-classifier"


@dataclass(frozen=True)
class SimulatedClassifierConfig:
    """How a classifier is trained on the simulator.

    Parameters
    ----------
    backbone : str
        Vision backbone (``"compact"`` for the small shipped demo model).
    pretrained : bool
        ImageNet initialisation (EfficientNet-Lite0 only ships weights).
    input_size : int
        Side of the backbone's input image in pixels.
    compact_width : int
        First-stage width of the compact CNN.
    channel_types : tuple of str
        Simulated sensors the model reads (``"meg"`` picks magnetometers and gradiometers).
    resample_hz : float
        Rate the stream is resampled to before the scalogram, in Hz.
    freqs_hz : tuple of float
        Wavelet frequencies in Hz.
    cycles_per_hz : float
        ``n_cycles = cycles_per_hz * freq`` (a constant time resolution of the wavelets).
    window_s : float
        Model window in seconds.
    train_s, test_s : float
        Length of the training stream and of the held-out test stream, in seconds.
    tmin_s, tmax_s : float
        Range of window ends after each class-block onset, in seconds.
    train_stride_s : float
        Step between training windows in seconds.
    val_fraction : float
        Fraction of training blocks held out for early stopping.
    train : TrainConfig
        Optimisation settings.
    seed : int
        Simulator seed of the training stream (the test stream uses ``seed + 1``) and training
        seed.
    """

    backbone: str = "compact"
    pretrained: bool = False
    input_size: int = 32
    compact_width: int = 16
    channel_types: tuple[str, ...] = ("meg",)
    resample_hz: float = 250.0
    freqs_hz: tuple[float, ...] = tuple(np.round(np.geomspace(6.0, 45.0, 12), 3).tolist())
    cycles_per_hz: float = 0.5
    window_s: float = 0.1
    train_s: float = 240.0
    test_s: float = 80.0
    tmin_s: float = 0.6
    tmax_s: float = 3.4
    train_stride_s: float = 0.1
    val_fraction: float = 0.2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=15, patience=4))
    seed: int = 0


def simulated_input_spec(sim: Simulator, config: SimulatedClassifierConfig) -> InputSpec:
    """The input a simulator-trained model reads: its sensors, preprocessing and wavelets."""
    info = sim.info
    picks = mne.pick_types(
        info,
        meg="meg" in config.channel_types,
        eeg="eeg" in config.channel_types,
        exclude=[],
    )
    if not len(picks):
        raise ValueError(f"The simulator has no channels of types {config.channel_types}.")
    ch_names = [info["ch_names"][i] for i in picks]
    ch_types = [mne.channel_type(info, i) for i in picks]
    freqs = np.asarray(config.freqs_hz)
    return InputSpec(
        ch_names=ch_names,
        ch_types=ch_types,
        sfreq_hz=sim.sfreq,
        window_s=config.window_s,
        context_s=0.0,
        stride_s=0.025,
        preprocess=PreprocessSpec(picks=ch_names, resample_hz=config.resample_hz),
        scalogram=ScalogramSpec(
            sfreq_hz=config.resample_hz,
            freqs_hz=freqs.tolist(),
            n_cycles=(config.cycles_per_hz * freqs).tolist(),
            decim=1,
        ),
    )


def _simulated_recording(
    sim: Simulator, seconds: float, event_map: dict[str, str]
) -> LabelledRecording:
    """Simulate ``seconds`` of stream and label it by its class-block annotations."""
    raw = sim.simulate_raw(seconds)
    trials = find_trials(raw, event_map)
    data = raw.get_data().astype(np.float32)
    return LabelledRecording(data, sim.stream_info, trials.onsets / trials.sfreq, trials.labels)


def _simulated_recipe(config: SimulatedClassifierConfig) -> ClassifierRecipe:
    """The classifier recipe a :class:`SimulatedClassifierConfig` describes."""
    return ClassifierRecipe(
        tmin_s=config.tmin_s,
        tmax_s=config.tmax_s,
        train_stride_s=config.train_stride_s,
        val_fraction=config.val_fraction,
        backbone=config.backbone,
        pretrained=config.pretrained,
        input_size=config.input_size,
        compact_width=config.compact_width,
        train=config.train,
        seed=config.seed,
    )


def _simulated_about(
    trained: TrainedClassifier,
    config: SimulatedClassifierConfig,
    class_names: list[str],
    *,
    name: str,
    version: str,
    description: str,
) -> ArtifactAbout:
    """Provenance and held-out metrics of a classifier trained on the simulator."""
    scores, spec = trained.scores, trained.spec
    settings = {k: v for k, v in asdict(config).items() if k != "train"}
    n_train, n_val = (len(np.unique(w.groups)) for w in (trained.train, trained.val))
    return ArtifactAbout(
        name=name,
        version=version,
        trained_on=(
            f"SIMULATED: neurocast simulator (seed {config.seed}, subject_seed 0), "
            f"{config.train_s:g} s continuous stream with class blocks {class_names}"
        ),
        split=(
            f"train/validation: class blocks of the seed-{config.seed} stream "
            f"({n_train}/{n_val} blocks); test: "
            f"a separate {config.test_s:g} s stream of seed {config.seed + 1}"
        ),
        seed=config.seed,
        metrics={
            "test_window_balanced_accuracy": scores["window_balanced_accuracy"],
            "test_block_balanced_accuracy": scores["trial_balanced_accuracy"],
            "val_window_balanced_accuracy": trained.result.val_balanced_accuracy,
            "best_epoch": float(trained.result.best_epoch),
            "chance_balanced_accuracy": 1.0 / len(class_names),
        },
        metrics_note=(
            f"Measured on SIMULATED data: a held-out {config.test_s:g} s stream of simulator "
            f"seed {config.seed + 1}; windows of {config.window_s:g} s every "
            f"{spec.stride_s:g} s ending {config.tmin_s:g}-{config.tmax_s:g} s after each "
            "block onset; block decision = mean window log-probability. Settings: "
            f"{settings}."
        ),
        simulated_training_data=True,
        description=description
        or (
            "Demo classifier of the simulator's activity classes, trained on SIMULATED data "
            f"({config.backbone} backbone, {config.input_size} px input). Not a model of real "
            "brain data."
        ),
    )


def train_simulated_classifier(
    path: str | Path,
    config: SimulatedClassifierConfig | None = None,
    *,
    name: str = DEMO_CLASSIFIER,
    version: str = "1",
    description: str = "",
) -> Artifact:
    """Train a classifier of the simulator's classes on SIMULATED data and export it.

    Parameters
    ----------
    path : path-like
        The artifact to write.
    config : SimulatedClassifierConfig | None
        Settings (defaults: the small demo model).
    name, version, description : str
        Artifact metadata.

    Returns
    -------
    artifact : Artifact
        The written artifact; its metrics hold the balanced accuracy on the held-out
        simulated stream and ``simulated_training_data`` is True.
    """
    config = config or SimulatedClassifierConfig()
    train_sim = Simulator(seed=config.seed)
    class_names = list(train_sim.class_names)
    event_map = {f"class/{c}": c for c in class_names}

    logger.info("Simulating %g s of training stream (SIMULATED data)", config.train_s)
    trained = train_classifier(
        simulated_input_spec(train_sim, config),
        [_simulated_recording(train_sim, config.train_s, event_map)],
        len(class_names),
        _simulated_recipe(config),
        [_simulated_recording(Simulator(seed=config.seed + 1), config.test_s, event_map)],
    )
    logger.info("Held-out simulated stream: %s", trained.scores)
    return export_classifier(
        trained.model,
        path,
        check_inputs=trained.check_inputs(config.seed),
        input_spec=trained.spec,
        class_names=class_names,
        about=_simulated_about(
            trained, config, class_names, name=name, version=version, description=description
        ),
    )


def build_demo_models(out_dir: str | Path = ARTIFACT_DIR, *, seed: int = 0) -> list[Artifact]:
    """Train and write the models the demo ships with (``neurocast train demo``).

    The classifier, the demo gallery (pictures embedded with EfficientNet-Lite0), the brain
    module retrieving its pictures and the EEG→MEG translator, each by its family's recipe.

    Parameters
    ----------
    out_dir : path-like
        Folder of the artifacts (the package's ``models/artifacts`` by default).
    seed : int
        Simulator and training seed (the shipped models use 0).

    Returns
    -------
    artifacts : list of Artifact
        The written artifacts.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = SimulatedClassifierConfig(seed=seed)
    artifacts = [train_simulated_classifier(out / f"{DEMO_CLASSIFIER}.onnx", config)]
    gallery = build_demo_gallery(out)
    artifacts.append(
        train_demo_retrieval(
            str(out / f"{DEMO_RETRIEVAL}.onnx"), gallery, DemoRetrievalConfig(seed=seed)
        )
    )
    artifacts.append(
        train_demo_translator(str(out / f"{DEMO_TRANSLATOR}.onnx"), DemoTranslatorConfig(seed=seed))
    )
    return artifacts
