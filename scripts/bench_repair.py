#!/usr/bin/env python
"""Repair benchmark: how much of a real model's predictions survive structured pruning,
without and with onnxprune's closed-form repairs (issue 5).

MobileNetV2 with torchvision's ImageNet weights (``scripts/export_bench_models.py`` writes
/work/bench_models/mobilenetv2.onnx); 64 calibration crops of 13 photos and 200 evaluation
crops of 8 other photos (``scripts/photos.py``). For each criterion and MACs target the
model is pruned with a uniform ratio searched to the target (``round_to=1``, no global
ranking), then repaired with each setting on the calibration crops only. Reported on the
evaluation crops: top-1 agreement with the dense model and mean KL(dense ‖ pruned); MACs
are counted on the pruned ONNX file itself.

Repair settings:  off · bias (FLAP) · bn (statistics only: BatchNorm nodes, and the per-channel
mean/std fix of convs whose BatchNorm the exporter folded, ``bn_folded``) · ls (least squares,
the default steps) · ls+bn (least squares, then ``bn_folded``).

    python scripts/bench_repair.py [--criteria l2,wanda,activation,obs] [--targets 0.8,0.65]
                                   [--repairs off,bias,ls,ls+bn] [--kinds depthwise-coupled]
                                   [--calib-samples N] [--split fixed|folds] [--write-docs]

``--split folds`` deals all 21 photos into folds and evaluates each fold's photos with the
model repaired on the other photos' crops: calibration and evaluation photos never overlap,
but both mix natural colour photos and grey scientific ones (the fixed split calibrates on
no natural photo at all and evaluates only on natural photos).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from photos import CALIB_PHOTOS, EVAL_PHOTOS, crops, fetch  # noqa: E402

from onnxprune.allocate import AllocationOptions, allocate, select_channels  # noqa: E402
from onnxprune.api import _analysis  # noqa: E402
from onnxprune.cost import CostModel, count_macs, counter  # noqa: E402
from onnxprune.data import load_data  # noqa: E402
from onnxprune.importance import NEEDS, score_groups  # noqa: E402
from onnxprune.model import load_model  # noqa: E402
from onnxprune.plan import Plan  # noqa: E402
from onnxprune.recover import RecoverOptions, recover  # noqa: E402
from onnxprune.recover.select import obs_scores  # noqa: E402
from onnxprune.recover.targets import repair_targets  # noqa: E402
from onnxprune.runtime import session  # noqa: E402
from onnxprune.surgery import apply_plan  # noqa: E402

REPAIRS = {"off": None, "bias": ("bias",), "bn": ("bn", "bn_folded"), "ls": ("reconstruct", "bias", "bn"),
           "ls+bn": ("reconstruct", "bias", "bn", "bn_folded")}


def prune(dense, criterion: str, target: float, ds, damp: float, kinds=None):
    """(pruned model, repair targets, seconds to score) — the steps of onnxprune.prune();
    ``kinds``: only groups whose kind starts with one of these are pruned."""
    a = _analysis(copy.deepcopy(dense))
    t = time.perf_counter()
    if criterion == "obs":
        scores = obs_scores(a, ds, damp=damp, progress=False)
    else:
        if NEEDS[criterion]:
            from onnxprune.calibration.collect import collect

            a.calibration = collect(a, a.prunable, ds, NEEDS[criterion], device="cpu", progress=False)
        scores = score_groups(a, criterion)
    seconds = time.perf_counter() - t
    groups = [g for g in a.prunable if g.id in scores and (not kinds or g.kind.startswith(tuple(kinds)))]

    def count_of(counts):
        return counter(a, {r: counts[g.id] for g in groups if g.id in counts for r in g.roots})

    counts, _ = allocate(groups, scores, AllocationOptions(None, False, target, 1, 1, 0.9), CostModel(a), count_of)
    plan = Plan("bench", {g.id: {"size": g.size, "keep": select_channels(g, scores[g.id], counts[g.id])}
                          for g in groups if counts[g.id] < g.size})
    return apply_plan(a, plan, consume=False), repair_targets(a, plan), seconds


def logits(model, x, batch=50):
    sess = session(model, device="cpu")
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def kl(ref: np.ndarray, out: np.ndarray) -> float:
    def log_softmax(z):
        z = z.astype(np.float64) - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(out)
    return float((np.exp(lp) * (lp - lq)).sum(1).mean())


def splits(name: str, folds: int) -> list[tuple[list[str], list[str]]]:
    """[(calibration photos, evaluation photos)]: ``fixed`` is the peers' split (13 mostly
    grey scientific and texture photos to calibrate, 8 natural colour photos to evaluate);
    ``folds`` deals all 21 photos (sorted by name) round-robin into ``folds`` parts and
    evaluates on each part with the others as calibration photos, so both sides mix kinds."""
    if name == "fixed":
        return [(CALIB_PHOTOS, EVAL_PHOTOS)]
    names = sorted(CALIB_PHOTOS + EVAL_PHOTOS)
    return [([n for n in names if n not in names[f::folds]], names[f::folds]) for f in range(folds)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/bench_models/mobilenetv2.onnx")
    ap.add_argument("--criteria", default="l2,wanda,activation,obs")
    ap.add_argument("--targets", default="0.8,0.65")
    ap.add_argument("--repairs", default="off,bias,ls,ls+bn")
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ridge", type=float, default=None, help="fixed relative ridge (default: RecoverOptions')")
    ap.add_argument("--scope", default=None, choices=["targets", "downstream"])
    ap.add_argument("--obs-damp", type=float, default=None)
    ap.add_argument("--kinds", default="", help="prune only groups of these kinds (e.g. depthwise-coupled: "
                    "the inverted-residual hidden channels); default all prunable groups")
    ap.add_argument("--split", default="fixed", choices=["fixed", "folds"],
                    help="fixed: the peers' photo split; folds: every photo evaluated once, calibrated on the others")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    folder = fetch()
    dense = load_model(args.model)
    name = dense.graph.input[0].name
    shape = {name: [1, 3, 224, 224]}
    dense_macs = count_macs(dense, shape)
    options = {}
    if args.ridge is not None:
        options["ridge"] = args.ridge
    if args.scope:
        options["scope"] = args.scope
    from onnxprune.recover.select import DAMP

    damp = DAMP if args.obs_damp is None else args.obs_damp
    kinds = [k for k in args.kinds.split(",") if k]
    parts = splits(args.split, args.folds)
    rows = []
    print(f"{'fold':>4} {'criterion':>10} {'MACs':>6} {'repair':>6} {'agree':>6} {'KL':>7} {'seconds':>8}")
    for fold, (calib_names, eval_names) in enumerate(parts):
        calib = crops(folder, calib_names, args.calib_samples, seed=1)
        evals = crops(folder, eval_names, args.eval_samples, seed=2)
        ds = load_data({name: calib}, dense, batch_size=args.batch)
        ref = logits(dense, evals)
        for target in [float(t) for t in args.targets.split(",")]:
            for crit in args.criteria.split(","):
                pruned, targets, score_s = prune(dense, crit, target, ds, damp, kinds)
                macs = count_macs(pruned, shape) / dense_macs
                for rep in args.repairs.split(","):
                    t = time.perf_counter()
                    model = pruned
                    if REPAIRS[rep] is not None:
                        model, _ = recover(dense, pruned, targets, ds, RecoverOptions(steps=REPAIRS[rep], **options),
                                           progress=False)
                    seconds = time.perf_counter() - t + (score_s if crit == "obs" else 0.0)
                    out = logits(model, evals)
                    row = {"criterion": crit, "target": target, "macs": macs, "repair": rep, "fold": fold,
                           "agreement": float((out.argmax(1) == ref.argmax(1)).mean()), "kl": kl(ref, out),
                           "seconds": seconds}
                    rows.append(row)
                    print(f"{fold:>4} {crit:>10} {macs:6.3f} {rep:>6} {row['agreement']:6.3f} {row['kl']:7.3f} "
                          f"{seconds:8.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.write_docs:
        from benchdocs import write_section

        section = "bench_repair" + ("" if args.split == "fixed" else "_folds") + (
            "_" + args.kinds.replace(",", "_") if args.kinds else "")
        write_section(section, render(args, rows))
    return 0


def render(args, rows) -> str:
    repairs = args.repairs.split(",")
    scope = f"groups of kind {args.kinds}" if args.kinds else "all prunable groups"
    if args.split == "fixed":
        data = (f"repaired from {args.calib_samples} calibration crops of {len(CALIB_PHOTOS)} photos; top-1 agreement "
                f"with the dense model / mean KL(dense ‖ pruned) on {args.eval_samples} crops of {len(EVAL_PHOTOS)} "
                "other photos (the peers' split)")
    else:
        data = (f"the {len(CALIB_PHOTOS) + len(EVAL_PHOTOS)} photos dealt into {args.folds} folds; each fold's photos "
                f"evaluated ({args.eval_samples} crops) with the model repaired from {args.calib_samples} crops of the "
                "other photos; top-1 agreement with the dense model / mean KL(dense ‖ pruned), mean over the folds")
    title = "Repair without training" + ("" if args.split == "fixed" else ", photos in folds") + (
        f", only {args.kinds} groups" if args.kinds else "")
    lines = [f"## {title} (`scripts/bench_repair.py`)", "",
             f"MobileNetV2 (torchvision ImageNet weights), uniform pruning of {scope} to a MACs target (`round_to=1`), "
             f"{data}. No fine-tuning. Command: `python scripts/bench_repair.py "
             + " ".join(a for a in sys.argv[1:] if a != "--write-docs") + "`.", "",
             "| criterion | MACs kept | " + " | ".join(repairs) + " |", "|---|---|" + "---|" * len(repairs)]
    keys = list(dict.fromkeys((r["target"], r["criterion"]) for r in rows))
    for target, crit in keys:
        cells, macs = [], []
        for k in repairs:
            got = [r for r in rows if r["target"] == target and r["criterion"] == crit and r["repair"] == k]
            macs += [r["macs"] for r in got]
            cells.append(f"{np.mean([r['agreement'] for r in got]):.2f} / {np.mean([r['kl'] for r in got]):.2f}"
                         if got else "—")
        lines.append(f"| {crit} | {max(macs):.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
