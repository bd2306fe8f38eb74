"""Image sets shown by the simulator: embeddings (one row per image) and their ids."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)


def default_image_set(
    n_images: int = 100, dim: int = 64, seed: int = 0
) -> tuple[NDArray[np.float32], list[str]]:
    """Seeded random unit-norm image embeddings and their ids.

    Parameters
    ----------
    n_images : int
        Number of images.
    dim : int
        Embedding dimension.
    seed : int
        Random seed (the simulator uses its ``subject_seed``).

    Returns
    -------
    embeddings : ndarray, shape (n_images, dim), float32
        Unit-norm rows.
    ids : list of str
        ``"img000"``, ``"img001"``, ...
    """
    if n_images < 1 or dim < 1:
        raise ValueError(f"n_images and dim must be positive, got {n_images} and {dim}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A6E5]))
    emb = rng.standard_normal((n_images, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), [f"img{i:03d}" for i in range(n_images)]


def image_ids_for(embeddings: NDArray[np.floating], ids: Sequence[str] | None) -> list[str]:
    """``ids`` as a list, or ``img000``, ``img001``, ... for each row of ``embeddings``."""
    if ids is not None:
        return list(ids)
    return [f"img{i:03d}" for i in range(embeddings.shape[0] if embeddings.ndim == 2 else 0)]


def load_image_set(path: str | Path) -> tuple[NDArray[np.float32], list[str]]:
    """Image embeddings and ids from an ``.npz`` file.

    The file holds ``embeddings`` (n_images, dim) and ``ids`` or ``image_ids`` (n_images,)
    strings, so a gallery written by ``neurocast gallery build`` works as it is.

    Raises
    ------
    ValueError
        If the file is unreadable or the arrays are missing or inconsistent.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            emb = np.asarray(z["embeddings"], dtype=np.float32)
            ids = [str(i) for i in z["ids" if "ids" in z.files else "image_ids"]]
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(
            f"Cannot read image embeddings from {path!s}: {exc}. Expected an .npz file with "
            "arrays 'embeddings' (n_images, dim) and 'ids' or 'image_ids' (n_images,)."
        ) from exc
    check_image_set(emb, ids)
    return emb, ids


def check_image_set(emb: NDArray[np.floating], ids: Sequence[str]) -> None:
    if emb.ndim != 2 or emb.shape[0] < 1 or emb.shape[1] < 1:
        raise ValueError(f"Image embeddings must be a 2-D array (n_images, dim), got {emb.shape}.")
    if len(ids) != emb.shape[0]:
        raise ValueError(
            f"Got {len(ids)} image ids for {emb.shape[0]} embeddings; they must match."
        )
    if len(set(ids)) != len(ids):
        raise ValueError("Image ids must be unique.")
    if not np.all(np.isfinite(emb)):
        raise ValueError("Image embeddings contain NaN or infinite values.")


def warn_on_norms(emb: NDArray[np.floating]) -> None:
    """Warn when the embeddings' typical norm would give unrealistic evoked amplitudes."""
    norms = np.linalg.norm(emb, axis=1)
    med = float(np.median(norms))
    if not 0.2 <= med <= 5.0:
        logger.warning(
            "Image embeddings have median norm %.3g; evoked amplitudes scale with it "
            "(L2-normalise them for realistic amplitudes).",
            med,
        )
