#!/usr/bin/env python
"""Finetuning benchmark (issue 9): distillation inside ONNX Runtime after pruning and repair.

Sections (each optional):

- ``cost``: one training step (student forward + backward incl. weight gradients + AdamW
  update) against one forward pass of the same pruned model on the same batch, timed
  interleaved in one run; the teacher's forward is reported beside it (it is cached per
  sample when the batches repeat, and runs every step under augmentation).
- ``mobilenetv2``: torchvision's ImageNet MobileNetV2 (/work/bench_models/mobilenetv2.onnx,
  ``scripts/export_bench_models.py``) pruned to ``--target`` of its MACs (activation
  criterion, uniform, repaired on 64 calibration crops), then distilled on random resized
  crops + flips of the 13 calibration photos for ``--budget`` seconds; top-1 agreement with
  the dense model and mean KL(dense ‖ pruned) on 200 crops of 8 *other* photos
  (``scripts/photos.py``). onnxsim 0.8.1's ``apply_block_finetune`` (in /work/venv-onnxsim)
  runs on the same pruned model with the same number of steps, batch size and training
  crops; it trains only MatMul/Gemm weights, which in MobileNetV2 is the classifier block.
- ``minilm``: all-MiniLM-L6-v2 (``scripts/export_minilm.py``) at 0.60 of its MACs, distilled on
  the calibration sentences; mean cosine with the dense embeddings on held-out sentences.
- ``digits``: the scikit-learn digits CNN of ``scripts/bench_digits.py`` pruned to 0.30 of
  its MACs, repaired, then distilled on the train split (no labels); test accuracy.

    python scripts/bench_finetune.py [--sections cost,mobilenetv2,digits] [--budget 600]
                                     [--target 0.65] [--distill logits] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxprune  # noqa: E402
from benchtime import timed  # noqa: E402
from onnxprune.finetune import FinetuneOptions, finetune  # noqa: E402
from onnxprune.runtime import session  # noqa: E402

MOBILENET = Path("/work/bench_models/mobilenetv2.onnx")
ONNXSIM_PY = Path("/work/venv-onnxsim/bin/python")
RESULTS = Path("/tmp/onnxprune_bench_finetune.json")  # sections run separately are merged into one docs section


def kl(ref: np.ndarray, out: np.ndarray) -> float:
    def log_softmax(z):
        z = z.astype(np.float64) - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(out)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


def run_logits(model, x: np.ndarray, name: str = "input", batch: int = 50) -> np.ndarray:
    sess = session(model, device="cpu")
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def macs_ratio(model, dense) -> float:
    from onnxprune.cost import count_macs

    shapes = {"input": [1, 3, 224, 224]}
    return count_macs(model, shapes) / count_macs(dense, shapes)


# ----------------------------------------------------------------------------- step cost


def step_cost(pruned: onnx.ModelProto, dense, x: np.ndarray, repeats: int) -> dict:
    """Seconds of forward, training step and teacher forward on one batch, interleaved."""
    import copy

    from onnxprune.finetune.graph import build_train_graph, output_terms
    from onnxprune.finetune.optim import AdamW
    from onnxprune.finetune.trainable import as_inputs, fold_batchnorms, trainable_names
    from onnxprune.shapes import infer_shapes, with_input_shapes

    fwd = session(pruned, "cpu")
    teacher = session(dense, "cpu")
    student = copy.deepcopy(pruned)
    fold_batchnorms(student)
    names = trainable_names(student)
    params = as_inputs(student, names)
    dims = {"input": list(x.shape)}
    terms = output_terms(student, infer_shapes(with_input_shapes(student, dims)))
    graph = build_train_graph(student, names, terms, dims, 1.0)
    train = session(graph.model, "cpu")
    target = terms[0].target(teacher.run(None, {"input": x})[0], 1.0)
    fetch = graph.outputs + [graph.grads[n] for n in names if n in graph.grads]
    opt = AdamW(params)

    def step():
        values = train.run(fetch, {"input": x, terms[0].input: target, **params})
        opt.step(params, dict(zip([n for n in names if n in graph.grads], values[len(terms):])), 1e-6)

    runs = {"forward": lambda: fwd.run(None, {"input": x}), "step": step,
            "teacher": lambda: teacher.run(None, {"input": x})}
    med = timed(runs, repeats)
    return {"batch": int(x.shape[0]), "seconds": med, "step_ratio": med["step"] / med["forward"],
            "teacher_ratio": med["teacher"] / med["forward"],
            "frozen": len(graph.unavailable), "weights": len(names)}


# ----------------------------------------------------------------------------- mobilenetv2


def onnxsim_block_finetune(dense_path: Path, pruned: onnx.ModelProto, x: np.ndarray, steps: int, batch: int,
                           lr: float) -> tuple[onnx.ModelProto | None, str]:
    """onnxsim's apply_block_finetune on the Gemm/MatMul block (MobileNetV2: the classifier)."""
    if not ONNXSIM_PY.exists():
        return None, "onnxsim venv missing"
    gemm = next((n for n in pruned.graph.node if n.op_type in ("Gemm", "MatMul")), None)
    if gemm is None:
        return None, "no Gemm/MatMul block"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx.save(pruned, str(tmp / "pruned.onnx"))
        np.save(tmp / "x.npy", x)
        code = f"""
import numpy as np, onnx, onnxsim
x = np.load({str(tmp / 'x.npy')!r})
data = [{{"input": x[i:i + {batch}]}} for i in range(0, len(x) - {batch} + 1, {batch})]
m = onnxsim.apply_block_finetune({str(dense_path)!r}, {str(tmp / 'pruned.onnx')!r}, {gemm.input[0]!r},
                                 {gemm.output[0]!r}, calibration_data=data, num_iterations={steps},
                                 learning_rate={lr}, batch_size=1, teacher_forced_inputs=False)
onnx.save(m, {str(tmp / 'out.onnx')!r})
"""
        t = time.perf_counter()
        proc = subprocess.run([str(ONNXSIM_PY), "-c", code], capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            return None, "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        return onnx.load(str(tmp / "out.onnx")), f"{seconds:.0f} s"


def mobilenet(args, log) -> dict:
    from photos import CALIB_PHOTOS, EVAL_PHOTOS, crops, fetch

    folder = fetch()
    calib = crops(folder, CALIB_PHOTOS, 64, seed=1)
    evals = crops(folder, EVAL_PHOTOS, 200, seed=2)
    dense = onnx.load(str(MOBILENET))
    dense_logits = run_logits(dense, evals)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = onnxprune.prune(str(MOBILENET), target_macs=args.target, criterion="activation",
                                 calibration={"input": calib}, allocation="uniform", round_to=1, progress=False,
                                 verify=False)
    prune_s = time.perf_counter() - t
    out = {"target": args.target, "macs": macs_ratio(pruned.model, dense), "prune_seconds": prune_s, "rows": []}

    def score(name, model, seconds, steps, note=""):
        lg = run_logits(model, evals)
        row = {"method": name, "agreement": float(np.mean(lg.argmax(1) == dense_logits.argmax(1))),
               "kl": kl(dense_logits, lg), "seconds": seconds, "steps": steps, "note": note}
        out["rows"].append(row)
        log(f"  {name:<44} agreement {row['agreement']:.3f}  KL {row['kl']:.3f}  {seconds:6.0f} s  {steps} steps {note}")

    log(f"mobilenetv2: pruned to {out['macs']:.3f} of the MACs (activation, uniform, repaired) in {prune_s:.0f} s")
    score("pruned + repaired (start)", pruned.model, 0, 0)
    # training crops: the calibration photos only, random resized crops + flips drawn fresh per step
    photo_dir = Path(tempfile.mkdtemp())
    for name in CALIB_PHOTOS:
        os.symlink(folder / name, photo_dir / name)
    results = {}
    for config in args.distill.split(","):
        distill, _, mixup = config.partition(":mix")
        opts = FinetuneOptions(time_budget=args.budget, lr=args.lr, batch_size=args.batch, distill=distill,
                               temperature=args.temperature, holdout=0.0, augment="crop+flip", seed=0,
                               mixup=float(mixup or 0) if ":mix" in config else 0.0)
        t = time.perf_counter()
        kept = None
        if distill != "logits":
            from onnxprune.api import _analysis
            from onnxprune.finetune.features import kept_tensors

            kept = kept_tensors(_analysis(onnx.load(str(MOBILENET)), None, False, in_place=True), pruned.plan)
        res = finetune(str(MOBILENET), pruned.model, f"images:{photo_dir}", opts, kept=kept, progress=False)
        results[config] = res
        label = distill + (f", MixUp α={opts.mixup:g}" if opts.mixup else "")
        score(f"onnxprune finetune ({label}, {args.budget:.0f} s budget)", res.model, time.perf_counter() - t,
              res.report["steps"], f"step {res.report['step_seconds']:.2f} s")
    steps = max(r.report["steps"] for r in results.values()) if results else 100
    train_x = crops(folder, CALIB_PHOTOS, steps * args.batch, seed=3)
    model, note = onnxsim_block_finetune(MOBILENET, pruned.model, train_x, steps, args.batch, args.lr)
    if model is not None:
        score("onnxsim 0.8.1 apply_block_finetune (classifier)", model, float(note.split()[0]), steps)
    else:
        log(f"  onnxsim apply_block_finetune: {note}")
        out["rows"].append({"method": "onnxsim 0.8.1 apply_block_finetune", "note": note})
    return out


# ----------------------------------------------------------------------------- digits


def digits(args, log) -> dict:
    from bench_digits import CACHE, split

    path = CACHE / "digits_cnn_c32-32-64-64_e40_s0_t0.3.onnx"
    if not path.exists():
        log("digits: run scripts/bench_digits.py first (it trains and caches the CNN)")
        return {}
    xtr, ytr, xcal, xte, yte = split(0, 0.3, 200)

    def acc(m):
        return float(np.mean(run_logits(m, xte).argmax(1) == yte))

    out = {"dense": acc(path), "rows": []}
    for target in (0.30,):
        r = onnxprune.prune(str(path), target_macs=target, criterion="activation", calibration={"input": xcal},
                            allocation="uniform", round_to=1, progress=False)
        t = time.perf_counter()
        f = finetune(str(path), r.model, {"input": xtr}, FinetuneOptions(steps=600, lr=1e-3, batch_size=64),
                     progress=False)
        row = {"target": target, "macs": r.report["macs_ratio"], "repaired": acc(r.model), "finetuned": acc(f.model),
               "seconds": time.perf_counter() - t, "steps": f.report["steps"]}
        out["rows"].append(row)
        log(f"digits: dense {out['dense']:.4f}; {row['macs']:.3f} MACs: repaired {row['repaired']:.4f} -> finetuned "
            f"{row['finetuned']:.4f} ({row['steps']} steps, {row['seconds']:.0f} s)")
    return out


# ----------------------------------------------------------------------------- minilm


def minilm(args, log) -> dict:
    """all-MiniLM-L6-v2 (scripts/export_minilm.py writes the model and the tokenized
    sentences): wanda + repair to 0.60 of the MACs at sequence length 128, then distilled
    on the 302 calibration sentences; mean cosine with the dense embeddings on the 101
    held-out sentences."""
    from bench_transformers import cut_padding

    folder = Path("/work/bench_models")
    model = folder / "minilm.onnx"
    if not model.exists():
        log("minilm: run scripts/export_minilm.py first")
        return {}
    cal = dict(np.load(folder / "minilm_calib.npz"))
    held = dict(np.load(folder / "minilm_heldout.npz"))

    def embed(m, x):
        sess = session(m, "cpu")
        n = len(x["input_ids"])
        return np.concatenate([sess.run(None, {k: v[i:i + 32] for k, v in x.items()})[0] for i in range(0, n, 32)])

    dense = embed(str(model), held)

    def cosine(m):
        e = embed(m, held)
        return float(np.mean(np.sum(e * dense, 1) / np.linalg.norm(e, axis=1) / np.linalg.norm(dense, axis=1)))

    r = onnxprune.prune(str(model), target_macs=0.60, criterion="wanda", calibration=cut_padding(cal),
                        input_shapes={k: [1, 128] for k in cal}, progress=False, verify=False)
    out = {"macs": r.report["macs_ratio"], "repaired": cosine(r.model), "rows": []}
    for distill in ("logits", "both"):
        t = time.perf_counter()
        f = finetune(str(model), r.model, cal, FinetuneOptions(steps=args.minilm_steps, lr=1e-4, batch_size=16,
                                                                distill=distill), progress=False)
        row = {"distill": distill, "cosine": cosine(f.model), "steps": f.report["steps"],
               "seconds": time.perf_counter() - t}
        out["rows"].append(row)
        log(f"minilm: {out['macs']:.3f} MACs: repaired cosine {out['repaired']:.4f} -> finetuned ({distill}) "
            f"{row['cosine']:.4f} ({row['steps']} steps, {row['seconds']:.0f} s)")
    return out


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="cost,mobilenetv2,digits")
    p.add_argument("--budget", type=float, default=600.0, help="seconds of finetuning per MobileNetV2 run")
    p.add_argument("--target", type=float, default=0.65)
    p.add_argument("--distill", default="logits,logits:mix1", help="comma-separated runs: logits, features or "
                   "both, each optionally with ':mixALPHA' (MixUp)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--minilm-steps", type=int, default=150)
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args(argv)
    sections = args.sections.split(",")
    lines: list[str] = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    result = {}
    if "cost" in sections or "mobilenetv2" in sections:
        if not MOBILENET.exists():
            log(f"{MOBILENET} missing: run scripts/export_bench_models.py")
            return 1
    if "cost" in sections:
        from photos import CALIB_PHOTOS, crops, fetch

        x = crops(fetch(), CALIB_PHOTOS, args.batch, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruned = onnxprune.prune(str(MOBILENET), target_macs=args.target, allocation="uniform",
                                     verify=False).model
        cost = step_cost(pruned, onnx.load(str(MOBILENET)), x, args.repeats)
        result["cost"] = cost
        s = cost["seconds"]
        log(f"step cost (MobileNetV2 at {args.target} MACs, batch {cost['batch']}, median of {args.repeats}, "
            f"interleaved): forward {s['forward'] * 1e3:.0f} ms, training step {s['step'] * 1e3:.0f} ms "
            f"({cost['step_ratio']:.2f}x), teacher forward {s['teacher'] * 1e3:.0f} ms ({cost['teacher_ratio']:.2f}x); "
            f"{cost['weights']} weights, {cost['frozen']} without gradient")
    if "mobilenetv2" in sections:
        result["mobilenetv2"] = mobilenet(args, log)
    if "digits" in sections:
        result["digits"] = digits(args, log)
    if "minilm" in sections:
        result["minilm"] = minilm(args, log)
    for section in result.values():
        if isinstance(section, dict):
            section["command"] = "python scripts/bench_finetune.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.write_docs:
        from benchdocs import write_section

        saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        saved.update(json.loads(json.dumps(result, default=str)))  # sections run now replace their old numbers
        RESULTS.write_text(json.dumps(saved, indent=1))
        write_section("bench_finetune", render(args, saved))
    print(json.dumps(result, indent=1, default=str)[:2000])
    return 0


def render(args, result) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = ["## Finetuning by distillation (issue 9)", "",
           f"Regenerated {when} on {platform.machine()}, {os.cpu_count()} cores (a shared machine: ratios are "
           "measured side by side); each part says the command that measured it.", ""]
    cost = result.get("cost")
    if cost:
        s = cost["seconds"]
        out += [f"`{cost.get('command', '')}`", "",
                f"**Step cost** (MobileNetV2 at {args.target} MACs, batch {cost['batch']}, interleaved medians): "
                f"forward {s['forward'] * 1e3:.0f} ms; training step (forward + backward with weight gradients + "
                f"AdamW) {s['step'] * 1e3:.0f} ms = **{cost['step_ratio']:.2f}x** (target ≤ 3.5x); the dense "
                f"teacher's forward {cost['teacher_ratio']:.2f}x on top when batches are augmented.", ""]
    mb = result.get("mobilenetv2")
    if mb:
        out += [f"`{mb.get('command', '')}`", "",
                f"**MobileNetV2** (ImageNet weights) pruned to {mb['macs']:.3f} of the MACs (activation, uniform, "
                "repaired on 64 crops), distilled on random crops of the 13 calibration photos; top-1 agreement "
                "and KL(dense ‖ pruned) on 200 crops of 8 other photos:", "",
                "| method | agreement | mean KL | seconds | steps |", "|---|---|---|---|---|"]
        for r in mb["rows"]:
            if "agreement" in r:
                out.append(f"| {r['method']} | {r['agreement']:.3f} | {r['kl']:.3f} | {r['seconds']:.0f} | "
                           f"{r['steps']} |")
            else:
                out.append(f"| {r['method']} | — | — | — | {r.get('note', '')} |")
        out.append("")
    dg = result.get("digits")
    if dg and dg.get("rows"):
        out += [f"`{dg.get('command', '')}`", "",
                f"**digits CNN** (dense test accuracy {dg['dense']:.4f}): "
                + "; ".join(f"{r['macs']:.3f} of the MACs: repaired {r['repaired']:.4f} → finetuned "
                            f"**{r['finetuned']:.4f}** ({r['steps']} steps, {r['seconds']:.0f} s, no labels)"
                            for r in dg["rows"]), ""]
    ml = result.get("minilm")
    if ml and ml.get("rows"):
        out += [f"`{ml.get('command', '')}`", "",
                f"**all-MiniLM-L6-v2** pruned to {ml['macs']:.3f} of the MACs (wanda + repair, sequence 128), "
                f"mean cosine with the dense embeddings on 101 held-out sentences: repaired {ml['repaired']:.4f}; "
                + "; ".join(f"finetuned ({r['distill']}) **{r['cosine']:.4f}** ({r['steps']} steps, {r['seconds']:.0f} s)"
                            for r in ml["rows"]) + " (target ≥ 0.97 at ≤ 0.60).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
