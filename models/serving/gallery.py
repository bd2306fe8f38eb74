"""Image galleries: image embeddings, ids, labels and thumbnails, searched by cosine similarity.

A gallery is what a retrieval decoder's output is compared with. It holds, for every image,

- an id (URL-safe, unique), a label (the name of the folder that holds the image) and a small
  JPEG or PNG thumbnail that the server hands out by id;
- an L2-normalised embedding, stored as float16, from a pretrained image model (computed by
  :mod:`neurocast.models.training.embed_images`), optionally projected onto the gallery's principal
  components (``projection``) so that large galleries stay fast to search.

Search is a single matrix-vector product with the embeddings held as float32 (numpy has no
BLAS path for float16; float16 is for storage) followed by a partial sort: exact cosine top-k.
Its cost grows with ``n_images * dim`` and is bound by memory bandwidth: on a 2-core x86 CPU,
100,000 images at ``dim=128`` answer in about 1.0 ms (p99 1.2 ms) with BLAS on both cores and
1.8 ms (p99 2.0 ms) on one, ``dim=64`` halves that, while the 1280 raw features take 11-15 ms
(``bench/gallery.py``, figures in ``bench/RESULTS.md``). Beyond about 100,000 images at 128
dimensions, or for many concurrent queries, an approximate index such as FAISS (IVF or HNSW)
is worth adding.

This module is on the serving path: it needs numpy and Pillow, never torch.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from numpy.typing import ArrayLike, NDArray

from neurocast.streaming.io import UNSAFE_NAME_CHARS, safe_name

GALLERY_FORMAT = 1
GALLERY_SUFFIX = ".npz"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
THUMBNAIL_MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


class GalleryError(ValueError):
    """A gallery file or a gallery query is invalid; the message says what to do."""


def image_id_from_path(relative: Path) -> str:
    """A URL-safe image id from a path relative to the images folder.

    Folders and the file stem are joined with ``.`` and any character other than letters,
    digits, ``.``, ``_`` and ``-`` becomes ``_``: ``faces/Annie 1.jpg`` gives
    ``faces.Annie_1``.
    """
    parts = [*relative.parent.parts, relative.stem]
    return ".".join(safe_name(p) for p in parts if p not in ("", "."))


def make_thumbnail(image: Any, size_px: int = 64, fmt: str = "jpeg") -> bytes:
    """Encode a small thumbnail of an image.

    Parameters
    ----------
    image : PIL.Image.Image | array
        The image (RGB, RGBA, greyscale, or an array of shape (height, width[, channels])
        with values in 0..255 or, for floating point, 0..1).
    size_px : int
        Length of the longer side in pixels; the aspect ratio is kept.
    fmt : str
        ``"jpeg"`` or ``"png"``.

    Returns
    -------
    data : bytes
        The encoded thumbnail.
    """
    if fmt not in THUMBNAIL_MEDIA_TYPES:
        raise GalleryError(f"Thumbnail format {fmt!r} is not supported; use 'jpeg' or 'png'.")
    if size_px < 1:
        raise GalleryError(f"Thumbnail size must be at least 1 pixel, got {size_px}.")
    img = to_rgb_image(image)
    img.thumbnail((size_px, size_px))
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **({"quality": 85} if fmt == "jpeg" else {}))
    return buf.getvalue()


def to_rgb_image(image: Any) -> Any:
    """Convert an image or array to an RGB ``PIL.Image`` (transparent parts become white)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.nan_to_num(arr) * 255.0, 0, 255).astype(np.uint8)
        elif arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise GalleryError(
                f"An image array must have shape (height, width) or (height, width, 1|3|4), "
                f"got {arr.shape}."
            )
        image = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def l2_normalize(x: ArrayLike) -> NDArray[np.float32]:
    """Rows scaled to unit Euclidean norm (float32); all-zero or non-finite rows are an error."""
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise GalleryError(
            "Embeddings must be finite and non-zero to be L2-normalised; check the image "
            "model's output or the decoder's input window."
        )
    return arr / norms


class Gallery:
    """Images with L2-normalised embeddings, searched by cosine similarity.

    Parameters
    ----------
    image_ids : sequence of str
        Unique ids, used in thumbnail URLs (letters, digits, ``.``, ``_``, ``-``).
    labels : sequence of str
        A label per image (the folder name when built from a folder).
    embeddings : array, shape (n_images, dim)
        Embeddings in the gallery's space; they are L2-normalised and stored as float16.
    thumbnails : sequence of bytes | None
        An encoded thumbnail per image (``thumbnail_format``), or None for a gallery without
        thumbnails (synthetic benchmark galleries).
    name : str
        The gallery's id (used in thumbnail URLs).
    meta : dict | None
        Provenance: embedding model, its preprocessing, thumbnail size; must be JSON-safe.
    projection : tuple of (array, array) | None
        ``(mean, components)`` with shapes ``(n_features,)`` and ``(dim, n_features)``: image
        model features ``f`` map to ``components @ (f - mean)`` before normalisation. None when
        the embeddings are the image model's features themselves.
    thumbnail_format : str
        ``"jpeg"`` or ``"png"``.
    """

    def __init__(
        self,
        image_ids: Sequence[str],
        labels: Sequence[str],
        embeddings: ArrayLike,
        thumbnails: Sequence[bytes] | None = None,
        *,
        name: str = "gallery",
        meta: dict[str, Any] | None = None,
        projection: tuple[ArrayLike, ArrayLike] | None = None,
        thumbnail_format: str = "jpeg",
    ) -> None:
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise GalleryError(
                f"Gallery embeddings must have shape (n_images, dim) with at least one image, "
                f"got {emb.shape}."
            )
        n = emb.shape[0]
        ids = [str(i) for i in image_ids]
        if len(ids) != n or len(labels) != n:
            raise GalleryError(
                f"Gallery has {n} embeddings but {len(ids)} image ids and {len(labels)} labels; "
                "give one of each per image."
            )
        bad = [i for i in ids if not i or UNSAFE_NAME_CHARS.search(i)]
        if bad:
            raise GalleryError(
                f"Image ids must be non-empty and use only letters, digits, '.', '_' and '-'; "
                f"invalid: {bad[:5]}."
            )
        if len(set(ids)) != n:
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise GalleryError(f"Image ids must be unique; repeated: {dupes[:5]}.")
        if thumbnails is not None and len(thumbnails) != n:
            raise GalleryError(f"Gallery has {n} images but {len(thumbnails)} thumbnails.")
        if thumbnail_format not in THUMBNAIL_MEDIA_TYPES:
            raise GalleryError(f"Unknown thumbnail format {thumbnail_format!r}; use jpeg or png.")
        if not name or UNSAFE_NAME_CHARS.search(name):
            raise GalleryError(
                f"Gallery name {name!r} must be non-empty and use only letters, digits, '.', "
                "'_' and '-' (it appears in URLs)."
            )
        self.name = name
        self.image_ids = ids
        self.labels = [str(lab) for lab in labels]
        self.embeddings = l2_normalize(emb).astype(np.float16)
        # float32 working copy for BLAS; normalised again after the float16 rounding
        self._matrix = np.ascontiguousarray(l2_normalize(self.embeddings))
        self._index = {image_id: i for i, image_id in enumerate(ids)}
        self.thumbnails = list(thumbnails) if thumbnails is not None else None
        self.thumbnail_format = thumbnail_format
        self.meta = dict(meta or {})
        self.projection: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        if projection is not None:
            mean = np.asarray(projection[0], dtype=np.float32)
            comps = np.asarray(projection[1], dtype=np.float32)
            if comps.ndim != 2 or comps.shape[0] != self.dim or mean.shape != (comps.shape[1],):
                raise GalleryError(
                    f"Projection must be (mean (n_features,), components (dim={self.dim}, "
                    f"n_features)), got {mean.shape} and {comps.shape}."
                )
            self.projection = (mean, comps)

    # ------------------------------------------------------------------ properties

    @property
    def n_images(self) -> int:
        """Number of images."""
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Length of an embedding."""
        return int(self.embeddings.shape[1])

    @property
    def thumbnail_media_type(self) -> str:
        """MIME type of the thumbnails (``image/jpeg`` or ``image/png``)."""
        return THUMBNAIL_MEDIA_TYPES[self.thumbnail_format]

    def __len__(self) -> int:
        return self.n_images

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def __repr__(self) -> str:
        return f"<Gallery {self.name!r}: {self.n_images} images, dim {self.dim}>"

    # ------------------------------------------------------------------ search

    def _check_queries(self, queries: ArrayLike) -> NDArray[np.float32]:
        q = np.asarray(queries, dtype=np.float32)
        if q.shape[-1:] != (self.dim,) or q.ndim > 2:
            raise GalleryError(
                f"A query embedding must have shape ({self.dim},) or (n_queries, {self.dim}) "
                f"for gallery {self.name!r}, got {q.shape}; was the decoder trained against "
                "another gallery?"
            )
        return l2_normalize(q)

    def scores(self, queries: ArrayLike) -> NDArray[np.float32]:
        """Cosine similarity of each query with every image.

        Parameters
        ----------
        queries : array, shape (dim,) or (n_queries, dim)
            Embeddings in the gallery's space (need not be normalised).

        Returns
        -------
        scores : array, shape (n_images,) or (n_queries, n_images)
            Cosine similarities in [-1, 1].
        """
        q = self._check_queries(queries)
        return q @ self._matrix.T if q.ndim == 2 else self._matrix @ q

    def top_k(self, query: ArrayLike, k: int = 5) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
        """Indices and cosine scores of the ``k`` images closest to one query, best first.

        ``k`` larger than the gallery returns every image.
        """
        if k < 1:
            raise GalleryError(f"k must be at least 1, got {k}.")
        s = self.scores(query)
        if s.ndim != 1:
            raise GalleryError("top_k takes one query; use scores() for a batch.")
        k = min(k, s.shape[0])
        idx = np.argpartition(s, -k)[-k:] if k < s.shape[0] else np.arange(s.shape[0])
        # ties broken by index, so results are deterministic
        idx = idx[np.lexsort((idx, -s[idx]))]
        return idx, s[idx]

    def search(self, embedding: ArrayLike, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` images closest to an embedding, best first.

        Parameters
        ----------
        embedding : array, shape (dim,)
            A decoder's output in the gallery's space.
        k : int
            How many images to return (all of them when the gallery is smaller).

        Returns
        -------
        hits : list of dict
            ``{"image_id", "label", "score", "thumbnail_url"}`` per image; ``score`` is the
            cosine similarity, ``thumbnail_url`` the server path of its thumbnail (None when the
            gallery has no thumbnails).
        """
        idx, s = self.top_k(embedding, k)
        return [
            {
                "image_id": self.image_ids[i],
                "label": self.labels[i],
                "score": float(v),
                "thumbnail_url": self.thumbnail_url(self.image_ids[i]),
            }
            for i, v in zip(idx.tolist(), s.tolist(), strict=True)
        ]

    # ------------------------------------------------------------------ images

    def index_of(self, image_id: str) -> int:
        """Row of an image id; raises ``KeyError`` naming the gallery when absent."""
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(f"Image {image_id!r} is not in gallery {self.name!r}.") from None

    def thumbnail(self, image_id: str) -> bytes:
        """The encoded thumbnail of an image (see :attr:`thumbnail_media_type`).

        Raises
        ------
        KeyError
            If the image is not in the gallery, or the gallery has no thumbnails.
        """
        i = self.index_of(image_id)
        if self.thumbnails is None:
            raise KeyError(f"Gallery {self.name!r} has no thumbnails.")
        return self.thumbnails[i]

    def thumbnail_url(self, image_id: str) -> str | None:
        """Server path of an image's thumbnail, ``/v1/galleries/{name}/thumbnails/{image_id}``."""
        if self.thumbnails is None:
            return None
        return f"/v1/galleries/{quote(self.name)}/thumbnails/{quote(image_id)}"

    def project(self, features: ArrayLike) -> NDArray[np.float32]:
        """Map image-model features into this gallery's space (projected, L2-normalised).

        Parameters
        ----------
        features : array, shape (n, n_features)
            Outputs of the gallery's image model (see ``meta["embedding"]``).
        """
        f: NDArray[np.floating] = np.asarray(features, dtype=np.float32)
        if self.projection is not None:
            mean, comps = self.projection
            if f.shape[-1] != mean.shape[0]:
                raise GalleryError(
                    f"Features have {f.shape[-1]} values, the projection expects {mean.shape[0]}."
                )
            f = (f - mean) @ comps.T
        elif f.shape[-1] != self.dim:
            raise GalleryError(f"Features have {f.shape[-1]} values, the gallery {self.dim}.")
        return l2_normalize(f)

    def subset(self, indices: ArrayLike, name: str | None = None) -> Gallery:
        """A gallery of the given rows (same space, thumbnails and metadata)."""
        idx = np.asarray(indices, dtype=np.intp)
        return Gallery(
            [self.image_ids[i] for i in idx],
            [self.labels[i] for i in idx],
            self.embeddings[idx],
            [self.thumbnails[i] for i in idx] if self.thumbnails is not None else None,
            name=name or self.name,
            meta=self.meta,
            projection=self.projection,
            thumbnail_format=self.thumbnail_format,
        )

    # ------------------------------------------------------------------ storage

    def save(self, path: str | Path) -> Path:
        """Write the gallery to one ``.npz`` file (no pickled objects); returns its path.

        The file holds the arrays ``embeddings`` and ``ids`` (so the simulator reads it as an
        image set, :func:`~neurocast.streaming.sources.simulator.simulator.load_image_set`),
        ``labels``, the
        thumbnails (``thumbnail_bytes``, ``thumbnail_offsets``), the projection if any, and
        ``meta`` (JSON).
        """
        path = Path(path)
        if path.suffix != GALLERY_SUFFIX:
            path = path.with_name(path.name + GALLERY_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            **self.meta,
            "format": GALLERY_FORMAT,
            "name": self.name,
            "n_images": self.n_images,
            "dim": self.dim,
            "thumbnail_format": self.thumbnail_format,
        }
        arrays: dict[str, NDArray[Any]] = {
            "meta": np.array(json.dumps(meta)),
            "ids": np.array(self.image_ids, dtype=str),
            "labels": np.array(self.labels, dtype=str),
            "embeddings": self.embeddings,
        }
        if self.thumbnails is not None:
            sizes = np.array([len(t) for t in self.thumbnails], dtype=np.int64)
            arrays["thumbnail_offsets"] = np.concatenate([[0], np.cumsum(sizes)])
            arrays["thumbnail_bytes"] = np.frombuffer(b"".join(self.thumbnails), dtype=np.uint8)
        if self.projection is not None:
            arrays["projection_mean"], arrays["projection_components"] = self.projection
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Gallery:
        """Read a gallery written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        GalleryError
            If it is not a gallery file or was written by a newer version.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Gallery file {path} does not exist; build one with 'neurocast gallery build'."
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise GalleryError(f"{path} is not a gallery file (.npz): {exc}") from exc
        missing = {"meta", "ids", "labels", "embeddings"} - data.keys()
        if missing:
            raise GalleryError(f"{path} is not a gallery file: it lacks {sorted(missing)}.")
        meta = json.loads(str(data["meta"]))
        if meta.get("format", 0) > GALLERY_FORMAT:
            raise GalleryError(
                f"{path} has gallery format {meta.get('format')}; this version reads up to "
                f"{GALLERY_FORMAT}. Upgrade neurocast."
            )
        thumbs = None
        if "thumbnail_offsets" in data:
            blob = data["thumbnail_bytes"].tobytes()
            off = data["thumbnail_offsets"].tolist()
            thumbs = [blob[a:b] for a, b in itertools.pairwise(off)]
        projection = None
        if "projection_mean" in data:
            projection = (data["projection_mean"], data["projection_components"])
        name = meta.pop("name", None) or path.stem
        fmt = meta.pop("thumbnail_format", None) or "jpeg"
        for key in ("format", "n_images", "dim"):
            meta.pop(key, None)
        return cls(
            data["ids"].tolist(),
            data["labels"].tolist(),
            data["embeddings"],
            thumbs,
            name=name,
            meta=meta,
            projection=projection,
            thumbnail_format=fmt,
        )
