"""K-means (k=2) and NMI for the domain-gap measure.

faiss is the default: spherical k-means (the features are L2-normalised, so cosine is the natural
metric), several seeded restarts keeping the best objective, and every point used for training
(faiss otherwise subsamples to `max_points_per_centroid * k` = 512 points for k=2). scikit-learn's
Euclidean KMeans on the same unit vectors is the cross-check (`--kmeans sklearn`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

# faiss's loader logs "Could not load library with AVX512 support due to: ModuleNotFoundError(...)" at
# INFO when it falls back to its AVX2 build: normal, but it reads like an error in our INFO-level log.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)


@dataclass(frozen=True)
class KMeansConfig:
    backend: str = "faiss"  # faiss | sklearn
    k: int = 2
    niter: int = 50
    nredo: int = 5  # restarts; the best objective wins
    # faiss OpenMP threads. 2000 x 512 points are far too few to amortise thread start-up: one thread
    # measured 0.2 s vs 2.2 s with two on a busy 2-core machine, and one thread is bit-reproducible.
    threads: int = 1


def kmeans_labels(x: np.ndarray, seed: int, cfg: KMeansConfig = KMeansConfig()) -> np.ndarray:
    """Cluster ids [N] of the rows of x (float32 [N, D], L2-normalised)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    seed = int(seed) % (2**31 - 1)
    if cfg.backend == "faiss":
        import faiss

        km = faiss.Kmeans(
            x.shape[1],
            cfg.k,
            niter=cfg.niter,
            nredo=cfg.nredo,
            spherical=True,
            seed=seed,
            max_points_per_centroid=max(1, x.shape[0]),
            # faiss warns (to stderr, once per call) below 39 points per centroid; small sides are
            # allowed on purpose (--allow-smaller) and reported once by the table's warning row
            min_points_per_centroid=1,
            verbose=False,
        )
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(cfg.threads)
        try:
            km.train(x)
            _, labels = km.index.search(x, 1)
        finally:
            faiss.omp_set_num_threads(before)
        return labels[:, 0].astype(np.int64)
    if cfg.backend == "sklearn":
        from sklearn.cluster import KMeans

        km2 = KMeans(n_clusters=cfg.k, n_init=cfg.nredo, max_iter=max(cfg.niter, 100), random_state=seed)
        return km2.fit_predict(x).astype(np.int64)
    raise ValueError(f"unknown k-means backend {cfg.backend!r} (faiss | sklearn)")


def nmi(true_labels: np.ndarray, cluster_labels: np.ndarray) -> float:
    """Normalized mutual information (arithmetic mean normalisation, scikit-learn's default)."""
    from sklearn.metrics import normalized_mutual_info_score  # slow import: only when measuring

    return float(normalized_mutual_info_score(true_labels, cluster_labels))
