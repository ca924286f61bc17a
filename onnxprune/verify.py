"""Prove a pruned model before it is written: same graph inputs/outputs (names, dtypes,
rank, dynamic dims), onnx.checker with strict shape inference, and one ONNX Runtime run
whose output shapes match the original's declared output dims."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx

from .errors import VerificationError
from .model import one_line, write_external
from .shapes import run_from_disk, skeleton
from .runtime import max_ir_version, needs_lowering, random_inputs, runnable_bytes, session


def _io(vi):
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return vi.name, tt.elem_type, dims


def io_signature(model: onnx.ModelProto) -> dict:
    """Names, element types and dims of a model's real inputs and its outputs."""
    init = {t.name for t in model.graph.initializer}
    return {"inputs": [_io(i) for i in model.graph.input if i.name not in init],
            "outputs": [_io(o) for o in model.graph.output]}


def verify_model(expected_io: dict, pruned: onnx.ModelProto, input_shapes=None, run: bool = True) -> bytes | None:
    """Raise VerificationError if ``pruned`` is not a sound replacement for the model whose
    :func:`io_signature` is ``expected_io``.

    Returns the serialized pruned model when it was serialized unchanged for the runtime
    (callers can write those bytes instead of serializing again). Large models (see
    :func:`~onnxprune.shapes.run_from_disk`) are run from a temporary file with external
    data instead, and None is returned."""
    if io_signature(pruned) != expected_io:
        raise VerificationError("pruned model's graph inputs/outputs differ from the original's (a bug)")
    try:
        # structure and strict shape inference; the weights themselves are checked by the
        # runtime below, so the large ones need not be serialized twice
        onnx.checker.check_model(skeleton(pruned), full_check=True)
    except Exception as exc:  # checker and shape inference raise several types
        raise VerificationError(f"pruned model fails onnx.checker (a bug): {one_line(exc)}") from None
    if not run or not _runnable(pruned):
        return None
    big = run_from_disk(pruned)
    data = None if big else runnable_bytes(pruned)
    try:
        feeds = random_inputs(pruned, input_shapes)
        if big:  # large: the runtime maps it from disk, weights beside it (never serialized whole)
            with tempfile.TemporaryDirectory(prefix="onnxprune-verify-") as tmp:
                path = Path(tmp) / "model.onnx"
                write_external(pruned, path, "model.onnx.data",
                               ir_version=max_ir_version() if needs_lowering(pruned) else None)
                sess = session(str(path), full_optimization=False)
                outs = sess.run(None, feeds)
                del sess  # the runtime's mapping of the weights goes with it
        else:
            outs = session(data, full_optimization=False).run(None, feeds)
    except Exception as exc:
        if type(exc).__name__ == "NotImplemented" or "NOT_IMPLEMENTED" in str(exc):
            # this runtime has no kernel for some op/dtype (bf16 convs on CPU...): the
            # structure was proven above; say so rather than refuse a sound model
            warnings.warn(f"not run in ONNX Runtime (no kernel here): {str(exc).splitlines()[0][:200]}",
                          RuntimeWarning, stacklevel=2)
            return None if data is None or needs_lowering(pruned) else data
        raise VerificationError(f"pruned model does not run in ONNX Runtime: {one_line(exc, 240)} (if the original "
                                "does not run in this runtime either, pass --no-verify)") from None
    for (name, _, dims), value in zip(expected_io["outputs"], outs):
        want = [d if isinstance(d, int) and d > 0 else None for d in dims]
        if len(want) and (len(want) != value.ndim or any(w is not None and w != v for w, v in zip(want, value.shape))):
            raise VerificationError(f"output '{name}' has shape {value.shape}, the model declares {want} (a bug)")
    return None if data is None or needs_lowering(pruned) else data


def _runnable(model: onnx.ModelProto) -> bool:
    """Only default-domain (and ORT's com.microsoft) models can be run here."""
    domains = {n.domain for n in model.graph.node}
    return domains <= {"", "ai.onnx", "com.microsoft"}
