"""Loading, checking, weight access and atomic saving of ONNX models.

Weights live either in ``graph.initializer`` or in ``Constant`` nodes (PaddlePaddle keeps
every weight there); :class:`WeightStore` gives both one interface. Exporters share one
initializer between unrelated layers; :func:`untie_shared_constants` gives every use its
own copy so each can be sliced independently, and :func:`retie_constants` merges copies
that are still identical when saving.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import InputError, InvalidModelError, OutputError, UnsupportedModelError

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()
UNTIED_SUFFIX = "__onnxprune_use"
TWO_GB = 2**31

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_model(source: ModelSource, *, check: bool = True) -> onnx.ModelProto:
    """Load a model from a path, serialized bytes or a ModelProto (which is copied).

    External data next to a path is loaded too. Raises one-line errors for anything that
    is not a usable ONNX model.
    """
    if isinstance(source, onnx.ModelProto):
        model = copy.deepcopy(source)
    elif isinstance(source, (bytes, bytearray)):
        model = _parse(bytes(source), "<bytes>")
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected an .onnx file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        model = _parse(data, str(path))
        if _has_external_data(model):
            try:
                onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot load external data ({exc})") from None
    if check:
        check_model(model)
    return model


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    if not data:
        raise InvalidModelError(f"{name}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError or RuntimeWarning subclasses
        raise InvalidModelError(f"{name}: not an ONNX model (protobuf parse failed; truncated or corrupt file?)") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InvalidModelError(f"{name}: parses as protobuf but holds no ONNX graph")
    return model


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.external_data_helper._get_all_tensors(model)
    )


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def check_model(model: onnx.ModelProto) -> None:
    """Validate opset range and run onnx.checker (structure, not custom-op schemas)."""
    opset = default_opset(model)
    if opset < MIN_OPSET or opset > MAX_OPSET:
        raise UnsupportedModelError(
            f"model uses opset {opset}; onnxprune supports opsets {MIN_OPSET} to {MAX_OPSET}"
        )
    try:
        if approx_size(model) < TWO_GB:
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InvalidModelError(f"model fails onnx.checker: {first}") from None


# --------------------------------------------------------------------------- weights


class WeightStore:
    """Uniform read/write access to constant tensors: initializers and Constant outputs."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self._init = {t.name: t for t in graph.initializer}
        self._const_nodes = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
                attr = _constant_value_attr(node)
                if attr is not None:
                    self._const_nodes[node.output[0]] = (node, attr)
        self._cache: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._init or name in self._const_nodes

    def names(self):
        return list(self._init) + list(self._const_nodes)

    def is_initializer(self, name: str) -> bool:
        return name in self._init

    def get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name in self._init:
                self._cache[name] = numpy_helper.to_array(self._init[name])
            else:
                node, attr = self._const_nodes[name]
                self._cache[name] = _constant_array(attr)
        return self._cache[name]

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._init:
            return tuple(self._init[name].dims)
        node, attr = self._const_nodes[name]
        if attr.type == onnx.AttributeProto.TENSOR:
            return tuple(attr.t.dims)
        return tuple(self.get(name).shape)

    def set(self, name: str, value: np.ndarray) -> None:
        """Replace a constant's value, keeping its dtype and its location."""
        if name in self._init:
            old = self._init[name]
            new = numpy_helper.from_array(np.ascontiguousarray(value).astype(_np_dtype(old.data_type), copy=False), name)
            if old.data_type != new.data_type:  # bfloat16 and friends round-trip through their raw type
                new = _from_array_typed(value, old.data_type, name)
            old.CopyFrom(new)
        else:
            node, attr = self._const_nodes[name]
            if attr.type != onnx.AttributeProto.TENSOR:
                raise UnsupportedModelError(f"Constant node {node.name or name}: cannot rewrite a non-tensor value")
            attr.t.CopyFrom(_from_array_typed(value, attr.t.data_type, attr.t.name))
        self._cache[name] = np.asarray(value)


def _constant_value_attr(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            return attr
    return None


def _constant_array(attr: onnx.AttributeProto) -> np.ndarray:
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.name == "value_float":
        return np.array(attr.f, dtype=np.float32)
    if attr.name == "value_floats":
        return np.array(list(attr.floats), dtype=np.float32)
    if attr.name == "value_int":
        return np.array(attr.i, dtype=np.int64)
    return np.array(list(attr.ints), dtype=np.int64)


def _np_dtype(onnx_type: int):
    return onnx.helper.tensor_dtype_to_np_dtype(onnx_type)


def _from_array_typed(value: np.ndarray, onnx_type: int, name: str) -> onnx.TensorProto:
    arr = np.ascontiguousarray(np.asarray(value).astype(_np_dtype(onnx_type), copy=False))
    tensor = numpy_helper.from_array(arr, name)
    if tensor.data_type != onnx_type:
        tensor = onnx.helper.make_tensor(name, onnx_type, arr.shape, arr.tobytes(), raw=True)
    return tensor


# ------------------------------------------------------------------- untie / retie


def subgraph_references(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    refs: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            refs |= _free_names(g)
    return refs


def _free_names(graph: onnx.GraphProto) -> set[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        used |= subgraph_references(node)
        defined.update(node.output)
    used.update(o.name for o in graph.output)
    return used - defined


def untie_shared_constants(model: onnx.ModelProto) -> dict[str, str]:
    """Give every (node, input slot) use of a constant its own copy, in place.

    Returns {copy_name: original_name}. Uses from subgraphs and graph outputs keep the
    original name (those are never sliced).
    """
    graph = model.graph
    store = WeightStore(graph)
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    pinned: set[str] = {o.name for o in graph.output}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name and name in store:
                uses.setdefault(name, []).append((node, slot))
        pinned |= subgraph_references(node)
    copies: dict[str, str] = {}
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    const_positions = {n.output[0]: i for i, n in enumerate(graph.node) if n.op_type == "Constant" and n.output}
    inserts: list[tuple[int, onnx.NodeProto]] = []
    for name, slots in uses.items():
        n_private = len(slots) - (0 if name in pinned else 1)
        if n_private <= 0:
            continue
        for k, (node, slot) in enumerate(slots[len(slots) - n_private :], start=1):
            new = f"{name}{UNTIED_SUFFIX}{k}"
            while new in taken:
                new += "_"
            taken.add(new)
            if store.is_initializer(name):
                tensor = onnx.TensorProto()
                tensor.CopyFrom(store._init[name])
                tensor.name = new
                graph.initializer.append(tensor)
            else:
                src, _ = store._const_nodes[name]
                clone = onnx.NodeProto()
                clone.CopyFrom(src)
                clone.name = (src.name or "Constant") + f"{UNTIED_SUFFIX}{k}"
                del clone.output[:]
                clone.output.append(new)
                inserts.append((const_positions[name], clone))
            node.input[slot] = new
            copies[new] = name
    for pos, clone in sorted(inserts, key=lambda x: -x[0]):
        graph.node.insert(pos + 1, clone)
    return copies


def retie_constants(model: onnx.ModelProto, copies: dict[str, str]) -> None:
    """Merge untied initializer copies that are still byte-identical to a sibling, in place."""
    graph = model.graph
    by_name = {t.name: t for t in graph.initializer}
    families: dict[str, list[str]] = {}
    for new, orig in copies.items():
        if new in by_name:
            families.setdefault(orig, []).append(new)
    rename: dict[str, str] = {}
    for orig, members in families.items():
        names = ([orig] if orig in by_name else []) + members
        seen: dict[bytes, str] = {}
        for name in names:
            t = by_name[name]
            key = bytes([t.data_type]) + repr(list(t.dims)).encode() + _tensor_payload(t)
            if key in seen:
                rename[name] = seen[key]
            else:
                seen[key] = name
    if not rename:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    keep = [t for t in graph.initializer if t.name not in rename]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _tensor_payload(t: onnx.TensorProto) -> bytes:
    return numpy_helper.to_array(t).tobytes()


def remove_unused(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads and initializers nobody uses, in place."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep_nodes = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            keep_nodes.append(node)
            needed.update(n for n in node.input if n)
            needed |= subgraph_references(node)
    keep_nodes.reverse()
    if len(keep_nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep_nodes)
    inits = [t for t in graph.initializer if t.name in needed]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)


# ------------------------------------------------------------------ shape inference


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
        if math.prod(t.dims) <= SKELETON_MAX_ELEMENTS or t.data_type not in _FLOATS:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def approx_size(model: onnx.ModelProto) -> int:
    """Serialized size, cheaply: weight payloads plus the rest (for the 2 GB limit)."""
    weights = sum(len(t.raw_data) or 4 * math.prod(t.dims) for t in model.graph.initializer)
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
    if any(d is None for v in shapes.values() for d in v) or len(shapes) < len(_all_outputs(model)):
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
            raise InputError(f"--input-shape names '{name}', which is not a model input (inputs: {', '.join(sorted(known))})")
    for inp in m.graph.input:
        if inp.name in init_names or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        if overrides and inp.name in overrides:
            want = overrides[inp.name]
            if len(want) != len(dims):
                raise InputError(f"--input-shape {inp.name}: model input has rank {len(dims)}, got {len(want)} dims")
            for d, v in zip(dims, want):
                if d.HasField("dim_value") and d.dim_value != v:
                    raise InputError(f"--input-shape {inp.name}: dim {d.dim_value} is fixed by the model, got {v}")
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
            raise InputError(f"--input-shape '{spec}': expected NAME=D1xD2x..., e.g. input=1x3x224x224")
        try:
            out[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise InputError(f"--input-shape '{spec}': dims must be integers separated by 'x'") from None
        if any(d <= 0 for d in out[name]):
            raise InputError(f"--input-shape '{spec}': dims must be positive")
    return out


# ------------------------------------------------------------------------- saving


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None,
               serialized: bytes | None = None) -> None:
    """Write atomically: a temporary file in the target folder, then rename.

    Models past the 2 GB protobuf limit (or when asked) get their weights in
    ``<name>.data`` beside them, also moved into place only when complete.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: output folder {folder} is not writable")
    if external_data is None:
        external_data = (len(serialized) if serialized is not None else approx_size(model)) >= TWO_GB
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".onnxprune-") as tmp:
            tmp_model = Path(tmp) / path.name
            if external_data:
                data_name = path.name + ".data"
                m = copy.deepcopy(model)
                onnx.save_model(m, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_name, size_threshold=1024)
                os.replace(Path(tmp) / data_name, folder / data_name)
            else:
                with open(tmp_model, "wb") as f:
                    f.write(serialized if serialized is not None else model.SerializeToString())
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp_model, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".onnxprune-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except Exception:
            pass
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
