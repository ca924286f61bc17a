"""Least squares toward the dense weights, from Gram statistics alone.

For design rows X (d columns), targets Y (c columns), starting weights W0 (d, c):

    W' = argmin ‖Y − X W − 1 bᵀ‖² + λ ‖W − W0‖²     (the bias b is not damped)

solved on the centred Gram C = XᵀX − n x̄x̄ᵀ:  W' = W0 + (C + λI)⁻¹ (Cxy − C W0),
b = ȳ − W'ᵀx̄. λ = α · mean(diag C), so α is scale-free. Ridge toward W0 (not toward 0)
means a weak signal leaves the dense weights alone instead of shrinking them.

α is picked per layer by K-fold cross-validation over a grid when the statistics were
gathered per fold; the candidates without reconstruction (keep W0; W0 with a refitted bias;
any extra candidate such as FLAP's compensated bias) compete on the same held-out error, so
reconstruction is only kept where it generalizes. Whatever is chosen never has a larger
calibration error than W0 itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
EIGH_MAX_DIM = 2048  # above: one linear solve per ridge value instead of one eigendecomposition


@dataclass
class Fit:
    W: np.ndarray  # (d, c)
    b: np.ndarray  # (c,)
    choice: str  # "reconstruct", "bias", "none" or an extra candidate's name
    ridge: float | None = None
    col_err: np.ndarray | None = None  # calibration squared error per output column
    col_err_before: np.ndarray | None = None
    heldout: dict = field(default_factory=dict)  # candidate -> held-out squared error (CV)


def col_errors(G: np.ndarray, H: np.ndarray, yy: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """‖y_c − [X 1] w_c‖² per column, from the statistics."""
    Wa = np.vstack([W, b[None, :]])
    err = yy - 2.0 * np.einsum("ij,ij->j", Wa, H) + np.einsum("ij,ij->j", Wa, G @ Wa)
    return np.maximum(err, 0.0)


def _centred(G, H):
    d = G.shape[0] - 1
    n = max(G[d, d], 1.0)
    xm, ym = G[:d, d] / n, H[d] / n
    C = G[:d, :d] - n * np.outer(xm, xm)
    Cxy = H[:d] - n * np.outer(xm, ym)
    return n, xm, ym, C, Cxy


class RidgeSolver:
    """All ridge solutions of one set of statistics, for several α at the cost of one
    eigendecomposition (or one solve per α for large d)."""

    def __init__(self, G, H, W0, many: bool = True):
        self.n, self.xm, self.ym, self.C, self.Cxy = _centred(G, H)
        self.W0 = W0
        self.scale = float(np.mean(np.diag(self.C))) if self.C.size else 0.0
        self.R = self.Cxy - self.C @ W0
        self._eig = None
        if many and 0 < self.C.shape[0] <= EIGH_MAX_DIM and self.scale > 0:
            lam, Q = np.linalg.eigh(self.C)
            self._eig = (np.maximum(lam, 0.0), Q, Q.T @ self.R)

    def bias_for(self, W):
        return self.ym - W.T @ self.xm

    def solve(self, alpha: float):
        if self.scale <= 0:  # constant inputs: only the bias can move
            return self.W0, self.bias_for(self.W0)
        lam = alpha * self.scale
        if self._eig is not None:
            ev, Q, QR = self._eig
            W = self.W0 + Q @ (QR / (ev + lam)[:, None])
        else:
            A = self.C + lam * np.eye(self.C.shape[0])
            W = self.W0 + np.linalg.solve(A, self.R)
        return W, self.bias_for(W)


def fit(G_folds, H_folds, yy_folds, W0, b0, *, alphas=RIDGE_GRID, extra: dict | None = None,
        reconstruct: bool = True) -> Fit:
    """Choose among keep-W0, refit-bias, ``extra`` {name: (W, b)} and (when ``reconstruct``)
    ridge LS for each α, by held-out error over the folds (in-sample with one fold)."""
    extra = extra or {}
    G, H, yy = G_folds.sum(0), H_folds.sum(0), yy_folds.sum(0)
    alphas = tuple(alphas) if reconstruct else ()
    before = col_errors(G, H, yy, W0, b0)

    def candidates(Gs, Hs):
        solver = RidgeSolver(Gs, Hs, W0, many=len(alphas) > 1)
        out = {"none": (W0, b0), "bias": (W0, solver.bias_for(W0))}
        out.update(extra)
        for a in alphas:
            out[f"ridge={a:g}"] = solver.solve(a)
        return out

    full = candidates(G, H)
    insample = {k: col_errors(G, H, yy, *wb) for k, wb in full.items()}
    # never worse than W0 on the calibration data (tiny float slack)
    allowed = [k for k, e in insample.items() if e.sum() <= before.sum() * (1 + 1e-9) + 1e-300]
    heldout: dict = {}
    folds = G_folds.shape[0]
    if folds >= 2 and len(allowed) > 1:
        heldout = {k: 0.0 for k in allowed}
        for f in range(folds):
            cands = candidates(G - G_folds[f], H - H_folds[f])
            for k in allowed:
                heldout[k] += float(col_errors(G_folds[f], H_folds[f], yy_folds[f], *cands[k]).sum())
        best = min(allowed, key=lambda k: (heldout[k], _rank(k)))
    else:
        best = min(allowed, key=lambda k: (float(insample[k].sum()), _rank(k)))
    W, b = full[best]
    ridge = float(best.split("=", 1)[1]) if best.startswith("ridge=") else None
    choice = "reconstruct" if ridge is not None else best
    return Fit(W, b, choice, ridge, insample[best], before, heldout)


def _rank(key: str) -> int:
    """Tie-break: prefer the least change."""
    return {"none": 0, "bias": 1}.get(key, 2)

