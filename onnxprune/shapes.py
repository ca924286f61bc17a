"""Shapes: best-effort inference that tolerates dynamic dims and unknown ops, on a
weightless skeleton of the model."""

from __future__ import annotations

import math

import onnx

from .errors import BadArgumentError
from .weights import WeightStore


SKELETON_MAX_ELEMENTS = 4096


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the large weights (declared as typed graph inputs instead), for
    shape inference: the same shapes at a fraction of the copying and serializing."""
    m = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                        producer_version=model.producer_version, domain=model.domain,
                        model_version=model.model_version)
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    g, src = m.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    declared = {i.name for i in src.input}
    for t in src.initializer:
        if not _left_out(t):
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


PROTOBUF_LIMIT = 2**31  # a serialized model must stay below 2 GB


def too_big_to_serialize(model: onnx.ModelProto) -> bool:
    """Past the protobuf limit: write with external data, give runtimes a path."""
    return approx_size(model) >= PROTOBUF_LIMIT


LARGE_MODEL_BYTES = 1 << 29


def run_from_disk(model: onnx.ModelProto) -> bool:
    """Large enough (512 MiB, or past the protobuf limit) that a runtime should read it
    from a file with external data, which it maps, rather than from serialized bytes:
    those bytes and the runtime's copy of them would hold the weights twice more."""
    return approx_size(model) >= min(LARGE_MODEL_BYTES, PROTOBUF_LIMIT)


def _left_out(t: onnx.TensorProto) -> bool:
    """Whether :func:`skeleton` leaves this initializer out."""
    return math.prod(t.dims) > SKELETON_MAX_ELEMENTS and t.data_type in _FLOATS


def _payload_bytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's values from its dims (reading ``raw_data`` would copy it)."""
    try:
        return math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return t.ByteSize()


def approx_size(model: onnx.ModelProto) -> int:
    """Serialized size, cheaply: the skeleton's size plus the payloads it leaves out
    (within a few bytes per large tensor of the real size)."""
    weights = sum(_payload_bytes(t) for t in model.graph.initializer if _left_out(t))
    return weights + skeleton(model).ByteSize()


def infer_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Best-effort shapes of every tensor: name -> list of dims (int, str symbol or None).

    Tolerates dynamic dims and ops onnx cannot infer (their outputs are simply absent).
    """
    shapes: dict[str, list] = {}
    full = model
    model = skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort; missing shapes block what needs them
        inferred = model
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = []
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param") and not d.dim_param.startswith("unk__"):
                    dims.append(d.dim_param)
                else:
                    dims.append(None)
            shapes[vi.name] = dims
    if any(d is None for v in shapes.values() for d in v) or any(o not in shapes for o in _all_outputs(model)):
        _fill_from_symbolic(model, shapes)
    for t in full.graph.initializer:
        shapes[t.name] = list(t.dims)
    store = WeightStore(full.graph)
    for name in store.names():
        shapes.setdefault(name, list(store.shape(name)))
    return shapes


def _all_outputs(model: onnx.ModelProto) -> list[str]:
    return [o for n in model.graph.node for o in n.output if o]


def _fill_from_symbolic(model: onnx.ModelProto, shapes: dict) -> None:
    """Fill dims onnx could not infer with onnxruntime's symbolic shape inference, which
    evaluates shape arithmetic (Shape→Gather→Div→Slice) that onnx's data propagation
    leaves open. Best effort: it may not know every op."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except Exception:  # optional: older runtimes lack it
        return
    try:
        import contextlib
        import io

        # The same steps as SymbolicShapeInference.infer_shapes, which on incomplete
        # inference also saves a temporary model into the current directory; partial
        # results are all we need here.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ssi = SymbolicShapeInference(2**31 - 1, True, False, 0)
            ssi._preprocess(model)
            while ssi.run_:
                ssi._infer_impl()
            ssi._update_output_from_vi()
            out = ssi.out_mp_
    except Exception:
        return
    if out is None:
        return
    for vi in list(out.graph.value_info) + list(out.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = [int(d.dim_value) if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        have = shapes.get(vi.name)
        if have is None:
            shapes[vi.name] = [d if d is not None else None for d in dims]
        elif len(have) == len(dims):
            shapes[vi.name] = [h if h is not None else d for h, d in zip(have, dims)]


def with_input_shapes(model: onnx.ModelProto, overrides: dict[str, list[int]] | None) -> onnx.ModelProto:
    """A weightless copy (see :func:`skeleton`) whose graph inputs have concrete dims:
    overrides, else 1 for a dynamic leading dim. For shape inference only."""
    m = skeleton(model)
    init_names = {t.name for t in model.graph.initializer}
    known = {i.name for i in m.graph.input if i.name not in init_names}
    for name in overrides or {}:
        if name not in known:
            raise BadArgumentError(f"--input-shape names '{name}', which is not a model input (inputs: {', '.join(sorted(known))})")
    for inp in m.graph.input:
        if inp.name in init_names or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        if overrides and inp.name in overrides:
            want = overrides[inp.name]
            if len(want) != len(dims):
                raise BadArgumentError(f"--input-shape {inp.name}: model input has rank {len(dims)}, got {len(want)} dims")
            for d, v in zip(dims, want):
                if d.HasField("dim_value") and d.dim_value != v:
                    raise BadArgumentError(f"--input-shape {inp.name}: dim {d.dim_value} is fixed by the model, got {v}")
                d.Clear()
                d.dim_value = int(v)
        elif len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    for out in m.graph.output:  # recomputed from the concrete inputs
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    return m


def parse_input_shapes(specs) -> dict[str, list[int]]:
    """Parse ``name=1x3x224x224`` strings."""
    out: dict[str, list[int]] = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition("=")
        if not sep or not name:
            raise BadArgumentError(f"--input-shape '{spec}': expected NAME=D1xD2x..., e.g. input=1x3x224x224")
        try:
            out[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise BadArgumentError(f"--input-shape '{spec}': dims must be integers separated by 'x'") from None
        if any(d <= 0 for d in out[name]):
            raise BadArgumentError(f"--input-shape '{spec}': dims must be positive")
    return out


