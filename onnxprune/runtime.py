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
            full_optimization: bool = True, mem_pattern: bool = True, spinning: bool = True):
    """An inference session; ``full_optimization=False`` keeps to basic graph rewrites,
    which load several times faster (for one-off runs such as verification).
    ``mem_pattern=False`` serves every run from the memory arena instead of planning one
    block per input shape after the first run: that block is fresh memory, so the second
    run page-faults its whole size again (measured on MobileNetV2's gradient graph: the
    second run as slow as the first); for sessions that run a few batches.
    ``spinning=False``: idle intra-op threads sleep instead of spinning, which costs a
    wake-up per parallel op but no CPU stolen from the working threads when the cores are
    shared (measured on a loaded 2-core machine: the gradient pass 25% faster)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not mem_pattern:
        so.enable_mem_pattern = False
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
    bounds = integer_bounds(model)
    for name, (dtype, declared) in model_inputs(model).items():
        dims = [d if d is not None else (batch if k == 0 else 8) for k, d in enumerate(declared)]
        if input_shapes and name in input_shapes:
            dims = list(input_shapes[name])
        if dtype is None:
            raise BadArgumentError(f"input '{name}': element type {declared_type(model, name)} cannot be synthesized")
        if dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, dims).astype(bool)
        elif dtype.kind in "iu":
            feeds[name] = rng.integers(0, bounds.get(name, 4), dims).astype(dtype)
        else:  # float16/32/64 and the ml_dtypes floats (bfloat16, float8...)
            feeds[name] = rng.standard_normal(dims).astype(np.float32).astype(dtype)
    return feeds


_PASS_INDEX = {"Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten"}
_EMBED_TABLES = {0: 2, 1: 4, 8: 3}  # EmbedLayerNormalization: index input -> its table input


def integer_bounds(model: onnx.ModelProto, default: int = 4) -> dict:
    """Exclusive upper bound for synthesized values of each integer graph input: ``default``,
    lowered to the row count of any constant table a Gather (or ONNX Runtime's fused
    EmbedLayerNormalization) indexes with it (token-type embeddings have 2 rows), and to 2
    for inputs named like an attention mask (Hugging Face turns a mask value of 2 or 3 into
    an overflowing additive bias)."""
    g = model.graph
    tables = {t.name: list(t.dims) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            tables[n.output[0]] = list(n.attribute[0].t.dims)
    readers: dict[str, list] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            readers.setdefault(name, []).append((n, i))
    bounds = {}
    for vi in g.input:
        if vi.name in tables:
            continue
        high = 2 if "mask" in vi.name.lower() else default
        todo, seen = [vi.name], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, slot in readers.get(name, []):
                if node.op_type in _PASS_INDEX and slot == 0:
                    todo.extend(node.output)
                elif node.op_type == "Gather" and slot == 1 and node.input[0] in tables:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = tables[node.input[0]]
                    if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                        high = min(high, dims[axis])
                elif node.op_type == "EmbedLayerNormalization" and slot in _EMBED_TABLES:
                    # ONNX Runtime's fused embeddings: ids -> word, segment ids -> segment table
                    table = node.input[_EMBED_TABLES[slot]] if len(node.input) > _EMBED_TABLES[slot] else ""
                    if tables.get(table):
                        high = min(high, tables[table][0])
        bounds[vi.name] = max(1, high)
    return bounds
