"""Weight criteria pick the channels they should."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis import analyze
from onnxprune.importance import score_groups


def two_conv_model(w1, w2, gamma=None):
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    src = "c1"
    if gamma is not None:
        c = len(gamma)
        nodes.append(helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"]))
        inits += [numpy_helper.from_array(gamma.astype(np.float32), "g")] + [
            numpy_helper.from_array(a, n) for a, n in ((np.zeros(c, np.float32), "b"), (np.zeros(c, np.float32), "m"),
                                                       (np.ones(c, np.float32), "v"))]
        src = "bn"
    nodes += [helper.make_node("Relu", [src], ["r"]), helper.make_node("Conv", ["r", "w2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_magnitude_criteria_rank_a_zero_filter_last():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 3, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((2, 6, 1, 1)).astype(np.float32)
    w1[4] = 0
    w2[:, 4] = 0
    a = analyze(two_conv_model(w1, w2))
    (g,) = a.prunable
    for crit in ("l1", "l2", "connectivity"):
        s = score_groups(a, crit)[g.id][0]
        assert int(np.argmin(s)) == 4, crit


def test_l1_and_l2_values():
    w1 = np.zeros((3, 1, 1, 1), np.float32)
    w1[:, 0, 0, 0] = [1, 2, 3]
    w2 = np.ones((2, 3, 1, 1), np.float32)
    model = analyze(two_conv_model(np.repeat(w1, 3, axis=1), w2))
    (g,) = model.prunable
    l1 = score_groups(model, "l1", normalize="none")[g.id][0]
    np.testing.assert_allclose(l1, [3 * 1 + 2, 3 * 2 + 2, 3 * 3 + 2])
    l2 = score_groups(model, "l2", normalize="none")[g.id][0]
    np.testing.assert_allclose(l2, [np.sqrt(3) + np.sqrt(2), 2 * np.sqrt(3) + np.sqrt(2), 3 * np.sqrt(3) + np.sqrt(2)])


def test_bn_criterion_uses_gamma():
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((2, 4, 1, 1)).astype(np.float32)
    a = analyze(two_conv_model(w1, w2, gamma=np.array([1.0, -0.05, 2.0, 0.5])))
    (g,) = a.prunable
    s = score_groups(a, "bn", normalize="none")[g.id][0]
    np.testing.assert_allclose(s, [1.0, 0.05, 2.0, 0.5])


def test_fpgm_scores_the_median_filter_lowest():
    w1 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.34, 0.33, 0.33]], np.float32).reshape(4, 3, 1, 1)
    w2 = np.zeros((2, 4, 1, 1), np.float32)
    a = analyze(two_conv_model(w1, w2))
    (g,) = a.prunable
    s = score_groups(a, "fpgm")[g.id][0]
    assert int(np.argmin(s)) == 3
