"""Half-precision models are pruned in their own dtype; quantized ones are refused."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxprune
from onnxprune.runtime import random_inputs, session


def conv_net(dtype: int, opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return helper.make_tensor(name, dtype, shape, (rng.standard_normal(shape) * 0.3).astype(np.float32).ravel())

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", dtype, ["N", 4])],
                          [w("w1", 16, 3, 3, 3), w("b1", 16), w("w2", 16, 16, 3, 3), w("b2", 16), w("wf", 4, 16)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def test_fp16_pruned_in_fp16_and_runs():
    model = conv_net(TensorProto.FLOAT16)
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert {t.data_type for t in result.model.graph.initializer} == {TensorProto.FLOAT16}
    assert result.report["macs_after"] < result.report["macs_before"]
    out = session(result.model).run(None, random_inputs(model, batch=2))[0]
    assert out.dtype == np.float16 and out.shape == (2, 4)


def test_bf16_pruned_in_bf16_with_a_warning_where_no_kernel_runs_it():
    model = conv_net(TensorProto.BFLOAT16, opset=22)  # Conv takes bfloat16 from opset 22
    with pytest.warns(RuntimeWarning, match="no kernel"):
        result = onnxprune.prune(model, ratio=0.5, round_to=1)
    onnx.checker.check_model(result.model, full_check=True)
    assert {t.data_type for t in result.model.graph.initializer} == {TensorProto.BFLOAT16}
    w1 = next(t for t in result.model.graph.initializer if t.name == "w1")
    assert list(w1.dims) == [8, 3, 3, 3]


def test_qdq_model_is_refused_clearly():
    rng = np.random.default_rng(0)
    wq = helper.make_tensor("wq", TensorProto.INT8, [8, 3, 3, 3], rng.integers(-100, 100, 8 * 27).tolist())
    inits = [wq, helper.make_tensor("ws", TensorProto.FLOAT, [8], (rng.random(8) * 0.01 + 0.01).tolist()),
             helper.make_tensor("wz", TensorProto.INT8, [8], [0] * 8),
             helper.make_tensor("xs", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("xz", TensorProto.UINT8, [], [128])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(onnxprune.OnnxPruneError, match="quantized models") as info:
        onnxprune.prune(model, ratio=0.3)
    assert info.value.exit_code == 5
