"""The scalogram transfer classifier: backbones, mixing, fine-tuning groups, training, export."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.special import log_softmax
from sklearn.metrics import balanced_accuracy_score

from neurocast.clients.cli import build_parser
from neurocast.models.nets.backbones import (
    IMAGENET_NORMALIZATION,
    build_backbone,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
)
from neurocast.models.nets.classifier import (
    PCAMixing,
    ScalogramClassifier,
    ScalogramStandardizer,
    SensorMixing,
)
from neurocast.models.serving import load_artifact
from neurocast.models.serving.schema import InputSpec
from neurocast.models.training.classifier import (
    TrainConfig,
    build_classifier,
    export_classifier,
    fit,
    trial_log_proba,
)
from neurocast.models.training.classifier_data import (
    ScalogramWindows,
    preprocess_recording,
    recording_power,
    split_by_group,
    trial_windows,
)
from neurocast.models.training.export import (
    INPUT_NAME,
    ArtifactAbout,
    ExportCheckError,
    check_onnx,
    export_onnx,
)
from neurocast.models.training.trials import find_trials
from neurocast.streaming.io import read_recording
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.preprocessing.scalogram import ScalogramSpec
from neurocast.streaming.sources.base import StreamInfo

pytestmark = pytest.mark.timeout(120)

N_CH, N_FREQS, N_TIMES = 5, 4, 6
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _standardizer(n_ch: int = N_CH, n_freqs: int = N_FREQS) -> ScalogramStandardizer:
    return ScalogramStandardizer(np.zeros((n_ch, n_freqs)), np.ones((n_ch, n_freqs)))


def _power(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, N_CH, N_FREQS, N_TIMES, generator=g) + 0.1


def _separable_windows(n_trials: int = 8, seed: int = 0) -> ScalogramWindows:
    """Two classes differing in the power of channel 0 at frequency 1, one trial per 'record'."""
    rng = np.random.default_rng(seed)
    power, rec, start, labels, groups = [], [], [], [], []
    for t in range(n_trials):
        label = t % 2
        p = rng.gamma(2.0, 1.0, size=(N_CH, N_FREQS, 3 * N_TIMES)).astype(np.float32)
        p[0, 1] *= 8.0 if label else 0.125
        power.append(p)
        for s in (0, N_TIMES, 2 * N_TIMES):
            rec.append(t)
            start.append(s)
            labels.append(label)
            groups.append(t)
    a = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return ScalogramWindows(power, a(rec), a(start), a(labels), a(groups), N_TIMES)


# --------------------------------------------------------------------------- backbones


def test_efficientnet_weights_are_the_packaged_imagenet_weights() -> None:
    model = efficientnet_lite0(pretrained=True)
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(
        model.blocks[3].depthwise_conv.weight, state["_blocks.3._depthwise_conv.weight"]
    )
    torch.testing.assert_close(model.bn1.running_var, state["_bn1.running_var"])
    torch.testing.assert_close(model.fc.weight, state["_fc.weight"])
    random = efficientnet_lite0(pretrained=False)
    assert not torch.allclose(random.conv_stem.weight, state["_conv_stem.weight"])


def test_efficientnet_recognises_a_cat() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    image = resize(skimage_data.chelsea().astype(np.float32) / 255, (224, 224), anti_aliasing=True)
    mean, std = IMAGENET_NORMALIZATION["efficientnet-lite0"]
    x = (
        torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)
        - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        probs = efficientnet_lite0().classify(x[None]).softmax(-1)[0]
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.5


@pytest.mark.parametrize(
    ("name", "n_features"), [("resnet18", 512), ("vit-tiny", 192), ("compact", 32)]
)
def test_backbones_give_feature_vectors(name: str, n_features: int) -> None:
    model = build_backbone(name, pretrained=False, image_size=32, width=8)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, n_features)
    assert model.last_block()


def test_user_weights_are_loaded_and_mismatches_refused(tmp_path: Path) -> None:
    reference = build_backbone("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = build_backbone("resnet18", weights=path)
    torch.testing.assert_close(loaded.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    vit = build_backbone("vit-tiny", pretrained=False)
    vit_path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), vit_path)
    small = build_backbone("vit-tiny", weights=vit_path, image_size=112)  # resampled positions
    assert small.pos_embed.shape == (1, 7 * 7 + 1, 192)
    with pytest.raises(ValueError, match="does not match ResNet18"):
        build_backbone("resnet18", weights=vit_path)
    with pytest.raises(ValueError, match="--weights"):
        build_backbone("resnet18")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("vit-tiny", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("alexnet")


# --------------------------------------------------------------------------- classifier


def test_shapes_and_mixing_layer() -> None:
    model = ScalogramClassifier(
        _standardizer(), 3, input_size=32, backbone="compact", pretrained=False
    )
    x = _power(2)
    assert model(x).shape == (2, 3)
    assert model.image(x).shape == (2, 3, 32, 32)
    assert isinstance(model.mixing, SensorMixing)
    conv = model.mixing.conv
    assert conv.in_channels == N_CH and conv.out_channels == 3 and conv.kernel_size == (1, 1)
    # each image channel is one spatial filter applied to every (frequency, time) pixel
    z = model.standardizer(x)
    expected = torch.einsum("oc,bcft->boft", conv.weight[:, :, 0, 0], z) + conv.bias[:, None, None]
    torch.testing.assert_close(model.mixing(z), expected)


def test_standardizer_is_log_power_zscore() -> None:
    rng = np.random.default_rng(0)
    power = rng.gamma(2.0, 1e-20, size=(10, N_CH, N_FREQS, N_TIMES)).astype(np.float32)
    z = ScalogramStandardizer.fit(power)(torch.from_numpy(power)).numpy()
    np.testing.assert_allclose(z.mean(axis=(0, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 3)), 1, atol=1e-3)
    with pytest.raises(ValueError, match="n_channels, n_freqs"):
        ScalogramStandardizer(np.zeros(3), np.ones(3))


def test_freezing_and_learning_rates() -> None:
    model = ScalogramClassifier(_standardizer(), 2, input_size=32)
    last = {id(p) for m in model.backbone.last_block() for p in m.parameters()}
    assert not model.backbone.conv_stem.weight.requires_grad
    assert not any(p.requires_grad for p in model.backbone.blocks[0].parameters())
    assert all(p.requires_grad for p in model.backbone.blocks[-1].parameters())
    groups = {g["name"]: g for g in model.param_groups()}
    assert groups["last_block"]["lr"] == 1e-4 and groups["new"]["lr"] == 1e-3
    assert {id(p) for p in groups["last_block"]["params"]} == last
    new = {id(p) for p in groups["new"]["params"]}
    assert new == {id(p) for m in (model.mixing, model.head) for p in m.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == last | new
    # pretrained batch-norm statistics stay ImageNet's in training mode
    model.train()
    assert not model.backbone.bn0.training and model.head.training


def test_ablations_build() -> None:
    random = ScalogramClassifier(_standardizer(), 2, input_size=32, pretrained=False)
    assert all(p.requires_grad for p in random.backbone.parameters())
    (group,) = random.param_groups()
    assert group["lr"] == 1e-3
    z = np.random.default_rng(1).normal(size=(20, N_CH, N_FREQS, N_TIMES))
    pca = PCAMixing.fit(z)
    fixed = ScalogramClassifier(_standardizer(), 2, input_size=32, mixing="pca3", pca=pca)
    assert fixed(_power(2)).shape == (2, 2)
    assert not any(p.requires_grad for p in fixed.mixing.parameters())
    assert {g["name"] for g in fixed.param_groups()} == {"last_block", "new"}
    # whitened: unit variance per component on the fitting data
    out = pca(torch.from_numpy(z).float()).numpy()
    np.testing.assert_allclose(out.var(axis=(0, 2, 3), ddof=1), 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match="PCAMixing"):
        ScalogramClassifier(_standardizer(), 2, input_size=32, mixing="pca3")
    with pytest.raises(ValueError, match="Unknown mixing"):
        ScalogramClassifier(_standardizer(), 2, input_size=32, mixing="ica")
    with pytest.raises(ValueError, match="at least 2 classes"):
        ScalogramClassifier(_standardizer(), 1, input_size=32)


def test_discriminant_mixing_init_finds_the_informative_sensor() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(60, N_CH, N_FREQS, N_TIMES))
    labels = np.repeat([0, 1], 30)
    z[labels == 1, 2] += 0.8  # only sensor 2 differs between the classes
    mixing = SensorMixing(N_CH)
    mixing.init_discriminant(z, labels)
    w = mixing.conv.weight[:, :, 0, 0].detach().numpy()
    assert np.argmax(np.abs(w[0])) == 2
    out = mixing(torch.from_numpy(z).float()).detach().numpy()
    # every output centred with unit variance over the training pixels
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1.0, rtol=1e-3)
    # the first output separates the classes; the others are principal axes, still trained
    first = out[:, 0].mean(axis=(1, 2))
    gap = abs(first[labels == 1].mean() - first[labels == 0].mean())
    spread = max(first[labels == k].std() for k in (0, 1))
    assert gap > 0.6 and gap > 3 * spread  # the shift is 0.8 of the pixel noise
    assert all(p.requires_grad for p in mixing.parameters())
    with pytest.raises(ValueError, match="at least two classes"):
        mixing.init_discriminant(z, np.zeros(60, dtype=np.int64))


# --------------------------------------------------------------------------- training


def test_split_keeps_trials_whole() -> None:
    w = _separable_windows(10)
    tr, va = split_by_group(w.labels, w.groups, 0.2, seed=0)
    assert not set(w.groups[tr]) & set(w.groups[va])
    assert set(w.labels[va]) == {0, 1}
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_group(w.labels, w.groups, 1.5, seed=0)
    with pytest.raises(ValueError, match="at least 2 per"):
        split_by_group(w.labels[:6], w.groups[:6], 0.2, seed=0)


def test_training_steps_learn_and_are_seeded() -> None:
    w = _separable_windows(8)
    tr, va = split_by_group(w.labels, w.groups, 0.25, seed=0)
    config = TrainConfig(max_epochs=2, max_steps_per_epoch=2, batch_size=8, progress=False)

    def run() -> tuple[ScalogramClassifier, float]:
        model = build_classifier(
            w.subset(tr), 2, backbone="compact", pretrained=False, input_size=32
        )
        before = model.head.weight.detach().clone()
        result = fit(model, w.subset(tr), w.subset(va), config)
        assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
        assert not torch.equal(before, model.head.weight)
        return model, result.val_loss

    (m1, loss1), (m2, loss2) = run(), run()
    assert loss1 == loss2
    torch.testing.assert_close(m1.head.weight, m2.head.weight)


def test_bad_training_input() -> None:
    w = _separable_windows(4)
    with pytest.raises(ValueError, match="outside its scalogram"):
        ScalogramWindows(w.power, w.recording, w.start + 100, w.labels, w.groups, N_TIMES)
    model = build_classifier(w, 2, backbone="compact", pretrained=False, input_size=32)
    only_zero = w.subset(np.flatnonzero(w.labels == 0))
    with pytest.raises(ValueError, match="Every class needs training windows"):
        fit(model, only_zero, w, TrainConfig(max_epochs=1, progress=False))
    with pytest.raises(ValueError, match="both sides of the split"):
        fit(model, w, w.subset(np.array([], dtype=np.int64)), TrainConfig(progress=False))
    with pytest.raises(ValueError, match="Unknown mixing_init"):
        build_classifier(w, 2, backbone="compact", input_size=32, mixing_init="ica")  # type: ignore[arg-type]


def test_trial_decision_is_mean_log_probability() -> None:
    logp = np.log(np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]]))
    trials, mean = trial_log_proba(logp, np.array([3, 3, 5, 5]))
    assert trials.tolist() == [3, 5]
    np.testing.assert_allclose(mean[0], logp[:2].mean(axis=0))
    assert mean.argmax(axis=1).tolist() == [0, 1]


# --------------------------------------------------------------------------- export


def _input_spec() -> InputSpec:
    names = [f"EEG{i:03d}" for i in range(N_CH)]
    return InputSpec(
        ch_names=names,
        ch_types=["eeg"] * N_CH,
        sfreq_hz=100.0,
        window_s=N_TIMES / 100.0,
        context_s=0.0,
        stride_s=0.02,
        preprocess=PreprocessSpec(picks=names),
        scalogram=ScalogramSpec(
            sfreq_hz=100.0, freqs_hz=[8.0, 12.0, 16.0, 20.0], n_cycles=4.0, decim=1
        ),
    )


def test_export_writes_a_checked_artifact(tmp_path: Path) -> None:
    model = ScalogramClassifier(
        _standardizer(), 2, input_size=32, backbone="compact", pretrained=False
    )
    x = _power(5).numpy()
    artifact = export_classifier(
        model,
        tmp_path / "m.onnx",
        check_inputs=x,
        about=ArtifactAbout(
            name="m",
            trained_on="synthetic power",
            split="none",
            seed=0,
            metrics={"val_window_balanced_accuracy": 0.5},
            metrics_note="synthetic",
            simulated_training_data=True,
        ),
        input_spec=_input_spec(),
        class_names=["a", "b"],
    )
    meta = load_artifact(artifact.path).metadata
    assert meta.metrics.values["export_max_abs_diff"] <= 1e-4
    assert meta.output.class_names == ["a", "b"] and meta.output.logits
    assert meta.simulated_training_data
    with pytest.raises(ValueError, match="per window"):
        export_classifier(
            model,
            tmp_path / "bad.onnx",
            check_inputs=x[:, :, :2],
            about=ArtifactAbout(
                name="m", trained_on="x", split="none", seed=0, simulated_training_data=True
            ),
            input_spec=_input_spec(),
            class_names=["a", "b"],
        )


def test_export_check_catches_a_mismatch() -> None:
    model = ScalogramClassifier(
        _standardizer(), 2, input_size=32, backbone="compact", pretrained=False
    )
    x = _power(4)
    proto = export_onnx(model, x)
    assert check_onnx(proto, model, x.numpy()) <= 1e-4
    with torch.no_grad():
        model.head.bias += 1e-3  # the torch model drifts from the exported graph
    with pytest.raises(ExportCheckError, match="differs from the torch model"):
        check_onnx(proto, model, x.numpy())
    with pytest.raises(ValueError, match="at least one"):
        check_onnx(proto, model, x.numpy()[:0])


# --------------------------------------------------------------------------- data and CLI


def test_trials_from_eegbci_annotations(shared_data: Path) -> None:
    raw = read_recording(shared_data / "eegbci" / "S001R06.edf", eegbci=True)
    trials = find_trials(raw, {"T1": "hands", "T2": "feet"})
    assert trials.class_names == ["hands", "feet"] and len(trials) == 15
    assert set(trials.labels.tolist()) == {0, 1} and np.all(np.diff(trials.onsets) > 0)
    assert "Cz" in raw.ch_names and raw.get_montage() is not None
    with pytest.raises(ValueError, match="its annotations are"):
        find_trials(raw, {"X9": "nothing"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_recording(shared_data / "eegbci" / "missing.edf")


def test_trial_windows_cut_inside_trials() -> None:
    spec = _input_spec()
    power = [np.ones((N_CH, N_FREQS, 1000), np.float32)]
    w = trial_windows(
        power,
        [np.array([1.0, 5.0])],
        [np.array([0, 1])],
        spec,
        tmin_s=0.5,
        tmax_s=1.0,
        stride_s=0.1,
    )
    ends = w.start + N_TIMES
    assert len(w) == 12 and w.groups.tolist() == [0] * 6 + [1] * 6
    assert ends.min() == 150 and ends.max() == 600 and w.labels.tolist() == [0] * 6 + [1] * 6
    with pytest.raises(ValueError, match="tmin_s < tmax_s"):
        trial_windows(
            power, [np.array([1.0])], [np.array([0])], spec, tmin_s=1, tmax_s=0, stride_s=0.1
        )


def test_train_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "classifier",
            "--data",
            "a.edf",
            "--event",
            "T1=hands",
            "--event",
            "T2=feet",
            "--out",
            "m.onnx",
        ]
    )
    assert args.train_command == "classifier" and dict(args.event) == {"T1": "hands", "T2": "feet"}
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["train", "classifier", "--data", "a.edf", "--event", "T1", "--out", "m.onnx"]
        )
    assert "ANNOTATION=CLASS" in capsys.readouterr().err
    missing = parser.parse_args(
        [
            "train",
            "classifier",
            "--data",
            str(tmp_path / "none.edf"),
            "--event",
            "T1=a",
            "--out",
            str(tmp_path / "m.onnx"),
        ]
    )
    assert missing.func(missing) == 2
    assert not (tmp_path / "m.onnx").exists()
    assert isinstance(parser.parse_args(["train", "demo"]), argparse.Namespace)


def test_train_classifier_command_writes_an_artifact(shared_data: Path, tmp_path: Path) -> None:
    eegbci = shared_data / "eegbci"
    out = tmp_path / "hands-feet.onnx"
    common = [
        "train", "classifier", "--data", str(eegbci / "S001R06.edf"), "--eegbci",
        "--event", "T1=hands", "--event", "T2=feet", "--out", str(out),
        "--backbone", "compact", "--input-size", "32", "--epochs", "1", "--threads", "1",
    ]  # fmt: skip
    parser = build_parser()
    refused = parser.parse_args(common)  # the compact CNN has no ImageNet weights
    assert refused.func(refused) == 2 and not out.exists()
    args = parser.parse_args(
        [*common, "--random-init", "--test-data", str(eegbci / "S001R10.edf"), "--reference",
         "average", "--context-ms", "900", "--decim", "4", "--tmin", "1.4"]
    )  # fmt: skip
    assert args.func(args) == 0
    meta = load_artifact(out).metadata
    assert meta.input.preprocess.reference == "average" and meta.input.context_s == 0.9
    assert meta.input.scalogram is not None and meta.input.scalogram.decim == 4
    assert meta.input.n_times == 40  # 1 s of columns every 25 ms
    assert len(meta.input.ch_names) == 64 and meta.output.class_names == ["hands", "feet"]
    assert meta.input.scalogram is not None and meta.input.preprocess.robust_scale is not None
    # the test figure is the exported model's trial decisions on the held-out recording,
    # recomputed from the artifact alone (its input spec and its ONNX graph)
    spec = meta.input
    raw = read_recording(eegbci / "S001R10.edf", eegbci=True, preload=True)
    trials = find_trials(raw, {"T1": "hands", "T2": "feet"})
    stream = StreamInfo(name=str(raw.filenames[0]), info=raw.info)
    signal = preprocess_recording(raw.get_data().astype(np.float32), stream, spec)
    windows = trial_windows(
        [recording_power(signal, spec)],
        [trials.onsets / trials.sfreq],
        [trials.labels],
        spec,
        tmin_s=1.4,
        tmax_s=args.tmax,
        stride_s=spec.stride_s,
    )
    onnx_session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    index = np.arange(len(windows))
    logits = np.concatenate(
        [
            onnx_session.run(None, {INPUT_NAME: windows.batch(index[a : a + 64])})[0]
            for a in range(0, len(windows), 64)
        ]
    )
    ids, mean = trial_log_proba(log_softmax(logits, axis=1), windows.groups)
    truth = [windows.labels[windows.groups == t][0] for t in ids]
    expected = balanced_accuracy_score(truth, mean.argmax(axis=1))
    assert meta.metrics.values["test_trial_balanced_accuracy"] == pytest.approx(expected, abs=1e-9)
    assert meta.metrics.values["export_max_abs_diff"] <= 1e-4
    assert not meta.simulated_training_data and "S001R06" in meta.provenance.data
