"""ONNX Runtime sessions: CUDA when it really loads, CPU otherwise, quietly."""

from __future__ import annotations

import functools

import numpy as np
import onnx

from .data import model_inputs
from .errors import BadArgumentError

ORT_MAX_IR = 10  # every supported onnxruntime reads IR 10; newer ones are probed


def _ort():
    import onnxruntime as ort

    return ort


@functools.lru_cache(maxsize=None)
def cuda_usable() -> bool:
    """True when the CUDA execution provider actually loads (not merely is listed)."""
    ort = _ort()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    probe = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "probe",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=7)
    ort.set_default_logger_severity(4)  # silence the provider bridge while probing
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(probe.SerializeToString(), so,
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        return "CUDAExecutionProvider" in sess.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(3)


def providers(device: str = "auto") -> list[str]:
    if device not in ("auto", "cpu", "cuda"):
        raise BadArgumentError(f"--device must be auto, cpu or cuda, got '{device}'")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if cuda_usable():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BadArgumentError("--device cuda: the CUDA execution provider does not load on this machine")
    return ["CPUExecutionProvider"]


def session(model: onnx.ModelProto | bytes | str, device: str = "cpu", threads: int | None = None,
            full_optimization: bool = True):
    """An inference session; ``full_optimization=False`` keeps to basic graph rewrites,
    which load several times faster (for one-off runs such as verification)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not full_optimization:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.add_session_config_entry("session.disable_prepacking", "1")  # no weight copies
    if threads:
        so.intra_op_num_threads = threads
    if isinstance(model, onnx.ModelProto):
        model = runnable_bytes(model)
    return ort.InferenceSession(model, so, providers=providers(device))


def runnable_bytes(model: onnx.ModelProto) -> bytes:
    """Serialized model, with its IR version lowered to what the runtime accepts when the
    opsets allow it (onnx may stamp newer IR versions than onnxruntime reads)."""
    if needs_lowering(model):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.ir_version = max_ir_version()
        return m.SerializeToString()
    return model.SerializeToString()


def needs_lowering(model: onnx.ModelProto) -> bool:
    """Whether :func:`runnable_bytes` must lower the IR version (its bytes then differ
    from the model's own serialization)."""
    return model.ir_version > ORT_MAX_IR and model.ir_version > max_ir_version()


@functools.lru_cache(maxsize=None)
def max_ir_version() -> int:
    ort = _ort()
    probe = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[onnx.helper.make_opsetid("", 13)])
    for ir in range(onnx.IR_VERSION, 6, -1):
        probe.ir_version = ir
        try:
            ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
            return ir
        except Exception:
            continue
    return ORT_MAX_IR


def declared_type(model: onnx.ModelProto, name: str) -> str:
    vi = next(i for i in model.graph.input if i.name == name)
    return onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)


def random_inputs(model: onnx.ModelProto, input_shapes: dict | None = None, seed: int = 0, batch: int = 1) -> dict:
    """Synthetic inputs from declared shapes/dtypes (dynamic dims: overrides, else ``batch``
    for the leading one and 8 elsewhere)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (dtype, declared) in model_inputs(model).items():
        dims = [d if d is not None else (batch if k == 0 else 8) for k, d in enumerate(declared)]
        if input_shapes and name in input_shapes:
            dims = list(input_shapes[name])
        if dtype is None:
            raise BadArgumentError(f"input '{name}': element type {declared_type(model, name)} cannot be synthesized")
        if dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, dims).astype(bool)
        elif dtype.kind in "iu":
            feeds[name] = rng.integers(0, 4, dims).astype(dtype)
        else:  # float16/32/64 and the ml_dtypes floats (bfloat16, float8...)
            feeds[name] = rng.standard_normal(dims).astype(np.float32).astype(dtype)
    return feeds
