"""Image retrieval from SIMULATED MEG: the brain module against a ridge decoder, same data.

Images: the pictures bundled with scikit-image (including its 200 LFW faces) and the
face/house and cat/dog stimuli of ``../shared/data/stimuli``, each with random crops and flips
as extra images. Embeddings: EfficientNet-Lite0 ImageNet features, projected onto 128
principal components fitted on the training images, L2-normalised (the gallery space).

Brain responses: the embedded physics-based simulator
(:mod:`neurocast.streaming.sources.simulator.simulator`),
306 MEG channels (102 magnetometers, 204 planar gradiometers) at 240 Hz, whose visual-cortex
dipoles follow a fixed linear map of the image embedding (plus an image-independent
response), with 1/f background activity, ongoing rhythms and sensor noise. Two noise levels:
the simulator's realistic noise (``x1``) and the same noise at twice the amplitude (``x2``:
evoked part plus 2 × (noisy − noise-free) of the same trials).

Split: the base pictures are split in two; crops of the training pictures are the training
images (each shown once), crops of the others form the held-out pool. Test trials show
held-out images once each (single trials, no averaging). Retrieval: the rank of the seen
image among it and 10, 100 or 1000 other held-out images drawn at random (top-1, top-5).
Early stopping uses a validation split of the training images only.

Decoders, trained on the same windows with the study's preprocessing (120 Hz, baseline over
the 0.2 s before the window, robust scaling, clip ±20):

- ``ours``: the brain module (:mod:`neurocast.models.nets.brain_module`, small configuration for
  CPU), CLIP + MSE loss;
- ``ridge``: ``RidgeCV`` on the standardised flattened window (the study's linear baseline).

Windows: the whole response (0–0.8 s after onset) for the headline figures, and 100 ms
windows every 25 ms for the time-resolved curve written to
``bench/out/retrieval_sim_time.png`` (``retrieval_sim_time_quick.png`` with ``--quick``):
one brain module and one ridge trained on all window
positions from 0 to 0.8 s (the decoders a stream needs, since it does not know when an image
appeared), and the classic time-resolved ridge, one per window position. For the 100 ms
windows all three decoders train on the same training images less the validation images
(15 %, split by image); the validation images stop the brain module's training early, choose
the pooled ridge's regularisation (a grid, on validation error; it is fitted on up to four
times as many (trial, window position) pairs as it has features, so that it is
over-determined) and choose the window position each ``*_window_peak_*`` figure reports
(the position with the best validation top-5); that figure is the test curve at that
position, never the test curve's maximum.

Figures: ``{ours,ridge}_top{1,5}_g{10,100,1000}`` (noise x1), the same with the prefix
``noise2_`` (noise x2), ``ratio_vs_ridge`` (ours_top5_g100 / ridge_top5_g100, noise x1) and
``noise2_ratio_vs_ridge``, and the time-resolved peaks (``ours_window_peak_top5``,
``ridge_window_peak_top5`` per position, ``ridge_pooled_window_peak_top5``). The study
reports 7× over linear decoders on real MEG; here the responses are exactly linear in the
embeddings, the setting in which a linear decoder is hard to beat.

Usage: ``python bench/retrieval_sim.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import os

# one BLAS / torch thread: the machine is shared, and threads fighting for two cores cost
# far more than they give
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from neurocast.models.nets.brain_module import BrainModule, small_config
from neurocast.models.serving.gallery import l2_normalize, to_rgb_image
from neurocast.models.training.embed_images import (
    ImageEmbedder,
    ImageItem,
    find_images,
    fit_pca,
    skimage_images,
)
from neurocast.models.training.recipes.retrieval import prepare_windows, train_brain_module
from neurocast.models.training.retrieval import (
    RetrievalTrainConfig,
    RetrievalTrainResult,
    predict_embeddings,
    split_by_image,
)
from neurocast.models.training.retrieval_data import (
    EpochSet,
    WindowGeometry,
    WindowSampler,
    preprocess_epochs,
    retrieval_spec,
)
from neurocast.models.training.retrieval_eval import (
    RidgeRetrieval,
    retrieval_ranks,
    top_k_accuracy,
)
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.sources.simulator.simulator import Simulator

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
STIMULI = HERE.parents[1] / "shared" / "data" / "stimuli"
SIM_SFREQ = 240.0
TMIN, TMAX = -0.5, 0.9
CONTEXT_S = 0.2
FULL_WINDOW_S = 0.8
WINDOW_S, STRIDE_S = 0.1, 0.025
EMBED_DIM = 128
logger = logging.getLogger("retrieval_sim")


@dataclass
class Setup:
    lfw: bool
    n_variants: int
    n_test_bases: int
    n_test_trials: int
    gallery_sizes: tuple[int, ...]
    train_repeats: int
    full_epochs: int
    window_epochs: int
    window_steps: int
    ridge_pairs_per_feature: float


FULL = Setup(True, 10, 110, 400, (10, 100, 1000), 1, 40, 30, 120, 4.0)
QUICK = Setup(False, 2, 55, 60, (10, 100), 2, 4, 3, 20, 2.0)
POOLED_ALPHAS = tuple(np.logspace(-1, 7, 17))


# --------------------------------------------------------------------------- images


def _base_pictures(lfw: bool) -> list[ImageItem]:
    import skimage.data

    items = skimage_images()
    if lfw:
        for i, face in enumerate(skimage.data.lfw_subset()):
            items.append(ImageItem(f"lfw.{i:03d}", "lfw", face))
    if STIMULI.is_dir():
        for sub in ("face_house", "cats_dogs"):
            if (STIMULI / sub).is_dir():
                items += find_images(STIMULI / sub)
    else:
        logger.warning("%s not found: using scikit-image pictures only", STIMULI)
    return items


def _variant(image: Any, rng: np.random.Generator) -> Image.Image:
    """A random crop (40-100 % of the area, aspect 3:4 to 4:3), mirrored half of the time."""
    img = to_rgb_image(image if not isinstance(image, (str, Path)) else Image.open(image))
    w, h = img.size
    area = rng.uniform(0.4, 1.0) * w * h
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    ch = int(min(h, round(np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def image_features(setup: Setup, seed: int) -> dict[str, Any]:
    """Features of every base picture's variants (cached in bench/out)."""
    bases = _base_pictures(setup.lfw)
    key = hashlib.sha1(
        json.dumps([[b.image_id for b in bases], setup.n_variants, seed]).encode()
    ).hexdigest()[:12]
    cache = OUT / f"retrieval_sim_features_{key}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    rng = np.random.default_rng(seed)
    embedder = ImageEmbedder()
    feats, base_index, labels = [], [], []
    t0 = time.perf_counter()
    for b, item in enumerate(bases):
        image = item.image
        if isinstance(image, (str, Path)):
            with Image.open(image) as im:
                image = to_rgb_image(im)
        # variant 0 is the picture itself, the others are crops
        images = [to_rgb_image(image)] + [_variant(image, rng) for _ in range(setup.n_variants - 1)]
        feats.append(embedder.embed(images))
        base_index += [b] * len(images)
        labels += [item.label] * len(images)
    logger.info("embedded %d images in %.0f s", len(base_index), time.perf_counter() - t0)
    out = {
        "features": np.concatenate(feats),
        "base": np.array(base_index),
        "labels": np.array(labels),
        "base_source": np.array([b.label for b in bases]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------- data


def split_images(data: dict[str, Any], setup: Setup, seed: int) -> tuple[NDArray, NDArray]:
    """Image rows for training and for the held-out pool, split by base picture."""
    rng = np.random.default_rng(seed + 1)
    n_bases = len(data["base_source"])
    test_bases = rng.permutation(n_bases)[: setup.n_test_bases]
    is_test = np.isin(data["base"], test_bases)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def simulate(
    embeddings: NDArray[np.float32], rows: NDArray[np.int64], seed: int
) -> tuple[Simulator, NDArray[np.float32], NDArray[np.float32]]:
    """Noisy and noise-free epochs of the same trials (images ``rows`` in that order)."""
    sim = Simulator(sfreq=SIM_SFREQ, modality="meg", seed=seed, subject_seed=seed)
    noisy = sim.simulate_image_epochs(embeddings, image_indices=rows, tmin=TMIN, tmax=TMAX)
    clean = sim.simulate_image_epochs(
        embeddings, image_indices=rows, tmin=TMIN, tmax=TMAX, noise=False
    )
    return sim, noisy.data, clean.data


def _ranks_by_size(
    pred: NDArray, true: NDArray, emb: NDArray, pool: NDArray, sizes: tuple[int, ...], prefix: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for g in sizes:
        ranks = retrieval_ranks(pred, true, emb, pool, g, seed=g)
        out[f"{prefix}_top1_g{g}"] = round(top_k_accuracy(ranks, 1), 4)
        out[f"{prefix}_top5_g{g}"] = round(top_k_accuracy(ranks, 5), 4)
    return out


@dataclass
class Level:
    """One noise level's epochs and splits, which every decoder shares."""

    sim: Simulator
    epochs: EpochSet
    spec0: PreprocessSpec
    train: NDArray[np.intp]
    test: NDArray[np.intp]
    fit_idx: NDArray[np.intp]
    val_idx: NDArray[np.intp]
    emb: NDArray[np.float32]
    pool: NDArray[np.int64]
    setup: Setup
    seed: int

    def brain_module(
        self, sampler: WindowSampler, ends: list[int], config: RetrievalTrainConfig
    ) -> tuple[BrainModule, RetrievalTrainResult]:
        """A small brain module trained on the fitting trials, stopped on the validation ones."""
        return train_brain_module(
            self.sim.info, sampler, self.fit_idx, self.val_idx, ends, self.emb, small_config(),
            config,
        )  # fmt: skip


def evaluate_level(
    sim: Simulator,
    raw: NDArray[np.float32],
    rows: NDArray[np.int64],
    is_test: NDArray[np.bool_],
    emb: NDArray[np.float32],
    pool: NDArray[np.int64],
    setup: Setup,
    seed: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and test both decoders at one noise level: full-response and 100 ms windows."""
    spec0 = retrieval_spec(sim.stream_info.ch_names, context_s=CONTEXT_S)
    epochs = preprocess_epochs(raw, sim.stream_info, spec0, TMIN, rows)
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    fit_idx, val_idx = split_by_image(epochs.image_rows[train], 0.15, seed)
    level = Level(sim, epochs, spec0, train, test, train[fit_idx], train[val_idx], emb, pool,
                  setup, seed)  # fmt: skip
    figures = full_response(level)
    windowed, curves = window_positions(level)
    figures.update(windowed)
    return figures, curves


def full_response(level: Level) -> dict[str, float]:
    """Both decoders on one window 0..0.8 s after onset."""
    epochs, emb, test, setup = level.epochs, level.emb, level.test, level.setup
    true = epochs.image_rows[test]
    geo = WindowGeometry.from_seconds(FULL_WINDOW_S, CONTEXT_S, epochs.sfreq)
    end = WindowSampler(epochs, level.spec0, geo).end_index(FULL_WINDOW_S)
    _, sampler = prepare_windows(epochs, level.spec0, geo, level.train, [end], level.seed)
    figures: dict[str, float] = {}
    t0 = time.perf_counter()
    x_train = sampler.windows(level.train, end)[:, :, geo.n_context :]
    x_test = sampler.windows(test, end)
    ridge = RidgeRetrieval().fit(x_train, emb[epochs.image_rows[level.train]])
    pred = ridge.predict(x_test[:, :, geo.n_context :])
    figures.update(_ranks_by_size(pred, true, emb, level.pool, setup.gallery_sizes, "ridge"))
    figures["ridge_alpha"] = ridge.alpha
    figures["ridge_fit_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    module, result = level.brain_module(
        sampler,
        [end],
        RetrievalTrainConfig(lr=1e-3, max_epochs=setup.full_epochs, patience=6, seed=level.seed),
    )
    pred = predict_embeddings(module, x_test, None, geo.n_context)
    figures.update(_ranks_by_size(pred, true, emb, level.pool, setup.gallery_sizes, "ours"))
    figures["ours_fit_s"] = round(time.perf_counter() - t0, 1)
    figures["ours_best_epoch"] = result.best_epoch
    figures["ours_n_parameters"] = module.n_parameters()
    return figures


def window_positions(level: Level) -> tuple[dict[str, float], dict[str, Any]]:
    """100 ms windows every 25 ms: one brain module and one pooled ridge for all window
    positions (what a stream needs), and the classic time-resolved ridge, one per position."""
    epochs, setup, seed = level.epochs, level.setup, level.seed
    geo = WindowGeometry.from_seconds(WINDOW_S, CONTEXT_S, epochs.sfreq)
    probe = WindowSampler(epochs, level.spec0, geo)
    first, last = probe.end_index(WINDOW_S - 0.05), probe.end_index(FULL_WINDOW_S)
    ends = list(range(first, last + 1, max(1, round(STRIDE_S * epochs.sfreq))))
    _, sampler = prepare_windows(epochs, level.spec0, geo, level.train, ends, seed)
    t0 = time.perf_counter()
    pooled, figures = fit_pooled_ridge(
        sampler, epochs.image_rows, level.emb, level.fit_idx, level.val_idx, ends,
        geo.n_context, setup, np.random.default_rng(seed),
    )  # fmt: skip
    logger.info("100 ms pooled ridge fitted in %.0f s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    module, _ = level.brain_module(
        sampler,
        ends,
        RetrievalTrainConfig(
            lr=1e-3, batch_size=128, max_epochs=setup.window_epochs,
            max_steps_per_epoch=setup.window_steps, patience=5, seed=seed,
        ),
    )  # fmt: skip
    logger.info("100 ms brain module trained in %.0f s", time.perf_counter() - t0)
    g = 100 if 100 in setup.gallery_sizes else max(setup.gallery_sizes)
    test_curves, val_curves, g_val = time_curves(level, sampler, ends, module, pooled, g)
    # window centre in stimulus time, corrected for the resampler's delay
    t_end = sampler.end_times(ends)
    centres = t_end - epochs.delay_s - (geo.n_window - 1) / 2 / epochs.sfreq
    curves = {name: np.array(test_curves[name]) for name in ("ours", "ridge", "pooled")}
    for name, prefix in (("ours", "ours"), ("ridge", "ridge"), ("pooled", "ridge_pooled")):
        # the position is chosen on validation images; the test curve is only read there
        k = int(np.argmax(val_curves[name]))
        figures[f"{prefix}_window_peak_top5"] = round(test_curves[name][k], 4)
        figures[f"{prefix}_window_peak_s"] = round(float(centres[k]), 3)
        figures[f"{prefix}_window_val_top5"] = round(val_curves[name][k], 4)
    figures["window_val_gallery"] = g_val + 1
    return figures, {"centres": centres, **curves, "g": g}


def time_curves(
    level: Level,
    sampler: WindowSampler,
    ends: list[int],
    module: BrainModule,
    pooled: PooledRidge,
    g: int,
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Top-5 per window position of the three decoders, on test and on validation images.

    The time-resolved ridge is fitted here, one per position. Returns the test curves, the
    validation curves and the validation gallery size (``g`` or fewer).
    """
    epochs, emb, n_context = level.epochs, level.emb, sampler.geometry.n_context
    val_true = epochs.image_rows[level.val_idx]
    val_pool = np.unique(val_true)
    g_val = min(g, len(val_pool) - 1)
    test_curves: dict[str, list[float]] = {"ours": [], "ridge": [], "pooled": []}
    val_curves: dict[str, list[float]] = {"ours": [], "ridge": [], "pooled": []}
    t0 = time.perf_counter()
    y_fit = emb[epochs.image_rows[level.fit_idx]]
    for e in ends:
        ridge = RidgeRetrieval().fit(sampler.windows(level.fit_idx, e)[:, :, n_context:], y_fit)
        for idx, truth, pool_rows, size, curves_of in (
            (level.test, epochs.image_rows[level.test], level.pool, g, test_curves),
            (level.val_idx, val_true, val_pool, g_val, val_curves),
        ):
            xt = sampler.windows(idx, e)
            xw = xt[:, :, n_context:]
            for name, model_pred in (
                ("ours", predict_embeddings(module, xt, None, n_context)),
                ("ridge", ridge.predict(xw)),
                ("pooled", pooled.predict(xw)),
            ):
                ranks = retrieval_ranks(model_pred, truth, emb, pool_rows, size, seed=e)
                curves_of[name].append(top_k_accuracy(ranks, 5))
    logger.info("time-resolved ridge and evaluation in %.0f s", time.perf_counter() - t0)
    return test_curves, val_curves, g_val


class PooledRidge:
    """Ridge from standardised flattened windows to embeddings, fitted from the Gram matrix.

    One decoder for every window position: many more (trial, position) pairs than features,
    so the normal equations are accumulated in batches instead of holding every window.
    """

    def __init__(self, mean: NDArray[np.float64], scale: NDArray[np.float64]) -> None:
        self.mean = mean
        self.scale = scale
        self.weights: NDArray[np.float64] | None = None
        self.intercept: NDArray[np.float64] | None = None
        self.alpha = float("nan")

    def transform(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Flattened, standardised windows."""
        return (x.reshape(len(x), -1).astype(np.float64) - self.mean) / self.scale

    def predict(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Predicted embeddings of windows (n, n_channels, n_times)."""
        assert self.weights is not None and self.intercept is not None
        return (self.transform(x) @ self.weights + self.intercept).astype(np.float32)


def fit_pooled_ridge(
    sampler: WindowSampler,
    image_rows: NDArray[np.int64],
    emb: NDArray[np.float32],
    fit_idx: NDArray[np.intp],
    val_idx: NDArray[np.intp],
    ends: list[int],
    n_context: int,
    setup: Setup,
    rng: np.random.Generator,
) -> tuple[PooledRidge, dict[str, float]]:
    """A pooled ridge on (trial, window position) pairs of ``fit_idx``, alpha chosen on
    ``val_idx``.

    Up to ``setup.ridge_pairs_per_feature`` pairs per feature are drawn from the fitting
    trials; the regularisation is the grid value with the lowest mean squared error on every
    (validation trial, position) pair. Nothing of the test trials is read.
    """
    n_features = sampler.windows(fit_idx[:1], ends[0])[:, :, n_context:].size
    pairs = np.array([(i, e) for i in fit_idx for e in ends])
    n_pairs = min(len(pairs), int(setup.ridge_pairs_per_feature * n_features))
    pairs = pairs[rng.permutation(len(pairs))[:n_pairs]]

    def batches(rows: NDArray) -> Any:
        for a in range(0, len(rows), 512):
            part = rows[a : a + 512]
            x = sampler.windows(part[:, 0], part[:, 1])[:, :, n_context:]
            yield x, emb[image_rows[part[:, 0]]].astype(np.float64)

    # standardisation from the fitting pairs, as a pipeline's scaler would learn it
    total = np.zeros(n_features)
    square = np.zeros(n_features)
    for x, _ in batches(pairs):
        flat = x.reshape(len(x), -1).astype(np.float64)
        total += flat.sum(axis=0)
        square += (flat**2).sum(axis=0)
    mean = total / len(pairs)
    scale = np.sqrt(np.maximum(square / len(pairs) - mean**2, 1e-20))
    ridge = PooledRidge(mean, scale)
    gram = np.zeros((n_features, n_features))
    cross = np.zeros((n_features, emb.shape[1]))
    y_mean = np.zeros(emb.shape[1])
    for x, y in batches(pairs):
        z = ridge.transform(x)
        gram += z.T @ z
        cross += z.T @ y
        y_mean += y.sum(axis=0)
    # the standardised features have zero mean over the fitting pairs, so Z'Y equals Z'(Y - ȳ)
    # and the intercept is the mean target
    y_mean /= len(pairs)
    evals, evecs = np.linalg.eigh(gram)
    projected = evecs.T @ cross
    val_pairs = np.array([(i, e) for i in val_idx for e in ends])
    val_z, val_y = [], []
    for x, y in batches(val_pairs):
        val_z.append(ridge.transform(x) @ evecs)
        val_y.append(y)
    vz, vy = np.concatenate(val_z), np.concatenate(val_y)
    errors = []
    for alpha in POOLED_ALPHAS:
        coef = projected / (evals[:, None] + alpha)
        errors.append(float(np.mean((vz @ coef + y_mean - vy) ** 2)))
    best = int(np.argmin(errors))
    ridge.alpha = float(POOLED_ALPHAS[best])
    ridge.weights = evecs @ (projected / (evals[:, None] + ridge.alpha))
    ridge.intercept = y_mean
    info = {
        "ridge_pooled_alpha": ridge.alpha,
        "ridge_pooled_pairs": len(pairs),
        "ridge_pooled_features": n_features,
    }
    return ridge, info


def plot(curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (level, c) in zip(axes, curves.items(), strict=True):
        ax.plot(
            c["centres"], 100 * c["ours"], "o-", ms=3, label="brain module (one for all windows)"
        )
        ax.plot(c["centres"], 100 * c["ridge"], "s-", ms=3, label="ridge (one per window position)")
        ax.plot(c["centres"], 100 * c["pooled"], "^-", ms=3, label="ridge (one for all windows)")
        ax.axhline(100 * 5 / (c["g"] + 1), color="grey", ls=":", label="chance")
        for t, name in ((0.0, "onset"), (0.5, "offset")):
            ax.axvline(t, color="k", lw=0.5)
            ax.text(t, 0.97, f" {name}", fontsize=8, transform=ax.get_xaxis_transform(), va="top")
        ax.set_xlabel("window centre (s after image onset)")
        ax.set_title(f"SIMULATED MEG, noise {level}: 100 ms windows every 25 ms")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"top-5 retrieval among {c['g'] + 1} held-out images (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    setup = QUICK if args.quick else FULL
    t_start = time.perf_counter()

    data = image_features(setup, args.seed)
    train_rows, pool = split_images(data, setup, args.seed)
    mean, comps = fit_pca(data["features"][train_rows], EMBED_DIM)
    emb = l2_normalize((data["features"] - mean) @ comps.T)
    rng = np.random.default_rng(args.seed + 2)
    test_rows = rng.choice(pool, min(setup.n_test_trials, len(pool)), replace=False)
    train_trials = np.tile(train_rows, setup.train_repeats)
    order = rng.permutation(len(train_trials) + len(test_rows))
    trial_rows = np.concatenate([train_trials, test_rows])[order]
    is_test = np.r_[np.zeros(len(train_trials), bool), np.ones(len(test_rows), bool)][order]
    logger.info(
        "%d images (%d training, %d held out), %d trials",
        len(emb),
        len(train_rows),
        len(pool),
        len(trial_rows),
    )
    t0 = time.perf_counter()
    sim, noisy, clean = simulate(emb, trial_rows, args.seed)
    logger.info("simulated in %.0f s", time.perf_counter() - t0)

    figures: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    for level, factor in (("x1", 1.0), ("x2", 2.0)):
        raw = clean + factor * (noisy - clean)
        t0 = time.perf_counter()
        res, curve = evaluate_level(sim, raw, trial_rows, is_test, emb, pool, setup, args.seed)
        logger.info("noise %s done in %.0f s: %s", level, time.perf_counter() - t0, res)
        prefix = "" if level == "x1" else "noise2_"
        figures.update({prefix + k: v for k, v in res.items()})
        curves[level] = curve
    for prefix in ("", "noise2_"):
        ridge = figures[f"{prefix}ridge_top5_g100"] if 100 in setup.gallery_sizes else None
        ours = figures[f"{prefix}ours_top5_g100"] if 100 in setup.gallery_sizes else None
        figures[f"{prefix}ratio_vs_ridge"] = (
            round(ours / ridge, 3) if ridge and ours is not None else None
        )
    png = OUT / ("retrieval_sim_time_quick.png" if args.quick else "retrieval_sim_time.png")
    plot(curves, png)
    figures.update(
        simulated=True,
        modality="meg",
        n_channels=len(sim.info["ch_names"]),
        n_images=len(emb),
        n_train_images=len(train_rows),
        n_heldout_images=len(pool),
        n_train_trials=int((~is_test).sum()),
        n_test_trials=int(is_test.sum()),
        embedding="efficientnet-lite0 features, PCA 128 (fitted on training images)",
        chance_top5_g100=round(5 / 101, 4),
        plot=str(png.relative_to(HERE.parent)),
        quick=args.quick,
        wall_s=round(time.perf_counter() - t_start, 1),
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
