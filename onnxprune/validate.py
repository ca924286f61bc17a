"""Compare a pruned model with its original: outputs, classifier agreement and accuracy,
model facts and ONNX Runtime latency, with pass/fail against a budget or tolerances."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import onnx

from .cost import count_macs, count_params
from .data import Dataset, load_data
from .errors import BadArgumentError
from .model import ModelSource, load_model
from .progress import Progress
from .runtime import session
from .shapes import approx_size

METRICS = ("agreement", "accuracy", "recall", "f1", "cosine", "mse")
LABEL_METRICS = ("accuracy", "recall", "f1")


def validate(original: ModelSource, pruned: ModelSource, data=None, *, labels: str | None = None,
             metric: str = "agreement", max_drop: float | None = None, atol: float | None = None,
             rtol: float | None = None, latency_runs: int = 20, input_shapes: dict | None = None,
             batch_size: int = 16, device: str = "cpu", dataset: Dataset | None = None,
             progress: bool | None = None, image_options=None) -> dict:
    """The comparison as a dict; ``passed`` is False when ``max_drop`` or the tolerances
    are exceeded (``failures`` says which)."""
    if metric not in METRICS:
        raise BadArgumentError(f"unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    if metric in LABEL_METRICS and labels is None and (dataset is None or dataset.labels is None):
        raise BadArgumentError(f"metric '{metric}' needs labels (--labels KEY in the data)")
    if max_drop is not None and max_drop < 0:
        raise BadArgumentError(f"--max-drop must be >= 0, got {max_drop:g}")
    a, b = load_model(original, copy_proto=False), load_model(pruned, copy_proto=False)  # only read here
    if dataset is None:
        dataset = load_data(data if data is not None else "random:8", a, labels_key=labels,
                            batch_size=batch_size, input_shapes=input_shapes, image_options=image_options)
    sa, sb = session(a, device), session(b, device)
    names = [o.name for o in a.graph.output]
    outs_a = {n: [] for n in names}
    outs_b = {n: [] for n in names}
    bar = Progress(len(dataset.batches), "validating batch", progress)
    for feeds in dataset.batches:
        for n, va, vb in zip(names, sa.run(None, feeds), sb.run(None, feeds)):
            outs_a[n].append(np.asarray(va))
            outs_b[n].append(np.asarray(vb))
        bar.step()
    bar.close()
    outputs = [_compare(n, np.concatenate(outs_a[n]), np.concatenate(outs_b[n])) for n in names]
    result = {
        "samples": dataset.samples,
        "synthetic_data": dataset.synthetic,
        "outputs": outputs,
        "classifier": _classifier(np.concatenate(outs_a[names[0]]), np.concatenate(outs_b[names[0]]),
                                  dataset.labels),
        "model": _facts(a, b, input_shapes),
        "latency": interleaved_latency(sa, sb, dataset.batches[0], latency_runs) if latency_runs else None,
    }
    failures = _judge(result, metric, max_drop, atol, rtol, names, outs_a, outs_b)
    result.update(metric=metric, max_drop=max_drop, atol=atol, rtol=rtol, passed=not failures, failures=failures)
    return result


def _compare(name: str, a: np.ndarray, b: np.ndarray) -> dict:
    if a.shape != b.shape:
        return {"name": name, "shape_before": list(a.shape), "shape_after": list(b.shape), "comparable": False}
    a64, b64 = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
    diff = a64 - b64
    noise = float((diff ** 2).sum())
    signal = float((a64 ** 2).sum())
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    cos = np.where((na > 0) & (nb > 0), (a64 * b64).sum(1) / np.maximum(na * nb, 1e-30), (na == nb).astype(float))
    return {
        "name": name, "comparable": True, "shape": list(a.shape),
        "max_abs_diff": float(np.abs(diff).max()) if diff.size else 0.0,
        "mean_abs_diff": float(np.abs(diff).mean()) if diff.size else 0.0,
        "mse": float((diff ** 2).mean()) if diff.size else 0.0,
        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
        # None when the outputs are identical (infinite SNR has no JSON spelling)
        "snr_db": None if noise == 0 else (float(10 * np.log10(signal / noise)) if signal > 0 else -300.0),
    }


def _classifier(a: np.ndarray, b: np.ndarray, labels) -> dict | None:
    """Top-1/top-5 agreement (and label metrics) when the first output looks like logits."""
    if a.ndim != 2 or a.shape[1] < 2 or a.shape != b.shape:
        return None
    top_a, top_b = a.argmax(1), b.argmax(1)
    out = {"classes": int(a.shape[1]), "top1_agreement": float((top_a == top_b).mean())}
    if a.shape[1] >= 5:
        top5_b = np.argsort(-b, axis=1)[:, :5]
        out["top5_agreement"] = float((top5_b == top_a[:, None]).any(1).mean())
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64)
        for tag, pred in (("before", top_a), ("after", top_b)):
            out[f"accuracy_{tag}"] = float((pred == labels).mean())
            recall, f1 = _macro(pred, labels, a.shape[1])
            out[f"recall_{tag}"], out[f"f1_{tag}"] = recall, f1
    return out


def _macro(pred: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float]:
    recalls, f1s = [], []
    for c in np.unique(labels):
        tp = float(((pred == c) & (labels == c)).sum())
        fn = float(((pred != c) & (labels == c)).sum())
        fp = float(((pred == c) & (labels != c)).sum())
        r = tp / (tp + fn) if tp + fn else 0.0
        p = tp / (tp + fp) if tp + fp else 0.0
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(recalls)), float(np.mean(f1s))


def _facts(a: onnx.ModelProto, b: onnx.ModelProto, input_shapes) -> dict:
    ops_a, ops_b = Counter(n.op_type for n in a.graph.node), Counter(n.op_type for n in b.graph.node)
    return {
        "params_before": count_params(a), "params_after": count_params(b),
        "macs_before": count_macs(a, input_shapes), "macs_after": count_macs(b, input_shapes),
        "bytes_before": approx_size(a), "bytes_after": approx_size(b),
        "ops_before": dict(sorted(ops_a.items())), "ops_after": dict(sorted(ops_b.items())),
    }


def interleaved_latency(sa, sb, feeds: dict, runs: int) -> dict:
    """Both sessions timed alternately on the same batch after a warm-up, so machine
    noise hits both alike; p50/p90 in milliseconds."""
    for _ in range(3):
        sa.run(None, feeds)
        sb.run(None, feeds)
    ta, tb = [], []
    for i in range(runs):
        order = ((sa, ta), (sb, tb)) if i % 2 == 0 else ((sb, tb), (sa, ta))
        for sess, acc in order:
            t = time.perf_counter()
            sess.run(None, feeds)
            acc.append((time.perf_counter() - t) * 1e3)
    p = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
    return {"runs": runs, "batch": int(next(iter(feeds.values())).shape[0]),
            "p50_before_ms": p(ta, 50), "p90_before_ms": p(ta, 90), "p50_after_ms": p(tb, 50),
            "p90_after_ms": p(tb, 90), "ratio": p(tb, 50) / p(ta, 50) if p(ta, 50) > 0 else None}


def metric_drop(result: dict, metric: str) -> float | None:
    """How much worse the pruned model is on ``metric`` (0 = as good as the original)."""
    cls = result.get("classifier") or {}
    if metric == "agreement":
        return None if "top1_agreement" not in cls else 1.0 - cls["top1_agreement"]
    if metric in LABEL_METRICS:
        key = {"accuracy": "accuracy", "recall": "recall", "f1": "f1"}[metric]
        return None if f"{key}_before" not in cls else cls[f"{key}_before"] - cls[f"{key}_after"]
    comparable = [o for o in result["outputs"] if o.get("comparable")]
    if not comparable:
        return None
    if metric == "cosine":
        return 1.0 - min(o["cosine_mean"] for o in comparable)
    return max(o["mse"] for o in comparable)


def _judge(result, metric, max_drop, atol, rtol, names, outs_a, outs_b) -> list[str]:
    failures = []
    for o in result["outputs"]:
        if not o.get("comparable"):
            failures.append(f"output '{o['name']}' changed shape {o['shape_before']} -> {o['shape_after']}")
    if max_drop is not None:
        drop = metric_drop(result, metric)
        result["drop"] = drop
        if drop is None:
            failures.append(f"metric '{metric}' does not apply to this model's outputs")
        elif drop > max_drop:
            failures.append(f"{metric} drop {drop:.4f} exceeds --max-drop {max_drop:g}")
    if atol is not None or rtol is not None:
        at, rt = atol or 0.0, rtol or 0.0
        for n in names:
            a, b = np.concatenate(outs_a[n]), np.concatenate(outs_b[n])
            if a.shape == b.shape and not np.all(np.abs(a - b) <= at + rt * np.abs(a)):
                worst = float(np.abs(a - b).max())
                failures.append(f"output '{n}' differs by up to {worst:.3g} (atol {at:g}, rtol {rt:g})")
    return failures
