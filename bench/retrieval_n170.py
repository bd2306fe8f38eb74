"""Face/house retrieval from real Muse EEG (N170 paradigm): brain module against MNE + LR.

Data: ``../shared/data/n170`` (NeuroTechX eeg-notebooks v0.1, Muse headband: TP9, AF7, AF8,
TP10 at 256 Hz; ``Marker0`` 1 = house, 2 = face) and the 96 face and house pictures of
``../shared/data/stimuli/face_house``. Before pooling, every file is checked: byte-identical
files are used once, files with fewer than 20 markers are left out, sample times come from the
sample index at the nominal 256 Hz (some files' timestamps run backwards), and the
face-minus-house difference wave at TP9/TP10 of each subject is compared with the others'
(printed, and returned as ``coding_check``).

The recordings do not say which face or which house was shown, only the category, so the
brain module is trained to map each trial to its category's mean image embedding (the
centroid of the gallery's faces or houses, EfficientNet-Lite0 features), with the CLIP + MSE
loss. The gallery space is the first 32 principal components of the pictures' features
(centred, so that the two category centroids differ clearly). The score of a trial is
``cos(prediction, faces) - cos(prediction, houses)``; the gallery's top-5 images per trial
also give ``ours_within_top5_category`` (fraction of the top-5 images of the right
category). Preprocessing: the study's (120 Hz, baseline over the 0.2 s before image onset,
robust scaling, clip ±20) after a causal 1-30 Hz band-pass; the window spans 0-0.8 s after
onset.

Baseline, in the same run on the same trials: eeg-notebooks' decoding pipeline, MNE
``Vectorizer`` + ``StandardScaler`` + ``LogisticRegression`` on 1-30 Hz epochs from -0.1 to
0.8 s (epochs over 75 µV are rejected, for both decoders).

Splits (never tuned on test folds):

- within subject: leave one recording out for subjects with several recordings (1, 3),
  stratified 5-fold for a single recording (11); subject 10 has too few usable trials. The
  baseline's AUC is also given with eeg-notebooks' own split (20 stratified shuffle splits,
  25 % test), ``lr_within_auc_shuffle``, the setting of the reported 0.69 / 0.73.
- across subjects: leave one subject out (trained on the others' pooled trials).

Figures: ``ours_within_auc``, ``lr_within_auc`` (means over subjects 1, 3, 11),
``ours_cross_auc``, ``lr_cross_auc`` (means over held-out subjects 1, 3, 11; subject 10 only
trains), per-subject values, and the checks.

Usage: ``python bench/retrieval_n170.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import os

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

import mne
import numpy as np
import torch
from mne.decoding import Vectorizer
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurocast.models.nets.brain_module import small_config
from neurocast.models.serving.gallery import Gallery, l2_normalize
from neurocast.models.training.embed_images import build_gallery, find_images
from neurocast.models.training.recipes.retrieval import prepare_windows, train_brain_module
from neurocast.models.training.retrieval import RetrievalTrainConfig, predict_embeddings
from neurocast.models.training.retrieval_data import (
    EpochSet,
    WindowGeometry,
    WindowSampler,
    epochs_from_recording,
    retrieval_spec,
)
from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.simulator.geometry import template_montage

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
OUT = HERE / "out"
CHANNELS = ["TP9", "AF7", "AF8", "TP10"]
SFREQ = 256.0  # the Muse's nominal rate
HOUSE, FACE = 1, 2
CONTEXT_S, WINDOW_S = 0.2, 0.8
TMIN, TMAX = -0.5, 0.9
LR_TMIN, LR_TMAX, REJECT_V = -0.1, 0.8, 75e-6
MIN_MARKERS = 20
GALLERY_DIM = 32  # principal components of the 96 pictures' features
# four electrodes cannot feed more than four independent spatial mixtures: besides the
# small configuration, a narrower one, chosen per fold on validation trials
CONFIGS = {
    "small": small_config(),
    "tiny": small_config(n_spatial=16, n_fourier=4, hidden=32, n_blocks=2, head_hidden=64),
}
logger = logging.getLogger("retrieval_n170")


@dataclass
class Recording:
    subject: int
    name: str
    data: NDArray[np.float64]  # (4, n) volts
    onsets: NDArray[np.int64]
    codes: NDArray[np.int64]


def load_recordings(root: Path) -> tuple[list[Recording], list[str]]:
    """Every usable recording, with notes on what was left out and why."""
    notes: list[str] = []
    seen: dict[str, str] = {}
    out: list[Recording] = []
    for path in sorted(root.glob("subject*/session*/*.csv*")):
        rel = str(path.relative_to(root))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            notes.append(f"{rel}: byte-identical to {seen[digest]}, used once")
            continue
        seen[digest] = rel
        with open(path) as f:
            header = f.readline().strip().split(",")
        table = np.loadtxt(path, delimiter=",", skiprows=1)
        cols = [header.index(c) for c in CHANNELS]
        markers = table[:, header.index("Marker0")].astype(np.int64)
        onsets = np.flatnonzero(markers)
        codes = markers[onsets]
        unknown = sorted(set(codes.tolist()) - {HOUSE, FACE})
        if unknown:
            notes.append(f"{rel}: unknown marker values {unknown}, left out")
            continue
        backwards = int((np.diff(table[:, 0]) < 0).sum())
        if backwards:
            notes.append(
                f"{rel}: {backwards} timestamps run backwards; sample index at 256 Hz used"
            )
        if len(onsets) < MIN_MARKERS:
            notes.append(f"{rel}: only {len(onsets)} markers, left out")
            continue
        subject = int(path.parts[-3].removeprefix("subject"))
        data = table[:, cols].T * 1e-6  # microvolts to volts
        out.append(Recording(subject, rel, data, onsets, codes))
    return out, notes


def _info() -> mne.Info:
    info = mne.create_info(CHANNELS, SFREQ, "eeg")
    info.set_montage(template_montage())
    return info


def lr_epochs(rec: Recording, info: mne.Info) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """eeg-notebooks' epochs (1-30 Hz, -0.1..0.8 s) and the onsets they kept (75 µV rule)."""
    raw = mne.io.RawArray(rec.data, info, verbose="error")
    raw.filter(1.0, 30.0, method="iir", verbose="error")
    events = np.c_[rec.onsets, np.zeros_like(rec.onsets), rec.codes]
    ep = mne.Epochs(
        raw,
        events,
        {"house": HOUSE, "face": FACE},
        tmin=LR_TMIN,
        tmax=LR_TMAX,
        baseline=None,
        reject={"eeg": REJECT_V},
        preload=True,
        verbose="error",
    )
    return ep.get_data(), ep.events[:, 0]


@dataclass
class Trials:
    """The trials both decoders use, per subject and recording."""

    x_lr: NDArray[np.float64]
    y: NDArray[np.int64]  # 1 = face
    subject: NDArray[np.int64]
    recording: NDArray[np.int64]
    epochs: EpochSet


def prepare(recordings: list[Recording], info: mne.Info) -> Trials:
    spec = retrieval_spec(CHANNELS, context_s=CONTEXT_S, l_freq_hz=1.0, h_freq_hz=30.0)
    stream = StreamInfo("muse", info)
    x_all, y_all, s_all, r_all, sets = [], [], [], [], []
    for k, rec in enumerate(recordings):
        x, kept = lr_epochs(rec, info)
        # our epochs need a lead-in of 0.5 s; keep trials both pipelines can use
        rate_ratio = 120.0 / SFREQ
        fits = (kept + TMIN * SFREQ >= 0) & (
            kept + TMAX * SFREQ + 1 / rate_ratio < rec.data.shape[1]
        )
        kept_codes = rec.codes[np.searchsorted(rec.onsets, kept)]
        e = epochs_from_recording(
            rec.data,
            stream,
            spec,
            kept[fits],
            (kept_codes[fits] == FACE).astype(np.int64),
            TMIN,
            TMAX,
            group=k,
        )
        if len(e) != int(fits.sum()):
            raise RuntimeError(f"{rec.name}: epoch count mismatch ({len(e)} vs {fits.sum()}).")
        x_all.append(x[fits])
        y_all.append((kept_codes[fits] == FACE).astype(np.int64))
        s_all.append(np.full(len(e), rec.subject))
        r_all.append(np.full(len(e), k))
        sets.append(e)
    return Trials(
        np.concatenate(x_all),
        np.concatenate(y_all),
        np.concatenate(s_all),
        np.concatenate(r_all),
        EpochSet.concatenate(sets),
    )


def coding_check(trials: Trials) -> dict[str, Any]:
    """Face-minus-house difference wave at TP9/TP10 per subject and their correlations."""
    t = LR_TMIN + np.arange(trials.x_lr.shape[-1]) / SFREQ
    post = t > 0
    waves = {}
    for s in np.unique(trials.subject):
        m = trials.subject == s
        x = trials.x_lr[m][:, [0, 3]].mean(axis=1)
        x = x - x[:, t < 0].mean(axis=1, keepdims=True)
        waves[int(s)] = x[trials.y[m] == 1].mean(0) - x[trials.y[m] == 0].mean(0)
    corr = {
        f"{a}-{b}": round(float(np.corrcoef(waves[a][post], waves[b][post])[0, 1]), 2)
        for a in waves
        for b in waves
        if a < b
    }
    trough = {
        str(s): round(float(t[post][np.argmin(w[post] * (t[post] < 0.4))]), 3)
        for s, w in waves.items()
    }
    return {"diff_wave_correlation": corr, "diff_wave_min_s": trough}


# --------------------------------------------------------------------------- decoders


def lr_scores(
    x_train: NDArray[np.float64], y_train: NDArray[np.int64], x_test: NDArray[np.float64]
) -> NDArray[np.float64]:
    """eeg-notebooks' Vect + LR: face probability of each test epoch (data in µV)."""
    clf = make_pipeline(Vectorizer(), StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(x_train * 1e6, y_train)
    return clf.predict_proba(x_test * 1e6)[:, 1]


def ours_scores(
    trials: Trials,
    train: NDArray[np.intp],
    test: NDArray[np.intp],
    info: mne.Info,
    targets: NDArray[np.float32],
    gallery: Gallery,
    epochs_max: int,
    seed: int,
    max_steps: int | None = None,
) -> tuple[NDArray[np.float64], float, str]:
    """Brain-module scores of the test trials, top-5 category precision, chosen size."""
    epochs = trials.epochs
    spec0 = retrieval_spec(CHANNELS, context_s=CONTEXT_S, l_freq_hz=1.0, h_freq_hz=30.0)
    geo = WindowGeometry.from_seconds(WINDOW_S, CONTEXT_S, epochs.sfreq)
    end = WindowSampler(epochs, spec0, geo).end_index(WINDOW_S)
    _, sampler = prepare_windows(epochs, spec0, geo, train, [end], seed)
    rng = np.random.default_rng(seed)
    # early stopping on 15 % of the training trials (stratified by category)
    val = np.concatenate(
        [
            rng.permutation(train[trials.y[train] == c])[
                : max(1, round(0.15 * (trials.y[train] == c).sum()))
            ]
            for c in (0, 1)
        ]
    )
    fit = np.setdiff1d(train, val)
    # two sizes, chosen per fold by the validation loss (never by test trials)
    best: tuple[float, str, Any] = (np.inf, "", None)
    for name, cfg in CONFIGS.items():
        module, result = train_brain_module(
            info,
            sampler,
            fit,
            val,
            [end],
            targets,
            cfg,
            RetrievalTrainConfig(
                lr=1e-3,
                max_epochs=epochs_max,
                patience=6,
                batch_size=64,
                max_steps_per_epoch=max_steps,
                seed=seed,
            ),
        )
        if result.val_loss < best[0]:
            best = (result.val_loss, name, module)
    _, chosen, module = best
    pred = l2_normalize(predict_embeddings(module, sampler.windows(test, end), None, geo.n_context))
    scores = pred @ (targets[1] - targets[0])
    faces = np.array([lab == "faces" for lab in gallery.labels])
    top5 = np.argsort(-gallery.scores(pred), axis=1)[:, :5]
    right = faces[top5] == (trials.y[test][:, None] == 1)
    return scores.astype(np.float64), float(right.mean()), chosen


def _auc(y: NDArray, s: NDArray) -> float:
    return round(float(roc_auc_score(y, s)), 4)


def face_house_gallery() -> tuple[Gallery, NDArray[np.float32]]:
    """The face/house gallery (cached in bench/out) and the two category centroids."""
    cache = OUT / "n170_face_house_gallery.npz"
    if cache.is_file():
        gallery = Gallery.load(cache)
    else:
        gallery = build_gallery(
            find_images(DATA / "stimuli" / "face_house"), name="face_house", dim=GALLERY_DIM
        )
        gallery.save(cache)
    emb = gallery.embeddings.astype(np.float32)
    targets = l2_normalize(
        np.stack([emb[[lab == "houses" for lab in gallery.labels]].mean(0),
                  emb[[lab == "faces" for lab in gallery.labels]].mean(0)])
    )  # fmt: skip
    return gallery, targets


@dataclass
class Fit:
    """What both decoders share in a run: data, targets and training settings."""

    trials: Trials
    info: mne.Info
    targets: NDArray[np.float32]
    gallery: Gallery
    max_epochs: int
    seed: int
    max_steps: int | None

    def ours(
        self, train: NDArray[np.intp], test: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], float, str]:
        """:func:`ours_scores` of one split."""
        return ours_scores(
            self.trials, train, test, self.info, self.targets, self.gallery,
            self.max_epochs, self.seed, self.max_steps,
        )  # fmt: skip


def within_subject(fit: Fit, s: int, quick: bool, chosen: list[str]) -> dict[str, Any]:
    """Within-subject AUCs of both decoders (and the baseline with eeg-notebooks' split).

    The top-5 category precision of ours is returned as ``top5``; the sizes chosen per
    fold are appended to ``chosen``.
    """
    trials = fit.trials
    idx = np.flatnonzero(trials.subject == s)
    recs = trials.recording[idx]
    if len(np.unique(recs)) > 1:
        n_folds = 2 if quick else len(np.unique(recs))
        splits = list(GroupKFold(n_folds).split(idx, groups=recs))
        how = f"leave-one-recording-out ({n_folds} folds)"
    else:
        n_folds = 2 if quick else 5
        splits = list(
            StratifiedKFold(n_folds, shuffle=True, random_state=0).split(idx, trials.y[idx])
        )
        how = f"stratified {n_folds}-fold"
    s_ours = np.empty(len(idx))
    s_lr = np.empty(len(idx))
    top5 = []
    for tr, te in splits:
        s_lr[te] = lr_scores(trials.x_lr[idx[tr]], trials.y[idx[tr]], trials.x_lr[idx[te]])
        s_ours[te], precision, size = fit.ours(idx[tr], idx[te])
        top5.append(precision)
        chosen.append(size)
    y = trials.y[idx]
    # the baseline with eeg-notebooks' own split, for comparison with its reported AUCs
    shuffle = StratifiedShuffleSplit(5 if quick else 20, test_size=0.25, random_state=42)
    aucs = [
        roc_auc_score(y[te], lr_scores(trials.x_lr[idx[tr]], y[tr], trials.x_lr[idx[te]]))
        for tr, te in shuffle.split(idx, y)
    ]
    return {
        f"ours_within_auc_s{s}": _auc(y, s_ours),
        f"lr_within_auc_s{s}": _auc(y, s_lr),
        f"within_split_s{s}": how,
        f"n_trials_s{s}": len(idx),
        f"lr_within_auc_shuffle_s{s}": round(float(np.mean(aucs)), 4),
        "top5": float(np.mean(top5)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer folds and epochs (< 60 s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    if not (DATA / "n170").is_dir() or not (DATA / "stimuli" / "face_house").is_dir():
        print(json.dumps({"skipped": f"real recordings not found under {DATA}"}))
        return
    recordings, notes = load_recordings(DATA / "n170")
    for n in notes:
        logger.info("check: %s", n)
    info = _info()
    trials = prepare(recordings, info)
    check = coding_check(trials)
    logger.info("coding check: %s", check)
    gallery, targets = face_house_gallery()
    fit = Fit(trials, info, targets, gallery, 4 if args.quick else 40, args.seed,
              8 if args.quick else None)  # fmt: skip
    wanted = (1, 3) if args.quick else (1, 3, 11)
    subjects = [s for s in wanted if (trials.subject == s).any()]
    figures: dict[str, Any] = {}
    within_top5: list[float] = []
    chosen: list[str] = []
    for s in subjects:
        within = within_subject(fit, s, args.quick, chosen)
        within_top5.append(within.pop("top5"))
        figures.update(within)
        logger.info(
            "subject %d within: ours %.3f, LR %.3f",
            s, figures[f"ours_within_auc_s{s}"], figures[f"lr_within_auc_s{s}"],
        )  # fmt: skip
    figures["ours_within_auc"] = _mean_of(figures, "ours_within_auc_s", subjects)
    figures["lr_within_auc"] = _mean_of(figures, "lr_within_auc_s", subjects)
    figures["ours_within_top5_category"] = round(float(np.mean(within_top5)), 4)
    held_out = subjects[-1:] if args.quick else subjects
    for s in held_out:
        test = np.flatnonzero(trials.subject == s)
        train = np.flatnonzero(trials.subject != s)
        y = trials.y[test]
        a_lr = _auc(y, lr_scores(trials.x_lr[train], trials.y[train], trials.x_lr[test]))
        so, _, size = fit.ours(train, test)
        chosen.append(size)
        figures[f"ours_cross_auc_s{s}"] = _auc(y, so)
        figures[f"lr_cross_auc_s{s}"] = a_lr
        logger.info("subject %d held out: ours %.3f, LR %.3f", s, _auc(y, so), a_lr)
    figures["ours_cross_auc"] = _mean_of(figures, "ours_cross_auc_s", held_out)
    figures["lr_cross_auc"] = _mean_of(figures, "lr_cross_auc_s", held_out)
    figures.update(
        ours_sizes_chosen={n: chosen.count(n) for n in CONFIGS},
        coding_check=check,
        data_checks=notes,
        n_trials=len(trials.y),
        recordings=[r.name for r in recordings],
        quick=args.quick,
        wall_s=round(time.perf_counter() - t_start, 1),
    )
    print(json.dumps(figures))


def _mean_of(figures: dict[str, Any], prefix: str, subjects: list[int]) -> float:
    """Mean over subjects of the figures ``<prefix><subject>``, rounded like the others."""
    return round(float(np.mean([figures[f"{prefix}{s}"] for s in subjects])), 4)


if __name__ == "__main__":
    main()
