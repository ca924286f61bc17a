"""CLI behaviour: the happy paths, and bad input that must give one clear line, a
distinct non-zero exit code, no output file, and an untouched input."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import onnx
import pytest

from onnxprune import errors
from tests.conftest import MODELS

MODEL = MODELS / "resnet_basic.onnx"


def run(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "onnxprune", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def assert_clean_failure(code, err, expected_code, fragment):
    assert code == expected_code, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment.lower() in lines[0].lower(), lines[0]


def test_inspect_human_and_json():
    code, out, err = run("inspect", MODEL)
    assert code == 0, err
    assert "prunable" in out and "BLOCKED" in out
    code, out, err = run("inspect", MODEL, "--json")
    data = json.loads(out)
    assert data["summary"]["prunable"] >= 1
    assert {"id", "channels", "macs_share", "blocked_by", "kind"} <= set(data["groups"][0])


def test_prune_writes_model_report_and_plan_and_apply_round_trips(tmp_path):
    out, report, plan = tmp_path / "small.onnx", tmp_path / "r.json", tmp_path / "plan.json"
    before = digest(MODEL)
    code, stdout, err = run("prune", MODEL, "-o", out, "--ratio", "0.3", "--report", report, "--plan-out", plan)
    assert code == 0, err
    assert digest(MODEL) == before
    r = json.loads(report.read_text())
    for key in ("params_before", "params_after", "macs_before", "macs_after", "groups"):
        assert key in r
    assert r["macs_after"] < r["macs_before"]
    assert {"id", "kind", "size_before", "size_after", "members"} <= set(r["groups"][0])
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    again = tmp_path / "again.onnx"
    code, _, err = run("apply", MODEL, plan, "-o", again)
    assert code == 0, err
    assert again.read_bytes() == out.read_bytes()


def test_global_l1_and_json_stdout(tmp_path):
    code, out, err = run("prune", MODEL, "-o", tmp_path / "g.onnx", "--ratio", "0.5", "--criterion", "l1",
                         "--global", "--json")
    assert code == 0, err
    assert json.loads(out)["settings"]["strategy"] == "global"


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty"),
    (os.urandom(4096), "not an onnx model"),
    (MODEL.read_bytes()[:5000], "not an onnx model"),
    (onnx.helper.make_tensor("t", onnx.TensorProto.FLOAT, [2], [1.0, 2.0]).SerializeToString(), "onnx"),
])
def test_bad_model_files(tmp_path, content, fragment):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    out = tmp_path / "out.onnx"
    code, _, err = run("prune", bad, "-o", out, "--ratio", "0.3")
    assert_clean_failure(code, err, errors.EXIT_INVALID_MODEL, fragment)
    assert not out.exists()
    assert bad.read_bytes() == content


def test_missing_file(tmp_path):
    code, _, err = run("inspect", tmp_path / "nope.onnx")
    assert_clean_failure(code, err, errors.EXIT_INPUT, "no such file")


@pytest.mark.parametrize("ratio", ["1.0", "-0.1", "1.5"])
def test_ratio_out_of_range(tmp_path, ratio):
    code, _, err = run("prune", MODEL, "-o", tmp_path / "o.onnx", "--ratio", ratio)
    assert_clean_failure(code, err, errors.EXIT_BAD_ARGUMENT, "ratio")
    assert not (tmp_path / "o.onnx").exists()


def test_ratio_and_target_together_are_refused(tmp_path):
    code, _, err = run("prune", MODEL, "-o", tmp_path / "o.onnx", "--ratio", "0.3", "--target-macs", "0.5")
    assert_clean_failure(code, err, errors.EXIT_BAD_ARGUMENT, "not both")


def test_output_equal_to_input_is_refused(tmp_path):
    copy = tmp_path / "m.onnx"
    shutil.copy(MODEL, copy)
    before = digest(copy)
    code, _, err = run("prune", copy, "-o", copy, "--ratio", "0.3")
    assert_clean_failure(code, err, errors.EXIT_BAD_ARGUMENT, "input model")
    assert digest(copy) == before
    code, _, err = run("prune", "m.onnx", "-o", "./m.onnx", "--ratio", "0.3", cwd=tmp_path)
    assert_clean_failure(code, err, errors.EXIT_BAD_ARGUMENT, "input model")


def test_output_folder_missing(tmp_path):
    code, _, err = run("prune", MODEL, "-o", tmp_path / "no" / "such" / "dir" / "o.onnx", "--ratio", "0.3")
    assert_clean_failure(code, err, errors.EXIT_OUTPUT, "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_output_folder_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run("prune", MODEL, "-o", ro / "o.onnx", "--ratio", "0.3")
    assert_clean_failure(code, err, errors.EXIT_OUTPUT, "not writable")


def test_nothing_prunable(tmp_path):
    code, _, err = run("prune", MODELS / "custom_op.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.3")
    assert_clean_failure(code, err, errors.EXIT_NOTHING_PRUNABLE, "nothing to prune")
    assert not (tmp_path / "o.onnx").exists()


def test_unsupported_opset(tmp_path):
    m = onnx.load(str(MODEL))
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = 9
    bad = tmp_path / "old.onnx"
    onnx.save(m, str(bad))
    code, _, err = run("inspect", bad)
    assert_clean_failure(code, err, errors.EXIT_UNSUPPORTED, "opset 9")


def test_checker_failure(tmp_path):
    m = onnx.load(str(MODEL))
    m.graph.node[0].input[0] = "does_not_exist"
    bad = tmp_path / "broken.onnx"
    onnx.save(m, str(bad))
    code, _, err = run("prune", bad, "-o", tmp_path / "o.onnx", "--ratio", "0.3")
    assert_clean_failure(code, err, errors.EXIT_INVALID_MODEL, "onnx.checker")


def test_bad_plan(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text("{\"format\": \"something else\"}")
    code, _, err = run("apply", MODEL, plan, "-o", tmp_path / "o.onnx")
    assert_clean_failure(code, err, errors.EXIT_PLAN, "not an onnxprune plan")
    other = tmp_path / "other.json"
    code, _, err = run("prune", MODELS / "mobilenetv2.onnx", "-o", tmp_path / "m.onnx", "--ratio", "0.3",
                       "--plan-out", other)
    assert code == 0, err
    code, _, err = run("apply", MODEL, other, "-o", tmp_path / "o.onnx")
    assert_clean_failure(code, err, errors.EXIT_PLAN, "another model")
    assert not (tmp_path / "o.onnx").exists()


def test_usage_error_is_one_line():
    code, _, err = run("prune", MODEL)
    assert code == errors.EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_input_shape_spec(tmp_path):
    code, _, err = run("inspect", MODEL, "--input-shape", "nosuch=1x3x8x8")
    assert_clean_failure(code, err, errors.EXIT_BAD_ARGUMENT, "not a model input")


def test_exit_codes_listed():
    code, out, _ = run("exit-codes")
    assert code == 0 and all(str(c) in out for c in errors.EXIT_CODES)


def test_html_report(tmp_path):
    page = tmp_path / "report.html"
    code, _, err = run("prune", MODEL, "-o", tmp_path / "o.onnx", "--ratio", "0.3", "--html", page, "-q")
    assert code == 0, err
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "onnxprune prune" in text and "http://" not in text
