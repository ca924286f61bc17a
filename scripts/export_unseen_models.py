#!/usr/bin/env python
"""Export "unseen" real architectures (not in models/) to ONNX for robustness checks.

Not run by CI. Run with a separate venv that has torch (CPU), torchvision, timm,
transformers, onnx and onnxscript, e.g.::

    python -m venv /work/venv-unseen
    /work/venv-unseen/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/venv-unseen/bin/pip install timm transformers onnx onnxscript
    HF_HUB_OFFLINE=1 /work/venv-unseen/bin/python scripts/export_unseen_models.py

All models are random-init (``weights=None`` / ``pretrained=False`` / transformers
from a config object): nothing is downloaded. Batch is dynamic everywhere;
transformer inputs have dynamic batch and sequence.

Output (not committed): ``/work/unseen/<name>.onnx`` plus ``/work/unseen/manifest.json``
recording exporter, opset, input shapes, size, and the reason for any skip.

Usage::

    python scripts/export_unseen_models.py [--out DIR] [--only NAME ...] [--max-mb 120]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------------------
# model constructors: name -> (builder, input shape (batch 1), exporter)
#   exporter "ts" = TorchScript opset 17, "dynamo" = torch.export opset 18
# --------------------------------------------------------------------------------------


def tv(name, **kw):
    def build():
        import torchvision.models as M

        return getattr(M, name)(weights=None, **kw)

    return build


def tv_seg(name, **kw):
    def build():
        import torchvision.models.segmentation as S

        m = getattr(S, name)(weights=None, weights_backbone=None, **kw)
        return _SegOut(m)

    return build


class _SegOut(nn.Module):
    """torchvision segmentation models return a dict; export only 'out'."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


def timm_(name, **kw):
    def build():
        import timm

        return timm.create_model(name, pretrained=False, **kw)

    return build


class _HFWrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


def hf_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
    )
    cfg._attn_implementation = "eager"
    return _HFWrap(BertModel(cfg, add_pooling_layer=False))


def hf_gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    cfg._attn_implementation = "eager"
    return _HFWrap(GPT2Model(cfg))


IMG64 = (1, 3, 64, 64)
IMG96 = (1, 3, 96, 96)
TOK = "tokens"

MODELS: dict[str, tuple] = {
    # torchvision, TorchScript opset 17
    "tv_resnet18": (tv("resnet18"), IMG64, "ts"),
    "tv_resnet50": (tv("resnet50"), IMG64, "ts"),
    "tv_wide_resnet50_2": (tv("wide_resnet50_2"), IMG64, "ts"),
    "tv_mobilenet_v3_small": (tv("mobilenet_v3_small"), IMG64, "ts"),
    "tv_efficientnet_b0": (tv("efficientnet_b0"), IMG64, "ts"),
    "tv_regnet_y_400mf": (tv("regnet_y_400mf"), IMG64, "ts"),
    "tv_shufflenet_v2_x0_5": (tv("shufflenet_v2_x0_5"), IMG64, "ts"),
    "tv_squeezenet1_1": (tv("squeezenet1_1"), IMG96, "ts"),
    "tv_mnasnet0_5": (tv("mnasnet0_5"), IMG64, "ts"),
    "tv_densenet121": (tv("densenet121"), IMG64, "ts"),
    "tv_googlenet": (tv("googlenet", aux_logits=False, init_weights=True), IMG96, "ts"),
    "tv_convnext_tiny": (tv("convnext_tiny"), IMG64, "ts"),
    "tv_vgg11_bn": (tv("vgg11_bn"), IMG64, "ts"),  # fails at 64x64 (adaptive pool); ~530 MB anyway
    "tv_deeplabv3_mobilenet_v3_large": (tv_seg("deeplabv3_mobilenet_v3_large", aux_loss=False), IMG96, "ts"),
    # torchvision, torch.export opset 18
    "tv_resnet50_dynamo": (tv("resnet50"), IMG64, "dynamo"),
    "tv_mobilenet_v3_small_dynamo": (tv("mobilenet_v3_small"), IMG64, "dynamo"),
    "tv_shufflenet_v2_x0_5_dynamo": (tv("shufflenet_v2_x0_5"), IMG64, "dynamo"),
    "tv_fcn_resnet50_dynamo": (tv_seg("fcn_resnet50", aux_loss=False), IMG64, "dynamo"),  # >120 MB: skipped
    "tv_lraspp_mobilenet_v3_large_dynamo": (tv_seg("lraspp_mobilenet_v3_large"), IMG96, "dynamo"),
    # timm, TorchScript opset 17
    "timm_ghostnet_100": (timm_("ghostnet_100"), IMG64, "ts"),
    "timm_repvgg_a0": (timm_("repvgg_a0"), IMG64, "ts"),
    "timm_cspresnet50": (timm_("cspresnet50"), IMG64, "ts"),
    "timm_mixnet_s": (timm_("mixnet_s"), IMG64, "ts"),
    "timm_rexnet_100": (timm_("rexnet_100"), IMG64, "ts"),
    "timm_hrnet_w18_small": (timm_("hrnet_w18_small"), IMG64, "ts"),
    "timm_vit_tiny_patch16_224": (timm_("vit_tiny_patch16_224", img_size=64), IMG64, "ts"),
    "timm_mixer_b16_224": (timm_("mixer_b16_224", img_size=64), IMG64, "ts"),
    "timm_mixer_s16_224": (timm_("mixer_s16_224", img_size=64), IMG64, "ts"),
    "timm_levit_128s": (timm_("levit_128s", img_size=64), IMG64, "ts"),
    "timm_efficientvit_b0": (timm_("efficientvit_b0"), IMG64, "ts"),
    "timm_dla34": (timm_("dla34"), IMG64, "ts"),
    # timm, torch.export opset 18
    "timm_ghostnet_100_dynamo": (timm_("ghostnet_100"), IMG64, "dynamo"),
    "timm_vit_tiny_patch16_224_dynamo": (timm_("vit_tiny_patch16_224", img_size=64), IMG64, "dynamo"),
    # transformers (tiny configs), TorchScript opset 17 and torch.export opset 18
    "hf_bert_tiny": (hf_bert, TOK, "ts"),
    "hf_gpt2_tiny": (hf_gpt2, TOK, "ts"),
    "hf_bert_tiny_dynamo": (hf_bert, TOK, "dynamo"),
}


def export_one(name: str, out: Path, max_mb: float) -> dict:
    builder, shape, exporter = MODELS[name]
    torch.manual_seed(0)
    model = builder().eval()
    path = out / f"{name}.onnx"
    opset = 17 if exporter == "ts" else 18

    if shape == TOK:
        ids = torch.randint(0, 1000, (1, 16), dtype=torch.long)
        mask = torch.ones(1, 16, dtype=torch.long)
        args = (ids, mask)
        names = ["input_ids", "attention_mask"]
        out_names = ["last_hidden_state"]
        dyn_axes = {
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"},
        }
        B = torch.export.Dim("batch", min=1, max=64)
        S = torch.export.Dim("seq", min=2, max=128)
        dyn_shapes = {"input_ids": {0: B, 1: S}, "attention_mask": {0: B, 1: S}}
        input_shapes = {"input_ids": [1, 16], "attention_mask": [1, 16]}
    else:
        x = torch.randn(*shape)
        args = (x,)
        names = ["input"]
        out_names = ["output"]
        dyn_axes = {"input": {0: "batch"}, "output": {0: "batch"}}
        dyn_shapes = {"x": {0: torch.export.Dim("batch", min=1, max=64)}}
        input_shapes = {"input": list(shape)}

    with torch.no_grad():
        if exporter == "ts":
            torch.onnx.export(
                model,
                args,
                str(path),
                opset_version=opset,
                input_names=names,
                output_names=out_names,
                dynamic_axes=dyn_axes,
                dynamo=False,
                do_constant_folding=True,
            )
        else:
            # forward arg names for dynamic_shapes must match forward's signature
            import inspect

            params = list(inspect.signature(model.forward).parameters)
            if shape == TOK:
                ds = dyn_shapes
            else:
                ds = {params[0]: dyn_shapes["x"]}
            prog = torch.onnx.export(
                model,
                args,
                None,
                opset_version=opset,
                input_names=names,
                output_names=out_names,
                dynamic_shapes=ds,
                dynamo=True,
                external_data=False,
            )
            prog.optimize()
            prog.save(str(path), external_data=False)

    size_mb = path.stat().st_size / 1e6
    info = {
        "name": name,
        "file": path.name,
        "exporter": "torchscript" if exporter == "ts" else "torch.export",
        "opset": opset,
        "input_shapes": input_shapes,
        "size_mb": round(size_mb, 2),
        "torch": torch.__version__,
    }
    if size_mb > max_mb:
        path.unlink()
        raise RuntimeError(f"exported file too large ({size_mb:.1f} MB > {max_mb} MB), removed")

    # sanity: onnx checker + ORT-free shape check via onnx
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    info["nodes"] = len(m.graph.node)
    info["inputs"] = [i.name for i in m.graph.input]
    info["outputs"] = [o.name for o in m.graph.output]
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/work/unseen")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--max-mb", type=float, default=120.0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    names = a.only or list(MODELS)
    for n in names:
        if n not in MODELS:
            print(f"unknown model {n}", file=sys.stderr)
            return 2
        t = time.time()
        try:
            info = export_one(n, out, a.max_mb)
            info["status"] = "ok"
            print(f"[ok]   {n:36s} {info['exporter']:12s} opset {info['opset']}  {info['size_mb']:7.2f} MB  {time.time()-t:5.1f}s", flush=True)
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            info = {"name": n, "status": "skipped", "reason": msg, "traceback_tail": traceback.format_exc()[-1500:]}
            p = out / f"{n}.onnx"
            if p.exists() and "too large" not in msg:
                p.unlink()
            print(f"[skip] {n:36s} {msg}", flush=True)
        manifest[n] = info
        mpath.write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
