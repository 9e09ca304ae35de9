"""Exact top-K by inner product, in blocks: memory O(n·K) plus one fixed-size block (and a transposed copy of the
database, the size of the input), never the n×m matrix.

The similarity of L2-normalised global descriptors is their inner product. :func:`top_k` walks the queries in
chunks and, for each, the database in chunks, keeping a running top-K per query (the block's own top-K merged
with the one so far). The largest array of scores alive is one ``block`` of ``query_chunk × db_chunk``, whatever n.
``backend="faiss"`` uses faiss's exact ``IndexFlatIP`` instead (the ``faiss`` extra): the same neighbours, not
faster (docs/reconstruction.md).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

BLOCK_ELEMENTS = 1 << 22  # scores per block (16 MiB of float32)


def chunk_sizes(num_queries: int, num_db: int, k: int, block: int = BLOCK_ELEMENTS) -> tuple[int, int]:
    """Query and database chunk sizes so that one block of scores (plus the running top-K it merges with) holds at
    most ``block`` elements."""
    db_chunk = max(1, min(num_db, block // 256))
    query_chunk = max(1, min(num_queries, block // (db_chunk + 2 * k)))
    return query_chunk, db_chunk


def top_k(queries: np.ndarray, db: np.ndarray, k: int, exclude_self: bool = False, backend: str = "exact",
          block: int = BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` database rows with the largest inner product with each query row.

    Args:
        queries: (Q, D) float array.
        db: (M, D) float array, the same dimension D.
        k: neighbours per query; at most M (M - 1 with ``exclude_self``).
        exclude_self: ``queries`` and ``db`` are the same set: row i is never its own neighbour.
        backend: ``exact`` (chunked matrix products) or ``faiss`` (exact flat index, the ``faiss`` extra).
        block: most scores computed at once (``exact``).

    Returns:
        ``(indices, scores)``, each (Q, k'), k' = min(k, available), best first; indices into ``db``.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    db = np.ascontiguousarray(db, dtype=np.float32)
    if queries.ndim != 2 or db.ndim != 2 or queries.shape[1] != db.shape[1]:
        raise ConfigError(f"global descriptors of different shapes: queries {queries.shape}, database {db.shape}")
    if exclude_self and len(queries) != len(db):
        raise ConfigError("exclude_self needs the queries to be the database")
    k = max(0, min(k, len(db) - (1 if exclude_self else 0)))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    if backend == "faiss":
        return _faiss(queries, db, k, exclude_self)
    if backend != "exact":
        raise ConfigError(f"unknown top-K backend {backend!r}; choose exact or faiss")
    return _exact(queries, db, k, exclude_self, block)


def _exact(queries: np.ndarray, db: np.ndarray, k: int, exclude_self: bool,
           block: int) -> tuple[np.ndarray, np.ndarray]:
    q_chunk, d_chunk = chunk_sizes(len(queries), len(db), k, block)
    db_t = np.ascontiguousarray(db.T)  # (D, M): BLAS is several times faster on it than on a transposed view
    indices = np.empty((len(queries), k), np.int64)
    scores = np.empty((len(queries), k), np.float32)
    for q0 in range(0, len(queries), q_chunk):
        q = queries[q0:q0 + q_chunk]
        best_s = np.empty((len(q), 0), np.float32)
        best_i = np.empty((len(q), 0), np.int64)
        for d0 in range(0, len(db), d_chunk):
            s = q @ db_t[:, d0:d0 + d_chunk]
            if exclude_self:  # the block may hold part of the diagonal
                rows = np.arange(len(q))
                cols = rows + q0 - d0
                inside = (cols >= 0) & (cols < s.shape[1])
                s[rows[inside], cols[inside]] = -np.inf
            top = _largest(s, k)
            best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
            best_i = np.concatenate([best_i, top + d0], 1)
            keep = _largest(best_s, k)
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
        order = np.lexsort((best_i, -best_s), axis=1)  # best first; equal scores: lower index first
        indices[q0:q0 + len(q)] = np.take_along_axis(best_i, order, 1)
        scores[q0:q0 + len(q)] = np.take_along_axis(best_s, order, 1)
    return indices, scores


def _largest(s: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest entries of each row (unordered; all of them when a row is shorter)."""
    if s.shape[1] <= k:
        return np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
    return np.argpartition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k:]


def _faiss(queries: np.ndarray, db: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    faiss = import_faiss()
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    scores, indices = index.search(queries, k + (1 if exclude_self else 0))
    if not exclude_self:
        return indices.astype(np.int64), scores
    keep = indices != np.arange(len(queries))[:, None]
    keep[keep.all(1), -1] = False  # self not among the results: drop the last one instead
    return indices[keep].reshape(len(queries), k).astype(np.int64), scores[keep].reshape(len(queries), k)


def import_faiss():
    """The faiss module, or a one-line :class:`ConfigError` naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ConfigError('the faiss backend needs faiss: pip install "lightmatch[faiss]"') from None
    return faiss


def brute_force_top_k(queries: np.ndarray, db: np.ndarray, k: int,
                      exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-K through the full (Q, M) score matrix (for tests and benchmarks only)."""
    s = np.asarray(queries, np.float32) @ np.asarray(db, np.float32).T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    k = min(k, len(db) - (1 if exclude_self else 0))
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)
