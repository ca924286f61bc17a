#!/usr/bin/env python
"""Small CNN on scikit-learn's digits: test accuracy after structured pruning, without and
with onnxprune's closed-form repair (issue 5: "test accuracy >= 0.99 at <= 0.50 of dense MACs").

Data: ``sklearn.datasets.load_digits`` (1797 8x8 grey images, 10 classes, pixels / 16),
a seeded stratified split into train (70%) and test (30%); the calibration set is a seeded
stratified draw of ``--calib`` samples from the *train* split (never the test split).

Model: four 3x3 Conv+BN+ReLU layers (32, 32 | maxpool 2 | 64, 64 channels), global average
pool, Linear head; trained here with AdamW + one-cycle LR and random +-1 pixel shifts
(seeded, deterministic), exported with ``torch.onnx.export`` (opset 17, dynamic batch,
``dynamo=False``) and cached under /tmp (``--retrain`` trains again).

Then, for each criterion x MACs target x repair setting, ``onnxprune.prune(path,
target_macs=T, criterion=C, calibration={input: calib_x}, recover=R, round_to=1,
allocation="uniform", verify=True)``; the best criterion (mean test accuracy over the
targets, repaired) is run again with ``allocation="global"`` and ``"sensitivity"``.
Reported: MACs kept (onnxprune's report, and this script's own count from the pruned ONNX
graph), test accuracy, top-1 agreement with the dense model on the test split, seconds.

    python scripts/bench_digits.py [--criteria l2,activation,wanda,taylor,fisher,obs]
                                   [--targets 0.7,0.5,0.35] [--allocations global,sensitivity]
                                   [--retrain] [--write-docs]
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

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxprune  # noqa: E402
from onnxprune.runtime import session  # noqa: E402

CACHE = Path("/tmp/onnxprune_bench_digits")
CHANNELS = (32, 32, 64, 64)
GOAL_ACC, GOAL_MACS = 0.99, 0.50


# ----------------------------------------------------------------------------- data


def split(seed: int, test_size: float, calib: int):
    """(train x, train y, calib x, test x, test y); x float32 N x 1 x 8 x 8 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    _, xcal, _, _ = train_test_split(xtr, ytr, test_size=calib, stratify=ytr, random_state=seed + 1)
    return xtr, ytr, xcal, xte, yte


# ----------------------------------------------------------------------------- model


def build_net(channels=CHANNELS):
    import torch.nn as nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    c1, c2, c3, c4 = channels
    return nn.Sequential(*block(1, c1), *block(c1, c2), nn.MaxPool2d(2), *block(c2, c3), *block(c3, c4),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c4, 10))


def train(xtr, ytr, xte, yte, epochs: int, seed: int, threads: int, log=print):
    """The trained torch model (eval mode) and its test accuracy in torch."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    net = build_net()
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xe, ye = torch.from_numpy(xte), torch.from_numpy(yte)
    n, bs, lr = len(xt), 64, 3e-3
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * ((n + bs - 1) // bs))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    acc = 0.0
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            xb = F.pad(xt[idx], (1, 1, 1, 1))  # random +-1 pixel shift (one per batch)
            dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
            xb = xb[..., dy:dy + 8, dx:dx + 8]
            loss = F.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (ep + 1) % 10 == 0 or ep + 1 == epochs:
            net.eval()
            with torch.no_grad():
                acc = (net(xe).argmax(1) == ye).float().mean().item()
            log(f"  epoch {ep + 1:3d}/{epochs}  loss {loss.item():.4f}  test acc (torch) {acc:.4f}  "
                f"{time.perf_counter() - t0:.0f} s")
    net.eval()
    return net, acc, time.perf_counter() - t0


def export(net, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter (dynamo=False) is deprecated, and asked for
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp), opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- measuring


def logits(model, x: np.ndarray, input_name: str) -> np.ndarray:
    sess = session(model, device="cpu")
    out = sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], {input_name: x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def own_macs(model: onnx.ModelProto) -> int:
    """MACs at batch 1 counted from the graph by this script (independent of onnxprune's
    cost model): Conv N·Cout·Hout·Wout·Cin/groups·kh·kw, Gemm/MatMul M·N·K."""
    m = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    total = 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            w, y = shapes[node.input[1]], shapes[node.output[0]]
            total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
            n = b[0] if trans_b else b[1]
            total += m * n * k
        elif node.op_type == "MatMul":
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            total += int(np.prod(shapes[node.output[0]])) * a[-1]
    return total


def run_one(path: Path, input_name: str, calib_x, test_x, test_y, dense_pred, dense_macs, criterion, target,
            recover, allocation) -> dict:
    row = {"criterion": criterion, "allocation": allocation, "repair": "on" if recover else "off", "target": target}
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = onnxprune.prune(str(path), target_macs=target, criterion=criterion, calibration={input_name: calib_x},
                                labels=None, recover=recover, round_to=1, verify=True, allocation=allocation,
                                device="cpu", progress=False)
    except Exception as e:  # noqa: BLE001 - recorded in the table
        row.update(seconds=time.perf_counter() - t, error=f"{type(e).__name__}: {e}"[:160])
        return row
    row["seconds"] = time.perf_counter() - t
    pred = logits(r.model, test_x, input_name).argmax(1)
    row.update(macs=r.report["macs_ratio"], own_macs=own_macs(r.model) / dense_macs,
               acc=float((pred == test_y).mean()), agree=float((pred == dense_pred).mean()))
    return row


def fmt_row(r: dict) -> str:
    head = f"| {r['criterion']} | {r['allocation']} | {r['repair']} | {r['target']:.2f} |"
    if "error" in r:
        return f"{head} - | - | - | - | {r['seconds']:.1f} | {r['error']} |"
    return (f"{head} {r['macs']:.3f} | {r['own_macs']:.3f} | {r['acc']:.4f} | {r['agree']:.4f} | "
            f"{r['seconds']:.1f} | |")


TABLE_HEAD = ("| criterion | allocation | repair | target MACs | MACs kept (report) | MACs kept (own count) | "
              "test accuracy | agreement with dense | seconds | error |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|")


def verdict(rows: list[dict]) -> tuple[bool, str]:
    ok = [r for r in rows if "error" not in r and r["own_macs"] <= GOAL_MACS + 1e-9 and r["macs"] <= GOAL_MACS + 1e-9]
    best = max(ok, key=lambda r: r["acc"], default=None)
    if best is None:
        return False, f"no setting reached <= {GOAL_MACS:.2f} of dense MACs"
    passed = best["acc"] >= GOAL_ACC
    return passed, (f"{'PASS' if passed else 'FAIL'}: test accuracy >= {GOAL_ACC} at <= {GOAL_MACS:.2f} of dense MACs "
                    f"(best: {best['acc']:.4f} at {best['own_macs']:.3f} MACs, {best['criterion']}, "
                    f"{best['allocation']} allocation, repair {best['repair']})")


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--criteria", default="l2,activation,wanda,taylor,fisher,obs")
    p.add_argument("--targets", default="0.7,0.5,0.35")
    p.add_argument("--repairs", default="off,on")
    p.add_argument("--allocations", default="global,sensitivity",
                   help="extra allocations run for the best criterion (uniform always runs)")
    p.add_argument("--calib", type=int, default=200, help="calibration samples drawn from the train split")
    p.add_argument("--test-size", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--retrain", action="store_true", help="train again even when the cached model exists")
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args(argv)
    criteria = [c for c in args.criteria.split(",") if c]
    targets = [float(t) for t in args.targets.split(",") if t]
    repairs = [{"off": False, "on": True}[r] for r in args.repairs.split(",") if r]
    extra = [a for a in args.allocations.split(",") if a]

    xtr, ytr, xcal, xte, yte = split(args.seed, args.test_size, args.calib)
    print(f"digits: {len(xtr)} train ({len(xcal)} of them calibration), {len(xte)} test; seed {args.seed}")
    tag = f"c{'-'.join(map(str, CHANNELS))}_e{args.epochs}_s{args.seed}_t{args.test_size:g}"
    path = CACHE / f"digits_cnn_{tag}.onnx"
    meta_path = path.with_suffix(".json")
    if args.retrain or not path.exists():
        print(f"training {CHANNELS} CNN, {args.epochs} epochs ...")
        net, torch_acc, train_s = train(xtr, ytr, xte, yte, args.epochs, args.seed, args.threads)
        export(net, path)
        meta_path.write_text(json.dumps({"torch_acc": torch_acc, "train_seconds": train_s, "epochs": args.epochs}))
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    print(f"model: {path} (trained in {meta.get('train_seconds', float('nan')):.0f} s)")

    dense = onnx.load(str(path))
    input_name = dense.graph.input[0].name
    dense_logits = logits(dense, xte, input_name)
    dense_pred = dense_logits.argmax(1)
    dense_acc = float((dense_pred == yte).mean())
    dense_macs = own_macs(dense)
    print(f"dense: test accuracy {dense_acc:.4f} ({int((dense_pred != yte).sum())} errors of {len(yte)}), "
          f"{dense_macs / 1e6:.3f} M MACs, {sum(int(np.prod(t.dims)) for t in dense.graph.initializer) / 1e3:.1f} k params")
    if dense_acc < GOAL_ACC:
        print(f"warning: the dense model itself is below {GOAL_ACC}")

    t_all = time.perf_counter()
    rows: list[dict] = []
    print("\n" + TABLE_HEAD)

    def go(criterion, target, recover, allocation):
        row = run_one(path, input_name, xcal, xte, yte, dense_pred, dense_macs, criterion, target, recover, allocation)
        rows.append(row)
        print(fmt_row(row), flush=True)

    for c in criteria:
        for t in targets:
            for rep in repairs:
                go(c, t, rep, "uniform")
    scored = {}
    for c in criteria:
        accs = [r["acc"] for r in rows if r["criterion"] == c and r["repair"] == "on" and "acc" in r]
        if accs:
            scored[c] = float(np.mean(accs))
    best = max(scored, key=scored.get) if scored else None
    if best is not None:
        for a in extra:
            for t in targets:
                for rep in repairs:
                    go(best, t, rep, a)
    total = time.perf_counter() - t_all
    passed, line = verdict(rows)
    print(f"\nbest criterion (mean repaired test accuracy over the targets, uniform): {best}")
    print(line)
    print(f"pruning sweep: {total:.0f} s")

    if args.write_docs:
        from benchdocs import write_section

        write_section("bench_digits", render(args, meta, dense_acc, int((dense_pred != yte).sum()), len(yte),
                                             dense_macs, dense, rows, best, line, total, len(xtr), len(xcal)))
    return 0


def render(args, meta, dense_acc, errors, n_test, dense_macs, dense, rows, best, line, total, n_train, n_cal) -> str:
    import onnxruntime
    import sklearn
    import torch

    cmd = "python scripts/bench_digits.py" + (" --write-docs" if args.write_docs else "")
    defaults = {"criteria": "l2,activation,wanda,taylor,fisher,obs", "targets": "0.7,0.5,0.35", "repairs": "off,on",
                "allocations": "global,sensitivity", "calib": 200, "test_size": 0.3, "seed": 0, "epochs": 40}
    for k, v in defaults.items():
        if getattr(args, k) != v:
            cmd = cmd.replace(" --write-docs", "") + f" --{k.replace('_', '-')} {getattr(args, k)}" + \
                (" --write-docs" if args.write_docs else "")
    cpu = platform.processor() or platform.machine()
    return f"""
## Small CNN on scikit-learn digits (`scripts/bench_digits.py`)

Issue 5's goal for a small trained CNN: test accuracy >= {GOAL_ACC} at <= {GOAL_MACS:.2f} of dense MACs, no
fine-tuning. Regenerated by `scripts/bench_digits.py --write-docs`; do not edit by hand.

- **Date:** {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {os.cpu_count()} CPUs ({cpu}); Python {platform.python_version()},
  torch {torch.__version__}, scikit-learn {sklearn.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}
- **Command:** `{cmd}`
- **Data:** `sklearn.datasets.load_digits` (8x8 grey, pixels / 16), stratified split (seed {args.seed}): {n_train} train,
  {n_test} test; calibration = {n_cal} samples drawn (stratified) from the train split, never the test split.
- **Model:** Conv3x3-BN-ReLU x2 ({CHANNELS[0]}, {CHANNELS[1]}) · MaxPool 2 · Conv3x3-BN-ReLU x2 ({CHANNELS[2]}, {CHANNELS[3]}) ·
  global average pool · Linear(10); AdamW, one-cycle LR 3e-3, {meta.get('epochs', args.epochs)} epochs, batch 64, random +-1 pixel
  shifts, seeded; trained in {meta.get('train_seconds', float('nan')):.0f} s on CPU; exported with `torch.onnx.export`
  (opset 17, dynamic batch, `dynamo=False`). {dense_macs / 1e6:.3f} M MACs, {sum(int(np.prod(t.dims)) for t in dense.graph.initializer) / 1e3:.1f} k params.
- **Dense test accuracy:** {dense_acc:.4f} ({errors} errors of {n_test}).
- **Pruning:** `onnxprune.prune(model, target_macs=T, criterion=C, calibration={{input: calib_x}}, labels=None,
  recover=R, round_to=1, allocation=A, verify=True)`; "uniform" for every criterion, then `global` and `sensitivity`
  allocation for the best criterion by mean repaired accuracy (here **{best}**). MACs kept: onnxprune's report, and this
  script's own count from the pruned graph (Conv N·Cout·Hout·Wout·Cin/groups·kh·kw, Gemm M·N·K, batch 1).
  Accuracy and agreement (top-1 equal to the dense model's) on the {n_test} test images; seconds = the `prune()` call.
  Whole sweep: {total:.0f} s.

{TABLE_HEAD}
{chr(10).join(fmt_row(r) for r in rows)}

```
{line}
```
"""


if __name__ == "__main__":
    sys.exit(main())
