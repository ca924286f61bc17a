#!/usr/bin/env python
"""Calibration benchmark: cost of the statistics and gradient passes against plain ONNX
Runtime inference, and what each criterion keeps of a real model's predictions.

One run, one machine, same model and data:

1. time and peak RSS (each mode in its own child process, interleaved repeats, median):
   plain inference over the calibration samples, the statistics pass of one activation
   criterion (Σ|a|), of every activation statistic at once, and the gradient pass
   (forward + backward graph + Σ a·∂L/∂a per sample);
2. top-1 agreement with the dense model on crops of 8 real photos, after pruning ~10% of
   the MACs (uniform ratio searched to the MACs target, no repair), for every criterion,
   calibrated on crops of 13 other photos.

Model: MobileNetV2 with torchvision's ImageNet weights (``scripts/export_bench_models.py``
writes /work/bench_models/mobilenetv2.onnx). Photos: ``scripts/photos.py``.

    python scripts/bench_calibration.py [--model PATH] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdocs import write_section  # noqa: E402
from photos import CALIB_PHOTOS, EVAL_PHOTOS, crops, fetch  # noqa: E402

CRITERIA = ["l1", "l2", "fpgm", "bn", "activation", "apoz", "entropy", "variance", "wanda", "taylor", "fisher"]
MODES = ["inference", "statistics", "all-statistics", "gradients"]
STATISTICS = {"statistics": ("abs",),  # what one activation criterion reads (activation: mean |a|)
              "all-statistics": ("sum", "sumsq", "abs", "nonpos", "pooled"),
              "gradients": ("ag",)}


def child(mode: str, model_path: str, calib_path: str, batch: int) -> None:
    """One timed pass in this process; prints JSON with seconds and peak RSS."""
    import resource

    import onnxprune  # noqa: F401
    from onnxprune.analysis import analyze
    from onnxprune.calibration.collect import collect
    from onnxprune.data import load_data
    from onnxprune.model import load_model
    from onnxprune.runtime import session

    model = load_model(model_path)
    x = np.load(calib_path)["x"]
    ds = load_data({"input": x} if "input" in [i.name for i in model.graph.input] else {model.graph.input[0].name: x},
                   model, batch_size=batch)
    if mode == "inference":
        t = time.perf_counter()
        sess = session(model, device="cpu")
        for feeds in ds.batches:
            sess.run(None, feeds)
    else:
        a = analyze(model)
        stats = STATISTICS[mode]
        t = time.perf_counter()
        calib = collect(a, a.prunable, ds, stats, device="cpu", progress=False)
        if mode == "gradients" and calib.unavailable:
            print(f"# {len(calib.unavailable)} read points without gradient", file=sys.stderr)
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mb": rss}))


def warm_ratios(model_path, calib, batch, repeats=7) -> dict:
    """Per-batch time of warmed-up sessions, interleaved, relative to plain inference:
    what the passes cost per batch once built (the whole-pass ratios above also count
    building the sessions and their first, slower runs)."""
    from onnxprune.analysis import analyze
    from onnxprune.calibration.collect import Calibration, _build_session, find_read_points
    from onnxprune.model import load_model
    from onnxprune.runtime import session

    model = load_model(model_path)
    a = analyze(model)
    points = find_read_points(a, a.prunable)
    feeds = {model.graph.input[0].name: calib[:batch]}
    sessions = {"inference": (session(model, device="cpu"), None)}
    for mode in MODES[1:]:
        stats = STATISTICS[mode]
        sess, fetch = _build_session(a, points, feeds, stats, "auto", False, "cpu", Calibration({}, {}, stats))
        sessions[mode] = (sess, [f[2] for f in fetch])
    times = {m: [] for m in sessions}
    for m, (sess, names) in sessions.items():
        sess.run(names, feeds)
    for _ in range(repeats):
        for m, (sess, names) in sessions.items():
            t = time.perf_counter()
            sess.run(names, feeds)
            times[m].append(time.perf_counter() - t)
    base = statistics.median(times["inference"])
    return {m: statistics.median(v) / base for m, v in times.items()}


def run_child(mode, model, calib, batch) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--model", str(model), "--calib-npz", calib,
                          "--batch", str(batch)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timing(model, calib_npz, batch, repeats) -> dict:
    got = {m: [] for m in MODES}
    for _ in range(repeats):
        for m in MODES:  # interleaved: machine noise hits every mode alike
            got[m].append(run_child(m, model, calib_npz, batch))
    return {m: {"seconds": statistics.median(r["seconds"] for r in rs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)} for m, rs in got.items()}


def agreement_table(model_path, calib, evals, target, batch) -> list[dict]:
    import onnxprune
    from onnxprune.runtime import session

    name = "input"
    dense = session(model_path, device="cpu")
    ref = np.concatenate([dense.run(None, {name: evals[i:i + batch]})[0] for i in range(0, len(evals), batch)])
    ref_top = ref.argmax(1)
    rows = []
    for crit in CRITERIA:
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = onnxprune.prune(model_path, target_macs=target, global_ranking=False, criterion=crit,
                                    round_to=1, calibration={name: calib}, batch_size=batch, recover=False,
                                    validation={name: evals[:batch]}, device="cpu", progress=False)
        except Exception as exc:
            rows.append({"criterion": crit, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{crit:>10}: {type(exc).__name__}: {exc}")
            continue
        sess = session(r.model, device="cpu")
        out = np.concatenate([sess.run(None, {name: evals[i:i + batch]})[0] for i in range(0, len(evals), batch)])
        row = {"criterion": crit, "macs_ratio": r.report["macs_ratio"],
               "top1_agreement": float((out.argmax(1) == ref_top).mean()), "seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"{crit:>10}: MACs {row['macs_ratio']:.3f}  top-1 agreement {row['top1_agreement']:.3f}  "
              f"({row['seconds']:.1f} s)")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/bench_models/mobilenetv2.onnx")
    ap.add_argument("--child", choices=MODES)
    ap.add_argument("--calib-npz")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--target-macs", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.calib_npz, args.batch)
        return 0
    folder = fetch()
    calib = crops(folder, CALIB_PHOTOS, args.calib_samples, seed=1)
    evals = crops(folder, EVAL_PHOTOS, args.eval_samples, seed=2)
    calib_npz = "/tmp/onnxprune_bench_calib.npz"
    np.savez(calib_npz, x=calib)
    timings = None
    if not args.skip_timing:
        timings = timing(args.model, calib_npz, args.batch, args.repeats)
        warm = warm_ratios(args.model, calib, args.batch)
        base = timings["inference"]["seconds"]
        for m in MODES:
            t = timings[m]
            t["warm_ratio"] = warm[m]
            print(f"{m:>10}: {t['seconds']:.2f} s ({t['seconds'] / base:.2f}x inference), per warm batch "
                  f"{warm[m]:.2f}x, peak RSS {t['peak_rss_mb']:.0f} MB")
    rows = agreement_table(args.model, calib, evals, args.target_macs, args.batch)
    if args.write_docs:
        write_section("bench_calibration", render(args, timings, rows))
    return 0


def render(args, timings, rows) -> str:
    lines = ["## Calibration: cost and criteria on a real model (`scripts/bench_calibration.py`)", "",
             f"MobileNetV2 with torchvision's ImageNet weights; {args.calib_samples} calibration crops of "
             f"{len(CALIB_PHOTOS)} photos, {args.eval_samples} evaluation crops of {len(EVAL_PHOTOS)} other "
             f"photos (`scripts/photos.py`), batch {args.batch}, CPU execution provider, one run.", ""]
    if timings:
        base = timings["inference"]["seconds"]
        lines += ["| pass over the calibration samples | seconds (median of "
                  f"{args.repeats}, with session build) | vs inference | per warm batch vs inference | target | "
                  "peak RSS |", "|---|---|---|---|---|---|"]
        targets = {"inference": "", "statistics": "≤ 1.3x", "all-statistics": "", "gradients": "≤ 3.5x"}
        for m in MODES:
            t = timings[m]
            lines.append(f"| {m} | {t['seconds']:.2f} | {t['seconds'] / base:.2f}x | {t['warm_ratio']:.2f}x | "
                         f"{targets[m]} | {t['peak_rss_mb']:.0f} MB |")
        lines += ["", "The whole-pass ratio counts building each session (the statistics and gradient graphs "
                  "are larger) and its first runs, which at 4 batches weigh as much as the runs themselves; "
                  "the per-batch ratio of warmed-up sessions (interleaved, median of 7) is what grows with "
                  "the data.", ""]
    lines += [f"Top-1 agreement with the dense model after removing ~{(1 - args.target_macs) * 100:.0f}% of the "
              "MACs (uniform ratio searched to the target, `--round-to 1`), no repair:", "",
              "| criterion | MACs kept | top-1 agreement |", "|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['criterion']} | — | {r['error']} |")
        else:
            lines.append(f"| {r['criterion']} | {r['macs_ratio']:.3f} | {r['top1_agreement']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
