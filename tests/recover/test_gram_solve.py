"""The algebra under the repair: im2col rows reproduce ONNX Runtime's Conv, streamed Gram
statistics equal the all-at-once products, and the ridge solve shrinks toward the dense
weights and never loses to keeping them."""

import numpy as np
import pytest
from onnx import helper

from onnxprune.recover.gram import GramAccumulator, PairMoments, conv_pads, im2col
from onnxprune.recover.graphs import match_rows
from onnxprune.recover.solve import col_errors, fit
from onnxprune.recover.statscorrect import matched_bn
from onnxprune.runtime import session

from .helpers import fvi, make_model


@pytest.mark.parametrize("spec", [
    dict(kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1]),
    dict(kernel=[3, 2], strides=[1, 2], pads=[2, 0, 1, 1], dilations=[2, 1]),
    dict(kernel=[1, 1], strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1]),
    dict(kernel=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER", dilations=[1, 1]),
    dict(kernel=[3], strides=[2], pads=[1, 0], dilations=[1]),
], ids=["3x3s2", "asym_dilated", "1x1s2", "same_lower", "conv1d"])
def test_im2col_matches_onnxruntime_conv(spec):
    rng = np.random.default_rng(0)
    k = len(spec["kernel"])
    spatial = [9, 8][:k]
    w = rng.standard_normal([5, 3] + spec["kernel"]).astype(np.float32)
    attrs = {"strides": spec["strides"], "dilations": spec["dilations"]}
    if "auto_pad" in spec:
        attrs["auto_pad"] = spec["auto_pad"]
    else:
        attrs["pads"] = spec["pads"]
    m = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)],
                   [fvi("x", ["N", 3] + spatial)], [fvi("y", ["N", 5] + ["S"] * k)], {"w": w})
    x = rng.standard_normal([2, 3] + spatial).astype(np.float32)
    y = session(m).run(None, {"x": x})[0]
    pads = conv_pads(spec.get("auto_pad", "NOTSET"), spatial, spec["kernel"], spec["strides"], spec["dilations"],
                     spec.get("pads"))
    rows = im2col(x, spec["kernel"], spec["strides"], pads, spec["dilations"])
    got = (rows @ w.reshape(5, -1).T.astype(np.float64)).reshape([2] + list(y.shape[2:]) + [5])
    np.testing.assert_allclose(np.moveaxis(got, -1, 1), y, rtol=1e-4, atol=1e-4)


def test_streamed_gram_equals_all_at_once():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((1000, 7)), rng.standard_normal((1000, 3))
    acc = GramAccumulator(7, 3, 2)
    for i in range(0, 1000, 128):
        acc.add((i // 128) % 2, x[i:i + 128], y[i:i + 128])
    G, H, yy = acc.total()
    xa = np.hstack([x, np.ones((1000, 1))])
    np.testing.assert_allclose(G, xa.T @ xa, rtol=1e-10)
    np.testing.assert_allclose(H, xa.T @ y, rtol=1e-10)
    np.testing.assert_allclose(yy, (y * y).sum(0), rtol=1e-10)
    W, b = rng.standard_normal((7, 3)), rng.standard_normal(3)
    np.testing.assert_allclose(col_errors(G, H, yy, W, b), ((y - x @ W - b) ** 2).sum(0), rtol=1e-8)


def _problem(seed=2, n=400, d=6, c=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    W_true = rng.standard_normal((d, c))
    y = x @ W_true + 0.3 + 0.1 * rng.standard_normal((n, c))
    acc = GramAccumulator(d, c, 4)
    for i in range(n):
        acc.add(i % 4, x[i:i + 1], y[i:i + 1])
    return acc, W_true


def test_fit_is_never_worse_than_the_dense_weights():
    acc, W_true = _problem()
    W0 = W_true + 0.5
    got = fit(acc.G, acc.H, acc.yy, W0, np.zeros(2), alphas=(1e-3,))
    assert got.choice == "reconstruct" and got.col_err.sum() < got.col_err_before.sum()
    np.testing.assert_allclose(got.W, W_true, atol=0.05)
    # cross-validated choice among ridge values and the no-reconstruction candidates
    cv = fit(acc.G, acc.H, acc.yy, W0, np.zeros(2))
    assert cv.heldout and cv.col_err.sum() <= cv.col_err_before.sum()


def test_strong_ridge_stays_at_the_dense_weights():
    acc, W_true = _problem()
    W0 = W_true + 0.5
    got = fit(acc.G, acc.H, acc.yy, W0, np.zeros(2), alphas=(1e9,))
    np.testing.assert_allclose(got.W, W0, atol=1e-6)  # toward the dense weights, not toward zero
    G, H, _ = acc.total()
    n = G[-1, -1]
    np.testing.assert_allclose(got.b, H[-1] / n - W0.T @ (G[:-1, -1] / n), atol=1e-6)  # bias still refit


def test_fit_keeps_the_weights_when_they_are_already_optimal():
    acc, W_true = _problem()
    G, H, yy = acc.total()
    n = G[-1, -1]
    W_best = np.linalg.solve(G, H)  # the unregularized least-squares solution with its bias
    got = fit(acc.G, acc.H, acc.yy, W_best[:-1], W_best[-1], alphas=(1e-3,))
    np.testing.assert_allclose(got.col_err, got.col_err_before, rtol=1e-9)
    assert n == 400
    nothing = fit(acc.G, acc.H, acc.yy, W_true, np.zeros(2), reconstruct=False)
    assert nothing.choice == "bias" and nothing.ridge is None  # the bias alone still helps (y has an offset)


def test_pair_moments_error():
    rng = np.random.default_rng(3)
    y, x = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    pm = PairMoments(4)
    pm.add(y[:20], x[:20])
    pm.add(y[20:], x[20:])
    np.testing.assert_allclose(pm.error(2.0, 0.5, 3.0, -1.0), ((2 * y + 0.5 - 3 * x + 1) ** 2).sum(0), rtol=1e-10)


def test_matched_bn_standardizes_like_the_dense_model():
    rng = np.random.default_rng(4)
    xd = rng.standard_normal((1000, 3)) * [1, 2, 3] + [0, 1, -1]
    xp = 0.7 * xd + 0.2
    scale, mean, var, eps = np.array([1.0, 0.5, 2.0]), np.array([0.1, 0.9, -1.2]), np.array([1.1, 3.9, 9.5]), 1e-5
    s2, m2, v2 = matched_bn(scale, mean, var, eps, xp.mean(0), xp.var(0), xd.mean(0), xd.var(0))
    dense = scale * (xd - mean) / np.sqrt(var + eps)
    fixed = s2 * (xp - m2) / np.sqrt(v2 + eps)
    np.testing.assert_allclose(fixed, dense, atol=1e-8)


def test_match_rows():
    d = np.arange(20.0).reshape(5, 4)
    np.testing.assert_array_equal(match_rows(d, d[[0, 2, 4]]), [0, 2, 4])
    assert match_rows(d, d[[2, 0]]) is None  # order must be kept
    dup = np.vstack([d, d[:1]])
    assert match_rows(dup, d[:1]) is None  # ambiguous
