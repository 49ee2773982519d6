"""2-D maps of a run's test embeddings, coloured by class: t-SNE (van der Maaten & Hinton, 2008).

scikit-learn's Barnes-Hut t-SNE on the cosine geometry the kNN scores use, PCA initialisation and a fixed
seed, with one thread (a parallel gradient sums in a varying order), so the same embeddings give the same
map, coordinate for coordinate. At most MAX_POINTS test images are drawn, the same ones for every method.
"""

from __future__ import annotations

import numpy as np

SEED = 0
MAX_POINTS = 2000  # t-SNE's cost grows as N log N: 2,000 points take seconds, STL10's 8,000 a minute
PERPLEXITY = 30.0


def sample_ids(count: int, max_points: int = MAX_POINTS, seed: int = SEED) -> np.ndarray:
    """Sorted ids of at most max_points of count images, drawn with `seed` (all of them when fewer). -> (M,)"""
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=max_points, replace=False))


def tsne_map(features: np.ndarray, seed: int = SEED, perplexity: float = PERPLEXITY) -> np.ndarray:
    """t-SNE coordinates of features (N, D) -> (N, 2) float32, deterministic for a seed."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, np.float64)
    n = len(features)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    # t-SNE needs perplexity < N; a small study's test split may be smaller than the default's needs.
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3),
        metric="cosine",
        init="pca",
        learning_rate="auto",
        random_state=seed,
        n_jobs=1,
    )
    with threadpool_limits(1):
        return tsne.fit_transform(features).astype(np.float32)
