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
