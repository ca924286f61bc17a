#!/usr/bin/env python
"""Run ``onnxprune inspect`` + ``onnxprune prune --ratio 0.3`` on every model in a folder
and verify the results independently of onnxprune.

Not run by CI. Meant for models the fixtures do not contain, e.g. the ones written by
``scripts/export_unseen_models.py`` (default folder ``/work/unseen``).

For each ``*.onnx``:

* ``onnxprune inspect --json MODEL`` (groups, blocking reasons);
* ``onnxprune prune MODEL -o OUT --ratio 0.3 --report R.json`` (exit code, stderr);
* on exit 0: ``onnx.checker.check_model(full_check=True)`` on OUT, an onnxruntime CPU
  run of original and pruned on the same random input with batch 2, the same graph
  input/output names, element types and (symbolic) shapes, the same runtime output
  shapes, finite outputs; the MACs ratio from the report.

``--input-shape NAME=DxD..`` is passed (to both commands) for inputs that have a dynamic
dimension other than axis 0, from ``manifest.json`` when present, otherwise 16 per
dynamic dim.

Violations flagged:

* (a) a traceback or "internal error" in stderr (either command);
* (b) exit 0 but invalid model / ORT failure / changed IO;
* (c) exit 0 but MACs ratio > 0.90 while inspect reported prunable groups;
* (d) non-zero exit with no clear one-line message.

Usage::

    python scripts/check_unseen.py [DIR] [--only NAME ...] [--timeout 300] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ONNX2NP = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.BOOL: np.bool_,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8,
}


def io_sig(model: onnx.ModelProto) -> dict:
    inits = {i.name for i in model.graph.initializer}

    def one(vi):
        t = vi.type.tensor_type
        dims = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                dims.append(d.dim_value)
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append("?")
        return {"name": vi.name, "elem": t.elem_type, "shape": dims if t.HasField("shape") else None}

    return {
        "inputs": [one(v) for v in model.graph.input if v.name not in inits],
        "outputs": [one(v) for v in model.graph.output],
    }


def exporter_of(model: onnx.ModelProto) -> str:
    ops = {o.domain: o.version for o in model.opset_import}
    prod = model.producer_name or "?"
    ver = model.producer_version or ""
    return f"{prod} {ver}".strip() + f" / opset {ops.get('', ops.get('ai.onnx', '?'))}"


def needed_shapes(sig: dict, manifest_entry: dict | None) -> dict[str, list[int]]:
    """Concrete shapes for inputs with a dynamic non-batch dim (batch 1)."""
    out = {}
    man = (manifest_entry or {}).get("input_shapes", {})
    for i in sig["inputs"]:
        shp = i["shape"] or []
        if any(not isinstance(d, int) or d <= 0 for d in shp[1:]):
            if i["name"] in man:
                out[i["name"]] = list(man[i["name"]])
            else:
                out[i["name"]] = [1] + [d if isinstance(d, int) and d > 0 else 16 for d in shp[1:]]
    return out


def make_feed(sig: dict, shapes: dict[str, list[int]], batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feed = {}
    for i in sig["inputs"]:
        if i["name"] in shapes:
            shp = list(shapes[i["name"]])
        else:
            shp = [d if isinstance(d, int) and d > 0 else 1 for d in (i["shape"] or [])]
        if shp:
            shp[0] = batch
        dt = ONNX2NP.get(i["elem"], np.float32)
        lname = i["name"].lower()
        if np.issubdtype(dt, np.integer):
            if "mask" in lname:
                feed[i["name"]] = np.ones(shp, dtype=dt)
            elif "type" in lname:
                feed[i["name"]] = np.zeros(shp, dtype=dt)
            else:
                feed[i["name"]] = rng.integers(0, 100, size=shp).astype(dt)
        elif dt == np.bool_:
            feed[i["name"]] = np.ones(shp, dtype=dt)
        else:
            feed[i["name"]] = rng.standard_normal(shp).astype(dt)
    return feed


def run_ort(path: str, feed: dict):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def run_cmd(cmd: list[str], timeout: float):
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.time() - t
    except subprocess.TimeoutExpired as e:
        so = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        se = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return "TIMEOUT", so, se, time.time() - t


def bad_stderr(stderr: str) -> bool:
    s = stderr.lower()
    return "traceback (most recent call last)" in s or "internal error" in s


def clear_message(stderr: str) -> bool:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return 1 <= len(lines) <= 3 and not bad_stderr(stderr) and len(lines[0]) > 10


def check_model(path: Path, manifest: dict, timeout: float, workdir: Path) -> dict:
    name = path.stem
    r: dict = {"model": name, "file": str(path), "violations": []}
    orig = onnx.load(str(path))
    sig = io_sig(orig)
    ent = manifest.get(name)
    r["exporter"] = (
        f"{ent['exporter']} / opset {ent['opset']}" if ent and "exporter" in ent else exporter_of(orig)
    )
    shapes = needed_shapes(sig, ent)
    shape_args = []
    for k, v in shapes.items():
        shape_args += ["--input-shape", f"{k}={'x'.join(map(str, v))}"]
    r["shape_args"] = shape_args

    # ---- inspect
    icmd = ["onnxprune", "inspect", "--json", str(path), *shape_args]
    rc, so, se, dt = run_cmd(icmd, timeout)
    r["inspect_rc"], r["inspect_s"] = rc, round(dt, 1)
    r["inspect_cmd"] = shlex.join(icmd)
    prunable = None
    if rc == 0:
        try:
            ij = json.loads(so)
            s = ij["summary"]
            prunable, total = s["prunable"], s["groups"]
            r["groups"] = f"{prunable}/{total}"
            r["prunable_macs_share"] = s.get("prunable_macs_share")
            r["blocked_reasons"] = Counter(s.get("blocked_reasons", {})).most_common(3)
        except Exception as e:  # noqa: BLE001
            r["groups"] = "?"
            r["violations"].append(f"(a') inspect --json output not parseable: {e}")
    else:
        r["groups"] = "ERR"
        r["inspect_stderr"] = se.strip()[-2000:]
    if bad_stderr(se):
        r["violations"].append("(a) inspect: traceback/internal error in stderr")
    if rc not in (0,) and not clear_message(se):
        r["violations"].append(f"(d) inspect exit {rc} without a clear one-line message")

    # ---- prune
    out = workdir / f"{name}.pruned.onnx"
    rep = workdir / f"{name}.report.json"
    for p in (out, rep):
        if p.exists():
            p.unlink()
    pcmd = ["onnxprune", "prune", str(path), "-o", str(out), "--ratio", "0.3", "--report", str(rep), *shape_args]
    rc, so, se, dt = run_cmd(pcmd, timeout)
    r["prune_rc"], r["prune_s"] = rc, round(dt, 1)
    r["prune_cmd"] = shlex.join(pcmd)
    r["prune_stderr"] = se.strip()[-3000:]
    if bad_stderr(se):
        r["violations"].append("(a) prune: traceback/internal error in stderr")
    if rc != 0:
        lines = [ln for ln in se.strip().splitlines() if ln.strip()]
        r["refusal"] = lines[0] if lines else "(empty stderr)"
        if rc == "TIMEOUT":
            r["violations"].append(f"(d) prune timed out after {timeout:.0f}s")
        elif not clear_message(se):
            r["violations"].append(f"(d) prune exit {rc} without a clear one-line message")
        r["valid"] = "-"
        return r

    # ---- exit 0: independent verification
    problems = []
    if rep.exists():
        try:
            rj = json.loads(rep.read_text())
            r["macs_ratio"] = rj.get("macs_ratio")
            r["params_ratio"] = rj.get("params_ratio")
            r["groups_pruned"] = rj.get("groups_pruned")
        except Exception as e:  # noqa: BLE001
            problems.append(f"report unreadable: {e}")
    else:
        problems.append("no report written")
    if not out.exists():
        problems.append("exit 0 but no output file")
    else:
        try:
            pm = onnx.load(str(out))
            onnx.checker.check_model(pm, full_check=True)
        except Exception as e:  # noqa: BLE001
            problems.append(f"checker: {type(e).__name__}: {str(e).strip()[:400]}")
            pm = onnx.load(str(out)) if out.exists() else None
        if pm is not None:
            psig = io_sig(pm)
            if psig != sig:
                problems.append(f"IO changed: before {sig} after {psig}")
        feed = make_feed(sig, shapes, batch=2)
        try:
            ro = run_ort(str(path), feed)
        except Exception as e:  # noqa: BLE001
            ro = None
            r["orig_ort_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        try:
            rp = run_ort(str(out), feed)
            if ro is not None:
                if [a.shape for a in ro] != [a.shape for a in rp]:
                    problems.append(f"runtime output shapes differ: {[a.shape for a in ro]} vs {[a.shape for a in rp]}")
                if [a.dtype for a in ro] != [a.dtype for a in rp]:
                    problems.append("runtime output dtypes differ")
            for a in rp:
                if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
                    problems.append("non-finite values in pruned output")
                    break
        except Exception as e:  # noqa: BLE001
            problems.append(f"ORT on pruned: {type(e).__name__}: {str(e).strip()[:400]}")
    r["valid"] = "no" if problems else "yes"
    r["problems"] = problems
    if problems:
        r["violations"].append("(b) exit 0 but: " + " | ".join(problems))
    mr = r.get("macs_ratio")
    if prunable and mr is not None and mr > 0.90:
        r["violations"].append(f"(c) exit 0, {prunable} prunable groups, but MACs ratio {mr:.3f} > 0.90")
    return r


def fmt_table(rows: list[dict]) -> str:
    hdr = ["model", "exporter/opset", "groups", "exit", "valid", "MACs", "notes"]
    lines = []
    data = []
    for r in rows:
        mr = r.get("macs_ratio")
        if r.get("prune_rc") != 0:
            note = f"refused: {r.get('refusal', '')}"
        else:
            note = "; ".join(f"{n}x {k}" for k, n in r.get("blocked_reasons") or [])
        if r["violations"]:
            note = "VIOLATION " + " ".join(v.split(" ")[0] for v in r["violations"]) + " " + note
        data.append(
            [
                r["model"],
                r["exporter"],
                str(r.get("groups", "?")),
                str(r.get("prune_rc")),
                r.get("valid", "-"),
                f"{mr:.3f}" if isinstance(mr, (int, float)) else "-",
                note[:160],
            ]
        )
    w = [max(len(h), *(len(d[i]) for d in data)) if data else len(h) for i, h in enumerate(hdr)]
    w[-1] = len(hdr[-1])
    lines.append(" | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    lines.append("-+-".join("-" * w[i] for i in range(len(hdr))))
    for d in data:
        lines.append(" | ".join(d[i].ljust(w[i]) for i in range(len(hdr))))
    return "\n".join(lines)


def onnxprune_source_hash() -> str:
    """Hash of the installed onnxprune package sources, to detect edits during a run."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("onnxprune")
    if spec is None or not spec.submodule_search_locations:
        return "?"
    root = Path(list(spec.submodule_search_locations)[0])
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default="/work/unseen")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", dest="json_out", help="write all results here")
    ap.add_argument("--workdir", help="where pruned models and reports go (default: a temp dir)")
    a = ap.parse_args()
    d = Path(a.dir)
    mpath = d / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    files = sorted(d.glob("*.onnx"))
    files = [f for f in files if not f.name.endswith(".pruned.onnx")]
    if a.only:
        files = [f for f in files if f.stem in a.only]
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="check_unseen_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    src_before = onnxprune_source_hash()
    for f in files:
        t = time.time()
        try:
            r = check_model(f, manifest, a.timeout, workdir)
        except Exception as e:  # noqa: BLE001
            r = {"model": f.stem, "exporter": "?", "violations": [f"(harness) {type(e).__name__}: {e}"]}
        rows.append(r)
        print(
            f"{f.stem:36s} groups {r.get('groups', '?'):>8s} exit {str(r.get('prune_rc')):>3s} "
            f"valid {r.get('valid', '-'):3s} MACs {r.get('macs_ratio', '-')!s:.6s} "
            f"({time.time() - t:.0f}s){'  VIOLATION' if r['violations'] else ''}",
            file=sys.stderr,
            flush=True,
        )
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(rows, indent=1, default=str))
    src_after = onnxprune_source_hash()
    print(f"onnxprune sources {src_before}" + ("" if src_after == src_before else f" -> {src_after} (CHANGED DURING THE RUN: results mix versions)"))
    skipped = {k: v.get("reason") for k, v in manifest.items() if v.get("status") == "skipped"}
    print(fmt_table(rows))
    if skipped:
        print("\nnot exported (from manifest):")
        for k, v in skipped.items():
            print(f"  {k}: {v}")
    viol = [r for r in rows if r["violations"]]
    print(f"\n{len(rows)} models, {len(viol)} with violations")
    for r in viol:
        print(f"\n== {r['model']}")
        for v in r["violations"]:
            print(f"  {v}")
        if "prune_cmd" in r:
            print(f"  repro: {r['prune_cmd']}")
        if r.get("prune_stderr"):
            print("  stderr: " + r["prune_stderr"][-1200:].replace("\n", "\n          "))
        if r.get("inspect_stderr"):
            print("  inspect stderr: " + r["inspect_stderr"][-800:].replace("\n", "\n          "))
    print(f"\n(pruned models and reports in {workdir})")
    return 1 if viol else 0


if __name__ == "__main__":
    sys.exit(main())
