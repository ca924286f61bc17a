#!/usr/bin/env python
"""Build the ONNX Runtime-fused transformer fixtures in models/transformers/ from bert_tiny.onnx.

ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``, no torch)
rewrites the TorchScript BERT fixture into its fused ``com.microsoft`` contrib ops:

* ``bert_tiny_fused.onnx``: ``Attention`` (one QKV weight, ``num_heads``),
  ``BiasGelu``, ``SkipLayerNormalization``, ``EmbedLayerNormalization``;
* ``bert_tiny_fused_mha.onnx``: ``MultiHeadAttention`` (separate Q/K/V MatMuls, one
  packed QKV bias), ``FastGelu`` (GELU approximation), ``SkipLayerNormalization``.

Before fusing, every 1-D float constant (biases, LayerNorm scales and shifts; the
exporter shares the all-zero and all-one ones between layers) is replaced by a seeded
random one read by a single node, so that slicing them wrongly would show in the oracle.
Each file is checked with ``onnx.checker`` (full) and onnxruntime against the unfused
model with the same weights (max abs diff < 1e-4 exact fusions; < 2e-2 with FastGelu,
which approximates GELU by tanh)::

    python scripts/build_fused_fixtures.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models" / "transformers" / "bert_tiny.onnx"


def randomized(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy whose 1-D float initializers are untied per reader and drawn at random
    (scales around 1, shifts and biases around 0)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    new = []
    for node in m.graph.node:
        for i, name in enumerate(node.input):
            value = inits.get(name)
            if value is None or value.dtype.kind != "f" or value.ndim != 1 or value.size < 2:
                continue
            base = 1.0 if np.all(value == 1) else 0.0
            fresh = (base + 0.2 * rng.standard_normal(value.shape)).astype(value.dtype)
            copy_name = f"{name}.{node.name.strip('/').replace('/', '.')}"
            new.append(numpy_helper.from_array(fresh, copy_name))
            node.input[i] = copy_name
    m.graph.initializer.extend(new)
    used = {n for node in m.graph.node for n in node.input}
    keep = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    return m


def fuse(model: onnx.ModelProto, mha: bool) -> onnx.ModelProto:
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    opts = FusionOptions("bert")
    opts.enable_gelu_approximation = mha  # BiasGelu -> FastGelu
    opts.use_multi_head_attention = mha
    opts.enable_embed_layer_norm = not mha
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.onnx"
        onnx.save(model, str(path))
        opt = optimizer.optimize_model(str(path), model_type="bert", num_heads=4, hidden_size=32, opt_level=0,
                                       optimization_options=opts)
    out = opt.model
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    out.graph.name = "bert_tiny_fused_mha" if mha else "bert_tiny_fused"
    return out


def max_diff(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    feeds = {"input_ids": rng.integers(0, 100, (2, 8)).astype(np.int64)}
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
           for m in (a, b)]
    return float(np.abs(run[0] - run[1]).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(SOURCE.parent))
    a = ap.parse_args()
    logging.disable(logging.WARNING)  # the optimizer logs every fusion it tries
    plain = randomized(onnx.load(str(SOURCE)))
    for mha, name, tol in ((False, "bert_tiny_fused", 1e-4), (True, "bert_tiny_fused_mha", 2e-2)):
        fused = fuse(plain, mha)
        onnx.checker.check_model(fused, full_check=True)
        diff = max_diff(plain, fused)
        assert diff < tol, f"{name}: fused vs unfused max abs diff {diff}"
        path = Path(a.out) / f"{name}.onnx"
        onnx.save(fused, str(path))
        ops = Counter(n.op_type for n in fused.graph.node if n.domain == "com.microsoft")
        print(f"[ok] {path.name:26s} {path.stat().st_size / 1e3:6.1f} KB  max abs diff vs unfused {diff:.1e}  "
              f"{dict(sorted(ops.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
