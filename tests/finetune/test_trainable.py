import copy

import numpy as np
import onnx
import pytest

from onnxprune.finetune.trainable import as_inputs, fold_batchnorms, trainable_names, write_back
from onnxprune.runtime import random_inputs, session
from tests.conftest import MODELS

BN_FIXTURES = ["resnet_basic_bn.onnx", "mobilenetv2.onnx", "efficientnet.onnx", "resnext.onnx", "convnext.onnx",
               "convtranspose_grouped.onnx", "unet.onnx"]


@pytest.mark.parametrize("name", BN_FIXTURES)
def test_folding_batchnorm_keeps_outputs(name):
    model = onnx.load(str(MODELS / name))
    folded = copy.deepcopy(model)
    count = fold_batchnorms(folded)
    onnx.checker.check_model(folded, full_check=True)
    feeds = random_inputs(model, None)
    ref = session(model).run(None, feeds)
    got = session(folded).run(None, feeds)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(r).max())))
    bns = sum(n.op_type == "BatchNormalization" for n in folded.graph.node)
    assert count + bns == sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    if name == "resnet_basic_bn.onnx":
        assert count > 0 and bns == 0


def test_trainable_slots_and_weights_as_inputs():
    model = onnx.load(str(MODELS / "resnet_basic_bn.onnx"))
    fold_batchnorms(model)
    names = trainable_names(model)
    inits = {t.name: t for t in model.graph.initializer}
    readers = {i: n for n in model.graph.node for i in n.input}
    assert names and all(readers[n].op_type in ("Conv", "Gemm", "MatMul", "Add", "Mul") for n in names)
    assert all(int(np.prod(inits[n].dims)) > 1 for n in names)
    frozen = trainable_names(model, freeze="Gemm|fc")
    assert len(frozen) < len(names)
    base = copy.deepcopy(model)
    params = as_inputs(model, names)
    assert not set(names) & {t.name for t in model.graph.initializer}
    feeds = random_inputs(base, None)
    np.testing.assert_allclose(session(model).run(None, {**feeds, **params})[0], session(base).run(None, feeds)[0],
                               rtol=1e-5, atol=1e-6)
    back = write_back(base, {k: v * 0 for k, v in params.items()})
    assert all(not np.any(onnx.numpy_helper.to_array(t)) for t in back.graph.initializer if t.name in params)


def test_masks_and_scalars_are_not_trained():
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    inits = [numpy_helper.from_array(np.ones((4, 4), np.float32), "w"),
             numpy_helper.from_array(np.zeros((2, 4), np.float32), "mask"),
             numpy_helper.from_array(np.ones(4, np.float32), "bias"),
             numpy_helper.from_array(np.float32(2.0), "two")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Add", ["a", "mask"], ["b"]),
             helper.make_node("Add", ["b", "bias"], ["c"]), helper.make_node("Mul", ["c", "two"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))
    assert trainable_names(model) == ["w", "bias"]
