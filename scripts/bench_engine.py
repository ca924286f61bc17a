#!/usr/bin/env python
"""Engine benchmark: onnxprune vs onnxsim's structured pruning on ResNet-50 and MobileNetV2.

Not run by CI. For each model in ``--models`` (``resnet50.onnx``, ``mobilenetv2.onnx``, made by
``scripts/export_bench_models.py``) it prints, side by side:

* wall time of the whole process ``onnxprune prune IN -o OUT --ratio R`` vs onnxsim 0.8.1's
  ``apply_structured_pruning(sparsity=R, importance_norm="l2")`` as a whole process
  (interpreter start + import + load + prune + save), one untimed warm-up each, then
  interleaved repetitions A, B, A, B, ...; median and min of each and ours/theirs;
* the MACs ratio (pruned/original) each tool reaches: onnxprune's own ``--report`` and an
  independent counter in this file (Conv, Gemm, MatMul; batch fixed to 1), applied to every
  output as a cross-check;
* ORT CPU latency ratio pruned/original (batch 1, 1x3x224x224 float32, fixed thread count,
  warm-up, then original and pruned sessions timed interleaved in one loop, medians) for
  onnxprune ``--target-macs 0.5`` and ``--ratio R`` and for onnxsim at ``R``;
* validity of every output: ``onnx.checker.check_model(full_check=True)`` and ORT runs
  (batch 1 and batch 2, since the batch axis is dynamic); failures print as ``FAIL: <error>``.

Targets (PASS/FAIL lines): onnxprune's median time <= onnxsim's; onnxprune's latency ratio
<= 1.15 x its MACs ratio at ~0.5 MACs.

onnxsim conflicts with nothing here but lives in its own venv so that it cannot change this
environment; ``--onnxsim-python`` names that venv's python::

    python -m venv /work/venv-onnxsim && /work/venv-onnxsim/bin/pip install onnxsim==0.8.1
    python scripts/export_bench_models.py            # -> /work/bench_models/*.onnx
    python scripts/bench_engine.py --write-docs      # -> docs/benchmarks.md, "## Engine"
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdocs import write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
START = "<!-- bench_engine:start -->"
END = "<!-- bench_engine:end -->"
MODELS = ("resnet50", "mobilenetv2")
DEFAULT_ONNXSIM_PYTHON = "/work/venv-onnxsim/bin/python"
LATENCY_SLACK = 1.15

# Run by the onnxsim venv's python: load, prune (uniform L2 filter magnitude), save.
ONNXSIM_RUNNER = """\
import sys

import onnx
from onnxsim import apply_structured_pruning

src, dst, ratio = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = onnx.load(src)
pruned = apply_structured_pruning(model, sparsity=ratio, importance_norm="l2", global_sparsity=False)
onnx.save(pruned, dst)
"""


# --------------------------------------------------------------------------------------
# independent MACs / params counter
# --------------------------------------------------------------------------------------


def _fixed_batch_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of every tensor after fixing each symbolic input dim to 1 and inferring."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if not d.HasField("dim_value"):
                    d.Clear()
                    d.dim_value = 1
    del m.graph.value_info[:]  # a pruner may leave stale shapes behind
    for vi in m.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)

    shapes: dict[str, list[int | None]] = {}
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in m.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            shapes.setdefault(vi.name, [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim])
    return shapes


def _prod(xs: list[int | None]) -> int:
    out = 1
    for x in xs:
        if x is None:
            raise ValueError("unknown dim")
        out *= x
    return out


def count_macs(model: onnx.ModelProto) -> int:
    """MACs at batch 1: Conv N*Cout*Hout*Wout*(Cin/groups)*kh*kw, Gemm/MatMul M*N*K."""
    shapes = _fixed_batch_shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        try:
            out = shapes[node.output[0]]
            if node.op_type == "Conv":
                w = shapes[node.input[1]]  # [Cout, Cin/groups, k...]
                total += _prod(out) * _prod(w[1:])
            elif node.op_type == "Gemm":
                a = shapes[node.input[0]]
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[0] if trans_a else a[1]
                total += _prod(out) * _prod([k])
            else:  # MatMul
                a = shapes[node.input[0]]
                total += _prod(out) * _prod([a[-1]])
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"cannot count MACs of {node.op_type} {node.name!r}: missing shape ({exc})") from None
    return total


def count_params(model: onnx.ModelProto) -> int:
    """Elements of every float initializer and Constant (shared tensors counted once)."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    n = sum(_prod(list(t.dims)) for t in model.graph.initializer if t.data_type in floats)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in floats:
                    n += _prod(list(a.t.dims))
    return n


# --------------------------------------------------------------------------------------
# validation and latency
# --------------------------------------------------------------------------------------


def _one_line(exc: BaseException, limit: int = 200) -> str:
    msg = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    # ORT: "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running
    # FusedConv node. Name:'x' Status Message: conv.cc:261 Compute Conv : bias must be ..."
    node = re.search(r"while running (\w+) node\. Name:'([^']*)' Status Message: (?:\S+:\d+ )?(.*)", msg)
    if node:
        msg = f"{node.group(1)} node '{node.group(2)}': {node.group(3)}"
    else:
        msg = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", msg)
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4  # errors come back as exceptions; don't also print them
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def validate(path: Path, ref_out_shape: tuple[int, ...], threads: int) -> str | None:
    """None when the model is valid, else a one-line error."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - report whatever the checker raises
        return "checker: " + _one_line(exc)
    try:
        sess = _session(path, threads)
    except Exception as exc:  # noqa: BLE001
        return "ORT load: " + _one_line(exc)
    rng = np.random.default_rng(0)
    for batch in (1, 2):
        x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
        try:
            (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
        except Exception as exc:  # noqa: BLE001
            return f"ORT run (batch {batch}): " + _one_line(exc)
        want = (batch,) + tuple(ref_out_shape[1:])
        if tuple(y.shape) != want:
            return f"ORT run (batch {batch}): output shape {tuple(y.shape)}, expected {want}"
        if not np.all(np.isfinite(y)):
            return f"ORT run (batch {batch}): non-finite output"
    return None


def latency_ratios(original: Path, pruned: dict[str, Path], threads: int, seconds: float) -> dict[str, tuple[float, float]]:
    """{label: (median pruned ms, ratio pruned/original)}; original under key 'original'.

    All sessions are created first, warmed up, then timed round-robin in one loop (the order
    rotates every iteration) so that machine noise hits every model alike.
    """
    sessions = {"original": _session(original, threads)}
    for label, path in pruned.items():
        sessions[label] = _session(path, threads)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
    feeds = {label: {s.get_inputs()[0].name: x} for label, s in sessions.items()}
    labels = list(sessions)

    t0 = time.perf_counter()
    for _ in range(3):
        for label in labels:
            sessions[label].run(None, feeds[label])
    per_round = (time.perf_counter() - t0) / 3
    rounds = int(min(400, max(15, seconds / max(per_round, 1e-6))))

    times: dict[str, list[float]] = {label: [] for label in labels}
    for i in range(rounds):
        k = i % len(labels)
        for label in labels[k:] + labels[:k]:
            t = time.perf_counter()
            sessions[label].run(None, feeds[label])
            times[label].append(time.perf_counter() - t)
    base = statistics.median(times["original"])
    out = {label: (statistics.median(ts) * 1e3, statistics.median(ts) / base) for label, ts in times.items()}
    out["_rounds"] = (float(rounds), 0.0)
    return out


# --------------------------------------------------------------------------------------
# running the two tools
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    ok: bool
    seconds: float
    error: str = ""


def run_process(cmd: list[str], timeout: float, cwd: Path, repo_on_path: bool = False) -> Run:
    """Run one whole pruning process in `cwd` (the scratch folder: stray temp files land there).

    With `repo_on_path` the repo goes on PYTHONPATH, so `python -m onnxprune` works uninstalled.
    """
    env = dict(os.environ)
    if repo_on_path:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        return Run(False, time.perf_counter() - t, f"timed out after {timeout:.0f} s")
    except OSError as exc:
        return Run(False, time.perf_counter() - t, _one_line(exc))
    dt = time.perf_counter() - t
    if p.returncode != 0:
        tail = [ln for ln in (p.stderr or p.stdout or "").strip().splitlines() if ln.strip()]
        msg = tail[-1].strip() if tail else ""
        return Run(False, dt, f"exit {p.returncode}" + (f": {msg[:200]}" if msg else ""))
    return Run(True, dt)


def onnxprune_command(explicit: str | None) -> list[str]:
    if explicit:
        return shlex.split(explicit)
    exe = shutil.which("onnxprune")
    return [exe] if exe else [sys.executable, "-m", "onnxprune"]


@dataclass
class ToolResult:
    label: str
    setting: str
    path: Path
    run: Run | None = None
    times: list[float] = field(default_factory=list)
    report_macs: float | None = None
    report_params: float | None = None
    report_note: str = ""
    macs: float | None = None
    params: float | None = None
    count_note: str = ""
    invalid: str | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None

    @property
    def produced(self) -> bool:
        return self.run is not None and self.run.ok and self.path.exists()


@dataclass
class ModelResult:
    name: str
    path: Path
    size_mb: float
    macs: int
    params: int
    original_ms: float | None = None
    rounds: int = 0
    reps: int = 0
    tools: dict[str, ToolResult] = field(default_factory=dict)


def bench_model(name: str, path: Path, args: argparse.Namespace, work: Path, prune_cmd: list[str], runner: Path) -> ModelResult:
    print(f"\n== {name}: {path}", flush=True)
    original = onnx.load(str(path), load_external_data=False)
    ref_out = [d.dim_value or 1 for d in original.graph.output[0].type.tensor_type.shape.dim]
    res = ModelResult(name, path, path.stat().st_size / 1e6, count_macs(original), count_params(original))
    del original
    print(f"   {res.size_mb:.1f} MB, {res.macs / 1e9:.3f} GMACs, {res.params / 1e6:.2f} M params", flush=True)

    r = args.ratio
    ours = ToolResult("onnxprune", f"--ratio {r:g}", work / f"{name}.onnxprune.r{r:g}.onnx")
    theirs = ToolResult("onnxsim", f"sparsity={r:g}", work / f"{name}.onnxsim.r{r:g}.onnx")
    target = ToolResult("onnxprune", f"--target-macs {args.target_macs:g}", work / f"{name}.onnxprune.t{args.target_macs:g}.onnx")
    res.tools = {"ours": ours, "theirs": theirs, "target": target}
    report_r = work / f"{name}.onnxprune.r{r:g}.json"
    report_t = work / f"{name}.onnxprune.t{args.target_macs:g}.json"

    cmd_a = prune_cmd + ["prune", str(path), "-o", str(ours.path), "--ratio", f"{r:g}"]
    cmd_b = [args.onnxsim_python, str(runner), str(path), str(theirs.path), f"{r:g}"]

    # untimed warm-ups (page cache, .pyc); ours also writes the report here
    ours.run = run_process(cmd_a + ["--report", str(report_r)], args.timeout, work, True)
    theirs.run = run_process(cmd_b, args.timeout, work)
    print(f"   warm-up: onnxprune {'ok' if ours.run.ok else 'FAIL ' + ours.run.error} ({ours.run.seconds:.2f} s), "
          f"onnxsim {'ok' if theirs.run.ok else 'FAIL ' + theirs.run.error} ({theirs.run.seconds:.2f} s)", flush=True)

    # interleaved timing A, B, A, B, ... within the per-model budget
    pair = (ours.run.seconds if ours.run.ok else 0.0) + (theirs.run.seconds if theirs.run.ok else 0.0)
    reps = args.reps if pair <= 0 else max(1, min(args.reps, int(args.time_budget // pair)))
    if reps < args.reps:
        print(f"   note: {reps} repetitions instead of {args.reps} to stay within --time-budget {args.time_budget:g} s", flush=True)
    res.reps = reps
    for _ in range(reps):
        for tool, cmd in ((ours, cmd_a), (theirs, cmd_b)):
            if not tool.run.ok:
                continue
            run = run_process(cmd, args.timeout, work, tool is ours)
            if not run.ok:
                tool.run = run
                continue
            tool.times.append(run.seconds)
    for tool in (ours, theirs):
        if tool.times:
            print(f"   {tool.label:9s} wall: median {statistics.median(tool.times):.2f} s, min {min(tool.times):.2f} s "
                  f"over {len(tool.times)}", flush=True)

    # ~0.5 MACs run for the latency target
    target.run = run_process(prune_cmd + ["prune", str(path), "-o", str(target.path), "--target-macs",
                                          f"{args.target_macs:g}", "--report", str(report_t)], args.timeout, work, True)
    if not target.run.ok:
        print(f"   onnxprune --target-macs: FAIL {target.run.error}", flush=True)

    # MACs from onnxprune's report, and the independent counter on every output
    for tool, report in ((ours, report_r), (target, report_t)):
        if tool.run is None or not tool.run.ok:
            continue
        try:
            rep = json.loads(report.read_text())
            tool.report_macs = rep["macs_after"] / rep["macs_before"]
            tool.report_params = rep["params_after"] / rep["params_before"]
            if rep["macs_before"] != res.macs:
                tool.report_note = f"report macs_before {rep['macs_before']} vs counter {res.macs}"
        except Exception as exc:  # noqa: BLE001
            tool.report_note = "report: " + _one_line(exc, 100)
    for tool in res.tools.values():
        if not tool.produced:
            continue
        try:
            m = onnx.load(str(tool.path), load_external_data=False)
            tool.macs = count_macs(m) / res.macs
            tool.params = count_params(m) / res.params
        except Exception as exc:  # noqa: BLE001
            tool.count_note = _one_line(exc, 100)
        tool.invalid = validate(tool.path, tuple(ref_out), args.threads)

    # latency of every valid output against the original, one interleaved loop
    valid = {key: t.path for key, t in res.tools.items() if t.produced and t.invalid is None}
    lat = latency_ratios(path, valid, args.threads, args.latency_seconds)
    res.original_ms = lat["original"][0]
    res.rounds = int(lat["_rounds"][0])
    for key in valid:
        res.tools[key].latency_ms, res.tools[key].latency_ratio = lat[key]
    return res


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def render(results: list[ModelResult], args: argparse.Namespace) -> tuple[str, list[str]]:
    lines = [
        "| model | tool | setting | wall median (s) | wall min (s) | MACs ratio (report) | MACs ratio (counter) "
        "| params ratio (counter) | latency ratio | latency (ms) | model check |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    verdicts: list[str] = []
    for res in results:
        lines.append(f"| {res.name} | original | {res.macs / 1e9:.3f} GMACs, {res.params / 1e6:.2f} M params | | | 1 | 1 | 1 | 1 "
                     f"| {_f(res.original_ms, '{:.1f}')} | |")
        for key in ("ours", "theirs", "target"):
            t = res.tools[key]
            tool = t.label + (f" {args.onnxsim_version}" if t.label == "onnxsim" else "")
            if t.run is None or not t.run.ok:
                err = t.run.error if t.run is not None else "not run"
                lines.append(f"| {res.name} | {tool} | {t.setting} | | | | | | | | FAIL: {err} |")
                continue
            med = statistics.median(t.times) if t.times else None
            mn = min(t.times) if t.times else None
            check = "ok" if t.invalid is None else f"FAIL: {t.invalid}"
            counter = _f(t.macs) if not t.count_note else f"n/a ({t.count_note})"
            lines.append(
                f"| {res.name} | {tool} | {t.setting} | {_f(med, '{:.2f}')} | {_f(mn, '{:.2f}')} | {_f(t.report_macs)} "
                f"| {counter} | {_f(t.params)} | {_f(t.latency_ratio)} | {_f(t.latency_ms, '{:.1f}')} | {check} |"
            )

        ours, theirs, target = res.tools["ours"], res.tools["theirs"], res.tools["target"]
        # time target
        if ours.times and theirs.times:
            mo, mt = statistics.median(ours.times), statistics.median(theirs.times)
            lo, lt = min(ours.times), min(theirs.times)
            verdicts.append(f"{'PASS' if mo <= mt else 'FAIL'} {res.name}: onnxprune time <= onnxsim time at ratio {args.ratio:g} "
                            f"(median {mo:.2f} s vs {mt:.2f} s, ours/theirs {mo / mt:.2f}; min {lo:.2f} vs {lt:.2f}, {lo / lt:.2f})")
        else:
            why = (ours.run.error if ours.run and not ours.run.ok else "") or (theirs.run.error if theirs.run and not theirs.run.ok else "")
            who = "onnxprune" if not ours.times else "onnxsim"
            verdicts.append(f"FAIL {res.name}: onnxprune time <= onnxsim time: not measured ({who}: {why})")
        # latency target at ~0.5 MACs
        macs = target.report_macs if target.report_macs is not None else target.macs
        if target.latency_ratio is not None and macs is not None:
            bound = LATENCY_SLACK * macs
            verdicts.append(f"{'PASS' if target.latency_ratio <= bound else 'FAIL'} {res.name}: onnxprune latency ratio "
                            f"<= {LATENCY_SLACK:g} x MACs ratio at {target.setting} ({target.latency_ratio:.3f} vs "
                            f"{LATENCY_SLACK:g} x {macs:.3f} = {bound:.3f})")
        else:
            why = (target.run.error if target.run and not target.run.ok else None) or (f"invalid model: {target.invalid}" if target.invalid else "no MACs ratio")
            verdicts.append(f"FAIL {res.name}: onnxprune latency ratio <= {LATENCY_SLACK:g} x MACs ratio: not measured ({why})")
        for t in (ours, target):
            if t.report_note:
                verdicts.append(f"WARN {res.name}: {t.setting}: {t.report_note}")
            if t.report_macs is not None and t.macs is not None and abs(t.report_macs - t.macs) > 0.01:
                verdicts.append(f"WARN {res.name}: {t.setting}: MACs ratio from report {t.report_macs:.3f} != counter {t.macs:.3f}")
    return "\n".join(lines), verdicts


def machine_info(onnxsim_python: str) -> dict[str, str]:
    cpu = "unknown"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        sim = subprocess.run([onnxsim_python, "-c", "import onnxsim; print(onnxsim.__version__)"], capture_output=True,
                             text=True, timeout=120).stdout.strip().lstrip("v") or "unknown"
    except OSError:
        sim = "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnxsim": sim,
    }


def write_docs(table: str, verdicts: list[str], info: dict[str, str], command: str, args: argparse.Namespace, results: list[ModelResult]) -> None:
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reps = ", ".join(f"{r.name} {r.reps}" for r in results)
    rounds = ", ".join(f"{r.name} {r.rounds}" for r in results)
    section = f"""## Engine

onnxprune vs onnxsim {info['onnxsim']}'s `apply_structured_pruning` (uniform ratio, L2 filter magnitude) on
ResNet-50 (torchvision layout, seeded random weights) and MobileNetV2 (torchvision's ImageNet weights), both
exported by `scripts/export_bench_models.py` (opset 17, dynamic batch). Regenerated by
`scripts/bench_engine.py --write-docs`; do not edit by hand.

- **Date:** {today}
- **Machine:** {info['nproc']} CPUs, {info['cpu']}; Python {info['python']}, onnx {info['onnx']},
  onnxruntime {info['onnxruntime']} (CPUExecutionProvider, intra_op_num_threads={args.threads})
- **Command:** `{command}`
- **Wall time:** the whole process (interpreter start, import, load, prune, save):
  `onnxprune prune IN -o OUT --ratio {args.ratio:g}` vs onnxsim's load + `apply_structured_pruning(sparsity={args.ratio:g},
  importance_norm="l2")` + save; one untimed warm-up each, then interleaved A, B, A, B repetitions ({reps}).
- **MACs ratio:** pruned/original; "report" is onnxprune's `--report` JSON, "counter" is the script's own count
  (Conv N·Cout·Hout·Wout·Cin/groups·kh·kw, Gemm/MatMul M·N·K; batch 1) applied to every output.
- **Latency ratio:** ORT median pruned/original, batch 1, 1x3x224x224 float32, original and all valid
  pruned sessions timed round-robin in one loop after warm-up ({rounds} rounds).
- **Model check:** `onnx.checker.check_model(full_check=True)` and ORT runs at batch 1 and 2.

{table}

```
{chr(10).join(verdicts)}
```
"""
    write_section("bench_engine", section)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description="onnxprune vs onnxsim structured-pruning engine benchmark")
    ap.add_argument("--models", default="/work/bench_models", help="folder with resnet50.onnx and mobilenetv2.onnx (default /work/bench_models)")
    ap.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS), help="models to run (default both)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per tool and model (default 5)")
    ap.add_argument("--ratio", type=float, default=0.3, help="uniform channel ratio removed by both tools (default 0.3)")
    ap.add_argument("--target-macs", type=float, default=0.5, help="onnxprune --target-macs for the latency target (default 0.5)")
    ap.add_argument("--onnxsim-python", default=os.environ.get("ONNXSIM_PYTHON") or
                    (DEFAULT_ONNXSIM_PYTHON if Path(DEFAULT_ONNXSIM_PYTHON).exists() else sys.executable),
                    help=f"python that has onnxsim 0.8.1 (default $ONNXSIM_PYTHON, else {DEFAULT_ONNXSIM_PYTHON})")
    ap.add_argument("--onnxprune-cmd", default=None, help="command that runs onnxprune's CLI (default: `onnxprune` on PATH, else python -m onnxprune)")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra_op_num_threads for latency and checks (default 1)")
    ap.add_argument("--latency-seconds", type=float, default=20.0, help="time spent in each model's latency loop (default 20)")
    ap.add_argument("--time-budget", type=float, default=150.0, help="seconds per model for the timed repetitions; fewer reps if exceeded (default 150)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before one pruning process is killed (default 600)")
    ap.add_argument("--keep", metavar="DIR", default=None, help="write the pruned models and reports to DIR and keep them")
    ap.add_argument("--write-docs", action="store_true", help="regenerate the ## Engine section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    ort.set_default_logger_severity(4)  # failures are reported in the table, not as log noise

    models_dir = Path(args.models)
    paths = {name: models_dir / f"{name}.onnx" for name in args.only}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        print(f"missing {', '.join(missing)}; run: python scripts/export_bench_models.py --out {models_dir}", file=sys.stderr)
        return 2
    probe = subprocess.run([args.onnxsim_python, "-c", "from onnxsim import apply_structured_pruning"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"{args.onnxsim_python} cannot import onnxsim.apply_structured_pruning; install onnxsim==0.8.1 there "
              "(see this script's docstring) or pass --onnxsim-python", file=sys.stderr)
        return 2

    prune_cmd = onnxprune_command(args.onnxprune_cmd)
    command = "python scripts/bench_engine.py" + ("" if not argv else " " + shlex.join(argv))
    info = machine_info(args.onnxsim_python)
    args.onnxsim_version = info["onnxsim"]
    print(f"onnxprune: {shlex.join(prune_cmd)}\nonnxsim:   {args.onnxsim_python} (onnxsim {info['onnxsim']})\n"
          f"machine:   {info['nproc']} CPUs, {info['cpu']}; onnxruntime {info['onnxruntime']}, intra_op_num_threads={args.threads}")

    tmp = None
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_engine_")
        work = Path(tmp.name)
    runner = work / "onnxsim_prune.py"
    runner.write_text(ONNXSIM_RUNNER)
    try:
        results = [bench_model(name, path, args, work, prune_cmd, runner) for name, path in paths.items()]
    finally:
        if tmp is not None:
            tmp.cleanup()

    table, verdicts = render(results, args)
    print("\n" + table + "\n")
    print("\n".join(verdicts))
    if args.write_docs:
        write_docs(table, verdicts, info, command, args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
