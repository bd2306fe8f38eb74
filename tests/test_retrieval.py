"""Retrieval decoders: preprocessing parity, ridge baseline, ranks, export through the runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neurocast.clients.cli import main  # noqa: E402
from neurocast.models.serving import load_artifact  # noqa: E402
from neurocast.models.serving.gallery import Gallery, make_thumbnail  # noqa: E402
from neurocast.models.serving.runtime import OnnxWindowModel  # noqa: E402
from neurocast.models.training.retrieval_data import (  # noqa: E402
    EpochSet,
    WindowGeometry,
    WindowSampler,
    fit_robust_windows,
    preprocess_epochs,
    retrieval_spec,
)
from neurocast.models.training.retrieval_eval import (  # noqa: E402
    RidgeRetrieval,
    retrieval_ranks,
    top_k_accuracy,
)
from neurocast.streaming.engine.pipeline import decode_array  # noqa: E402
from neurocast.streaming.preprocessing.filters import OnlinePreprocessor, preprocess_array  # noqa: E402
from neurocast.streaming.sources.simulator.simulator import Simulator  # noqa: E402

pytestmark = pytest.mark.timeout(180)

N_IMAGES, DIM = 30, 12


def _toy_gallery(name: str = "toy") -> Gallery:
    rng = np.random.default_rng(0)
    thumbs = [
        make_thumbnail(rng.integers(0, 255, (12, 18, 3), dtype=np.uint8), 16)
        for _ in range(N_IMAGES)
    ]
    return Gallery(
        [f"im{i:02d}" for i in range(N_IMAGES)],
        ["even" if i % 2 == 0 else "odd" for i in range(N_IMAGES)],
        rng.standard_normal((N_IMAGES, DIM)),
        thumbs,
        name=name,
    )


@pytest.fixture(scope="module")
def sim() -> Simulator:
    g = _toy_gallery()
    return Simulator(
        sfreq=240.0,
        modality="eeg",
        seed=0,
        subject_seed=0,
        image_embeddings=g.embeddings.astype(np.float32),
        image_ids=g.image_ids,
    )


def test_epoch_preprocessing_matches_a_stream(sim: Simulator) -> None:
    """Blocks of epochs run as one wide stream equal each epoch run on its own."""
    raw = sim.simulate_image_epochs(n_repeats=1, tmin=-0.4, tmax=0.5, noise=True)
    picks = sim.stream_info.ch_names[::-1][:20]
    spec = retrieval_spec(picks, context_s=0.2)
    epochs = preprocess_epochs(raw.data, sim.stream_info, spec, -0.4, raw.labels)
    assert epochs.sfreq == 120.0 and epochs.ch_names == picks and epochs.simulated
    for i in (0, 7, N_IMAGES - 1):
        ref = preprocess_array(spec, raw.data[i], sim.stream_info)
        np.testing.assert_allclose(epochs.data[i], ref, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(epochs.times[:2], [-0.4, -0.4 + 1 / 120])
    # windows are finalised by the same code as streamed windows
    geo = WindowGeometry.from_seconds(0.1, 0.2, epochs.sfreq)
    sampler = WindowSampler(epochs, spec, geo)
    end = sampler.end_index(0.25)
    full = fit_robust_windows(epochs, spec, geo, [end])
    assert full.clip == 20.0 and full.robust_scale is not None
    x = WindowSampler(epochs, full, geo).windows([3], end)[0]
    pre = OnlinePreprocessor(full, sim.stream_info)
    np.testing.assert_allclose(x, pre.finalize(epochs.data[3][:, end - geo.total : end]))
    assert np.abs(x).max() <= 20.0
    with pytest.raises(ValueError, match="needs 36 samples"):
        sampler.end_index(-0.3)


def test_ridge_baseline_retrieves_noise_free_responses(sim: Simulator) -> None:
    g = _toy_gallery()
    raw = sim.simulate_image_epochs(n_repeats=3, tmin=-0.4, tmax=0.5, noise=False)
    spec = retrieval_spec(sim.stream_info.ch_names, context_s=0.2)
    epochs = preprocess_epochs(raw.data, sim.stream_info, spec, -0.4, raw.labels)
    geo = WindowGeometry.from_seconds(0.3, 0.2, epochs.sfreq)
    end = WindowSampler(epochs, spec, geo).end_index(0.35)
    full = fit_robust_windows(epochs, spec, geo, [end])
    x = WindowSampler(epochs, full, geo).windows(np.arange(len(epochs)), end)[:, :, geo.n_context :]
    emb = g.embeddings.astype(np.float32)
    # the first two trials of each image train, the third tests
    seen = np.zeros(N_IMAGES, int)
    occurrence = np.empty(len(epochs), int)
    for i, row in enumerate(epochs.image_rows):
        occurrence[i] = seen[row]
        seen[row] += 1
    train = occurrence < 2
    ridge = RidgeRetrieval().fit(x[train], emb[epochs.image_rows[train]])
    pred = ridge.predict(x[~train])
    ranks = retrieval_ranks(pred, epochs.image_rows[~train], emb, np.arange(N_IMAGES), 9)
    assert top_k_accuracy(ranks, 1) > 0.5  # chance: 0.1
    assert ridge.alpha > 0
    with pytest.raises(RuntimeError, match="Fit"):
        RidgeRetrieval().predict(x)


def test_retrieval_ranks_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    cand = rng.standard_normal((50, 8))
    pred = rng.standard_normal((20, 8))
    true = rng.integers(0, 50, 20)
    pool = np.arange(50)
    # with every other image as distractor the rank is the count of better-scoring images
    ranks = retrieval_ranks(pred, true, cand, pool, 49)
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    s = pred @ c.T
    expected = (s >= s[np.arange(20), true][:, None]).sum(axis=1) - 1
    np.testing.assert_array_equal(ranks, expected)
    assert top_k_accuracy(ranks, 50) == 1.0
    with pytest.raises(ValueError, match="distractors"):
        retrieval_ranks(pred, true, cand, pool[:10], 10)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="context_s must be positive"):
        retrieval_spec(["a"], context_s=0.0)
    info_like = Simulator(sfreq=240.0, modality="eeg", seed=0).stream_info
    spec = retrieval_spec(info_like.ch_names)
    with pytest.raises(ValueError, match="Epochs must be"):
        preprocess_epochs(np.zeros((2, 3, 50)), info_like, spec, -0.2, [0, 1])
    e = EpochSet(
        np.zeros((1, 2, 10), np.float32),
        np.arange(10) / 120,
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        120.0,
        ["a", "b"],
    )
    f = EpochSet(
        np.zeros((1, 3, 10), np.float32),
        np.arange(10) / 120,
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        120.0,
        ["a", "b", "c"],
    )
    with pytest.raises(ValueError, match="same channels"):
        EpochSet.concatenate([e, f])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A retrieval artifact trained by the command line on SIMULATED EEG (tiny run)."""
    folder = tmp_path_factory.mktemp("retrieval")
    gallery_path = _toy_gallery().save(folder / "source" / "toy.npz")
    out = folder / "models" / "toy-retrieval.onnx"
    code = main(
        [
            "train", "retrieval", "--gallery", str(gallery_path), "--out", str(out),
            "--modality", "eeg", "--repeats", "2", "--epochs", "2", "--steps-per-epoch", "10",
            "--tmin", "0.1", "--tmax", "0.3", "--test-fraction", "0.3",
        ]
    )  # fmt: skip
    assert code == 0
    return out, folder / "models" / "toy.npz"


def test_cli_artifact_round_trip_through_runtime(trained: tuple[Path, Path]) -> None:
    out, gallery_path = trained
    art = load_artifact(out)
    meta = art.metadata
    assert meta.task == "retrieval" and meta.output.gallery == "toy"
    assert meta.output.embedding_size == DIM and meta.simulated_training_data
    assert meta.input.preprocess.resample_hz == 120.0 and meta.input.preprocess.clip == 20.0
    assert meta.input.preprocess.baseline_s == (0.0, 0.2)
    assert meta.input.window_s == pytest.approx(0.1) and meta.input.context_s == pytest.approx(0.2)
    assert meta.metrics.values["export_max_abs_diff"] < 1e-4  # torch-vs-ONNX check passed
    m = meta.metrics.values
    # retrieval among the held-out images of the 30-image gallery (--test-fraction 0.3)
    assert m["test_gallery_size"] == 9
    assert m["test_chance_top5"] == pytest.approx(5 / 9)
    assert m["test_top1_mean"] <= m["test_top5_mean"] <= m["test_top5_peak"]
    assert m["ridge_test_top5_mean"] <= m["ridge_test_top5_peak"]
    assert 0.1 - 1e-9 <= m["test_top5_peak_end_s"] <= 0.3 + 1e-9  # --tmin 0.1 --tmax 0.3
    gallery = Gallery.load(gallery_path)  # copied beside the artifact for the server
    model = OnnxWindowModel(art, gallery=gallery, top_k=5)
    sim = Simulator(
        sfreq=240.0,
        modality="eeg",
        seed=5,
        subject_seed=0,
        image_embeddings=gallery.embeddings.astype(np.float32),
        image_ids=gallery.image_ids,
    )
    raw = sim.simulate_raw(2.0)
    data = raw.get_data()
    results = list(decode_array(data, raw.times, sim.stream_info, [model]))
    assert len(results) > 40  # a window every 25 ms
    for r in results:
        assert r.kind == "retrieval" and r.simulated
        hits = r.payload["topk"]
        assert len(hits) == 5
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
        for h in hits:
            assert h["image_id"] in gallery and h["label"] in ("even", "odd")
            assert h["thumbnail_url"] == f"/v1/galleries/toy/thumbnails/{h['image_id']}"
        np.testing.assert_allclose(np.linalg.norm(r.payload["embedding"]), 1.0, atol=1e-5)
    # the top-k are the gallery's exact cosine neighbours of the decoded embedding
    emb = results[-1].payload["embedding"]
    assert [h["image_id"] for h in results[-1].payload["topk"]] == [
        h["image_id"] for h in gallery.search(emb, 5)
    ]


def test_cli_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert (
        main(["train", "retrieval", "--gallery", str(tmp_path / "nope.npz"), "--out", str(out)])
        == 2
    )
    small = Gallery(["a", "b", "c"], ["x"] * 3, np.eye(3), name="small").save(tmp_path / "s.npz")
    assert main(["train", "retrieval", "--gallery", str(small), "--out", str(out)]) == 2
    g = _toy_gallery().save(tmp_path / "toy.npz")
    assert (
        main(
            [
                "train",
                "retrieval",
                "--gallery",
                str(g),
                "--out",
                str(out),
                "--tmin",
                "0.5",
                "--tmax",
                "0.2",
            ]
        )
        == 2
    )
    rec = tmp_path / "rec_raw.fif"
    sim = Simulator(sfreq=240.0, modality="eeg", seed=0)
    sim.simulate_raw(1.0).save(rec, verbose="error")  # images unknown to this gallery
    assert (
        main(["train", "retrieval", "--gallery", str(g), "--out", str(out), "--data", str(rec)])
        == 2
    )
    assert not out.exists()


def test_cli_trains_from_annotated_recording(tmp_path: Path, sim: Simulator) -> None:
    """Recordings whose annotations name the image shown (image/<id>) are training data."""
    g = _toy_gallery().save(tmp_path / "toy.npz")
    rec = tmp_path / "session_raw.fif"
    stream = Simulator(
        sfreq=240.0,
        modality="eeg",
        seed=3,
        subject_seed=0,
        image_embeddings=sim.image_embeddings,
        image_ids=sim.image_ids,
    )
    stream.simulate_raw(40.0).save(rec, verbose="error")
    out = tmp_path / "rec.onnx"
    args = ["train", "retrieval", "--gallery", str(g), "--out", str(out), "--data", str(rec)]
    assert main([*args, "--epochs", "1", "--tmax", "0.2", "--no-ridge"]) == 0
    meta = load_artifact(out).metadata
    assert meta.simulated_training_data  # the recording says it is simulated
    assert (
        meta.provenance.data.startswith("SIMULATED") and "session_raw.fif" in meta.provenance.data
    )
    assert meta.input.ch_names == stream.stream_info.ch_names
    assert "ridge_test_top5_mean" not in meta.metrics.values


def test_export_refuses_a_module_of_another_space(tmp_path: Path, sim: Simulator) -> None:
    from neurocast.models.nets.brain_module import small_config
    from neurocast.models.training.export import ArtifactAbout
    from neurocast.models.training.retrieval import export_retrieval, make_brain_module

    geo = WindowGeometry.from_seconds(0.1, 0.2, 120.0)
    module = make_brain_module(sim.info, geo, DIM + 1, small_config())
    with pytest.raises(ValueError, match="train against this gallery"):
        export_retrieval(
            module,
            tmp_path / "x.onnx",
            gallery=_toy_gallery(),
            info=sim.info,
            spec=retrieval_spec(sim.stream_info.ch_names),
            geometry=geo,
            check_inputs=np.zeros((2, len(sim.info["ch_names"]), geo.total), np.float32),
            about=ArtifactAbout(
                name="x", trained_on="none", split="none", simulated_training_data=True
            ),
        )
    assert not (tmp_path / "x.onnx").exists()
