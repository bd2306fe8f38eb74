"""Aligned EEG–MEG–image space: decoding, encoding and conversion on held-out SIMULATED images.

Data: SIMULATED simultaneous EEG (64 electrodes of the 10-10 system) and MEG (102
magnetometers + 204 planar gradiometers) of image-evoked responses from the embedded
physics-based simulator (default geometry, 240 Hz): visual-cortex dipoles whose amplitudes
are a fixed linear map of the image's embedding (seeded random unit vectors, 64 dimensions),
with 1/f background activity, ongoing rhythms and sensor noise. One simulated subject.

Split: training images (each shown ``repeats`` times at the simulator's realistic noise;
15 % of them held out for early stopping) and test images never seen in training (each shown
``test_repeats`` times, other noise draws). The test trials are simulated at two noise
levels: the realistic noise (``noise1``) and the same noise at twice the amplitude
(``noise2``: evoked part plus 2 × (noisy − noise-free) of the same trials). Encoders
(:mod:`neurocast.models.training.align`): the brain module (narrow, CPU), one per modality, trained
contrastively (CLIP) against the image embeddings and against each other (one trial's EEG
against another trial's MEG of the same image), on the 0–0.8 s after image onset (120 Hz,
baseline over the 0.2 s before, robust scaling, clip ±20).

Figures per noise level and modality, on the test images: ``decode_2way`` and
``decode_top5`` (single trials; the seen image among all test images), ``encode_2way``
(each image's embedding against the mean representations of all test images), and
``conversion_2way_norm`` (EEG → MEG and MEG → EEG: mean representation over half the trials
against the other modality's mean over the other half, divided by that modality's own
split-half 2-way accuracy; not reported (NaN) when that ceiling is below 0.6). Chance:
2-way 0.5, top-5 5 / n_test_images. Peer in the same run: a ridge decoder (``RidgeCV`` on
standardised flattened windows of the same training trials) from each modality to the image
embeddings (``ridge_decode_2way``, ``ridge_decode_top5``).

Usage: ``python bench/align.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import os

# one BLAS / torch thread: the machine is shared, and threads fighting for two cores cost
# far more than they give
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time
from dataclasses import dataclass
from typing import Any

import _common
import numpy as np

from neurocast.models.training.align import (
    AlignedModel,
    AlignTrainConfig,
    align_encoder_config,
    fit_aligned,
)
from neurocast.models.training.align_data import (
    MODALITIES,
    AlignedEpochs,
    Modality,
    simulate_aligned_epochs,
)
from neurocast.models.training.align_eval import evaluate_aligned, two_way_accuracy
from neurocast.models.training.retrieval_eval import RidgeRetrieval, top_k_accuracy
from neurocast.streaming.sources.simulator.images import default_image_set
from neurocast.streaming.sources.specs import SimulatorSpec

NOISE_LEVELS = (1.0, 2.0)
EMBED_DIM = 64
SIM_SFREQ = 240.0


@dataclass(frozen=True)
class Setup:
    n_train_images: int
    n_test_images: int
    repeats: int
    test_repeats: int
    max_epochs: int
    patience: int
    encoder: dict[str, Any]


FULL = Setup(400, 50, 4, 6, 80, 10, {})
QUICK = Setup(200, 20, 4, 4, 20, 10, {})


def fit_ridge_peers(model: AlignedModel, train: AlignedEpochs) -> dict[Modality, RidgeRetrieval]:
    """Ridge decoders from each modality's windows to the image embeddings (same windows)."""
    n_ctx = model.window.geometry.n_context
    return {
        m: RidgeRetrieval().fit(
            model.windows(train, m)[:, :, n_ctx:], train.embeddings[train.image_rows]
        )
        for m in MODALITIES
    }


def ridge_scores(
    model: AlignedModel, ridges: dict[Modality, RidgeRetrieval], test: AlignedEpochs
) -> dict[str, float]:
    """Decoding 2-way and top-5 of the ridge peers on test trials (all test images)."""
    out = {}
    images, true = np.unique(test.image_rows, return_inverse=True)
    cand = test.embeddings[images] / np.linalg.norm(test.embeddings[images], axis=1, keepdims=True)
    n_ctx = model.window.geometry.n_context
    for m, ridge in ridges.items():
        pred = ridge.predict(model.windows(test, m)[:, :, n_ctx:])
        pred /= np.linalg.norm(pred, axis=1, keepdims=True)
        scores = pred.astype(np.float64) @ cand.T
        ranks = (scores >= scores[np.arange(len(true)), true][:, None]).sum(axis=1) - 1
        out[f"ridge_decode_2way_{m}"] = two_way_accuracy(scores, true)
        out[f"ridge_decode_top5_{m}"] = top_k_accuracy(ranks, 5)
    return out


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    setup = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    n_images = setup.n_train_images + setup.n_test_images
    emb, ids = default_image_set(n_images, EMBED_DIM, seed=0)
    train_rows = np.arange(setup.n_train_images)
    test_rows = np.arange(setup.n_train_images, n_images)
    rng = np.random.default_rng(0)
    train_order = rng.permutation(np.repeat(train_rows, setup.repeats))
    test_order = rng.permutation(np.repeat(test_rows, setup.test_repeats))
    spec = SimulatorSpec(sfreq=SIM_SFREQ, realtime=False, subject_seed=0)
    figures: dict[str, Any] = {
        "decode_2way": {},
        "decode_top5": {},
        "encode_2way": {},
        "conversion_2way_norm": {},
        "ridge_decode_2way": {},
        "ridge_decode_top5": {},
    }
    details: dict[str, float] = {}
    _common.log(f"training on {len(train_order)} trials (noise x1)")
    train = simulate_aligned_epochs(spec, emb, train_order, image_ids=ids, seed=1)
    t0 = time.perf_counter()
    model = fit_aligned(
        train,
        AlignTrainConfig(
            max_epochs=setup.max_epochs, patience=setup.patience, lr=3e-3, batch_size=32
        ),
        align_encoder_config(**setup.encoder),
    )
    details["train_s"] = time.perf_counter() - t0
    details["epochs"] = float(len(model.history) - 1)
    ridges = fit_ridge_peers(model, train)
    for level in NOISE_LEVELS:
        tag = f"noise{level:g}"
        _common.log(f"{tag}: testing on {len(test_order)} trials")
        test = simulate_aligned_epochs(
            spec, emb, test_order, image_ids=ids, noise_scale=level, seed=2
        )
        res = evaluate_aligned(model, test)
        for m in MODALITIES:
            figures["decode_2way"][f"{m}_{tag}"] = res[f"decode_2way_{m}"]
            figures["decode_top5"][f"{m}_{tag}"] = res[f"decode_top5_{m}"]
            figures["encode_2way"][f"{m}_{tag}"] = res[f"encode_2way_{m}"]
        for src, dst in (("eeg", "meg"), ("meg", "eeg")):
            key = f"{src}_to_{dst}"
            figures["conversion_2way_norm"][f"{key}_{tag}"] = res[f"conversion_2way_norm_{key}"]
        for k, v in ridge_scores(model, ridges, test).items():
            figures[k.rsplit("_", 1)[0]][f"{k.rsplit('_', 1)[1]}_{tag}"] = v
        details.update({f"{tag}_{k}": v for k, v in res.items()})
    figures.update(
        {
            "details": details,
            "n_train_images": setup.n_train_images,
            "n_test_images": setup.n_test_images,
            "repeats": setup.repeats,
            "test_repeats": setup.test_repeats,
            "chance_2way": 0.5,
            "chance_top5": 5 / setup.n_test_images,
            "simulated": True,
            "quick": bool(args.quick),
            "wall_s": time.perf_counter() - t_start,
        }
    )
    _common.emit(figures)


if __name__ == "__main__":
    main()
