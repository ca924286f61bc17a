#!/usr/bin/env python
"""Build the tiny transformer fixtures in models/transformers/ (random init, no download).

Needs torch + transformers (a build-time venv, never a package dependency)::

    HF_HUB_OFFLINE=1 /work/venv-unseen/bin/python scripts/build_transformer_fixtures.py

Each architecture is built from a Hugging Face ``transformers`` config (hidden 32, 2 layers,
4 heads, vocab 100, eager attention) and exported with the TorchScript exporter (opset 17,
``dynamo=False``) and, where it works, the torch.export-based one (opset 18). One input
``input_ids`` (int64, dynamic ``batch`` and ``seq``), one output ``last_hidden_state``.
Architectures: BERT, DistilBERT, GPT-2, Llama (GQA), ViT (input ``pixel_values``, float
3 x 32 x 32, patch 8, dynamic ``batch`` only; hidden 32, intermediate 64).
No attention mask input: the oracle feeds random integers, and a mask of 2s or 3s would
overflow HF's additive mask. The torch output is saved beside each export; then check
every file with ``onnx.checker`` (full) and an onnxruntime run against torch (max abs
diff < 1e-4) from a Python that has onnxruntime::

    python scripts/build_transformer_fixtures.py --verify
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 100


def Wrap(m, **extra):
    """``m`` called with an in-graph all-ones attention mask and ``extra`` keyword arguments
    (``use_cache=False`` for decoders; encoders like DistilBERT take no ``use_cache``)."""
    import torch
    from torch import nn

    class _Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            # an all-ones mask built in the graph: without one, recent transformers look for
            # packed sequences with torch.diff, which the TorchScript exporter cannot export
            mask = torch.ones_like(input_ids)
            return self.m(input_ids=input_ids, attention_mask=mask, return_dict=False, **extra)[0]

    return _Wrap(m)


def _eager(cfg):
    cfg._attn_implementation = "eager"
    return cfg


def bert():
    from transformers import BertConfig, BertModel

    cfg = _eager(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64))
    return Wrap(BertModel(cfg, add_pooling_layer=False), use_cache=False)


def gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = _eager(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=64))
    return Wrap(GPT2Model(cfg), use_cache=False)


def llama():
    from transformers import LlamaConfig, LlamaModel

    cfg = _eager(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                             head_dim=8))
    return Wrap(LlamaModel(cfg), use_cache=False)


def distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    cfg = _eager(DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=64))
    return Wrap(DistilBertModel(cfg))


def vit():
    from torch import nn
    from transformers import ViTConfig, ViTModel

    cfg = _eager(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           image_size=IMAGE, patch_size=8, num_channels=3))

    class _Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values, return_dict=False)[0]

    return _Wrap(ViTModel(cfg, add_pooling_layer=False))


IMAGE = 32
ARCHS = {"bert_tiny": bert, "gpt2_tiny": gpt2, "llama_tiny": llama, "distilbert_tiny": distilbert,
         "vit_tiny": vit}
# image models: input ``pixel_values`` (float, 3 x IMAGE x IMAGE), dynamic batch only
IMAGE_ARCHS = {"vit_tiny"}


def verify(path: Path) -> float:
    """Full onnx check and max abs diff of an onnxruntime run vs the torch output saved
    beside the export (``<file>.ref.npz``, removed once verified)."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ref_path = path.with_suffix(".ref.npz")
    ref = np.load(ref_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: ref["input"]})[0]
    diff = float(np.abs(got - ref["output"]).max())
    assert diff < 1e-4, f"{path.name}: ORT vs torch max abs diff {diff}"
    ref_path.unlink()
    return diff


def export(name: str, builder, exporter: str, out: Path) -> Path:
    import torch

    torch.manual_seed(0)
    model = builder().eval()
    image = name in IMAGE_ARCHS
    if image:
        inp, ids = "pixel_values", torch.randn(2, 3, IMAGE, IMAGE)
        axes = {inp: {0: "batch"}, "last_hidden_state": {0: "batch"}}
    else:
        inp, ids = "input_ids", torch.randint(0, VOCAB, (2, 8), dtype=torch.long)
        axes = {inp: {0: "batch", 1: "seq"}, "last_hidden_state": {0: "batch", 1: "seq"}}
    path = out / (f"{name}.onnx" if exporter == "ts" else f"{name}_dynamo.onnx")
    with torch.no_grad():
        if exporter == "ts":
            torch.onnx.export(model, (ids,), str(path), opset_version=17, input_names=[inp],
                              output_names=["last_hidden_state"], dynamo=False, do_constant_folding=True,
                              dynamic_axes=axes)
        else:
            batch = torch.export.Dim("batch", min=1, max=64)
            seq = torch.export.Dim("seq", min=2, max=64)
            dims = {0: batch} if image else {0: batch, 1: seq}
            prog = torch.onnx.export(model, (ids,), None, opset_version=18, input_names=[inp],
                                     output_names=["last_hidden_state"],
                                     dynamic_shapes={inp: dims}, dynamo=True,
                                     external_data=False)
            prog.optimize()
            prog.save(str(path), external_data=False)
        ref = model(ids).numpy()
    np.savez(path.with_suffix(".ref.npz"), input=ids.numpy(), output=ref)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "models" / "transformers"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--verify", action="store_true", help="check the exports in --out with onnxruntime "
                    "(run with a Python that has onnxruntime; torch not needed)")
    a = ap.parse_args()
    out = Path(a.out)
    if a.verify:
        for ref in sorted(out.glob("*.ref.npz")):
            path = ref.with_name(ref.name[: -len(".ref.npz")] + ".onnx")
            print(f"[verified] {path.name:28s} max abs diff {verify(path):.2e}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, builder in ARCHS.items():
        if a.only and name not in a.only:
            continue
        for exporter in ("ts", "dynamo"):
            try:
                p = export(name, builder, exporter, out)
                print(f"[ok]   {p.name:28s} {p.stat().st_size / 1e3:7.1f} KB")
            except Exception as e:  # noqa: BLE001
                print(f"[skip] {name} {exporter}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
