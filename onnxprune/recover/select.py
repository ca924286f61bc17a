"""Reconstruction-aware channel selection (OBS): rank a group's channels by the output
error their removal leaves at every consumer *after* the consumer's least-squares
compensation, from the inverse of the consumer's input Gram matrix.

For a consumer y = xᵀW with input covariance C (centred: a bias absorbs the mean),
removing the input block P (a channel's positions × kernel taps) and re-fitting the rest
optimally costs  ΔE = tr(W_Pᵀ [C⁻¹]_PP⁻¹ W_P)  and moves the remaining weights by
−C⁻¹[:, P] [C⁻¹]_PP⁻¹ W_P (Optimal Brain Surgeon, Hassibi & Stork 1993; structured as in
Kwon et al. 2022). Channels are removed greedily, cheapest first, updating C⁻¹ and W
after each removal; a channel's score is the cost at which it would go (cumulative max,
so any top-k of the scores is exactly the greedy's survivors). Costs are relative to each
consumer's output energy and summed over the group's consumers.
"""

from __future__ import annotations

import numpy as np

from ..calibration.readpoints import find_read_points, group_read_points
from ..progress import Progress
from .graphs import GraphIndex, exposing
from .gram import GramAccumulator, samples_per_chunk
from .linear import Linear
from .passes import calibration_batches, quiet_session
from .tokens import AUTO, find_token_mask, row_mask

DAMP = 0.1  # relative damping of the covariance (× its mean diagonal): the repair's own ridge
MAX_DIM = 8192  # consumers with wider design rows are not measured (their Gram would not fit)
STEP_FRACTION = 1 / 32  # share of the remaining channels removed per greedy step
GREEDY_BUDGET = 2e11  # block-solve flops allowed for the greedy; above it, one-shot scores


def consumer_grams(analysis, groups, dataset, *, device="cpu", max_samples=None, progress=None,
                   max_dim: int = MAX_DIM, token_mask: str | None = AUTO) -> dict:
    """{consumer node: (Linear, centred covariance of its design rows)} on the dense model;
    rows of padded tokens are left out (``token_mask``: see :mod:`onnxprune.recover.tokens`)."""
    mask_input = find_token_mask(analysis.model, token_mask)
    index = GraphIndex(analysis.model)
    points = find_read_points(analysis, groups)
    units = {}
    for rp in points.values():
        for m in rp.consumers:
            if m.node in units or Linear.unsupported(index, m.node):
                continue
            u = Linear(index, m.node)
            if u.math_weight(index.const(u.wname)).shape[0] <= max_dim:
                units[m.node] = u
    if not units:
        return {}
    accs = {}
    for name, u in units.items():
        W, _ = u.weights(index)
        accs[name] = GramAccumulator(W.shape[0], 0, 1)
    tensors = sorted({u.x for u in units.values()})
    inputs = set(index.inputs)
    fetch = [t for t in tensors if t not in inputs]
    sess = quiet_session(exposing(analysis.model, index, fetch), device=device) if fetch else None
    batches = calibration_batches(dataset, max_samples)
    bar = Progress(len(batches), "measuring Gram matrices", progress)
    for _, feeds in batches:
        vals = dict(zip(fetch, sess.run(fetch, feeds))) if sess else {}
        vals.update({t: feeds[t] for t in tensors if t in feeds})
        mask = None if mask_input is None else feeds.get(mask_input)
        for name, u in units.items():
            x = vals[u.x]
            sax = u.sample_axis()
            per = samples_per_chunk(u.rows_per_sample(x), accs[name].d)
            for s in range(0, x.shape[sax], per):
                xs = np.take(x, np.arange(s, min(s + per, x.shape[sax])), axis=sax)
                X = u.design(xs)
                sel = None if mask is None or sax != 0 else row_mask(mask[s:s + per], xs, u.in_axis(xs.ndim))
                if sel is not None:
                    X = X[sel]
                accs[name].add(0, X, np.zeros((X.shape[0], 0)))
        bar.step()
    bar.close()
    out = {}
    for name, acc in accs.items():
        G = acc.G[0]
        d = acc.d
        n = max(G[d, d], 1.0)
        xm = G[:d, d] / n
        out[name] = (units[name], G[:d, :d] - n * np.outer(xm, xm))
    return out


def obs_scores(analysis, dataset, *, groups=None, damp: float = DAMP, device: str = "cpu",
               max_samples: int | None = None, progress: bool | None = None, max_dim: int = MAX_DIM) -> dict:
    """{group id: [scores per class]} (higher = keep) for the prunable groups (or ``groups``);
    a group none of whose consumers can be measured is left out."""
    groups = analysis.prunable if groups is None else groups
    grams = consumer_grams(analysis, groups, dataset, device=device, max_samples=max_samples,
                           progress=progress, max_dim=max_dim)
    index = GraphIndex(analysis.model)
    table = analysis.table
    points = find_read_points(analysis, groups)
    out = {}
    for g in groups:
        n_keys = len(g.roots) * g.size
        consumers = []
        for rp in group_read_points(points, table, g):
            for m in rp.consumers:
                if m.node not in grams:
                    continue
                unit, C = grams[m.node]
                taps = unit.taps()
                rows = {}
                for ci, root in enumerate(g.roots):
                    for pos in rp.channel_positions(table, root):
                        r = (pos[:, :, None] * taps + np.arange(taps)[None, None, :]).reshape(pos.shape[0], -1)
                        for ch in range(pos.shape[0]):
                            key = ci * g.size + ch
                            rows[key] = r[ch] if key not in rows else np.concatenate([rows[key], r[ch]])
                if not rows or len({len(v) for v in rows.values()}) != 1:
                    continue
                keys = np.array(sorted(rows))
                W, _ = unit.weights(index)
                consumers.append((C, W, keys, np.stack([rows[k] for k in keys])))
        if consumers:
            scores = _greedy(consumers, n_keys, damp)
            out[g.id] = [scores[ci * g.size:(ci + 1) * g.size] for ci in range(len(g.roots))]
    return out


class _Consumer:
    """OBS state of one consumer: inverse damped covariance and compensated weights."""

    def __init__(self, C, W, keys, rows, damp):
        d = C.shape[0]
        lam = damp * max(float(np.mean(np.diag(C))), 1e-30)
        self.Hinv = np.linalg.inv(C + lam * np.eye(d))
        self.W = W.copy()
        self.energy = max(float(np.einsum("ij,ij->", W, C @ W)), 1e-30)
        self.keys, self.rows = keys, rows
        self.slot = {int(k): i for i, k in enumerate(keys)}

    def costs(self, alive_idx) -> np.ndarray:
        """Relative cost of removing each key in ``self.keys[alive_idx]`` next."""
        R = self.rows[alive_idx]
        if R.shape[1] == 1:
            r = R[:, 0]
            return (self.W[r] ** 2).sum(1) / np.maximum(self.Hinv[r, r], 1e-300) / self.energy
        blocks = self.Hinv[R[:, :, None], R[:, None, :]]
        WP = self.W[R]
        return np.einsum("nij,nij->n", WP, np.linalg.solve(blocks, WP)) / self.energy

    def remove(self, keys) -> None:
        """Remove the inputs of ``keys`` at once and compensate the others (block OBS)."""
        idx = [self.slot[int(k)] for k in keys if int(k) in self.slot]
        if not idx:
            return
        P = self.rows[idx].reshape(-1)
        cols = self.Hinv[:, P]
        block = self.Hinv[np.ix_(P, P)]
        sol = np.linalg.solve(block, np.hstack([self.W[P], cols.T]))
        k = self.W.shape[1]
        self.W -= cols @ sol[:, :k]
        self.Hinv -= cols @ sol[:, k:]
        self.W[P] = 0.0
        self.Hinv[P, :] = 0.0
        self.Hinv[:, P] = 0.0


def _greedy(consumers, n_keys: int, damp: float) -> np.ndarray:
    states = [_Consumer(C, W, keys, rows, damp) for C, W, keys, rows in consumers]
    sequential = sum(len(s.keys) * s.rows.shape[1] ** 3 for s in states) * n_keys <= GREEDY_BUDGET
    alive = np.ones(n_keys, dtype=bool)
    scores = np.zeros(n_keys)
    running, rank = 0.0, 0
    while alive.any():
        total = np.zeros(n_keys)
        for s in states:
            live = alive[s.keys]
            total[s.keys[live]] += s.costs(np.nonzero(live)[0])
        if not sequential:  # one shot: every channel's cost with all others present
            return total
        total[~alive] = np.inf
        # the cheapest few go together (a block update), the last ones one by one
        m = max(1, int(alive.sum() * STEP_FRACTION))
        chosen = np.argsort(total, kind="stable")[:m]
        for k in chosen:
            running = max(running, float(total[k]))
            scores[k] = running + 1e-12 * rank  # strictly increasing along the removal order
            rank += 1
        alive[chosen] = False
        for s in states:
            s.remove(chosen)
    return scores
