"""The blend schedule: which stream each global sample comes from, exact and random-access.

Streams sit at the leaves of a balanced binary tree. A node that has received m samples has sent
round(m * p) of them to its left child (p = left weight / node weight), so every node's split is the
best rounding of its target at every prefix (error <= 1/2 sample) and a leaf's count after n
samples is within depth/2 of n * weight. That is the error-minimising property of Megatron's greedy
blending, but in closed form: sample n's stream and its index within that stream are computed from n
alone, for arrays of n at once, with no precomputed table and no state beyond n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Node:
    left: int     # child node id (>= 0) or leaf as -(leaf + 1)
    right: int
    p_left: float


class Blend:
    """Deterministic error-minimising interleaving of streams with the given (positive) weights."""

    def __init__(self, weights: Sequence[float]) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or len(w) == 0 or not np.all(w > 0) or not np.all(np.isfinite(w)):
            raise ValueError(f"blend weights must be a non-empty list of positive numbers, got {list(weights)}")
        self.weights = w / w.sum()
        self._nodes: list[_Node] = []
        self._root = self._build(0, len(w))

    def _build(self, lo: int, hi: int) -> int:
        if hi - lo == 1:
            return -(lo + 1)
        mid = (lo + hi) // 2
        node_id = len(self._nodes)
        self._nodes.append(_Node(0, 0, 0.0))  # placeholder so children get larger ids
        left, right = self._build(lo, mid), self._build(mid, hi)
        w_left, w_right = self.weights[lo:mid].sum(), self.weights[mid:hi].sum()
        self._nodes[node_id] = _Node(left, right, float(w_left / (w_left + w_right)))
        return node_id

    def __len__(self) -> int:
        return len(self.weights)

    @staticmethod
    def _left_count(m: np.ndarray, p: float) -> np.ndarray:
        """Samples sent left among the first m a node receives: round(m * p), halves rounding up."""
        return np.floor(m.astype(np.float64) * p + 0.5).astype(np.int64)

    def locate(self, n: int) -> tuple[int, int]:
        """(stream, index within it) of one sample: the same arithmetic as `route`, without numpy overhead."""
        if n < 0:
            raise IndexError("sample indices must be >= 0")
        node, index = self._root, int(n)
        while node >= 0:
            spec = self._nodes[node]
            before = math.floor(float(index) * spec.p_left + 0.5)
            if math.floor(float(index + 1) * spec.p_left + 0.5) > before:
                node, index = spec.left, before
            else:
                node, index = spec.right, index - before
        return -node - 1, index

    def route(self, n: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """For global sample indices n: (stream of each sample, its index within that stream)."""
        index = np.asarray(n, dtype=np.int64).copy()
        if index.size and index.min() < 0:
            raise IndexError("sample indices must be >= 0")
        at = np.full(index.shape, self._root, dtype=np.int64)
        if self._root < 0:
            return -(at + 1), index
        for node_id, node in enumerate(self._nodes):  # parents come before children
            here = np.flatnonzero(at == node_id)
            if not here.size:
                continue
            m = index[here]
            before = self._left_count(m, node.p_left)
            go_left = self._left_count(m + 1, node.p_left) > before
            at[here] = np.where(go_left, node.left, node.right)
            index[here] = np.where(go_left, before, m - before)
        return -(at + 1), index

    def counts(self, n: int) -> np.ndarray:
        """How many of the first n global samples each stream receives (exact, O(streams))."""
        out = np.zeros(len(self.weights), dtype=np.int64)

        def walk(node: int, m: int) -> None:
            if node < 0:
                out[-node - 1] = m
                return
            spec = self._nodes[node]
            left = int(self._left_count(np.array([m]), spec.p_left)[0])
            walk(spec.left, left)
            walk(spec.right, m - left)

        walk(self._root, int(n))
        return out
