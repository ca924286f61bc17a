#!/usr/bin/env python
"""Regenerate the ONNX test-fixture zoo in models/.

    python scripts/build_fixtures.py              # build everything, verify, write models/README.md
    python scripts/build_fixtures.py --only unet  # rebuild selected fixture(s) (repeatable / comma list)
    python scripts/build_fixtures.py --list       # list fixture names

REQUIREMENTS (build-time only -- the onnxprune package and its tests never import torch):
    pip install torch==2.13.0 onnxscript       # exact version: CPU wheel; onnxscript for dynamo exporter
    onnx, onnxruntime, numpy                     # already runtime deps

torch is imported lazily, only when a torch-exported fixture is built; the hand-built fixtures
(onnx.helper) work without it.

Every file is verified with onnx.checker.check_model(full_check=True) and one onnxruntime CPU run,
compared with the torch output (torch fixtures) or with onnx.reference.ReferenceEvaluator
(hand-built fixtures); max abs diff must be < 1e-4. All models are random-init, seeded with 0.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__

TOL = 1e-4


@dataclass
class Fixture:
    name: str
    exporter: str          # "torch-ts" | "torch-dynamo" | "onnx.helper"
    opset: int
    desc: str
    input_shape: str       # human readable, for README
    builder: str           # function name in fixtures_torch / fixtures_onnx
    dynamic_batch: bool = True
    ort: bool = True       # can run in onnxruntime
    ts_kwargs: dict = field(default_factory=dict)
    notes: str = ""


F = Fixture
FIXTURES = [
    F("resnet_basic", "torch-ts", 17,
      "ResNet BasicBlocks (stem conv+BN+ReLU+maxpool, 3 stages 16/32/48, stride-2 blocks with 1x1 "
      "conv+BN shortcut), GAP, flatten, Linear(10). BN folded into Conv by exporter",
      "1x3x32x32 (batch dynamic)", "build_resnet_basic"),
    F("resnet_basic_bn", "torch-ts", 17,
      "same as resnet_basic but exported with do_constant_folding=False: explicit BatchNormalization "
      "after every Conv",
      "1x3x32x32 (batch dynamic)", "build_resnet_basic", ts_kwargs={"do_constant_folding": False}),
    F("resnet_bottleneck", "torch-ts", 17,
      "bottleneck blocks (1x1, 3x3, 1x1, expansion 4), projection + identity residual Adds, 2 stages",
      "1x3x32x32 (batch dynamic)", "build_resnet_bottleneck"),
    F("resnext", "torch-ts", 17,
      "ResNeXt bottlenecks with grouped 3x3 conv (width 32, groups=4), residual Adds",
      "1x3x32x32 (batch dynamic)", "build_resnext"),
    F("mobilenetv2", "torch-ts", 17,
      "inverted residuals: 1x1 expand, depthwise 3x3, 1x1 project, ReLU6->Clip, residual Adds; "
      "Dropout+Linear classifier",
      "1x3x32x32 (batch dynamic)", "build_mobilenetv2"),
    F("mobilenetv3", "torch-ts", 17,
      "HardSwish, SE (GAP->1x1 conv->ReLU->1x1 conv->HardSigmoid->Mul), depthwise 3x3/5x5, residuals",
      "1x3x32x32 (batch dynamic)", "build_mobilenetv3"),
    F("efficientnet", "torch-ts", 17,
      "MBConv with SiLU (Sigmoid+Mul), SE with ReduceMean + sigmoid gating, depthwise convs, residual",
      "1x3x32x32 (batch dynamic)", "build_efficientnet"),
    F("convnext", "torch-ts", 17,
      "ConvNeXt: depthwise 7x7, Transpose NHWC, LayerNormalization, MatMul 4x expansion, GELU (Erf), "
      "layer-scale Mul, residual; channels-first LN downsample; mean head + LN + Linear",
      "1x3x32x32 (batch dynamic)", "build_convnext"),
    F("densenet", "torch-ts", 17,
      "dense blocks (BN-ReLU-1x1-BN-ReLU-3x3, Concat onto running map, growth 8), transition "
      "(BN, ReLU, 1x1, AveragePool); standalone BatchNormalization nodes",
      "1x3x32x32 (batch dynamic)", "build_densenet"),
    F("c2f", "torch-ts", 17,
      "YOLOv8 C2f: bottlenecks appended, Concat of all parts, 1x1; first C2f uses chunk(2,1) (exported "
      "as dynamic Shape/Gather/Add/Div/Mul -> 2 Slice), second uses split((c,c)) -> Split; unequal "
      "split((16,32)) -> Split; x[:, :c] / x[:, c:] -> static Slice; SiLU as Sigmoid+Mul",
      "1x3x32x32 (batch dynamic)", "build_c2f"),
    F("unet", "torch-ts", 17,
      "U-Net: 2 down levels + maxpool, GroupNorm(4) bottleneck (exported as Reshape->"
      "InstanceNormalization->Reshape->Mul->Add), ConvTranspose up + skip Concat, nearest "
      "Upsample(Resize)+conv up + skip Concat, InstanceNorm2d(affine), F.pad (Pad with pads computed by a "
      "ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast chain), 1x1 -> 2 classes",
      "1x3x32x32 (batch dynamic), output Nx2x32x32", "build_unet"),
    F("flatten_head", "torch-ts", 17,
      "convs -> torch.flatten on 16x4x4 (Flatten) -> Linear(256,32) -> ReLU -> Linear(10)",
      "1x3x32x32 (batch dynamic)", "build_flatten_head"),
    F("reshape_head", "torch-ts", 17,
      "as flatten_head but x.view(x.size(0), -1) (Shape/Gather/Unsqueeze/Concat -> Reshape)",
      "1x3x32x32 (batch dynamic)", "build_reshape_head"),
    F("matmul_tokens", "torch-ts", 17,
      "conv stem -> reshape (B,C,HW) + Transpose to tokens -> Linear as MatMul+Add -> GELU -> MatMul+Add "
      "-> ReduceMean over tokens -> Gemm head",
      "1x3x32x32 (batch dynamic)", "build_matmul_tokens"),
    F("resnet_dynamo", "torch-dynamo", 18,
      "ResNet BasicBlock (16/32/48, 1 block/stage) via torch.export-based exporter (onnxscript "
      "optimizer; BN folded), single file, no local functions",
      "1x3x32x32 (batch dynamic)", "build_resnet_dynamo"),
    F("opset11_mobilenet", "torch-ts", 11,
      "mobilenetv2 (same weights) at opset 11: ReLU6 -> Clip with min/max as inputs (opset>=11 "
      "form), head uses x.squeeze(3).squeeze(2) -> Squeeze with `axes` attribute (opset<13 form)",
      "1x3x32x32 (batch dynamic)", "build_mobilenetv2_squeeze"),
    F("convtranspose_grouped", "torch-ts", 17,
      "ConvTranspose groups=2 (+BN), ConvTranspose with output_padding=1, 1x1 conv -> 2 channels",
      "1x3x32x32 (batch dynamic), output Nx2x32x32", "build_convtranspose_grouped"),
    # ---- hand-built -------------------------------------------------------------------------
    F("paddle_style", "onnx.helper", 11,
      "every weight (conv W/b, BN params, Gemm W/b) is a Constant node output, Paddle-like names "
      "(conv2d_0.tmp_0), conv bias via Add, residual Add, GAP, Flatten, Gemm transB=0",
      "batchx3x32x32 (input name 'x', output 'linear_0.tmp_1')", "build_paddle_style"),
    F("shared_weights", "onnx.helper", 13,
      "two branches of width 16 / 24; zero_bias_16 shared by 2 convs in different groups; "
      "tied_w_16x16 shared by 2 convs in different groups; Concat of GAPs -> Gemm",
      "batchx3x32x32", "build_shared_weights"),
    F("gemm_variants", "onnx.helper", 13,
      "Gemm transB=1, Gemm transB=0, Gemm alpha=0.5 beta=2, MatMul(const W)+Add bias",
      "batchx32", "build_gemm_variants"),
    F("lstm", "onnx.helper", 14,
      "conv feature extractor -> ReduceMean(H) -> Transpose to (seq, N, C) -> LSTM(24) -> Squeeze -> Gemm",
      "batchx3x32x32", "build_lstm"),
    F("if_model", "onnx.helper", 13,
      "prunable convs -> If(mean(input) > 0) with conv branches (then: subgraph initializers; "
      "else: outer-scope weight) -> conv -> GAP -> Gemm",
      "batchx3x32x32", "build_if_model"),
    F("custom_op", "onnx.helper", 13,
      "conv -> com.example.MyOp (opset_import com.example v1) -> conv. ANALYSIS ONLY: no ORT "
      "kernel (onnx full_check passes: unknown-domain op is skipped by shape inference)",
      "batchx3x32x32", "build_custom_op", ort=False),
    F("elementwise_mix", "onnx.helper", 17,
      "convs mixed with Add/Sub/Mul/Div/Max/Min/Pow/Where/PRelu/LeakyRelu/Softplus/Tanh/Erf/Clip/"
      "HardSigmoid/HardSwish/Sigmoid/Identity/Dropout/Cast/Pad, (1,C,1,1) & (C,1,1) & scalar consts, "
      "ReduceMean keepdims, Squeeze/Unsqueeze, AveragePool/MaxPool/GlobalMaxPool",
      "batchx3x32x32", "build_elementwise_mix"),
]
BY_NAME = {f.name: f for f in FIXTURES}


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------
def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        raise SystemExit("torch is required to build torch-exported fixtures: "
                         "pip install torch==2.13.0 onnxscript") from e
    import fixtures_torch
    return torch, fixtures_torch


@contextlib.contextmanager
def _quiet():
    """silence exporter chatter (progress lines, deprecation warnings)."""
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        warnings.simplefilter("ignore")
        try:
            yield
        except Exception:
            sys.__stderr__.write(buf_out.getvalue() + buf_err.getvalue())
            raise


def _strip(m: onnx.ModelProto) -> onnx.ModelProto:
    """drop doc strings / metadata that may carry local paths or stack traces (keeps files stable)."""
    for n in m.graph.node:
        n.doc_string = ""
        del n.metadata_props[:]
    m.graph.doc_string = ""
    del m.metadata_props[:]
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        del vi.metadata_props[:]
    for t in m.graph.initializer:
        del t.metadata_props[:]
    return m


def export_torch(fx: Fixture, path: Path):
    torch, ft = _import_torch()
    ft.seed_all(0)
    model, x = getattr(ft, fx.builder)()
    model.eval()
    notes = ""
    if fx.exporter == "torch-ts":
        with _quiet():
            torch.onnx.export(model, x, str(path), opset_version=fx.opset, dynamo=False,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              **fx.ts_kwargs)
    else:  # torch-dynamo
        kw = dict(dynamo=True, opset_version=fx.opset, input_names=["input"], output_names=["output"],
                  external_data=False, optimize=True)
        try:
            with _quiet():
                batch = torch.export.Dim("batch", min=1, max=1024)
                torch.onnx.export(model, (x,), str(path), dynamic_shapes=({0: batch},), **kw)
        except Exception as e:  # fall back to static batch
            notes = f"dynamic batch failed ({type(e).__name__}); static batch"
            fx.dynamic_batch = False
            with _quiet():
                torch.onnx.export(model, (x,), str(path), **kw)
        m = onnx.load(str(path))
        if m.functions:
            from onnx import inliner
            m = inliner.inline_local_functions(m)
            notes = (notes + "; " if notes else "") + "local functions inlined"
        data_file = Path(str(path) + ".data")
        if data_file.exists():
            data_file.unlink()
        onnx.save(_strip(m), str(path))
    fx.notes = notes
    return model, x


def export_helper(fx: Fixture, path: Path):
    import fixtures_onnx as fo
    m = getattr(fo, fx.builder)()
    onnx.save(m, str(path))


# --------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------
def check(path: Path) -> str:
    m = onnx.load(str(path))
    try:
        onnx.checker.check_model(m, full_check=True)
        return "full"
    except Exception as e:
        onnx.checker.check_model(m, full_check=False)
        return f"basic ({type(e).__name__})"


def ort_session(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _finite(*arrs):
    for a in arrs:
        if not np.all(np.isfinite(a)):
            raise AssertionError("non-finite output")


def verify_torch(fx: Fixture, path: Path, model, x) -> tuple[float, float]:
    import torch
    torch.manual_seed(1)
    batch = 2 if fx.dynamic_batch else x.shape[0]
    xv = torch.randn(batch, *x.shape[1:])
    with torch.no_grad():
        ref = model(xv).numpy()
    sess = ort_session(path)
    out = sess.run(None, {sess.get_inputs()[0].name: xv.numpy()})[0]
    _finite(ref, out)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    return float(np.abs(out - ref).max()), float(np.abs(ref).max())


def _ref_batchnorm_inference():
    """ReferenceEvaluator's BatchNormalization-9 always applies training-mode statistics (the
    schema default fills `momentum`), unlike the spec and ORT; use plain inference-mode BN."""
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops.op_batch_normalization import _batchnorm_test_mode

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None,
                 **_):
            return (_batchnorm_test_mode(x, scale, bias, mean, var, epsilon=epsilon),)

    return BatchNormalization


def verify_helper(fx: Fixture, path: Path) -> tuple[float, float]:
    from onnx.reference import ReferenceEvaluator
    m = onnx.load(str(path))
    inp = m.graph.input[0]
    shape = [d.dim_value if d.dim_value else 2 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    feeds = [x]
    if fx.name == "if_model":  # exercise both branches
        feeds = [np.abs(x), -np.abs(x)]
    sess = ort_session(path)
    ref_eval = ReferenceEvaluator(m, new_ops=[_ref_batchnorm_inference()])
    diff, mag = 0.0, 0.0
    for xi in feeds:
        out = sess.run(None, {inp.name: xi})[0]
        ref = ref_eval.run(None, {inp.name: xi})[0]
        _finite(ref, out)
        diff = max(diff, float(np.abs(out - ref).max()))
        mag = max(mag, float(np.abs(ref).max()))
    return diff, mag


def summarize(path: Path):
    m = onnx.load(str(path))
    ops = Counter()

    def walk(g):
        for n in g.node:
            ops[(n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type] += 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sg in a.graphs:
                    walk(sg)

    walk(m.graph)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    n_nodes = sum(ops.values())
    return opset, n_nodes, ops, len(m.functions)


# --------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------
def write_readme():
    lines = [
        "# onnxprune test fixtures",
        "",
        "Generated by `python scripts/build_fixtures.py` (needs `pip install torch==2.13.0 onnxscript`; "
        "torch is a build-time-only dependency). Random-init, seeded (torch/numpy seed 0), "
        "deterministic. Each file is verified with `onnx.checker.check_model(full_check=True)` and an "
        "onnxruntime CPU run vs. torch (torch exports) or `onnx.reference.ReferenceEvaluator` "
        "(hand-built), max abs diff < 1e-4. Input `input` / output `output` (except paddle_style), "
        "batch axis is the symbolic dim `batch` everywhere. Torch exports run in eval mode, so Dropout "
        "disappears from them.",
        "",
        "Note: torch's TorchScript exporter (eval mode, default `do_constant_folding=True`) and the "
        "dynamo exporter's optimizer fold Conv+BN; `resnet_basic_bn.onnx`, `densenet.onnx` (pre-activation BN), "
        "`unet.onnx`, `convtranspose_grouped.onnx` and `paddle_style.onnx` keep BatchNormalization nodes.",
        "",
        "| file | exercises | opset | exporter | input shape |",
        "|---|---|---|---|---|",
    ]
    for fx in FIXTURES:
        desc = fx.desc + (f" ({fx.notes})" if fx.notes else "")
        if fx.exporter == "torch-dynamo" and not fx.notes:
            desc += " (dynamic batch OK)"
        exporter = {"torch-ts": "torch 2.13 TorchScript (dynamo=False)",
                    "torch-dynamo": "torch 2.13 torch.export (dynamo=True)",
                    "onnx.helper": "hand-built onnx.helper"}[fx.exporter]
        if fx.ts_kwargs:
            exporter += ", " + ", ".join(f"{k}={v}" for k, v in fx.ts_kwargs.items())
        lines.append(f"| `{fx.name}.onnx` | {desc} | {fx.opset} | {exporter} | {fx.input_shape} |")
    (MODELS / "README.md").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="fixture name(s); repeatable or comma list")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--ops", action="store_true", help="also print op-type counts per file")
    args = ap.parse_args(argv)
    if args.list:
        for fx in FIXTURES:
            print(f"{fx.name:24s} {fx.exporter:13s} opset {fx.opset}")
        return 0
    only = [n.strip().removesuffix(".onnx") for o in args.only for n in o.split(",") if n.strip()]
    unknown = [n for n in only if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown fixture(s): {unknown}; use --list")
    todo = [BY_NAME[n] for n in only] if only else FIXTURES

    MODELS.mkdir(exist_ok=True)
    rows, failed = [], []
    for fx in todo:
        path = MODELS / f"{fx.name}.onnx"
        try:
            if fx.exporter.startswith("torch"):
                model, x = export_torch(fx, path)
            else:
                export_helper(fx, path)
            chk = check(path)
            if not fx.ort:
                ort_s, diff, mag = "skipped (custom op)", float("nan"), float("nan")
            else:
                diff, mag = (verify_torch(fx, path, model, x) if fx.exporter.startswith("torch")
                             else verify_helper(fx, path))
                if not diff < TOL:
                    raise AssertionError(f"ORT mismatch: max abs diff {diff:.3g}")
                ort_s = "ok"
            opset, n_nodes, ops, n_fn = summarize(path)
            rows.append((fx, path.stat().st_size / 1024, n_nodes, opset, chk, ort_s, diff, mag, ops))
        except Exception as e:  # keep going, report at the end
            failed.append((fx.name, f"{type(e).__name__}: {e}"))

    hdr = f"{'file':30s} {'KB':>7s} {'nodes':>5s} {'opset':>5s}  {'check':14s} {'ORT':20s} {'maxdiff':>9s} {'max|y|':>8s}"
    print(hdr)
    print("-" * len(hdr))
    for fx, kb, nn_, opset, chk, ort_s, diff, mag, _ in rows:
        print(f"{fx.name + '.onnx':30s} {kb:7.1f} {nn_:5d} {opset:5d}  {chk:14s} {ort_s:20s} {diff:9.2e} {mag:8.3f}")
    if args.ops:
        print()
        for fx, *_, ops in rows:
            print(f"{fx.name}.onnx: " + ", ".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(ops.items())))
    total = sum(p.stat().st_size for p in MODELS.glob("*.onnx")) / 1024
    print(f"\nmodels/*.onnx total: {total:.1f} KB")
    write_readme()
    if failed:
        print("\nFAILED:")
        for n, e in failed:
            print(f"  {n}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
