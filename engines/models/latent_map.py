"""The 2-D map of the VAE's latent space: UMAP (umap-learn) of training-set latents, fitted once at training
time with a fixed random_state, and stored in the checkpoint as plain tensors.

A checkpoint loads with torch.load(weights_only=True), so the fitted UMAP object itself (a pickle) is never
stored. What its inverse_transform needs is: the latents it was fitted on, their 2-D embedding, the
per-point sigmas and rhos of the fuzzy simplicial set, and the hyper-parameters. `restore_umap` rebuilds a
working UMAP from those, and tests check that it inverts exactly like the object that was fitted.

umap and numba are imported here only (STYLE.md: heavy dependencies behind one small wrapper), through
`cached_umap`: umap compiles about 250 numba functions on first use, about 20 s on this CPU in every process
that fits or inverts a map, and most of them are not marked cache=True. `cached_umap` turns numba's on-disk
cache on for them, so that only the first process on a machine compiles and later ones load the machine code
in about a second. The studio still warms `inverse_transform` in the background at start-up.
"""
from __future__ import annotations

import numpy as np
import torch

UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean", "n_components": 2}
_UMAP_CACHED = False


def cached_umap():
    """The umap module, with numba's on-disk cache on for every compiled function of umap and pynndescent
    (what cache=True does; the cache lies beside their sources, else in the user's cache folder). A function
    numba cannot cache (one defined inside another) compiles as before."""
    global _UMAP_CACHED
    import umap
    import umap.layouts  # noqa: F401  (the inverse's epochs; imported so that their functions are cached too)

    if not _UMAP_CACHED:
        import sys

        from numba.core.caching import NullCache
        from numba.core.registry import CPUDispatcher

        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith(("umap", "pynndescent")):
                continue
            for function in list(vars(module).values()):
                if isinstance(function, CPUDispatcher) and isinstance(function._cache, NullCache):
                    try:
                        function.enable_caching()
                    except Exception:   # numba names no locator for it: it compiles in each process
                        pass
        _UMAP_CACHED = True
    return umap


def fit_latent_map(latents: np.ndarray, rows: np.ndarray, seed: int = 42) -> tuple[dict, object]:
    """Fit UMAP on latents (N, D); returns (payload of tensors for the checkpoint, the fitted UMAP).

    rows (N,) are the cache rows the latents came from, kept so the map can name each point's segment.
    """
    umap = cached_umap()
    reducer = umap.UMAP(random_state=seed, transform_seed=seed, **UMAP_PARAMS)
    embedding = reducer.fit_transform(np.ascontiguousarray(latents, dtype=np.float32))
    payload = {
        "latents": torch.from_numpy(np.asarray(reducer._raw_data, np.float32)),
        "embedding": torch.from_numpy(np.asarray(embedding, np.float32)),
        "sigmas": torch.from_numpy(np.asarray(reducer._sigmas, np.float32)),
        "rhos": torch.from_numpy(np.asarray(reducer._rhos, np.float32)),
        "rows": torch.from_numpy(np.asarray(rows, np.int64)),
        "seed": seed, "params": dict(UMAP_PARAMS),
    }
    return payload, reducer


def restore_umap(payload: dict):
    """A UMAP whose inverse_transform works, rebuilt from fit_latent_map's payload."""
    umap = cached_umap()
    from umap.umap_ import find_ab_params

    reducer = umap.UMAP(random_state=payload["seed"], transform_seed=payload["seed"], **payload["params"])
    reducer._initial_alpha = reducer.learning_rate
    reducer._raw_data = payload["latents"].numpy().astype(np.float32)
    reducer._validate_parameters()  # sets the metric functions and keyword tables
    reducer._a, reducer._b = find_ab_params(reducer.spread, reducer.min_dist)
    reducer.embedding_ = payload["embedding"].numpy().astype(np.float32)
    reducer._sigmas = payload["sigmas"].numpy().astype(np.float32)
    reducer._rhos = payload["rhos"].numpy().astype(np.float32)
    reducer._sparse_data, reducer._supervised = False, False
    reducer._small_data = len(reducer._raw_data) < 4096
    return reducer


class LatentMap:
    """The stored map: points (N, 2) with their cache rows; inverse() turns any 2-D point into a latent.

    inverse() is umap's inverse_transform with its triangulation built once instead of on every call (umap
    rebuilds the Delaunay triangulation and its adjacency matrix each time, seconds for a few thousand
    points); the rest is umap's own code, so the results are the same.
    """

    def __init__(self, payload: dict):
        self.payload = payload
        self.embedding = payload["embedding"].numpy()
        self.rows = payload["rows"].numpy()
        self._reducer = None
        self._triangulation = None

    @property
    def reducer(self):
        if self._reducer is None:
            self._reducer = restore_umap(self.payload)
        return self._reducer

    def _triangles(self):
        if self._triangulation is None:
            import scipy.sparse
            import scipy.spatial

            tri = scipy.spatial.Delaunay(self.embedding, incremental=True, qhull_options="QJ")
            corners = tri.simplices                                    # (S, 3) point indices
            rows = np.repeat(corners, corners.shape[1], axis=1).ravel()
            cols = np.tile(corners, (1, corners.shape[1])).ravel()
            adjacency = scipy.sparse.csr_matrix((np.ones(len(rows), int), (rows, cols)),
                                                shape=(len(self.embedding),) * 2)
            adjacency.data[:] = 1
            self._triangulation = (tri, adjacency)
        return self._triangulation

    def project(self, latents: np.ndarray, k: int = 8) -> np.ndarray:
        """Latents (B, D) -> their places on the map (B, 2): the mean of the places of their k nearest fitted
        latents, weighted by inverse distance (how umap's transform starts its optimisation). A fitted latent
        lands on its own place."""
        data = self.payload["latents"].numpy().astype(np.float64)
        latents = np.asarray(latents, np.float64).reshape(-1, data.shape[1])
        distances = np.sqrt(((latents[:, None, :] - data[None]) ** 2).sum(-1))            # (B, N)
        nearest = np.argsort(distances, axis=1)[:, :k]                                    # (B, k)
        d = np.take_along_axis(distances, nearest, axis=1)
        weights = 1.0 / np.maximum(d, 1e-9)
        weights /= weights.sum(axis=1, keepdims=True)
        places = (weights[..., None] * self.embedding[nearest]).sum(axis=1)
        on_a_point = d[:, 0] < 1e-5                                                        # a fitted latent itself
        places[on_a_point] = self.embedding[nearest[on_a_point, 0]]
        return places

    def inverse(self, points: np.ndarray) -> torch.Tensor:
        """2-D points (B, 2) -> latents (B, D). A point outside the map is moved to the nearest map point."""
        cached_umap()
        from sklearn.preprocessing import normalize
        from umap import distances
        from umap.umap_ import (INT32_MAX, INT32_MIN, breadth_first_search, check_random_state, init_transform,
                                make_epochs_per_sample)
        import scipy.sparse

        r = self.reducer
        tri, adjacency = self._triangles()
        points = np.asarray(points, np.float32).reshape(-1, 2).copy()
        simplex = tri.find_simplex(points)
        for i in np.nonzero(simplex < 0)[0]:  # outside the map: its nearest map point lies on a triangle
            points[i] = self.embedding[np.argmin(((self.embedding - points[i]) ** 2).sum(1))]
            simplex[i] = tri.find_simplex(points[i:i + 1])[0]
        rng_state = check_random_state(r.transform_seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
        neighbors = tri.simplices[simplex]
        k = min(r._raw_data.shape[-1], r._raw_data.shape[0])
        distance = distances.named_distances[r.output_metric]
        rows, cols, dists = [], [], []
        for i, corner in enumerate(neighbors):
            hood = breadth_first_search(adjacency, corner[0], min_vertices=k)
            d = np.array([distance(points[i], self.embedding[j]) for j in hood])
            order = np.argsort(d)[:k]
            rows += [i] * k
            cols += hood[order].tolist()
            dists += d[order].tolist()
        weights = 1 / (1 + r._a * np.asarray(dists) ** (2 * r._b))
        graph = scipy.sparse.coo_matrix((weights, (rows, cols)), shape=(len(points), r._raw_data.shape[0]))
        csr = normalize(graph.tocsr(), norm="l1")
        start = init_transform(csr.indices.reshape(len(points), k), csr.data.reshape(len(points), k), r._raw_data)
        n_epochs = (100 if graph.shape[0] <= 10000 else 30) if r.n_epochs is None else int(r.n_epochs // 3.0)
        out = _optimize_inverse(start, r, graph, n_epochs, rng_state, make_epochs_per_sample(graph.data, n_epochs))
        return torch.from_numpy(np.asarray(out, np.float32))

    def warm(self) -> None:
        """Compile umap's numba code and triangulate once (the first inverse costs seconds, later ones do not)."""
        self.inverse(self.embedding[:1])


_INVERSE_EPOCH = []  # umap's single-epoch SGD step, compiled once per process


def _optimize_inverse(points, r, graph, n_epochs: int, rng_state, epochs_per_sample) -> np.ndarray:
    """umap.layouts.optimize_layout_inverse, minus its re-compiling the epoch function with numba on every call
    (about a second each time); same arguments, same arithmetic."""
    if not _INVERSE_EPOCH:
        import numba
        from umap.layouts import _optimize_layout_inverse_single_epoch

        _INVERSE_EPOCH.append(numba.njit(_optimize_layout_inverse_single_epoch, fastmath=True, cache=True))
    epoch = _INVERSE_EPOCH[0]
    initial_alpha = r._initial_alpha / 4.0
    alpha = initial_alpha
    per_negative = epochs_per_sample / r.negative_sample_rate
    next_negative, next_sample = per_negative.copy(), epochs_per_sample.copy()
    for n in range(n_epochs):
        epoch(epochs_per_sample, next_sample, graph.row, graph.col, points, r._raw_data, r._inverse_distance_func,
              tuple(r._metric_kwds.values()), graph.data, r._sigmas, points.shape[1], alpha, False, n, next_negative,
              per_negative, rng_state, graph.shape[1], r._rhos, r.repulsion_strength)
        alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
    return points
