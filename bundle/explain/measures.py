"""How well a map points at a structure whose position is known (the synthetic cohort's masks).

Written here (a few lines each): the enrichment ratio is the share of the map's positive evidence inside the
structure divided by the structure's share of the patch (1 = no preference, > 1 = the map points at it); the
pointing game (Zhang et al. 2018) asks whether the map's maximum lies inside the structure.
"""

from __future__ import annotations

import numpy as np

__all__ = ["enrichment_ratio", "pointing_hit", "embedding_order"]


def enrichment_ratio(saliency: np.ndarray, mask: np.ndarray) -> float:
    """(sum of max(map, 0) inside ``mask`` / sum of max(map, 0)) / (voxels in ``mask`` / voxels); NaN when the map
    has no positive evidence or the mask is empty."""
    positive = np.clip(np.asarray(saliency, dtype=np.float64), 0.0, None)
    mask = np.asarray(mask, dtype=bool)
    total, share = positive.sum(), mask.mean()
    if total <= 0 or share == 0:
        return float("nan")
    return float(positive[mask].sum() / total / share)


def pointing_hit(saliency: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's maximum (first one in C order on ties) lies inside ``mask``."""
    return bool(np.asarray(mask, dtype=bool).flat[int(np.argmax(saliency))])


def embedding_order(embedding: np.ndarray, values: np.ndarray, neighbours: int = 5, seed: int = 0) -> dict[str, float]:
    """How well a 2D embedding [N, 2] orders ``values`` [N] (the true SBR): the larger absolute Spearman correlation
    of the values with either embedding axis, and the cross-validated (5-fold, fewer for fewer cases) R^2 of a
    k-nearest-neighbour regression of the values on the embedding (scikit-learn)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor

    embedding, values = np.asarray(embedding, dtype=float), np.asarray(values, dtype=float)
    rho = max(abs(float(spearmanr(embedding[:, axis], values).statistic)) for axis in range(embedding.shape[1]))
    splits = min(5, len(values))
    folds = KFold(n_splits=splits, shuffle=True, random_state=seed)
    smallest_training_fold = len(values) - -(-len(values) // splits)
    model = KNeighborsRegressor(n_neighbors=max(1, min(neighbours, smallest_training_fold)))
    predicted = cross_val_predict(model, embedding, values, cv=folds)
    return {"spearman_axis": rho, "knn_r2": float(r2_score(values, predicted))}
