"""The demo's image set: photographs bundled with scikit-image, embedded at build time.

:func:`build_demo_gallery` embeds the pictures of :data:`DEMO_IMAGES` with the gallery builder
(EfficientNet-Lite0 features projected on their first principal axes), writes the gallery
(embeddings and 64 px thumbnails) beside the shipped models and lists the licence and source
of every picture in ``GALLERY_LICENSES.md``. The simulator shows these images in the demo
(``SimulatorSpec(embeddings_path=...)``), so ``neurocast demo`` needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neurocast.models.serving.gallery import Gallery
from neurocast.models.training.embed_images import ImageItem, build_gallery

DEMO_GALLERY = "demo-images"
LICENSES_FILE = "GALLERY_LICENSES.md"


@dataclass(frozen=True)
class DemoImage:
    """One shipped picture: its ``skimage.data`` loader, licence and origin."""

    name: str
    licence: str
    source: str


# licences as stated in each loader's docstring (scikit-image 0.26); pictures whose docstring
# states none (moon, page) are left out
DEMO_IMAGES: tuple[DemoImage, ...] = (
    DemoImage("astronaut", "public domain (NASA)", "NASA Great Images, https://flic.kr/p/r9qvLn"),
    DemoImage("brick", "CC0", "CC0Textures, Bricks25 (cropped and transformed by scikit-image)"),
    DemoImage("camera", "CC0 (photographer Lav Varshney)", "scikit-image"),
    DemoImage("cell", "CC0", "Müller et al. 2018, Optics Express 26(8), via qpformat"),
    DemoImage("chelsea", "CC0 (photographer Stefan van der Walt)", "scikit-image"),
    DemoImage("clock", "public domain (photographer Stefan van der Walt)", "scikit-image"),
    DemoImage("coffee", "CC0 (photographer Rachel Michetti)", "Pikolo Espresso Bar"),
    DemoImage(
        "coins",
        "no known copyright restrictions",
        "Brooklyn Museum Collection, https://www.brooklynmuseum.org/opencollection/archives/"
        "image/51611",
    ),
    DemoImage("grass", "CC0", "DeviantArt, linolafett Grass-01 (cropped, greyscale)"),
    DemoImage("gravel", "CC0", "CC0Textures, Gravel04 (rescaled, cropped, greyscale)"),
    DemoImage("horse", "CC0 (Andreas Preuss)", "openclipart, http://openclipart.org/detail/158377"),
    DemoImage(
        "hubble_deep_field",
        "public domain (NASA)",
        "HubbleSite, http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
    ),
    DemoImage(
        "immunohistochemistry",
        "no known copyright restrictions",
        "Center for Microscopy And Molecular Imaging (CMMI)",
    ),
    DemoImage(
        "microaneurysms",
        "CC0 (Andreas Maier)",
        "High-Resolution Fundus (HRF) Image Database, image 07_dr (crop)",
    ),
    DemoImage(
        "retina",
        "CC0 1.0",
        "Wikimedia Commons, Fundus_photograph_of_normal_left_eye.jpg (Mikael Häggström)",
    ),
    DemoImage(
        "rocket",
        "public domain (SpaceX)",
        "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/",
    ),
    DemoImage(
        "text",
        "public domain",
        "Wikipedia, https://en.wikipedia.org/wiki/File:Corner.png",
    ),
)


def demo_image_items() -> list[ImageItem]:
    """The demo pictures as gallery items (id ``skimage.<name>``, label ``<name>``)."""
    import skimage.data as data

    return [
        ImageItem(f"skimage.{im.name}", im.name, getattr(data, im.name)()) for im in DEMO_IMAGES
    ]


def licences_markdown() -> str:
    """The licence and source of every demo picture, as a Markdown table."""
    from importlib.metadata import version

    rows = [f"| `skimage.{im.name}` | {im.licence} | {im.source} |" for im in DEMO_IMAGES]
    return "\n".join(
        [
            "# Demo gallery: pictures and their licences",
            "",
            f"The demo gallery (`{DEMO_GALLERY}.npz`: 64 px thumbnails and EfficientNet-Lite0 "
            "embeddings) holds these pictures from `skimage.data` "
            f"(scikit-image {version('scikit-image')}, BSD-3-Clause package). Licence and source "
            "are those stated in each loader's documentation.",
            "",
            "| image id | licence | source |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )


def build_demo_gallery(out_dir: str | Path, *, dim: int = 8) -> Gallery:
    """Embed the demo pictures and write the gallery and its licence list.

    Parameters
    ----------
    out_dir : path-like
        Folder of the shipped artifacts.
    dim : int
        Principal components kept of the 1280 image features: few enough that the training
        images determine the linear map from brain responses to embeddings, so images held
        out of training are retrieved too.

    Returns
    -------
    gallery : Gallery
        The written gallery (``<out_dir>/demo-images.npz``).
    """
    out = Path(out_dir)
    gallery = build_gallery(
        demo_image_items(),
        name=DEMO_GALLERY,
        dim=dim,
        thumbnail_px=64,
        source="skimage.data photographs (see GALLERY_LICENSES.md)",
    )
    gallery.save(out / f"{DEMO_GALLERY}.npz")
    (out / LICENSES_FILE).write_text(licences_markdown(), encoding="utf-8")
    return gallery
