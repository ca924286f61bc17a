"""One repair job per node: what it reads from the pruned and dense passes, how it
accumulates a batch, and how it writes its result into the pruned model.

- :class:`LinearJob`: a Conv/Gemm/MatMul whose inputs were cut — least-squares
  reconstruction (Gram statistics), FLAP bias compensation, folded-BN affine fix.
- :class:`BatchNormJob`: a BatchNormalization whose input changed — statistics correction.
"""

from __future__ import annotations

import numpy as np

from . import solve
from .gram import GramAccumulator, Moments, PairMoments, channels_last, sample_folds, samples_per_chunk
from .graphs import GraphIndex, match_rows, set_const_input
from .linear import Chain, Linear, attr
from .statscorrect import choose_affine, flap_bias, matched_bn, output_moments
from .tokens import row_mask


def _rel(err: float, norm: float) -> float:
    return float(np.sqrt(err / norm)) if norm > 0 else 0.0


class LinearJob:
    def __init__(self, unit: Linear, target, chain: Chain, steps: tuple, folds: int, alphas, dense: GraphIndex,
                 dense_inputs: bool = False):
        self.unit, self.target, self.chain = unit, target, chain
        self.node = unit.name
        self.steps = steps
        self.gram = "reconstruct" in steps
        self.flap = "bias" in steps
        self.alphas = alphas
        dnode = dense.node[unit.name]
        self.W_dense = unit.math_weight(dense.const(dnode.input[1]))
        self.c = self.W_dense.shape[1] if target.kept_out is None else len(target.kept_out)
        self.d = len(target.kept_in) * unit.taps()
        self.folds = folds if self.gram else 1
        self.acc = GramAccumulator(self.d, self.c, self.folds) if self.gram else None
        self.pair = None if self.gram else PairMoments(self.c)  # dense vs pruned layer output
        self.dense_out = Moments(self.c)
        self.xbar = Moments(target.in_length) if self.flap else None
        self.fitnorm = 0.0  # ‖dense tensor at the fit point‖² (the Add output when absorbing)
        self.checked = False
        self.dense_inputs = dense_inputs and self.gram  # fit on the dense model's inputs (not sequential)

    # ---- what the passes expose -----------------------------------------------------
    @property
    def absorbing(self) -> bool:
        return self.gram and self.chain.add is not None

    def pruned_tensors(self) -> list[str]:
        if self.dense_inputs:
            return []
        out = [self.unit.x] if self.gram else [self.unit.out]
        return out + ([self.chain.skip] if self.absorbing else [])

    def dense_tensors(self) -> list[str]:
        out = [self.unit.out] + ([self.chain.add_out] if self.absorbing else [])
        return out + ([self.unit.x] if self.flap or self.dense_inputs else [])

    def nbytes(self) -> int:
        return GramAccumulator.nbytes(self.d, self.c, self.folds) if self.gram else 0

    # ---- accumulation -----------------------------------------------------------------
    def accumulate(self, offset: int, p: dict, d: dict, mask: np.ndarray | None = None) -> None:
        """Add one batch (samples from ``offset``); ``mask`` (batch, sequence) marks the
        real tokens of a padded batch: rows of padded positions are left out."""
        u, kept = self.unit, self.target.kept_out
        if not self.checked:
            self.checked = True
            if self.absorbing:
                want = list(d[self.chain.add_out].shape)
                if kept is not None:
                    want[u.axis % len(want)] = len(kept)
                if list(p[self.chain.skip].shape) != want:  # broadcasting Add: fit the layer output
                    self.chain = Chain()
        y_dense = d[u.out]
        out_axis = u.axis % y_dense.ndim
        out_sel = row_mask(mask, y_dense, out_axis)
        self.dense_out.add(y_dense, out_axis, kept, out_sel)
        if self.flap:
            in_axis = u.in_axis(d[u.x].ndim)
            self.xbar.add(d[u.x], in_axis, None, row_mask(mask, d[u.x], in_axis))
        if not self.gram:
            y_rows, x_rows = u.rows(y_dense, kept), u.rows(p[u.out])
            self.pair.add(y_rows if out_sel is None else y_rows[out_sel], x_rows if out_sel is None else x_rows[out_sel])
            return
        if self.dense_inputs:
            x = np.take(d[u.x], self.target.kept_in, axis=u.in_axis(d[u.x].ndim))
        else:
            x = p[u.x]
        sax = u.sample_axis()
        n = x.shape[sax]
        per = samples_per_chunk(u.rows_per_sample(x), self.d + self.c)
        for fold, idx in sample_folds(offset, n, self.folds):
            for s in range(0, len(idx), per):
                part = idx[s:s + per]
                xs = np.take(x, part, axis=sax)
                X = u.design(xs)
                sel = None if mask is None or sax != 0 else row_mask(mask[part], xs, u.in_axis(xs.ndim))
                if self.absorbing:
                    fitted = u.rows(np.take(d[self.chain.add_out], part, axis=0), kept)  # the Add's dense output
                    Y = fitted - u.rows(np.take(p[self.chain.skip], part, axis=0))
                    if self.chain.bn is not None:
                        Y = (Y - self.chain.c) / self.chain.a
                else:
                    Y = fitted = u.rows(np.take(y_dense, part, axis=0), kept)
                if sel is not None:
                    X, Y, fitted = X[sel], Y[sel], fitted[sel]
                self.fitnorm += float(np.einsum("ij,ij->", fitted, fitted))
                self.acc.add(fold, X, Y)

    # ---- result ------------------------------------------------------------------------
    def finish(self, model, index: GraphIndex) -> dict:
        u, t = self.unit, self.target
        W0, b0 = u.weights(index)
        report = {"op": u.op, "target": f"residual Add '{self.chain.add}'" if self.absorbing else "output"}
        b_flap = None
        if self.flap:
            b_flap = b0 + flap_bias(self.W_dense, u.taps(), t.kept_in, t.kept_out, t.in_length, self.xbar.mean)
        weight = self.chain.a ** 2 if self.absorbing and self.chain.bn is not None else 1.0
        if self.gram:
            G, H, yy = self.acc.total()
            fit = solve.fit(self.acc.G, self.acc.H, self.acc.yy, W0, b0, alphas=self.alphas,
                            extra={"flap": (W0, b_flap)} if self.flap else None)
            W, b = fit.W, fit.b
            before, after = float((weight * fit.col_err_before).sum()), float((weight * fit.col_err).sum())
            report.update(choice=fit.choice, ridge=fit.ridge, fallback=fit.choice != "reconstruct")
            if fit.heldout:
                report["heldout_error"] = {k: _rel(v, self.fitnorm) for k, v in fit.heldout.items()}
        else:
            W, b = W0, b0
            before = after = float(self.pair.error().sum())
            report["choice"] = "none"
            if self.flap:  # per channel, only where it lowers the calibration error
                gain = self.pair.error() - self.pair.error(bx=b_flap - b0)
                b = np.where(gain > 0, b_flap, b0)
                after = float(self.pair.error(bx=b - b0).sum())
                report["choice"] = "bias"
        followed_by_bn = (r := index.sole_reader(u.out)) is not None and r.op_type == "BatchNormalization"
        if "bn_folded" in self.steps and u.op == "Conv" and not followed_by_bn:
            # BN folded into the conv: move each channel's mean and std toward the dense
            # ones, per channel only as far as it lowers the calibration error
            m_d, v_d = self.dense_out.mean, self.dense_out.var
            if self.gram:
                m_p, v_p = output_moments(G, W, b)

                def errors(k, t):
                    return weight * solve.col_errors(G, H, yy, W * k[None, :], k * b + t)
            else:
                m_p, v_p = self.pair.moments("x")
                m_p = m_p + (b - b0)

                def errors(k, t):
                    return self.pair.error(ax=k, bx=k * (b - b0) + t)
            k, t, picked = choose_affine(errors, m_p, v_p, m_d, v_d)
            W, b = W * k[None, :], k * b + t
            after = float(picked.min(axis=0).sum())
            report["statistics_fix"] = {name: int((picked.argmin(axis=0) == i).sum())
                                        for i, name in enumerate(("none", "mean", "mean+std"))}
        report["error_before"] = _rel(before, self.fitnorm if self.gram else float(self.pair.syy.sum()))
        report["error_after"] = _rel(after, self.fitnorm if self.gram else float(self.pair.syy.sum()))
        if not (np.array_equal(W, W0) and np.array_equal(b, b0)):
            u.write(model, index, W, b)
        return report

class BatchNormJob:
    """Re-estimate a BatchNormalization's statistics on the pruned model's input so its
    output is distributed like the dense model's on the calibration data."""

    def __init__(self, name: str, index: GraphIndex, dense: GraphIndex):
        self.node = name
        node, dnode = index.node[name], dense.node[name]
        self.x = node.input[0]
        p = np.stack([np.asarray(index.const(i)).reshape(-1) for i in node.input[1:5]], axis=1)
        dd = np.stack([np.asarray(dense.const(i)).reshape(-1) for i in dnode.input[1:5]], axis=1)
        self.kept = match_rows(dd, p)
        self.eps = float(attr(node, "epsilon", 1e-5))
        self.pair = PairMoments(p.shape[0])

    @staticmethod
    def unsupported(index: GraphIndex, dense: GraphIndex, name: str) -> str | None:
        node = index.node[name]
        if name not in dense.node:
            return "not in the dense model"
        if len(node.output) != 1 or attr(node, "training_mode", 0):
            return "training-mode BatchNormalization"
        if not all(index.is_const(i) for i in node.input[1:5]) or not all(
                dense.is_const(i) for i in dense.node[name].input[1:5]):
            return "its parameters are not constants"
        return None

    def pruned_tensors(self) -> list[str]:
        return [self.x]

    def dense_tensors(self) -> list[str]:
        return [self.x]

    def nbytes(self) -> int:
        return 0

    def accumulate(self, offset: int, p: dict, d: dict, mask: np.ndarray | None = None) -> None:
        self.pair.add(channels_last(d[self.x], 1, self.kept), channels_last(p[self.x], 1, None))

    def finish(self, model, index: GraphIndex) -> dict:
        node = index.node[self.node]
        scale, bias, mean, var = (np.asarray(index.const(i), np.float64).reshape(-1) for i in node.input[1:5])
        m_p, v_p = self.pair.moments("x")
        m_d, v_d = self.pair.moments("y")
        A = scale / np.sqrt(var + self.eps)
        B = bias - A * mean
        cands = [(scale, mean, var), (scale, mean + (m_p - m_d), var),
                 matched_bn(scale, mean, var, self.eps, m_p, v_p, m_d, v_d)]
        errs = []
        for sc, mu, va in cands:
            A2 = sc / np.sqrt(va + self.eps)
            errs.append(self.pair.error(A, B, A2, bias - A2 * mu))
        errs = np.stack(errs)
        pick = np.argmin(errs, axis=0)  # per channel, only as far as it lowers the error
        s2, mean2, var2 = (np.choose(pick, [c[i] for c in cands]) for i in range(3))
        norm = float((A * A * self.pair.syy + 2 * A * B * self.pair.sy + self.pair.n * B * B).sum())
        before, after = float(errs[0].sum()), float(errs.min(axis=0).sum())
        for slot, value in ((1, s2), (3, mean2), (4, var2)):
            old = index.const(node.input[slot])
            set_const_input(model, index, node, slot, value.reshape(old.shape), old.dtype, "bn")
        return {"op": "BatchNormalization", "choice": "statistics", "error_before": _rel(before, norm),
                "error_after": _rel(after, norm),
                "statistics_fix": {n: int((pick == i).sum()) for i, n in enumerate(("none", "mean", "mean+std"))}}
