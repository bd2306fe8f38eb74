"""Gallery query time: one cosine top-5 search against 1,000 to 100,000 images on the CPU.

Synthetic galleries (random unit vectors; search time does not depend on the values) of
1,000, 10,000 and 100,000 images are searched with :meth:`neurocast.models.serving.Gallery.search`
(one matrix-vector product, a partial sort, the hit dictionaries), one query at a time, as the
decode loop does for each window. Embedding sizes: 1280 (EfficientNet-Lite0 features as they
are), 128 and 64 (``neurocast gallery build --dim 128``, principal components). BLAS runs on
one thread and on two (the machine's two cores), set with ``threadpoolctl``: a
matrix-vector product is bound by memory bandwidth, and on a shared machine a second BLAS
thread waiting for a core can add to the tail instead of cutting it.

Each configuration runs ``--repeats`` rounds of ``--queries`` queries; a round's p50 and p99
are its percentiles over queries, and the figures are medians over rounds. Headline figures
``query_ms_p50`` and ``query_ms_p99`` are for 100,000 images at 128 dimensions with two BLAS
threads (the target: p99 <= 2 ms); ``query_ms_100k_p99`` repeats the latter under the issue's
name, and ``query_ms_<n>_d<dim>_t<threads>_{p50,p99}`` give every configuration.

Usage: ``python bench/gallery.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from neurocast.models.serving.gallery import Gallery

SIZES = (1_000, 10_000, 100_000)
DIMS = (64, 128, 1280)
THREADS = (1, 2)


def _gallery(n: int, dim: int, seed: int) -> Gallery:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    return Gallery([f"i{i}" for i in range(n)], ["synthetic"] * n, emb, name=f"synthetic-{n}")


def _round(gallery: Gallery, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        gallery.search(q, 5)
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and queries")
    parser.add_argument("--queries", type=int, default=None, help="queries per round")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per configuration")
    args = parser.parse_args()
    n_queries = args.queries or (100 if args.quick else 400)
    repeats = args.repeats or (2 if args.quick else 5)
    rng = np.random.default_rng(1)
    figures: dict[str, float | int | str] = {}
    for dim in DIMS:
        for n in SIZES:
            gallery = _gallery(n, dim, seed=n + dim)
            queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
            for threads in THREADS:
                with threadpool_limits(limits=threads, user_api="blas"):
                    _round(gallery, queries[:20])  # warm caches and BLAS
                    rounds = [_round(gallery, queries) for _ in range(repeats)]
                p50 = statistics.median(r[0] for r in rounds)
                p99 = statistics.median(r[1] for r in rounds)
                key = f"query_ms_{n}_d{dim}_t{threads}"
                figures[f"{key}_p50"] = round(p50, 4)
                figures[f"{key}_p99"] = round(p99, 4)
                mb = gallery.n_images * gallery.dim * 4 / 1e6
                print(
                    f"{n:>7} images x {dim:>4} dims ({mb:6.1f} MB float32), {threads} BLAS "
                    f"thread(s): p50 {p50:.3f} ms, p99 {p99:.3f} ms"
                )
            del gallery
    figures["query_ms_p50"] = figures["query_ms_100000_d128_t2_p50"]
    figures["query_ms_p99"] = figures["query_ms_100000_d128_t2_p99"]
    figures["query_ms_100k_p99"] = figures["query_ms_100000_d128_t2_p99"]
    figures.update(
        headline="100,000 images, 128 dims, top-5, 2 BLAS threads",
        target_p99_ms=2.0,
        k=5,
        n_queries=n_queries,
        repeats=repeats,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
