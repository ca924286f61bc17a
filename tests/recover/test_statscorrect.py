"""Statistics repairs: BatchNormalization statistics correction, the folded-BN per-channel
fix, FLAP bias compensation, residual absorption, and float16 models."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.recover import RecoverOptions, recover
from onnxprune.recover.graphs import GraphIndex, exposing
from onnxprune.runtime import session

from .helpers import dataset, fvi, make_model, prune_channels, rel, run


def feeds(n, seed, shape=(3, 9, 9)):
    return {"x": np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)}


def tensor(model, name, x):
    return session(exposing(model, GraphIndex(model), [name])).run([name], x)[0]


def bn_model(rng, calib):
    """conv0 → Relu → conv1 → BN → Relu → conv2, where conv0's channel 7 duplicates its
    channel 2 and only conv1's output 2 reads them: pruning channel 7 scales BN input 2."""
    w0 = rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    b0 = rng.standard_normal(8).astype(np.float32)
    w0[7], b0[7] = w0[2], b0[2]
    w1 = rng.standard_normal((6, 8, 1, 1)).astype(np.float32)
    w1[:, 7] = 0
    w1[2] = 0
    w1[2, 2], w1[2, 7] = 1.0, 0.5
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["a"], name="conv0"),
             helper.make_node("Relu", ["a"], ["r"], name="relu0"),
             helper.make_node("Conv", ["r", "w1"], ["c"], name="conv1"),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"], name="bn", epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["rn"], name="relu1"),
             helper.make_node("Conv", ["rn", "w2"], ["y"], name="conv2")]
    inits = {"w0": w0, "b0": b0, "w1": w1, "s": rng.uniform(0.5, 2, 6).astype(np.float32),
             "bb": rng.standard_normal(6).astype(np.float32), "m": np.zeros(6, np.float32),
             "v": np.ones(6, np.float32), "w2": rng.standard_normal((4, 6, 1, 1)).astype(np.float32)}
    model = make_model(nodes, [fvi("x", ["N", 3, 9, 9])], [fvi("y", ["N", 4, 9, 9])], inits)
    c = tensor(model, "c", calib).astype(np.float64)  # running statistics = the dense data's
    inits["m"] = c.mean(axis=(0, 2, 3)).astype(np.float32)
    inits["v"] = c.var(axis=(0, 2, 3)).astype(np.float32)
    return make_model(nodes, [fvi("x", ["N", 3, 9, 9])], [fvi("y", ["N", 4, 9, 9])], inits)


def test_batchnorm_statistics_correction():
    calib, held = feeds(64, 0), feeds(16, 1)
    dense = bn_model(np.random.default_rng(0), calib)
    dense, pruned, targets, _ = prune_channels(dense, "conv0", list(range(7)))
    assert "conv1" in targets
    repaired, report = recover(dense, pruned, targets, dataset(dense, calib, 16), RecoverOptions(steps=("bn",)),
                               progress=False)
    r = report["layers"]["bn"]
    assert r["error_after"] < 1e-5 < r["error_before"] and r["statistics_fix"]["mean+std"] >= 1
    c = tensor(pruned, "c", calib).astype(np.float64)  # the pruned model's BN input
    bn = next(n for n in repaired.graph.node if n.name == "bn")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in repaired.graph.initializer}
    mean, var = init[bn.input[3]], init[bn.input[4]]
    np.testing.assert_allclose(mean, c.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    v_d = tensor(dense, "c", calib).astype(np.float64).var(axis=(0, 2, 3))
    np.testing.assert_allclose(var + 1e-5, (v_d + 1e-5) * c.var(axis=(0, 2, 3)) / v_d, rtol=1e-4)
    for x in (calib, held):
        n_dense, n_rep = tensor(dense, "n", x), tensor(repaired, "n", x)
        np.testing.assert_allclose(n_rep.mean(axis=(0, 2, 3)), n_dense.mean(axis=(0, 2, 3)), atol=1e-4)
        np.testing.assert_allclose(n_rep.std(axis=(0, 2, 3)), n_dense.std(axis=(0, 2, 3)), rtol=1e-4)
        assert rel(run(dense, x)[0], run(repaired, x)[0]) < 1e-4 < rel(run(dense, x)[0], run(pruned, x)[0])


def test_folded_batchnorm_fix():
    """conv1 (1 input channel) → conv2: pruning conv1's channel 5 leaves every conv2 output
    an affine function of the dense one, which the per-channel fix restores."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="conv1"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="conv2")]
    inits = {"w1": rng.standard_normal((6, 1, 1, 1)).astype(np.float32),
             "w2": rng.standard_normal((3, 6, 1, 1)).astype(np.float32),
             "b2": rng.standard_normal(3).astype(np.float32)}
    model = make_model(nodes, [fvi("x", ["N", 1, 5, 5])], [fvi("y", ["N", 3, 5, 5])], inits)
    dense, pruned, targets, _ = prune_channels(model, "conv1", [0, 1, 2, 3, 4])
    calib = feeds(32, 0, (1, 5, 5))
    repaired, report = recover(dense, pruned, targets, dataset(dense, calib),
                               RecoverOptions(steps=("bn_folded",)), progress=False)
    assert report["layers"]["conv2"]["statistics_fix"]["mean+std"] == 3
    held = feeds(8, 1, (1, 5, 5))
    assert rel(run(dense, held)[0], run(repaired, held)[0]) < 1e-4 < rel(run(dense, held)[0], run(pruned, held)[0])


def test_flap_bias_compensation():
    """A removed channel that is constant after its Relu: FLAP moves its contribution into
    the consumer's bias (created, the consumer had none) and the output is exact."""
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((6, 3, 1, 1)).astype(np.float32)
    b1 = rng.standard_normal(6).astype(np.float32)
    w1[5], b1[5] = 0.0, 3.0
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    inits = {"w1": w1, "b1": b1, "w2": rng.standard_normal((4, 6, 3, 3)).astype(np.float32)}
    model = make_model(nodes, [fvi("x", ["N", 3, 9, 9])], [fvi("y", ["N", 4, 9, 9])], inits)
    dense, pruned, targets, _ = prune_channels(model, "conv1", [0, 1, 2, 3, 4])
    repaired, report = recover(dense, pruned, targets, dataset(dense, feeds(16, 0)), RecoverOptions(steps=("bias",)),
                               progress=False)
    assert report["layers"]["conv2"]["choice"] == "bias"
    x = feeds(4, 1)
    # exact away from the zero padding (where the removed channel contributed less)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert rel(run(dense, x)[0][inner], run(repaired, x)[0][inner]) < 1e-5
    assert rel(run(dense, x)[0], run(repaired, x)[0]) < rel(run(dense, x)[0], run(pruned, x)[0])


def residual_model(rng):
    """x → convA → Relu → convS → s;  y = convB(Relu(convH(s))) + s: pruning convA's
    outputs leaves an error in s that convB can absorb when fitted to the Add's output."""
    w = {k: rng.standard_normal(shape).astype(np.float32) * 0.5 for k, shape in
         {"wa": (8, 3, 1, 1), "ws": (4, 8, 1, 1), "wh": (6, 4, 1, 1), "wb": (4, 6, 1, 1)}.items()}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="convA"),
             helper.make_node("Relu", ["a"], ["ra"], name="reluA"),
             helper.make_node("Conv", ["ra", "ws"], ["s"], name="convS"),
             helper.make_node("Conv", ["s", "wh"], ["h"], name="convH"),
             helper.make_node("Relu", ["h"], ["rh"], name="reluH"),
             helper.make_node("Conv", ["rh", "wb"], ["b"], name="convB"),
             helper.make_node("Add", ["b", "s"], ["y"], name="add")]
    return make_model(nodes, [fvi("x", ["N", 3, 9, 9])], [fvi("y", ["N", 4, 9, 9])], w)


def test_residual_absorption():
    dense, pruned, targets, _ = prune_channels(residual_model(np.random.default_rng(5)), "convA", [0, 1, 2, 3])
    calib = feeds(64, 0)
    errs = {}
    for absorb in (False, True):
        opts = RecoverOptions(steps=("reconstruct",), scope="downstream", absorb_residual=absorb)
        repaired, report = recover(dense, pruned, targets, dataset(dense, calib, 16), opts, progress=False)
        assert ("residual" in report["layers"]["convB"]["target"]) == absorb
        errs[absorb] = rel(run(dense, calib)[0], run(repaired, calib)[0])
    assert errs[True] < errs[False]


def test_float16_model():
    rng = np.random.default_rng(6)
    w1 = rng.standard_normal((6, 3, 1, 1)).astype(np.float16)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="conv1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2")]
    inits = {"w1": w1, "w2": (rng.standard_normal((4, 6, 1, 1)) * 0.3).astype(np.float16)}
    model = make_model(nodes, [fvi("x", ["N", 3, 6, 6], TensorProto.FLOAT16)],
                       [fvi("y", ["N", 4, 6, 6], TensorProto.FLOAT16)], inits)
    dense, pruned, targets, _ = prune_channels(model, "conv1", [0, 1, 2, 3])
    x = {"x": np.random.default_rng(0).standard_normal((32, 3, 6, 6)).astype(np.float16)}
    repaired, report = recover(dense, pruned, targets, dataset(dense, x), progress=False)
    onnx.checker.check_model(repaired, full_check=True)
    assert all(t.data_type == TensorProto.FLOAT16 for t in repaired.graph.initializer)
    assert rel(run(dense, x)[0], run(repaired, x)[0]) < rel(run(dense, x)[0], run(pruned, x)[0])


@pytest.mark.parametrize("cache", [0, 1 << 30], ids=["no_cache", "cache"])
def test_frontier_cache_gives_the_same_result(cache):
    dense, pruned, targets, _ = prune_channels(residual_model(np.random.default_rng(5)), "convA", [0, 1, 2, 3])
    ds = dataset(dense, feeds(24, 0), 8)
    base, _ = recover(dense, pruned, targets, ds, RecoverOptions(scope="downstream", cache_bytes=0), progress=False)
    got, _ = recover(dense, pruned, targets, ds, RecoverOptions(scope="downstream", cache_bytes=cache),
                     progress=False)
    x = feeds(4, 1)
    np.testing.assert_allclose(run(base, x)[0], run(got, x)[0], rtol=1e-5, atol=1e-5)
