"""Execution provider choice: CUDA only when it really loads, and silently otherwise."""

import onnx

from onnxprune import runtime
from tests.conftest import MODELS


def test_auto_provider_choice_prints_nothing(capfd):
    runtime.cuda_usable.cache_clear()
    chosen = runtime.providers("auto")
    assert chosen[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in chosen) == runtime.cuda_usable()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_session_runs_models_stamped_with_a_newer_ir_version():
    model = onnx.load(str(MODELS / "resnet_basic.onnx"))
    model.ir_version = onnx.IR_VERSION  # what a fresh onnx.helper.make_model stamps
    sess = runtime.session(model)
    sess.run(None, runtime.random_inputs(model))


def test_random_integer_inputs_stay_inside_the_tables_they_index():
    """Token-type ids index a 2-row table (directly or through ORT's fused embeddings),
    attention masks are 0/1: synthesized values stay valid."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def model(fused: bool):
        ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])
        tt = helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["b", "s"])
        mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        word = numpy_helper.from_array(np.zeros((30, 4), np.float32), "word")
        seg = numpy_helper.from_array(np.zeros((2, 4), np.float32), "seg")
        if fused:
            nodes = [helper.make_node("Cast", ["token_type_ids"], ["tt32"], to=TensorProto.INT32),
                     helper.make_node("EmbedLayerNormalization", ["ids32", "tt32", "word", "pos", "seg"], ["y"],
                                      domain="com.microsoft"),
                     helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32)]
        else:
            nodes = [helper.make_node("Gather", ["seg", "token_type_ids"], ["y"])]
        g = helper.make_graph(nodes, "g", [ids, tt, mask], [out], [word, seg])
        return helper.make_model(g)

    for fused in (False, True):
        bounds = runtime.integer_bounds(model(fused))
        assert bounds["token_type_ids"] == 2 and bounds["attention_mask"] == 2
        assert bounds["input_ids"] == 4
        feeds = runtime.random_inputs(model(fused), batch=64)
        assert feeds["token_type_ids"].max() <= 1 and feeds["attention_mask"].max() <= 1
