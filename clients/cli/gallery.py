"""``neurocast gallery``: build and inspect image galleries for retrieval decoders.

``neurocast gallery build IMAGES_DIR --out G.npz`` embeds every image under ``IMAGES_DIR``
(labels from the folders that hold them) with EfficientNet-Lite0 and writes a gallery file;
``neurocast gallery info G.npz`` describes one. Building needs the ``train`` extra (torch),
imported only when the build runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from neurocast.clients.cli.exit_codes import EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gallery`` command and its ``build`` and ``info`` subcommands."""
    parser = subparsers.add_parser(
        "gallery",
        help="build and inspect image galleries",
        description="Image galleries: the images a retrieval decoder's output is compared with.",
    )
    sub = parser.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)

    build = sub.add_parser(
        "build",
        help="embed a folder of images into a gallery file",
        description=(
            "Embed every image under IMAGES_DIR (EfficientNet-Lite0 ImageNet features, "
            "penultimate layer) and write a gallery with ids, labels (the folder holding each "
            "image) and thumbnails."
        ),
    )
    build.add_argument(
        "images_dir", metavar="IMAGES_DIR", type=Path, nargs="?", help="folder of images"
    )
    build.add_argument("--out", required=True, type=Path, help="gallery file to write (.npz)")
    build.add_argument("--name", help="gallery id used in URLs (default: the file name)")
    build.add_argument(
        "--dim",
        type=int,
        help="project onto this many principal components (128 keeps a 100,000-image query "
        "near 1 ms on two cores, 64 on one); default: keep the 1280 features",
    )
    build.add_argument("--like", type=Path, help="reuse the space (projection) of this gallery")
    build.add_argument(
        "--include-skimage",
        action="store_true",
        help="add the pictures bundled with scikit-image (label 'skimage')",
    )
    build.add_argument("--thumbnail-px", type=int, default=64, help="thumbnail size (default 64)")
    build.add_argument("--thumbnail-format", choices=("jpeg", "png"), default="jpeg")
    build.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    build.set_defaults(func=_build)

    info = sub.add_parser("info", help="describe a gallery file")
    info.add_argument("gallery", type=Path, help="gallery file (.npz)")
    info.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    from neurocast.models.serving.gallery import Gallery, GalleryError
    from neurocast.models.training.embed_images import (
        ImageEmbedder,
        build_gallery,
        find_images,
        skimage_images,
    )

    if args.images_dir is None and not args.include_skimage:
        logger.error("Give IMAGES_DIR, --include-skimage, or both.")
        return EXIT_USAGE
    if args.thumbnail_px < 1 or args.batch_size < 1:
        logger.error("--thumbnail-px and --batch-size must be positive.")
        return EXIT_USAGE
    name = args.name or args.out.name.removesuffix(".npz")
    try:
        items = find_images(args.images_dir) if args.images_dir is not None else []
        if args.include_skimage:
            items += skimage_images()
        like = Gallery.load(args.like) if args.like is not None else None
        gallery = build_gallery(
            items,
            name=name,
            dim=args.dim,
            like=like,
            thumbnail_px=args.thumbnail_px,
            thumbnail_format=args.thumbnail_format,
            embedder=ImageEmbedder(batch_size=args.batch_size),
            source=", ".join(
                [str(args.images_dir)] * (args.images_dir is not None)
                + ["scikit-image bundled pictures"] * args.include_skimage
            ),
        )
    except (FileNotFoundError, GalleryError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    path = gallery.save(args.out)
    counts: dict[str, int] = {}
    for label in gallery.labels:
        counts[label] = counts.get(label, 0) + 1
    print(
        json.dumps(
            {
                "gallery": str(path),
                "name": gallery.name,
                "n_images": gallery.n_images,
                "dim": gallery.dim,
                "labels": counts,
            }
        )
    )
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    from neurocast.models.serving.gallery import Gallery, GalleryError

    try:
        gallery = Gallery.load(args.gallery)
    except (FileNotFoundError, GalleryError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    counts: dict[str, int] = {}
    for label in gallery.labels:
        counts[label] = counts.get(label, 0) + 1
    print(
        json.dumps(
            {
                "name": gallery.name,
                "n_images": gallery.n_images,
                "dim": gallery.dim,
                "labels": counts,
                "thumbnails": gallery.thumbnails is not None,
                "meta": gallery.meta,
            }
        )
    )
    return EXIT_OK
