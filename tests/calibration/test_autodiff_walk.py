"""The walk: fan-out sums, what blocks and what does not, seeds anywhere, opset raises, and
the returned model (original kept, outputs added, checker-valid)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.calibration.autodiff import build_backward, fdcheck
from onnxprune.errors import BadArgumentError

from .test_autodiff import fresh_rng  # noqa: F401  (autouse: same inputs in any order)
from .test_autodiff import away, build, check, node, r

I64 = np.int64


def test_fan_out_sums_contributions():
    nodes = [node("Relu", ["x"], ["a"]), node("Sigmoid", ["a"], ["s"]), node("Tanh", ["a"], ["t"]),
             node("Mul", ["a", "s"], ["m"]), node("Add", ["m", "t"], ["y"])]
    dt, res = check(nodes, {"x": away(3, 4)}, wrt=["x"])
    assert any(n.op_type == "Sum" for n in res.model.graph.node)


def _blocked_graph():
    """x -> Relu -> a; a -> LRN -> b (no rule); a -> Tanh -> c; y = b + c; z -> Exp -> e; out2 = e * c."""
    nodes = [node("Relu", ["x"], ["a"]), node("LRN", ["a"], ["b"], size=3), node("Tanh", ["a"], ["c"]),
             node("Add", ["b", "c"], ["y"]), node("Exp", ["z"], ["e"]), node("Mul", ["e", "c"], ["y2"])]
    nodes[1].name = "lrn_7"
    return build(nodes, {"x": away(1, 3, 4, 4), "z": r(1, 3, 4, 4)}, {}, ["y", "y2"], 17, np.float32)


def test_op_without_rule_blocks_only_what_is_behind_it():
    model, feeds = _blocked_graph()
    proj = fdcheck.random_projections(model, feeds)
    res, grads = fdcheck.gradients(model, ["x", "a", "c", "z", "e"], feeds, proj)
    assert set(res.unavailable) == {"x", "a"}
    assert res.unavailable["x"] == res.unavailable["a"] == "no backward rule for LRN 'lrn_7'"
    assert set(res.grads) == {"c", "z", "e"}
    for w in ("c", "z"):
        fd, _ = fdcheck.fd_gradient(model, w, feeds, proj, coords=range(0, 48, 5), eps=1e-2)
        np.testing.assert_allclose(grads[w].reshape(-1)[0:48:5], fd, rtol=2e-2, atol=2e-3)


def test_branch_without_rule_that_reaches_no_seed_does_not_block():
    model, feeds = _blocked_graph()
    proj = fdcheck.random_projections(model, feeds)
    del proj["y"]  # only y2 = e * c is seeded: the LRN branch is not on any path to it
    res, _ = fdcheck.gradients(model, ["x", "a"], feeds, proj)
    assert not res.unavailable and set(res.grads) == {"x", "a"}
    assert not any(n.op_type == "LRN" and n.name.startswith("bw") for n in res.model.graph.node)


def test_unreached_and_integer_tensors_are_unavailable():
    nodes = [node("Relu", ["x"], ["a"]), node("Shape", ["a"], ["sh"]), node("Tanh", ["z"], ["t"]),
             node("Reshape", ["t", "sh"], ["y"]), node("Sin", ["x"], ["side"])]
    model, feeds = build(nodes, {"x": r(2, 3), "z": r(6)}, {}, ["y", "side"], 17, np.float64)
    res, grads = fdcheck.gradients(model, ["x", "z", "sh"], feeds, {"y": np.ones((2, 3))})
    assert "does not reach any seed" in res.unavailable["x"]  # x reaches y only through Shape
    assert "not a float tensor" in res.unavailable["sh"]
    np.testing.assert_allclose(grads["z"], 1 - np.tanh(feeds["z"]) ** 2)


def test_seed_at_an_intermediate_tensor_and_wrt_a_seeded_tensor():
    nodes = [node("Sigmoid", ["x"], ["s"]), node("Mul", ["s", "s"], ["y"])]
    model, feeds = build(nodes, {"x": r(2, 3)}, {"g_s": np.full((2, 3), 0.5)}, ["y"], 17, np.float64)
    shapes = fdcheck.concrete_shapes(model, feeds)
    res = build_backward(model, ["x", "s"], {"s": "g_s"}, shapes)  # y is not seeded at all
    gs, gx = fdcheck._session(res.model).run([res.grads["s"], res.grads["x"]], feeds)
    s = 1 / (1 + np.exp(-feeds["x"]))
    np.testing.assert_allclose(gs, 0.5)
    np.testing.assert_allclose(gx, 0.5 * s * (1 - s))


def test_returned_model_is_new_valid_and_keeps_outputs():
    nodes = [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             node("Relu", ["p"], ["y"])]
    model, feeds = build(nodes, {"x": r(1, 2, 4, 4)}, {"w": r(3, 2, 3, 3)}, ["y"], 17, np.float32)
    before = model.SerializeToString()
    m, seeds = fdcheck.with_seeds(model, {"y": np.ones((1, 3, 2, 2), np.float32)})
    res = build_backward(m, ["x", "c"], seeds, fdcheck.concrete_shapes(m, feeds))
    assert model.SerializeToString() == before
    onnx.checker.check_model(res.model, full_check=True)
    outs = [o.name for o in res.model.graph.output]
    assert outs[0] == "y" and set(outs[1:]) == set(res.grads.values())
    grad_out = {o.name: o for o in res.model.graph.output}[res.grads["x"]]
    assert [d.dim_value for d in grad_out.type.tensor_type.shape.dim] == [1, 2, 4, 4]
    pool = next(n for n in res.model.graph.node if n.op_type == "MaxPool")
    assert len(pool.output) == 2  # Indices added for the scatter
    res2 = build_backward(m, ["x"], {}, fdcheck.concrete_shapes(m, feeds))  # no seeds: nothing used
    pool = next(n for n in res2.model.graph.node if n.op_type == "MaxPool")
    assert list(pool.output) == ["p"] and not res2.grads


def test_unknown_names_are_rejected():
    model, _ = build([node("Relu", ["x"])], {"x": r(2)}, {}, ["y"], 17, np.float32)
    with pytest.raises(BadArgumentError):
        build_backward(model, ["nope"], {}, {})
    with pytest.raises(BadArgumentError):
        build_backward(model, ["x"], {"y": "missing_seed"}, {})


def test_missing_shape_is_a_reason_not_a_crash():
    model, feeds = build([node("Add", ["x", "z"])], {"x": r(2, 3), "z": r(3)}, {"g": np.ones((2, 3))},
                         ["y"], 17, np.float64)
    res = build_backward(model, ["x", "z"], {"y": "g"}, {"x": [2, 3]})
    assert "shape of" in res.unavailable["x"] and "Add" in res.unavailable["x"]


def _runtime_gather(opset, squeeze_attr=False):
    nodes = [node("ArgMax", ["z"], ["i"], axis=1, keepdims=0), node("Gather", ["x", "i"], ["g"], axis=0)]
    if squeeze_attr:  # Squeeze changes definition at opset 13: the opset cannot be raised
        nodes += [node("Unsqueeze", ["g"], ["u"], axes=[0]), node("Squeeze", ["u"], ["y"], axes=[0])]
    else:
        nodes += [node("Tanh", ["g"], ["y"])]
    return build(nodes, {"x": r(4, 3), "z": r(5, 4)}, {}, ["y"], opset, np.float32)


def test_opset_raised_when_every_node_keeps_its_definition():
    model, feeds = _runtime_gather(13)
    proj = fdcheck.random_projections(model, feeds)
    res, grads = fdcheck.gradients(model, ["x"], feeds, proj)
    assert res.opset == 16 and not res.unavailable
    assert next(o.version for o in res.model.opset_import if o.domain == "") == 16
    onnx.checker.check_model(res.model, full_check=True)
    fd, _ = fdcheck.fd_gradient(model, "x", feeds, proj, eps=1e-2)
    np.testing.assert_allclose(grads["x"].reshape(-1), fd, rtol=1e-2, atol=1e-3)


def test_opset_kept_when_a_node_would_change_meaning():
    model, feeds = _runtime_gather(11, squeeze_attr=True)
    res, _ = fdcheck.gradients(model, ["x"], feeds, fdcheck.random_projections(model, feeds))
    assert res.opset == 11 and "needs opset 16" in res.unavailable["x"]


def test_if_reading_an_activation_from_its_branches_blocks():
    then = onnx.helper.make_graph([node("Relu", ["a"], ["t"])], "then", [],
                                  [onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, None)])
    other = onnx.helper.make_graph([node("Neg", ["a"], ["e"])], "else", [],
                                   [onnx.helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, None)])
    nodes = [node("Sin", ["x"], ["a"]), node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    nodes[1].name = "if_1"
    model, feeds = build(nodes, {"x": r(2, 3)}, {"c": np.array(True)}, ["y"], 13, np.float32)
    res, _ = fdcheck.gradients(model, ["x", "a"], feeds, {"y": np.ones((2, 3), np.float32)})
    assert res.unavailable["x"] == "no backward rule for If 'if_1'"


@pytest.mark.parametrize("nodes,inits,why", [
    ([node("Dropout", ["x", "ratio", "train"], ["y"])], {"ratio": np.array(0.5), "train": np.array(True)},
     "Dropout in training mode"),
    ([node("Resize", ["x", "", "scales"], ["y"], mode="linear")], {"scales": np.array([1, 1, 2, 2], np.float32)},
     "mode 'linear'"),
    ([node("ConvTranspose", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])], {"w": r(2, 2, 3, 3)},
     "auto_pad SAME"),
    ([node("Pad", ["x", "p"], ["y"], mode="reflect")], {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], I64)}, "mode 'reflect'"),
])
def test_rules_that_cannot_apply_say_why(nodes, inits, why):
    model, feeds = build(nodes, {"x": r(1, 2, 4, 4)}, inits, ["y"], 17, np.float32)
    res, _ = fdcheck.gradients(model, ["x"], feeds, fdcheck.random_projections(model, feeds))
    assert why in res.unavailable["x"] and nodes[0].name in res.unavailable["x"], res.unavailable
