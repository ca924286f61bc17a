"""The bad-input corpus (tests/corpus/manifest.json, built by scripts/build_corpus.py).

Every case runs the CLI in a subprocess on a private copy of its input. A refusal must
exit with its documented code and print exactly one non-empty stderr line (no traceback)
containing the expected fragment, and leave no output file and no stray files behind. A
success must write a model that passes onnx.checker (full_check) and runs in ONNX Runtime
with the original's input/output names. The input is byte-identical afterwards, always.

Cases whose expectation is the correct behaviour but not today's carry an ``xfail``
reason in the manifest and run as ``xfail(strict=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune import errors

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
TIMEOUT = 300

# failure kind -> documented exit code; distinct kinds must have distinct codes
KIND_CODES = {
    "input": errors.EXIT_INPUT,
    "invalid_model": errors.EXIT_INVALID_MODEL,
    "unsupported": errors.EXIT_UNSUPPORTED,
    "nothing_prunable": errors.EXIT_NOTHING_PRUNABLE,
    "bad_argument": errors.EXIT_BAD_ARGUMENT,
    "output": errors.EXIT_OUTPUT,
    "plan": errors.EXIT_PLAN,
    "verify": errors.EXIT_VERIFY,
    "data": errors.EXIT_DATA,
    "validation": errors.EXIT_VALIDATION,
    "cluster": errors.EXIT_CLUSTER,
    "ok": 0,
}


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class Run:
    """One case, set up in a fresh folder: <tmp>/in/<model>, <tmp>/out/, <tmp>/cwd/."""

    def __init__(self, case: dict, tmp: Path):
        self.case, self.tmp = case, tmp
        self.in_dir, self.out_dir, self.cwd = tmp / "in", tmp / "out", tmp / "cwd"
        for d in (self.in_dir, self.out_dir, self.cwd):
            d.mkdir()
        self.source = ROOT / case["file"] if case["file"] else None
        self.model = self.in_dir / Path(case["file"]).name if case["file"] else None
        if self.model:
            shutil.copyfile(self.source, self.model)
        self.out = self.out_dir / "pruned.onnx"
        subs = {"{model}": str(self.model), "{out}": str(self.out), "{tmp}": str(tmp), "{repo}": str(ROOT)}
        model_arg = self.fill(case.get("model", "{model}"), subs)
        args = [self.fill(a, subs) for a in case["args"]]
        self.argv = [args[0], model_arg, *args[1:]]
        self.touched_outside = [a for a in args if a.startswith("/proc/")]

    @staticmethod
    def fill(text: str, subs: dict) -> str:
        for k, v in subs.items():
            text = text.replace(k, v)
        return text

    def run(self):
        before = sha256(self.model) if self.model else None
        source_before = sha256(self.source) if self.source else None
        proc = subprocess.run([sys.executable, "-m", "onnxprune", *self.argv], capture_output=True, text=True,
                              cwd=self.cwd, timeout=TIMEOUT)
        if self.model:
            assert sha256(self.model) == before, "the input model was modified"
            assert sha256(self.source) == source_before, "the corpus file was modified"
        return proc.returncode, proc.stdout, proc.stderr


def _params():
    for case in MANIFEST:
        marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if case.get("xfail") else []
        yield pytest.param(case, id=case["name"], marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_case(case, tmp_path):
    r = Run(case, tmp_path)
    code, stdout, stderr = r.run()
    expect = case["expect"]
    assert code == expect["exit"], f"exit {code}, stderr: {stderr.strip()}"
    assert "Traceback" not in stderr
    assert listing(r.cwd) == [], "stray files in the working directory"
    if expect["exit"] != 0:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got: {stderr!r}"
        assert expect["stderr_contains"].lower() in lines[0].lower(), lines[0]
        assert not r.out.exists(), "an output file was written despite the error"
        assert listing(r.out_dir) == [], "stray files left in the output folder"
        assert listing(r.in_dir) == ([r.model.name] if r.model else []), "stray files next to the input"
        for path in r.touched_outside:
            assert not os.path.exists(path)
        return
    assert expect.get("valid"), "a success case must ask for a valid output"
    if expect.get("stdout_excludes"):
        assert expect["stdout_excludes"].lower() not in stdout.lower(), stdout
    assert listing(r.out_dir) == ["pruned.onnx"], "unexpected files in the output folder"
    check_valid_output(r.model, r.out, run=expect.get("ort", True))


def check_valid_output(original: Path, pruned: Path, run: bool = True):
    orig, new = onnx.load(str(original)), onnx.load(str(pruned))
    onnx.checker.check_model(new, full_check=True)

    def io(m):
        init = {t.name for t in m.graph.initializer}
        ins = [(i.name, i.type.tensor_type.elem_type) for i in m.graph.input if i.name not in init]
        return ins, [(o.name, o.type.tensor_type.elem_type) for o in m.graph.output]

    assert io(new) == io(orig), "graph inputs/outputs (names, element types) changed"
    def weights(m):
        return sum(int(np.prod(t.dims)) for t in m.graph.initializer)

    assert weights(new) < weights(orig), "nothing was pruned"
    orig_float = {t.data_type for t in orig.graph.initializer if t.data_type in FLOATS}
    new_float = {t.data_type for t in new.graph.initializer if t.data_type in FLOATS}
    assert new_float <= orig_float, f"weights changed float type: {orig_float} -> {new_float}"
    domains = {n.domain for n in new.graph.node} - {"", "ai.onnx"}
    if not run or domains:  # custom domains: no kernel here, analysis only
        return
    import onnxruntime as ort

    data = new.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = {}
    rng = np.random.default_rng(0)
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (1 if k == 0 else 16) for k, d in enumerate(i.shape)]
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                 "tensor(double)": np.float64}[i.type]
        feeds[i.name] = rng.standard_normal(shape).astype(dtype)
    outs = sess.run(None, feeds)
    assert [o.name for o in sess.get_outputs()] == [o.name for o in orig.graph.output]
    assert all(np.all(np.isfinite(o)) for o in outs if np.issubdtype(o.dtype, np.floating))


FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def test_manifest_is_well_formed():
    names = [c["name"] for c in MANIFEST]
    assert len(names) == len(set(names))
    for c in MANIFEST:
        assert {"name", "file", "description", "kind", "args", "expect"} <= set(c), c["name"]
        assert c["file"] is None or (ROOT / c["file"]).is_file(), c["name"]
        assert c["file"] is not None or "model" in c, c["name"]
        e = c["expect"]
        assert ("stderr_contains" in e) == (e["exit"] != 0), c["name"]
        assert e["exit"] != 0 or e.get("valid") is True, c["name"]


def test_kinds_map_to_distinct_documented_codes():
    codes = [c for k, c in KIND_CODES.items() if k != "ok"]
    assert len(codes) == len(set(codes)), "two failure kinds share an exit code"
    for c in MANIFEST:
        assert c["kind"] in KIND_CODES, c["name"]
        assert c["expect"]["exit"] == KIND_CODES[c["kind"]], f"{c['name']}: kind {c['kind']} has another code"
        assert c["expect"]["exit"] == 0 or c["expect"]["exit"] in errors.EXIT_CODES, c["name"]


def test_every_documented_exit_code_is_exercised():
    used = {c["expect"]["exit"] for c in MANIFEST}
    missing = set(errors.EXIT_CODES) - {errors.EXIT_INTERNAL, errors.EXIT_USAGE} - used
    assert not missing, f"no corpus case expects exit code(s) {sorted(missing)}"
    assert errors.EXIT_INTERNAL not in used and errors.EXIT_USAGE not in used


def test_corpus_stays_small():
    total = sum(p.stat().st_size for p in CORPUS.iterdir() if p.is_file())
    assert total < 2_000_000, f"tests/corpus is {total / 1e6:.2f} MB"
