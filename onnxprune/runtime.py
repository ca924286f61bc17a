"""ONNX Runtime sessions: CUDA when it really loads, CPU otherwise, quietly."""

from __future__ import annotations

import functools

import numpy as np
import onnx

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
    if model.ir_version > ORT_MAX_IR and model.ir_version > max_ir_version():
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.ir_version = max_ir_version()
        return m.SerializeToString()
    return model.SerializeToString()


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


def random_inputs(model: onnx.ModelProto, input_shapes: dict | None = None, seed: int = 0, batch: int = 1) -> dict:
    """Synthetic inputs from declared shapes/dtypes (dynamic dims: overrides, else ``batch``
    for the leading one and 8 elsewhere)."""
    rng = np.random.default_rng(seed)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        tt = inp.type.tensor_type
        dims = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                dims.append(d.dim_value)
            else:
                dims.append(batch if k == 0 else 8)
        if input_shapes and inp.name in input_shapes:
            dims = list(input_shapes[inp.name])
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, ValueError, TypeError):
            raise BadArgumentError(f"input '{inp.name}': element type "
                                   f"{onnx.TensorProto.DataType.Name(tt.elem_type)} cannot be synthesized") from None
        if dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, dims).astype(bool)
        elif dtype.kind in "iu":
            feeds[inp.name] = rng.integers(0, 4, dims).astype(dtype)
        else:  # float16/32/64 and the ml_dtypes floats (bfloat16, float8...)
            feeds[inp.name] = rng.standard_normal(dims).astype(np.float32).astype(dtype)
    return feeds
