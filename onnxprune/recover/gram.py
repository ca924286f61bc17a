"""Streamed second-order statistics in float64: Gram XᵀX and cross-Gram XᵀY of a linear
layer's design rows (im2col patches for Conv, any kernel/stride/padding/dilation) against
its target rows, per cross-validation fold, with the ones column of the bias folded in;
and per-channel moments. Memory is the statistics plus one chunk of rows."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

CHUNK_ELEMENTS = 1 << 22  # float64 elements of design rows materialized at once (32 MiB)


def conv_pads(auto_pad: str, spatial, kernel, strides, dilations, pads) -> list[int]:
    """Explicit begin/end pads for a Conv (``auto_pad`` resolved on the actual input size)."""
    k = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, kk, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (kk - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        return begin + end
    if auto_pad == "VALID":
        return [0] * (2 * k)
    return list(pads) if pads else [0] * (2 * k)


def im2col(x: np.ndarray, kernel, strides, pads, dilations) -> np.ndarray:
    """Patches of ``x`` (N, C, *spatial) as rows (N·out positions, C·prod(kernel)), columns
    ordered like a Conv weight's (C, *kernel) axes; float64."""
    k = len(kernel)
    n, c = x.shape[:2]
    if all(v == 1 for v in kernel) and all(p == 0 for p in pads):
        sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
        xs = x[sl]
        return np.moveaxis(xs, 1, -1).astype(np.float64).reshape(-1, c)
    if any(pads):
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + k]) for i in range(k)])
    eff = tuple((kernel[i] - 1) * dilations[i] + 1 for i in range(k))
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + k)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dilations)]
    perm = (0,) + tuple(range(2, 2 + k)) + (1,) + tuple(range(2 + k, 2 + 2 * k))
    return win.transpose(perm).astype(np.float64).reshape(-1, c * math.prod(kernel))


def channels_last(y: np.ndarray, axis: int, kept: np.ndarray | None) -> np.ndarray:
    """Rows of ``y`` with its channel ``axis`` (restricted to ``kept``) as columns; float64."""
    if kept is not None:
        y = np.take(y, kept, axis=axis)
    return np.moveaxis(y, axis, -1).astype(np.float64).reshape(-1, y.shape[axis])


class GramAccumulator:
    """Σ over folds of [X 1]ᵀ[X 1], [X 1]ᵀY and per-column ΣY² (float64)."""

    def __init__(self, d: int, c: int, folds: int):
        self.d, self.c, self.folds = d, c, folds
        self.G = np.zeros((folds, d + 1, d + 1))
        self.H = np.zeros((folds, d + 1, c))
        self.yy = np.zeros((folds, c))

    @staticmethod
    def nbytes(d: int, c: int, folds: int) -> int:
        return 8 * (folds + 1) * ((d + 1) * (d + 1 + c) + c)

    def add(self, fold: int, x: np.ndarray, y: np.ndarray) -> None:
        """Add design rows ``x`` (rows, d) and target rows ``y`` (rows, c) to ``fold``."""
        d = self.d
        G, H = self.G[fold], self.H[fold]
        step = max(1, CHUNK_ELEMENTS // max(1, d + self.c))
        for s in range(0, x.shape[0], step):
            xs = np.asarray(x[s:s + step], dtype=np.float64)
            ys = np.asarray(y[s:s + step], dtype=np.float64)
            G[:d, :d] += xs.T @ xs
            col = xs.sum(axis=0)
            G[:d, d] += col
            G[d, :d] += col
            G[d, d] += xs.shape[0]
            H[:d] += xs.T @ ys
            H[d] += ys.sum(axis=0)
            self.yy[fold] += np.einsum("ij,ij->j", ys, ys)

    def total(self):
        return self.G.sum(axis=0), self.H.sum(axis=0), self.yy.sum(axis=0)


class Moments:
    """Per-channel count, Σa and Σa² of a tensor (channel ``axis``), float64."""

    def __init__(self, length: int):
        self.count = 0.0
        self.s = np.zeros(length)
        self.ss = np.zeros(length)

    def add(self, a: np.ndarray, axis: int, kept: np.ndarray | None = None, select: np.ndarray | None = None) -> None:
        """Add ``a``'s values per channel; ``select`` keeps only some of its rows (a token mask)."""
        rows = channels_last(a, axis, kept)
        if select is not None:
            rows = rows[select]
        self.count += rows.shape[0]
        self.s += rows.sum(axis=0)
        self.ss += np.einsum("ij,ij->j", rows, rows)

    @property
    def mean(self) -> np.ndarray:
        return self.s / max(self.count, 1.0)

    @property
    def var(self) -> np.ndarray:
        m = self.mean
        return np.maximum(self.ss / max(self.count, 1.0) - m * m, 0.0)


def sample_folds(offset: int, n: int, folds: int) -> list[tuple[int, np.ndarray]]:
    """(fold, sample indices of this batch) for samples ``offset..offset+n`` dealt round-robin."""
    idx = (offset + np.arange(n)) % folds
    return [(f, np.nonzero(idx == f)[0]) for f in range(folds) if (idx == f).any()]


def samples_per_chunk(rows_per_sample: int, width: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, rows_per_sample * width))


class PairMoments:
    """Per-channel sums of a dense tensor y and its pruned counterpart x (same channels):
    n, Σx, Σy, Σx², Σy², Σxy — enough for the exact error of any per-channel affine
    map of either side."""

    def __init__(self, length: int):
        self.n = 0.0
        self.sx, self.sy, self.sxx, self.syy, self.sxy = (np.zeros(length) for _ in range(5))

    def add(self, y_rows: np.ndarray, x_rows: np.ndarray) -> None:
        self.n += x_rows.shape[0]
        self.sx += x_rows.sum(0)
        self.sy += y_rows.sum(0)
        self.sxx += np.einsum("ij,ij->j", x_rows, x_rows)
        self.syy += np.einsum("ij,ij->j", y_rows, y_rows)
        self.sxy += np.einsum("ij,ij->j", x_rows, y_rows)

    def error(self, ay=1.0, by=0.0, ax=1.0, bx=0.0) -> np.ndarray:
        """Σ((ay·y + by) − (ax·x + bx))² per channel."""
        d = by - bx
        e = (ay * ay * self.syy + ax * ax * self.sxx + self.n * d * d - 2 * ay * ax * self.sxy
             + 2 * ay * d * self.sy - 2 * ax * d * self.sx)
        return np.maximum(e, 0.0)

    def moments(self, which: str):
        s, ss = (self.sx, self.sxx) if which == "x" else (self.sy, self.syy)
        m = s / max(self.n, 1.0)
        return m, np.maximum(ss / max(self.n, 1.0) - m * m, 0.0)
