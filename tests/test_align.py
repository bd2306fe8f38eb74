"""The aligned EEG–MEG–image space: loss, training, evaluation, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neurocast.clients.cli import EXIT_OK, EXIT_USAGE, main
from neurocast.models.nets.brain_module import BrainModule, small_config
from neurocast.models.serving import load_artifact
from neurocast.models.serving.runtime import OnnxWindowModel
from neurocast.models.training.align import (
    AlignedModel,
    AlignTrainConfig,
    align_encoder_config,
    aligned_loss,
    export_encoder,
    fit_aligned,
)
from neurocast.models.training.align_data import AlignedEpochs, simulate_aligned_epochs
from neurocast.models.training.align_eval import (
    MIN_CEILING_2WAY,
    evaluate_aligned,
    two_way_accuracy,
)
from neurocast.models.training.export import ArtifactAbout
from neurocast.streaming.sources.simulator.images import default_image_set
from neurocast.streaming.sources.specs import SimulatorSpec

EEG8 = ["Fp1", "Fz", "C3", "Cz", "C4", "Pz", "O1", "O2"]
SPEC = SimulatorSpec(sfreq=250.0, realtime=False, eeg_channels=EEG8)
TINY = dict(n_spatial=8, n_fourier=4, hidden=8, n_blocks=1, head_hidden=16)


@pytest.fixture(scope="module")
def tiny() -> tuple[AlignedModel, AlignedEpochs, AlignedEpochs]:
    """Two encoders trained for one epoch on 12 images; 4 held-out images, 2 trials each."""
    emb, ids = default_image_set(16, 8, seed=0)
    train = simulate_aligned_epochs(SPEC, emb, np.repeat(np.arange(12), 2), image_ids=ids, seed=1)
    test = simulate_aligned_epochs(
        SPEC, emb, np.repeat(np.arange(12, 16), 2), image_ids=ids, seed=2
    )
    model = fit_aligned(
        train,
        AlignTrainConfig(max_epochs=1, batch_size=8, val_fraction=0.25),
        align_encoder_config(**TINY),
    )
    return model, train, test


def _encoders(dim: int) -> dict[str, BrainModule]:
    pos = np.random.default_rng(0).random((4, 2))
    cfg = small_config(**TINY)
    return {m: BrainModule(pos, 6, dim, cfg) for m in ("eeg", "meg")}


def test_contrastive_loss_is_lower_for_matched_pairs() -> None:
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    noise = 0.05 * torch.randn(8, 16)
    encoders = _encoders(16)
    scale = torch.tensor(float(np.log(1 / 0.07)))

    def outputs(z: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {m: (z, z) for m in ("eeg", "meg")}

    matched = aligned_loss(
        outputs(images + noise), outputs(images - noise), images, encoders, scale
    )
    perm = torch.roll(torch.arange(8), 1)
    shuffled = aligned_loss(
        outputs(images[perm] + noise), outputs(images - noise), images, encoders, scale
    )
    assert float(matched) < float(shuffled)
    # the EEG-MEG term alone: one trial's EEG against the other trial's MEG of the same image
    cross_only = dict(clip_weight=0.0, cross_weight=1.0)
    a = {"eeg": (images, images), "meg": (images, images)}
    b_same = {"eeg": (images, images), "meg": (images, images)}
    b_other = {"eeg": (images[perm], images), "meg": (images[perm], images)}
    same = aligned_loss(a, b_same, images, encoders, scale, **cross_only)
    other = aligned_loss(a, b_other, images, encoders, scale, **cross_only)
    assert float(same) < float(other)


def test_loss_rejects_mismatched_batches() -> None:
    images = torch.randn(4, 16)
    encoders = _encoders(16)
    short = {m: (torch.randn(3, 16), torch.randn(3, 16)) for m in ("eeg", "meg")}
    with pytest.raises(ValueError, match="one row per image"):
        aligned_loss(short, short, images, encoders, torch.tensor(1.0))


def test_two_way_accuracy() -> None:
    s = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
    assert two_way_accuracy(s[:2], [0, 1]) == 1.0
    assert two_way_accuracy(s[:1], [1]) == 0.0
    assert two_way_accuracy(s[2:], [0]) == 0.5  # ties count half
    with pytest.raises(ValueError):
        two_way_accuracy(np.ones((2, 1)), [0, 0])


def test_simulated_epochs_hold_both_modalities(tiny: tuple) -> None:
    _, train, _ = tiny
    assert len(train) == 24
    assert train.epochs["eeg"].ch_names == EEG8
    assert len(train.epochs["meg"].ch_names) == 306
    assert train.epochs["eeg"].data.shape[0] == train.epochs["meg"].data.shape[0]
    np.testing.assert_array_equal(train.epochs["eeg"].image_rows, train.epochs["meg"].image_rows)
    assert "SIMULATED" in train.description
    assert train.epochs["eeg"].simulated


def test_noise_scale_changes_only_the_noise() -> None:
    emb, ids = default_image_set(3, 8, seed=0)
    rows = np.arange(3)
    quiet = simulate_aligned_epochs(SPEC, emb, rows, image_ids=ids, noise_scale=0.0, seed=4)
    again = simulate_aligned_epochs(SPEC, emb, rows, image_ids=ids, noise_scale=0.0, seed=9)
    loud = simulate_aligned_epochs(SPEC, emb, rows, image_ids=ids, noise_scale=2.0, seed=4)
    # without noise, trials of the same images are identical whatever the seed
    np.testing.assert_allclose(quiet.epochs["meg"].data, again.epochs["meg"].data, rtol=1e-4)
    assert loud.epochs["meg"].data.std() > quiet.epochs["meg"].data.std()


def test_encoders_give_unit_representations(tiny: tuple) -> None:
    model, _, test = tiny
    for m in ("eeg", "meg"):
        z = model.embed(test, m)
        assert z.shape == (len(test), 8)
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    assert "SIMULATED" in model.trained_on


def _pairwise_2way(scores: np.ndarray, true: np.ndarray) -> float:
    """2-way accuracy by enumerating every (query, wrong candidate) pair; ties count half."""
    wins = []
    for row, t in zip(scores, true, strict=True):
        for j in range(len(row)):
            if j != t:
                wins.append(1.0 if row[t] > row[j] else 0.5 if row[t] == row[j] else 0.0)
    return float(np.mean(wins))


def test_evaluation_reports_every_figure(tiny: tuple) -> None:
    model, _, test = tiny
    figures = evaluate_aligned(model, test)
    # k below the number of candidates (4), so top-k is not 1.0 by construction
    top2 = evaluate_aligned(model, test, k=2)
    images, true = np.unique(test.image_rows, return_inverse=True)
    cand = test.embeddings[images].astype(np.float64)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    diag = np.arange(len(images))
    halves = {}
    for m in ("eeg", "meg"):
        z = model.embed(test, m).astype(np.float64)
        s = z @ cand.T
        # how many candidates outscore the true image, trial by trial
        beaten_by = np.array([(row > row[t]).sum() for row, t in zip(s, true, strict=True)])
        assert figures[f"decode_top1_{m}"] == pytest.approx(np.mean(beaten_by == 0))
        assert top2[f"decode_top2_{m}"] == pytest.approx(np.mean(beaten_by <= 1))
        assert figures[f"decode_2way_{m}"] == pytest.approx(_pairwise_2way(s, true))
        mean = np.array([z[true == i].mean(axis=0) for i in diag])
        mean /= np.linalg.norm(mean, axis=1, keepdims=True)
        assert figures[f"encode_2way_{m}"] == pytest.approx(_pairwise_2way(cand @ mean.T, diag))
        # two trials per image: the first half is the first trial, the second half the other
        first = np.array([z[np.flatnonzero(true == i)[0]] for i in diag])
        second = np.array([z[np.flatnonzero(true == i)[1]] for i in diag])
        halves[m] = tuple(h / np.linalg.norm(h, axis=1, keepdims=True) for h in (first, second))
    for src, dst in (("eeg", "meg"), ("meg", "eeg")):
        raw = figures[f"conversion_2way_{src}_to_{dst}"]
        ceiling = figures[f"ceiling_2way_{dst}"]
        norm = figures[f"conversion_2way_norm_{src}_to_{dst}"]
        assert raw == pytest.approx(_pairwise_2way(halves[src][0] @ halves[dst][1].T, diag))
        assert ceiling == pytest.approx(_pairwise_2way(halves[dst][0] @ halves[dst][1].T, diag))
        if ceiling >= MIN_CEILING_2WAY:
            assert norm == pytest.approx(raw / ceiling)
        else:  # a target that does not identify its own images normalises nothing
            assert np.isnan(norm)
    assert figures["n_test_images"] == 4 and figures["n_test_trials"] == 8


def test_evaluation_needs_repeated_test_images(tiny: tuple) -> None:
    model, _, _ = tiny
    emb, ids = default_image_set(16, 8, seed=0)
    once = simulate_aligned_epochs(SPEC, emb, np.arange(12, 16), image_ids=ids, seed=3)
    with pytest.raises(ValueError, match="at least twice"):
        evaluate_aligned(model, once)


def test_training_needs_repeated_images() -> None:
    emb, ids = default_image_set(8, 8, seed=0)
    once = simulate_aligned_epochs(SPEC, emb, np.arange(8), image_ids=ids, seed=5)
    with pytest.raises(ValueError, match="at least twice"):
        fit_aligned(once, AlignTrainConfig(max_epochs=1), align_encoder_config(**TINY))


def test_aligned_space_needs_both_modalities() -> None:
    emb, _ = default_image_set(2, 8, seed=0)
    with pytest.raises(ValueError, match="modality='both'"):
        simulate_aligned_epochs(SPEC.model_copy(update={"modality": "meg"}), emb, [0, 1])
    with pytest.raises(ValueError, match="noise_scale"):
        simulate_aligned_epochs(SPEC, emb, [0, 1], noise_scale=-1.0)


def test_embedding_artifact_through_the_runtime(tiny: tuple, tmp_path: Path) -> None:
    model, _, test = tiny
    about = ArtifactAbout(name="meg")
    artifact = export_encoder(
        model, "meg", tmp_path / "meg.onnx", check_data=test, about=about, stream_sfreq=250.0
    )
    meta = load_artifact(artifact.path).metadata
    assert meta.task == "embedding" and meta.simulated_training_data
    assert meta.output.embedding_size == 8
    assert len(meta.input.ch_names) == 306
    runtime = OnnxWindowModel(artifact, threads=1)
    x = model.windows(test, "meg")
    payload = runtime.run(x[0])
    assert set(payload) >= {"embedding"} and payload["simulated_training_data"] is True
    assert payload["embedding"].shape == (8,)
    np.testing.assert_allclose(payload["embedding"], model.embed(test, "meg")[0], atol=1e-4)
    with pytest.raises(ValueError, match="modality"):
        export_encoder(
            model, "fmri", tmp_path / "x.onnx", check_data=test, about=about, stream_sfreq=250.0
        )


@pytest.mark.timeout(240)
def test_train_align_command(tmp_path: Path) -> None:
    argv = ["train", "align", "--out-dir", str(tmp_path), "--n-images", "10"]
    argv += ["--n-test-images", "3", "--repeats", "2", "--test-repeats", "2", "--epochs", "1"]
    assert main(argv) == EXIT_OK
    pairs = (("eeg", "meg"), ("meg", "eeg"))
    expected = {
        *(f"{key}_{m}" for key in ("decode_2way", "decode_top5", "decode_top1", "encode_2way")
          for m in ("eeg", "meg")),
        *(f"conversion_2way_{a}_to_{b}" for a, b in pairs),
        "ceiling_2way_eeg", "ceiling_2way_meg", "n_test_images", "n_test_trials",
        "export_max_abs_diff",
    }  # fmt: skip
    metas = [load_artifact(tmp_path / f"aligned-{m}.onnx").metadata for m in ("eeg", "meg")]
    for meta in metas:
        values = meta.metrics.values
        assert meta.task == "embedding"
        # a normalised conversion is recorded only where the target's ceiling allows one
        # (NaN has no place in the metadata)
        norms = {
            f"conversion_2way_norm_{a}_to_{b}"
            for a, b in pairs
            if values[f"ceiling_2way_{b}"] >= MIN_CEILING_2WAY
        }
        assert set(values) == expected | norms
        for a, b in pairs:
            if f"conversion_2way_norm_{a}_to_{b}" in norms:
                assert values[f"conversion_2way_norm_{a}_to_{b}"] == pytest.approx(
                    values[f"conversion_2way_{a}_to_{b}"] / values[f"ceiling_2way_{b}"]
                )
        # the held-out figures are those of --n-test-images 3 x --test-repeats 2
        assert values["n_test_images"] == 3 and values["n_test_trials"] == 6
        # top-1 over 6 single trials: a whole number of hits
        for m in ("eeg", "meg"):
            hits = 6 * values[f"decode_top1_{m}"]
            assert hits == pytest.approx(round(hits))
        assert values["export_max_abs_diff"] <= 1e-4
    # one evaluation, shared by both encoders' artifacts
    shared = [
        {k: v for k, v in m.metrics.values.items() if k != "export_max_abs_diff"} for m in metas
    ]
    assert shared[0] == pytest.approx(shared[1])
    assert main(["train", "align", "--out-dir", str(tmp_path), "--repeats", "1"]) == EXIT_USAGE
