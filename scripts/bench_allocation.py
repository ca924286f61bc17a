#!/usr/bin/env python
"""Allocation benchmark (issue 6): how much to cut where, strategy x budget, on a real model.

MobileNetV2 with torchvision's ImageNet weights (``scripts/export_bench_models.py`` writes
/work/bench_models/mobilenetv2.onnx). Photos from ``scripts/photos.py``: calibration crops
of the calibration photos (what the criterion and the repair see); validation crops of the
first half of the evaluation photos (what the search and the ``--max-drop`` budget measure
candidates on); the table's numbers on crops of the other half, which no step sees. (A
first run took the validation crops from the calibration photos, textures mostly: on them
the repaired uniform model looked best and 3% fewer MACs already lost 23 points of
agreement, so the search and the budget chose by a distribution unlike the test photos.) Every cell is one ``onnxprune.prune()`` call (``round_to=1``, repair
on, the bench's criterion), so the searches, sweeps and budget probes are the library's own:

- strategies: ``uniform``, ``global``, ``sensitivity`` (sweep at ``--ratios``), ``search``
  (``--candidates`` candidates, each repaired before it is measured on the validation
  crops, ``--jobs`` workers);
- budgets: ``--target-macs`` 0.80 and 0.65, and ``--max-drop 0.02 --metric agreement``
  (``--probes`` bisection steps over the MACs target, measured on the validation crops).

Columns: MACs kept (counted on the written model), top-1 agreement with the dense model and
mean KL(dense || pruned) on the evaluation crops, seconds for the whole ``prune`` call.

    python scripts/bench_allocation.py [--strategies uniform,global,sensitivity,search]
                                       [--budgets 0.8,0.65,drop0.02] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_repair import kl, logits  # noqa: E402
from photos import CALIB_PHOTOS, EVAL_PHOTOS, crops, fetch  # noqa: E402

VAL_PHOTOS, TEST_PHOTOS = EVAL_PHOTOS[:len(EVAL_PHOTOS) // 2], EVAL_PHOTOS[len(EVAL_PHOTOS) // 2:]

import onnxprune  # noqa: E402
from onnxprune.api import count_macs  # noqa: E402
from onnxprune.errors import ValidationFailed  # noqa: E402
from onnxprune.model import load_model  # noqa: E402


def cell(args, dense, name, data, strategy: str, budget: str) -> dict:
    calib, val, evals, ref, shape, dense_macs = data
    kw = dict(criterion=args.criterion, allocation=strategy, round_to=1, calibration={name: calib}, recover=True,
              metric="agreement", verify=False, progress=False, search_candidates=args.candidates,
              sensitivity_ratios=tuple(float(r) for r in args.ratios.split(",")), jobs=args.jobs,
              budget_probes=args.probes, seed=0)
    kw["validation"] = {name: val}  # what the search and the budget measure candidates on
    if budget.startswith("drop"):
        kw["max_drop"] = float(budget[4:])
    else:
        kw["target_macs"] = float(budget)
    t = time.perf_counter()
    try:
        result = onnxprune.prune(dense, **kw)
    except ValidationFailed as exc:
        return {"strategy": strategy, "budget": budget, "failed": str(exc), "seconds": time.perf_counter() - t}
    seconds = time.perf_counter() - t
    out = logits(result.model, evals)
    row = {"strategy": strategy, "budget": budget, "macs": count_macs(result.model, shape) / dense_macs,
           "agreement": float((out.argmax(1) == ref.argmax(1)).mean()), "kl": kl(ref, out), "seconds": seconds}
    if "budget" in result.report:
        b = result.report["budget"]
        row["probes"] = [(round(p["target_macs"], 4), p["drop"], p["passed"]) for p in b["probes"]]
        row["val_drop"] = min((p for p in b["probes"] if p["passed"]), key=lambda p: p["target_macs"])["drop"]
    if "search" in result.report:
        row["search_best_drop"] = result.plan.settings["best_drop"]
        row["search_uniform_drop"] = result.plan.settings["uniform_drop"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/bench_models/mobilenetv2.onnx")
    ap.add_argument("--strategies", default="uniform,global,sensitivity,search")
    ap.add_argument("--budgets", default="0.8,0.65,drop0.02")
    ap.add_argument("--criterion", default="activation")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--val-samples", type=int, default=64)
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=4, help="search candidates (uniform, global and one-kind starts first)")
    ap.add_argument("--ratios", default="0.3,0.6", help="sensitivity sweep ratios")
    ap.add_argument("--probes", type=int, default=5, help="bisection steps of the --max-drop budget")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    folder = fetch()
    calib = crops(folder, CALIB_PHOTOS, args.calib_samples, seed=1)
    val = crops(folder, VAL_PHOTOS, args.val_samples, seed=3)
    evals = crops(folder, TEST_PHOTOS, args.eval_samples, seed=2)
    dense = load_model(args.model)
    name = dense.graph.input[0].name
    shape = {name: [1] + list(calib.shape[1:])}
    data = (calib, val, evals, logits(dense, evals), shape, count_macs(dense, shape))
    rows = []
    t0 = time.perf_counter()
    print(f"{'strategy':>12} {'budget':>9} {'MACs':>6} {'agree':>6} {'KL':>7} {'seconds':>8}")
    for budget in args.budgets.split(","):
        for strategy in args.strategies.split(","):
            row = cell(args, dense, name, data, strategy, budget)
            rows.append(row)
            if "failed" in row:
                print(f"{strategy:>12} {budget:>9}  no model within the budget ({row['failed']})", flush=True)
            else:
                print(f"{strategy:>12} {budget:>9} {row['macs']:6.3f} {row['agreement']:6.3f} {row['kl']:7.3f} "
                      f"{row['seconds']:8.1f}", flush=True)
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.write_docs:
        from benchdocs import write_section

        write_section("bench_allocation" + ("" if args.criterion == "activation" else f"_{args.criterion}"),
                      render(args, rows, total, argv))
    return 0


def render(args, rows, total, argv) -> str:
    budgets = args.budgets.split(",")
    strategies = args.strategies.split(",")

    def label(b):
        return f"max-drop {b[4:]} (agreement)" if b.startswith("drop") else f"target-macs {b}"

    cmd = "python scripts/bench_allocation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["## How much to cut where (`scripts/bench_allocation.py`)", "",
             "MobileNetV2 (torchvision ImageNet weights), pruned by `onnxprune.prune()` with each allocation strategy "
             f"to each budget: criterion `{args.criterion}`, `round_to=1`, repair on (least squares, bias, BN), "
             f"{args.calib_samples} calibration crops of {len(CALIB_PHOTOS)} photos. The `--max-drop` budget bisects "
             f"the MACs target in {args.probes} probes (resolution 1/{2 ** args.probes}), each pruned, repaired and "
             f"measured on {args.val_samples} crops of {len(VAL_PHOTOS)} validation photos ({', '.join(VAL_PHOTOS)}). "
             f"Search: {args.candidates} "
             f"candidates (the first generation: the uniform, the global and, per group kind that can meet the "
             f"budget alone, a uniform cut of only that kind; then perturbations of the best), each repaired before "
             f"it is measured "
             f"on the same validation crops, "
             f"{args.jobs} worker processes. Sensitivity sweep at ratios {args.ratios}. Cells: MACs kept (counted on "
             f"the written model) / top-1 agreement with the dense model / mean KL(dense ‖ pruned) on "
             f"{args.eval_samples} crops of {len(TEST_PHOTOS)} test photos ({', '.join(TEST_PHOTOS)}) that no step sees / "
             f"seconds. No fine-tuning.", "",
             f"- **Date:** {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {os.cpu_count()} CPUs "
             f"({platform.machine()}); Python {platform.python_version()}; whole run {total / 60:.1f} min",
             f"- **Command:** `{cmd.strip()}`", "",
             "| budget | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for b in budgets:
        cells = []
        for s in strategies:
            r = next((r for r in rows if r["strategy"] == s and r["budget"] == b), None)
            if r is None:
                cells.append("—")
            elif "failed" in r:
                cells.append(f"none within budget ({r['seconds']:.0f} s)")
            else:
                cells.append(f"{r['macs']:.3f} / {r['agreement']:.2f} / {r['kl']:.2f} / {r['seconds']:.0f} s")
        lines.append(f"| {label(b)} | " + " | ".join(cells) + " |")
    notes = [r for r in rows if "probes" in r]
    if notes:
        lines += ["", "Budget probes (MACs target, agreement drop on the validation crops, within budget):", ""]
        for r in notes:
            probes = ", ".join(f"{t:.3f}: {d:.3f}{' ✓' if ok else ''}" if d is not None else f"{t:.3f}: —"
                               for t, d, ok in r["probes"])
            lines.append(f"- {r['strategy']}: {probes}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
