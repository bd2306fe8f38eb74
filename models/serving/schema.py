"""Artifact metadata: what a model reads, outputs, where it comes from and how well it does.

:class:`ArtifactMetadata` is the JSON document every artifact carries in its ONNX file
(:mod:`.artifact`). This module is on the serving path: it needs pydantic, never torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurocast.models.serving.features import FeatureSpec
from neurocast.streaming.engine.results import ResultKind
from neurocast.streaming.engine.windows import WindowSpec
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.preprocessing.scalogram import ScalogramSpec

METADATA_KEY = "neurocast"
FORMAT_VERSION = 1
ARTIFACT_SUFFIX = ".onnx"

Task = Literal["classification", "retrieval", "translation", "embedding"]
TASK_KINDS: dict[str, ResultKind] = {
    "classification": "probabilities",
    "retrieval": "retrieval",
    "translation": "translation",
    "embedding": "embedding",
}


def same_rate(a: float, b: float) -> bool:
    """True when two rates in Hz are equal within what rational resampling reaches."""
    # rational resampling reaches the requested rate within 1e-5 (see streaming.preprocess)
    return abs(a - b) <= 1e-4 * max(a, b)


class ArtifactError(ValueError):
    """A file is not a valid artifact; the message says why and what to do."""


class StreamMismatchError(ValueError):
    """A stream does not fit a model (channels, types or rate); the message says what to do."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Spec):
    """What a model reads: channels, rate, window and preprocessing.

    Parameters
    ----------
    ch_names : list of str
        The model's input channels, in the order of the input tensor. Streams are matched by
        name; extra stream channels are ignored.
    ch_types : list of str
        MNE channel type of each (``"mag"``, ``"grad"``, ``"eeg"``, ...).
    sfreq_hz : float
        Sampling rate in Hz of the recordings the model was trained on. Streams must run at
        this rate unless ``preprocess.resample_hz`` is set.
    window_s : float
        Window length in seconds.
    context_s : float
        History before the window that the model also reads, in seconds.
    stride_s : float
        Stride in seconds between windows when the model was trained and evaluated (sessions
        choose their own).
    preprocess : PreprocessSpec
        Online preprocessing; ``picks`` is None or equal to ``ch_names``.
    scalogram : ScalogramSpec | None
        When set, the model reads Morlet wavelet power (channels × frequencies × time,
        computed by :class:`~neurocast.streaming.preprocessing.scalogram.StreamingMorlet` from the
        preprocessed signal) instead of the signal itself. Its ``sfreq_hz`` is the
        preprocessing output rate and its ``latency_s`` the scalogram's delay. The
        preprocessing's robust scaling then applies to the continuous signal before the
        wavelets (recommended for MEG in tesla, whose power underflows float32); baseline
        and clipping are not allowed.
    features : FeatureSpec | None
        A filter bank, or numpy steps (covariance, tangent space, Riemannian distances)
        between the preprocessing and the graph (:mod:`.features`); the graph then reads
        their output.
    ch_aliases : dict of str to str
        Stream channel name → model channel name, applied to a stream that lacks the model's
        names (e.g. the raw EEGBCI names ``"Fc5."`` → ``"FC5"`` for a model trained on
        standardised names).
    """

    ch_names: list[str] = Field(min_length=1)
    ch_types: list[str] = Field(min_length=1)
    sfreq_hz: float = Field(gt=0)
    window_s: float = Field(gt=0)
    context_s: float = Field(0.0, ge=0)
    stride_s: float = Field(0.025, gt=0)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    scalogram: ScalogramSpec | None = None
    features: FeatureSpec | None = None
    ch_aliases: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if len(self.ch_types) != len(self.ch_names):
            raise ValueError(
                f"ch_types has {len(self.ch_types)} entries for {len(self.ch_names)} channels."
            )
        dupes = sorted({c for c in self.ch_names if self.ch_names.count(c) > 1})
        if dupes:
            raise ValueError(f"ch_names lists channels more than once: {dupes}.")
        picks = self.preprocess.picks
        if picks is not None and picks != self.ch_names:
            raise ValueError(
                "preprocess.picks must be None or equal to ch_names (the model's channels in "
                "its order)."
            )
        if self.features is not None:
            if self.scalogram is not None:
                raise ValueError("features and scalogram cannot be combined.")
            self.features.output_shape(len(self.ch_names), self.n_times)
        if self.scalogram is not None:
            if not same_rate(self.scalogram.sfreq_hz, self.model_sfreq_hz):
                raise ValueError(
                    f"scalogram.sfreq_hz={self.scalogram.sfreq_hz} must be the preprocessing "
                    f"output rate ({self.model_sfreq_hz} Hz)."
                )
            pre = self.preprocess
            if pre.baseline_s is not None or pre.clip is not None:
                raise ValueError(
                    "Baseline and clipping act on signal windows, not on wavelet power: scale "
                    "the power inside the exported graph instead (robust scaling is allowed: it "
                    "scales the continuous signal before the wavelets)."
                )
        return self

    @property
    def model_sfreq_hz(self) -> float:
        """Rate in Hz of the preprocessed signal (``resample_hz`` or ``sfreq_hz``)."""
        return self.preprocess.resample_hz or self.sfreq_hz

    @property
    def window(self) -> WindowSpec:
        """The window as the decode engine takes it."""
        return WindowSpec(window_s=self.window_s, stride_s=self.stride_s, context_s=self.context_s)

    @property
    def n_times(self) -> int:
        """Time samples of one model input (scalogram columns for scalogram inputs)."""
        rate = self.model_sfreq_hz
        if self.scalogram is not None:
            rate = self.scalogram.sfreq_out_hz
        return self.window.in_samples(rate).total

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        if self.scalogram is not None:
            return (len(self.ch_names), self.scalogram.n_freqs, self.n_times)
        if self.features is not None:
            return self.features.output_shape(len(self.ch_names), self.n_times)
        return (len(self.ch_names), self.n_times)

    @property
    def axes(self) -> tuple[str, ...]:
        """Names of the input's axes, without the batch axis."""
        if self.scalogram is not None:
            return ("channels", "frequencies", "times")
        if self.features is not None:
            return self.features.axes()
        return ("channels", "times")


class OutputSpec(_Spec):
    """What a model outputs; which fields are needed depends on the task.

    Parameters
    ----------
    tensor : str | None
        Name of the graph output to use; None for the first.
    class_names : list of str | None
        Classification: the class of each output column.
    logits : bool
        Classification: the graph outputs logits (softmax is applied by the runtime) rather
        than probabilities.
    embedding_size : int | None
        Retrieval and embedding: length of the output vector.
    gallery : str | None
        Retrieval: name of the image gallery the embedding is searched in.
    ch_names, ch_types : list of str | None
        Translation: the output channels and their MNE types.
    sfreq_hz : float | None
        Translation: rate of the output signal in Hz.
    """

    tensor: str | None = None
    class_names: list[str] | None = None
    logits: bool = True
    embedding_size: int | None = Field(None, ge=1)
    gallery: str | None = None
    ch_names: list[str] | None = None
    ch_types: list[str] | None = None
    sfreq_hz: float | None = Field(None, gt=0)


class Provenance(_Spec):
    """Where a model comes from.

    Parameters
    ----------
    data : str
        The training data (dataset, subjects, runs, or "simulated ..." for simulated data).
    split : str
        How data were split into training, validation and test sets.
    seed : int | None
        Random seed of the training run.
    git_commit : str | None
        Commit of the code that trained and exported the model.
    """

    data: str
    split: str
    seed: int | None = None
    git_commit: str | None = None


class Metrics(_Spec):
    """Measured quality of a model.

    Parameters
    ----------
    values : dict of str to float
        Named figures, e.g. ``{"test_balanced_accuracy": 0.81}``.
    note : str
        How and on what they were measured.
    """

    values: dict[str, float] = Field(default_factory=dict)
    note: str = ""


class ArtifactMetadata(_Spec):
    """Everything stored with a model (the JSON document in the ONNX file).

    Parameters
    ----------
    name : str
        Model name (letters, digits, ``.``, ``_``, ``-``).
    version : str
        Model version.
    task : str
        ``"classification"``, ``"retrieval"``, ``"translation"`` or ``"embedding"``.
    input : InputSpec
        What the model reads.
    output : OutputSpec
        What it outputs.
    provenance : Provenance
        Training data, split, seed and code commit.
    simulated_training_data : bool
        True when the model was trained on simulated data; every output says so.
    metrics : Metrics
        Measured quality.
    description : str
        Free text.
    content_sha256 : str | None
        Hash of the ONNX model without its metadata; set by :func:`save_artifact`.
    format_version : int
        Version of this metadata layout.
    """

    format_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    version: str = Field(min_length=1, max_length=64)
    task: Task
    input: InputSpec
    output: OutputSpec
    provenance: Provenance
    simulated_training_data: bool
    metrics: Metrics = Field(default_factory=Metrics)
    description: str = ""
    content_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _check_outputs(self) -> ArtifactMetadata:
        out = self.output
        if self.task == "classification":
            if not out.class_names or len(out.class_names) < 2:
                raise ValueError("A classification model needs output.class_names (two or more).")
        elif self.task in ("retrieval", "embedding"):
            if out.embedding_size is None:
                raise ValueError(f"A {self.task} model needs output.embedding_size.")
            if self.task == "retrieval" and not out.gallery:
                raise ValueError("A retrieval model needs output.gallery (the gallery's name).")
        else:
            if not out.ch_names or out.ch_types is None or out.sfreq_hz is None:
                raise ValueError(
                    "A translation model needs output.ch_names, output.ch_types and "
                    "output.sfreq_hz."
                )
            if len(out.ch_types) != len(out.ch_names):
                raise ValueError(
                    f"output.ch_types has {len(out.ch_types)} entries for "
                    f"{len(out.ch_names)} output channels."
                )
        return self

    @property
    def kind(self) -> ResultKind:
        """The kind of result the model produces (``classification`` → ``probabilities``)."""
        return TASK_KINDS[self.task]
