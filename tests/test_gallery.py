"""Image galleries: building from folders, storage, thumbnails and exact cosine top-k search."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurocast.clients.cli import main
from neurocast.models.serving.gallery import (
    Gallery,
    GalleryError,
    image_id_from_path,
    make_thumbnail,
)

pytestmark = pytest.mark.timeout(120)


def _random_gallery(n: int = 500, dim: int = 32, seed: int = 0, **kwargs) -> Gallery:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim))
    return Gallery(
        [f"img{i:04d}" for i in range(n)], [f"c{i % 3}" for i in range(n)], emb, **kwargs
    )


def _write_images(root: Path) -> None:
    """Two folders of small pictures: coloured gradients ('warm') and stripes ('cool')."""
    rng = np.random.default_rng(1)
    (root / "warm").mkdir(parents=True)
    (root / "cool").mkdir(parents=True)
    for i in range(3):
        img = np.zeros((90, 120, 3), np.uint8)
        img[..., 0] = np.linspace(80 + 40 * i, 255, 120)[None, :]
        img[..., 1] = rng.integers(0, 80, (90, 120))
        Image.fromarray(img).save(root / "warm" / f"w{i}.jpg")
        stripes = np.zeros((100, 100), np.uint8)
        stripes[:, :: 4 + 2 * i] = 255
        Image.fromarray(stripes).save(root / "cool" / f"s {i}.png")  # space: id gets "_"


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("torch")
    from neurocast.models.training.embed_images import ImageEmbedder

    return ImageEmbedder(batch_size=8)


@pytest.fixture(scope="module")
def folder_gallery(tmp_path_factory, embedder) -> Gallery:
    from neurocast.models.training.embed_images import build_gallery, find_images

    root = tmp_path_factory.mktemp("images")
    _write_images(root)
    return build_gallery(find_images(root), name="test-gallery", embedder=embedder)


def test_build_from_folder(folder_gallery: Gallery) -> None:
    g = folder_gallery
    assert g.n_images == 6 and g.dim == 1280
    assert g.embeddings.dtype == np.float16
    norms = np.linalg.norm(g.embeddings.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    assert sorted(set(g.labels)) == ["cool", "warm"]
    assert g.labels[g.index_of("warm.w0")] == "warm"
    assert g.labels[g.index_of("cool.s_1")] == "cool"
    for image_id in g.image_ids:
        thumb = Image.open(io.BytesIO(g.thumbnail(image_id)))
        assert thumb.format == "JPEG" and max(thumb.size) == 64
    assert g.thumbnail_media_type == "image/jpeg"
    assert g.meta["embedding"]["model"] == "efficientnet-lite0"
    # images of the same folder are closer to each other than to the other folder
    top = g.search(g.embeddings[g.index_of("cool.s_0")], k=3)
    assert top[0]["image_id"] == "cool.s_0"
    assert {h["label"] for h in top} == {"cool"}


def test_imagenet_preprocessing_classifies_known_pictures(embedder) -> None:
    """The weights and preprocessing are right if ImageNet classes come out right."""
    import skimage.data
    import torch

    feats = embedder.embed([skimage.data.chelsea(), skimage.data.coffee()])
    with torch.no_grad():
        logits = embedder.model.fc(torch.from_numpy(feats)).numpy()
    assert logits[0].argmax() in range(281, 286)  # domestic cat classes
    assert logits[1].argmax() == 967  # espresso


def test_save_load_roundtrip(tmp_path: Path, folder_gallery: Gallery) -> None:
    path = folder_gallery.save(tmp_path / "g")
    assert path.suffix == ".npz"
    g = Gallery.load(path)
    assert g.name == "test-gallery"
    assert g.image_ids == folder_gallery.image_ids and g.labels == folder_gallery.labels
    np.testing.assert_array_equal(g.embeddings, folder_gallery.embeddings)
    assert g.thumbnail("warm.w2") == folder_gallery.thumbnail("warm.w2")
    assert g.meta["embedding"] == folder_gallery.meta["embedding"]
    assert g.thumbnail_url("warm.w2") == "/v1/galleries/test-gallery/thumbnails/warm.w2"
    q = folder_gallery.embeddings[1].astype(np.float32)
    assert g.search(q, 3) == folder_gallery.search(q, 3)


def test_pca_projection_and_like(tmp_path: Path, embedder, folder_gallery: Gallery) -> None:
    from neurocast.models.training.embed_images import ImageItem, build_gallery, find_images

    root = tmp_path / "imgs"
    _write_images(root)
    items = find_images(root)
    small = build_gallery(items, name="pca", dim=4, embedder=embedder)
    assert small.dim == 4 and small.projection is not None
    assert small.meta["projection"]["dim"] == 4
    other = build_gallery(
        [ImageItem("extra", "x", np.full((50, 50, 3), 200, np.uint8))],
        name="other",
        like=small,
        embedder=embedder,
    )
    assert other.dim == 4
    np.testing.assert_array_equal(other.projection[1], small.projection[1])
    # project() maps raw features into the same space as the stored embeddings
    feats = embedder.embed([Image.open(root / "warm" / "w0.jpg")])
    np.testing.assert_allclose(
        small.project(feats)[0], small.embeddings[small.index_of("warm.w0")], atol=2e-3
    )
    with pytest.raises(GalleryError, match="more than 10 images"):
        build_gallery(items, dim=10, embedder=embedder)
    with pytest.raises(GalleryError, match="either dim or like"):
        build_gallery(items, dim=2, like=small, embedder=embedder)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_matches_float64_brute_force(seed: int) -> None:
    g = _random_gallery(seed=seed)
    rng = np.random.default_rng(100 + seed)
    ref = g.embeddings.astype(np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    for _ in range(20):
        q = rng.standard_normal(g.dim)
        k = int(rng.integers(1, 30))
        expected_scores = ref @ (q / np.linalg.norm(q))
        expected = np.argsort(-expected_scores, kind="stable")[:k]
        idx, scores = g.top_k(q, k)
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_allclose(scores, expected_scores[expected], atol=1e-5)
        hits = g.search(q, k)
        assert [h["image_id"] for h in hits] == [g.image_ids[i] for i in expected]
        assert all(isinstance(h["score"], float) for h in hits)


def test_search_edge_cases() -> None:
    g = _random_gallery(n=5, dim=8)
    q = g.embeddings[2].astype(np.float32) * 3.0  # scale does not matter
    assert g.search(q, 1)[0]["image_id"] == "img0002"
    assert len(g.search(q, 50)) == 5  # k larger than the gallery: every image
    assert g.search(q, 1)[0]["thumbnail_url"] is None  # no thumbnails
    batch = g.scores(np.stack([q, -q]))
    assert batch.shape == (2, 5)
    np.testing.assert_allclose(batch[0], -batch[1], atol=1e-6)
    # equal scores are ordered by index
    tied = Gallery(["a", "b", "c"], ["x", "x", "x"], np.array([[1.0, 0], [1.0, 0], [0, 1.0]]))
    assert [h["image_id"] for h in tied.search([1.0, 0.0], 2)] == ["a", "b"]


@pytest.mark.parametrize(
    ("query", "k", "match"),
    [
        (np.ones(7), 3, "shape"),
        (np.ones((2, 2, 8)), 3, "shape"),
        (np.zeros(8), 3, "finite and non-zero"),
        (np.full(8, np.nan), 3, "finite and non-zero"),
        (np.ones(8), 0, "k must be at least 1"),
    ],
)
def test_bad_queries(query: np.ndarray, k: int, match: str) -> None:
    g = _random_gallery(n=10, dim=8)
    with pytest.raises(GalleryError, match=match):
        g.search(query, k)


def test_bad_galleries(tmp_path: Path) -> None:
    emb = np.eye(3)
    with pytest.raises(GalleryError, match="unique"):
        Gallery(["a", "a", "b"], ["x"] * 3, emb)
    with pytest.raises(GalleryError, match="letters, digits"):
        Gallery(["a", "b/c", "d"], ["x"] * 3, emb)
    with pytest.raises(GalleryError, match="3 embeddings but 2 image ids"):
        Gallery(["a", "b"], ["x"] * 2, emb)
    with pytest.raises(GalleryError, match="thumbnails"):
        Gallery(["a", "b", "c"], ["x"] * 3, emb, [b"1"])
    with pytest.raises(GalleryError, match="finite and non-zero"):
        Gallery(["a", "b", "c"], ["x"] * 3, np.array([[1.0, 0], [0, 0], [0, 1]]))
    with pytest.raises(GalleryError, match="name"):
        Gallery(["a", "b", "c"], ["x"] * 3, emb, name="my gallery")
    g = Gallery(["a", "b", "c"], ["x"] * 3, emb)
    with pytest.raises(KeyError, match="not in gallery"):
        g.thumbnail("zzz")
    with pytest.raises(KeyError, match="no thumbnails"):
        g.thumbnail("a")
    with pytest.raises(FileNotFoundError, match="gallery build"):
        Gallery.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GalleryError, match="not a gallery file"):
        Gallery.load(bad)
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(GalleryError, match="lacks"):
        Gallery.load(tmp_path / "other.npz")


def test_image_ids_and_thumbnails() -> None:
    assert image_id_from_path(Path("faces/Annie 1.jpg")) == "faces.Annie_1"
    assert image_id_from_path(Path("a.png")) == "a"
    rgba = np.zeros((40, 80, 4), np.uint8)  # fully transparent: becomes white
    png = make_thumbnail(rgba, 16, "png")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (16, 8)
    assert np.asarray(img).min() == 255
    with pytest.raises(GalleryError, match="format"):
        make_thumbnail(rgba, 16, "gif")
    with pytest.raises(GalleryError, match="shape"):
        make_thumbnail(np.zeros((4, 4, 2)), 16)


def test_find_images_errors(tmp_path: Path) -> None:
    from neurocast.models.training.embed_images import build_gallery, find_images

    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="No images"):
        find_images(tmp_path / "empty")
    clash = tmp_path / "clash"
    (clash / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(clash / "a" / "b.png")
    Image.new("RGB", (8, 8)).save(clash / "a" / "b.jpg")
    with pytest.raises(GalleryError, match="both map"):
        find_images(clash)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(GalleryError, match="Cannot read image"):
        build_gallery(find_images(broken))


def test_cli_build_and_info(tmp_path: Path, capsys, embedder) -> None:
    root = tmp_path / "imgs"
    _write_images(root)
    out = tmp_path / "cli-gallery.npz"
    assert main(["gallery", "build", str(root), "--out", str(out), "--thumbnail-px", "32"]) == 0
    g = Gallery.load(out)
    assert g.name == "cli-gallery" and g.n_images == 6
    assert max(Image.open(io.BytesIO(g.thumbnail("warm.w1"))).size) == 32
    assert main(["gallery", "info", str(out)]) == 0
    assert '"n_images": 6' in capsys.readouterr().out
    assert main(["gallery", "build", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert main(["gallery", "info", str(tmp_path / "none.npz")]) == 2


def test_gallery_module_does_not_import_torch() -> None:
    code = (
        "import sys, neurocast.models.serving.gallery, neurocast.clients.cli.gallery; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
