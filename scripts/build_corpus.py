"""Build the bad-input corpus: tests/corpus/*.onnx|json|bin and tests/corpus/manifest.json.

    python scripts/build_corpus.py

Models are hand-built with onnx.helper (no torch), seeded and deterministic. Each case in
the manifest names an input file (relative to the repository; some reuse models/*.onnx),
the CLI arguments and the expected outcome:

    {"name", "file", "description", "kind", "args", "expect", ["model"], ["xfail"]}

``args`` are the CLI arguments with the model path inserted after the subcommand
(``onnxprune <args[0]> <model> <args[1:]>``); placeholders:

    {model}  the test's private copy of ``file`` (the corpus itself is never handed to the CLI)
    {out}    <tmp>/out/pruned.onnx (the folder <tmp>/out exists and starts empty)
    {tmp}    a fresh temporary folder
    {repo}   the repository root

``model`` (optional) replaces the model path for cases with no file (missing input,
directory). ``expect`` is {"exit": N, "stderr_contains": "..."} for a refusal, or
{"exit": 0, "valid": true[, "ort": false][, "stdout_excludes": "..."]} when pruning around the
problem is sound (``ort: false``: the runtime has no CPU kernel for the model, original included, so the
test does not run it). ``kind`` names the failure kind; kinds map one-to-one onto the
documented exit codes (tests/test_corpus.py checks it). ``xfail`` holds the reason when the
expectation is the correct behaviour but onnxprune does something else today.

Plans are made with the installed onnxprune (``prune --plan-out``), so build after it works.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
IR = 8

FLOAT = TensorProto.FLOAT


class G:
    """A tiny graph builder (weights seeded per model)."""

    def __init__(self, seed=0, dtype=np.float32):
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.nodes, self.inits = [], []
        self.n = 0

    def uid(self, p):
        self.n += 1
        return f"{p}_{self.n}"

    def init(self, name, arr, dtype=None):
        arr = np.asarray(arr)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op, ins, outs=None, domain=None, **attrs):
        name = self.uid(op)
        outs = outs or [name + "_out"]
        self.nodes.append(helper.make_node(op, ins, outs, name=name, domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def weight(self, cout, cin, k=3):
        return (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)

    def conv(self, x, cin, cout, k=3, relu=True):
        name = self.uid("conv")
        w = self.init(name + ".weight", self.weight(cout, cin, k))
        b = self.init(name + ".bias", self.rng.normal(0, 0.05, cout))
        y = self.node("Conv", [x, w, b], kernel_shape=[k, k], pads=[k // 2] * 4)
        return self.node("Relu", [y]) if relu else y

    def model(self, inputs, outputs, opset=17, extra_opsets=(), ir=IR, value_info=()):
        g = helper.make_graph(self.nodes, "corpus", inputs, outputs, self.inits, value_info=list(value_info))
        ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
        return helper.make_model(g, opset_imports=ops, ir_version=ir, producer_name="onnxprune-corpus")


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def conv_net(seed=0, opset=17, width=32, shape=("N", 3, 16, 16), ir=IR):
    """x -> conv 3->W -> relu -> conv W->W -> relu -> conv W->8 -> y (two prunable groups)."""
    g = G(seed)
    h = g.conv("x", 3, width)
    h = g.conv(h, width, width)
    g.conv(h, width, 8, relu=False)
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", FLOAT, list(shape))], [vi("y", FLOAT, ["N", 8, shape[2], shape[3]])], opset=opset,
                   ir=ir)


def typed_conv_net(elem, seed=0, opset=17, ir=IR):
    """conv_net with every tensor in another float type (weights, input, output)."""
    m = conv_net(seed, opset=opset)
    m.ir_version = ir
    np_dtype = {TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}.get(elem)
    for t in m.graph.initializer:
        arr = numpy_helper.to_array(t)
        if elem == TensorProto.BFLOAT16:
            new = helper.make_tensor(t.name, TensorProto.BFLOAT16, arr.shape,
                                     _to_bf16_bits(arr).tobytes(), raw=True)
        else:
            new = numpy_helper.from_array(arr.astype(np_dtype), t.name)
        t.CopyFrom(new)
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.elem_type = elem
    return m


def _to_bf16_bits(arr):
    bits = np.asarray(arr, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def single_conv():
    g = G(1)
    g.conv("x", 3, 8, relu=False)
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", FLOAT, ["N", 3, 16, 16])], [vi("y", FLOAT, ["N", 8, 16, 16])])


def custom_only():
    g = G(2)
    g.node("MyOp", ["x"], ["y"], domain="com.example", alpha=0.5)
    return g.model([vi("x", FLOAT, ["N", 3, 16, 16])], [vi("y", FLOAT, ["N", 3, 16, 16])], opset=17,
                   extra_opsets=[("com.example", 1)])


def custom_middle():
    """Prunable convs before and after a com.example op whose channel semantics are unknown."""
    g = G(3)
    h = g.conv("x", 3, 32)
    h = g.conv(h, 32, 16)
    h = g.node("MyOp", [h], domain="com.example")
    h = g.conv(h, 16, 32)
    g.conv(h, 32, 8, relu=False)
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", FLOAT, [1, 3, 16, 16])], [vi("y", FLOAT, [1, 8, 16, 16])],
                   extra_opsets=[("com.example", 1)], value_info=[vi(g.nodes[4].output[0], FLOAT, [1, 16, 16, 16])])


def loop_model():
    """conv stem -> Loop (2 iterations of v = v * 0.5 + v) -> convs."""
    g = G(4)
    h = g.conv("x", 3, 32)
    h = g.conv(h, 32, 16)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["v_in", "half"], ["v_half"]),
         helper.make_node("Add", ["v_half", "v_in"], ["v_out"])],
        "loop_body",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("v_in", FLOAT, None)],
        [vi("cond_out", TensorProto.BOOL, []), vi("v_out", FLOAT, None)],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    g.init("trip", np.array(2, np.int64))
    g.init("cond", np.array(True))
    h = g.node("Loop", ["trip", "cond", h], body=body)
    h = g.conv(h, 16, 32)
    g.conv(h, 32, 8, relu=False)
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", FLOAT, [1, 3, 16, 16])], [vi("y", FLOAT, [1, 8, 16, 16])])


def scan_model():
    """conv stem -> ReduceMean(H) -> (W, 1, C) -> Scan (running sum over W) -> final state."""
    g = G(5)
    h = g.conv("x", 3, 32)
    h = g.conv(h, 32, 16)
    h = g.node("ReduceMean", [h], axes=[2], keepdims=0)  # (1, 16, 16): N, C, W
    h = g.node("Transpose", [h], perm=[2, 0, 1])  # (W, 1, C)
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_t"])],
        "scan_body",
        [vi("s_in", FLOAT, [1, 16]), vi("x_t", FLOAT, [1, 16])],
        [vi("s_out", FLOAT, [1, 16]), vi("y_t", FLOAT, [1, 16])])
    g.init("s0", np.zeros((1, 16), np.float32))
    g.node("Scan", ["s0", h], ["y", "scan_seq"], body=body, num_scan_inputs=1)
    return g.model([vi("x", FLOAT, [1, 3, 16, 16])], [vi("y", FLOAT, [1, 16])])


def rnn_model(kind):
    """conv stem -> ReduceMean(H) -> (W, 1, C) -> LSTM/GRU/RNN(hidden 8) -> Y_h."""
    g = G({"GRU": 6, "RNN": 7, "LSTM": 8}[kind])
    h = g.conv("x", 3, 32)
    h = g.conv(h, 32, 16)
    h = g.node("ReduceMean", [h], axes=[2], keepdims=0)
    h = g.node("Transpose", [h], perm=[2, 0, 1])
    gates = {"GRU": 3, "RNN": 1, "LSTM": 4}[kind]
    hid = 8
    w = g.init(kind + ".W", g.rng.normal(0, 0.2, (1, gates * hid, 16)))
    r = g.init(kind + ".R", g.rng.normal(0, 0.2, (1, gates * hid, hid)))
    b = g.init(kind + ".B", g.rng.normal(0, 0.05, (1, 2 * gates * hid)))
    outs = ["seq", "y"] + (["c"] if kind == "LSTM" else [])
    g.node(kind, [h, w, r, b], outs, hidden_size=hid)
    return g.model([vi("x", FLOAT, [1, 3, 16, 16])], [vi("y", FLOAT, [1, 1, hid])])


def qdq_model():
    """Float in/out; activations QuantizeLinear/DequantizeLinear (uint8), conv weights int8
    with per-output-channel scales (DequantizeLinear axis 0), biases float."""
    g = G(9)
    x = g.node("QuantizeLinear", ["x", g.init("x.scale", np.array(0.05, np.float32)),
                                  g.init("x.zp", np.array(128, np.uint8))])
    h = g.node("DequantizeLinear", [x, "x.scale", "x.zp"])
    cin = 3
    for i, cout in enumerate([32, 32, 8]):
        wf = g.weight(cout, cin)
        scale = (np.abs(wf).reshape(cout, -1).max(1) / 127).astype(np.float32)
        wq = np.clip(np.round(wf / scale[:, None, None, None]), -127, 127).astype(np.int8)
        w = g.node("DequantizeLinear", [g.init(f"w{i}.q", wq), g.init(f"w{i}.scale", scale),
                                        g.init(f"w{i}.zp", np.zeros(cout, np.int8))], axis=0)
        b = g.init(f"b{i}", g.rng.normal(0, 0.05, cout))
        h = g.node("Conv", [h, w, b], kernel_shape=[3, 3], pads=[1] * 4)
        if i < 2:
            h = g.node("Relu", [h])
            q = g.node("QuantizeLinear", [h, g.init(f"a{i}.scale", np.array(0.05, np.float32)),
                                          g.init(f"a{i}.zp", np.array(0, np.uint8))])
            h = g.node("DequantizeLinear", [q, f"a{i}.scale", f"a{i}.zp"])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", FLOAT, [1, 3, 16, 16])], [vi("y", FLOAT, [1, 8, 16, 16])], opset=17)


def qoperator_model():
    """Float in/out; QuantizeLinear -> QLinearConv x3 (uint8 activations, int8 weights with
    per-channel scales, int32 bias) -> DequantizeLinear."""
    g = G(10)
    g.init("s_in", np.array(0.05, np.float32))
    g.init("zp_in", np.array(128, np.uint8))
    h = g.node("QuantizeLinear", ["x", "s_in", "zp_in"])
    s_prev, zp_prev, cin = "s_in", "zp_in", 3
    for i, cout in enumerate([32, 32, 8]):
        wf = g.weight(cout, cin)
        scale = (np.abs(wf).reshape(cout, -1).max(1) / 127).astype(np.float32)
        wq = np.clip(np.round(wf / scale[:, None, None, None]), -127, 127).astype(np.int8)
        bias = np.round(g.rng.normal(0, 0.05, cout) / (0.05 * scale)).astype(np.int32)
        s_out = g.init(f"y{i}.scale", np.array(0.1, np.float32))
        zp_out = g.init(f"y{i}.zp", np.array(0 if i < 2 else 128, np.uint8))
        h = g.node("QLinearConv", [h, s_prev, zp_prev, g.init(f"w{i}.q", wq), g.init(f"w{i}.scale", scale),
                                   g.init(f"w{i}.zp", np.zeros(cout, np.int8)), s_out, zp_out,
                                   g.init(f"b{i}.q", bias)], kernel_shape=[3, 3], pads=[1] * 4)
        s_prev, zp_prev, cin = s_out, zp_out, cout
    g.node("DequantizeLinear", [h, s_prev, zp_prev], ["y"])
    return g.model([vi("x", FLOAT, [1, 3, 16, 16])], [vi("y", FLOAT, [1, 8, 16, 16])], opset=17)


def _no_graph():
    return onnx.ModelProto(ir_version=IR, producer_name="onnxprune-corpus",
                           opset_import=[helper.make_opsetid("", 17)])


def checker_fail():
    m = conv_net(11)
    m.graph.node[2].input[0] = "undefined_tensor"
    return m


def with_opset(m, v):
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = v
    return m


# ------------------------------------------------------------------------------ cases

# Cases whose expectation is the correct behaviour, not today's (tests run them as
# xfail(strict=True)); remove an entry when onnxprune is fixed and the test XPASSes.
XFAIL: dict[str, str] = {}  # case name -> why today's behaviour is wrong (strict xfail until fixed)

def case(name, file, description, kind, args, expect, **extra):
    return {"name": name, "file": file, "description": description, "kind": kind, "args": args,
            "expect": expect, **extra}


def refuse(code, fragment):
    return {"exit": code, "stderr_contains": fragment}


OK = {"exit": 0, "valid": True}
RAY_UNREACHABLE = ("sensitivity --ray at an address where no Ray cluster listens (fails in seconds; without ray "
                   "installed the line is the install hint instead, with the same code)")
PRUNE = ["prune", "-o", "{out}", "--ratio", "0.3"]
C = "tests/corpus/"


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "onnxprune", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"building a plan failed: {proc.stderr.strip()}")


def main() -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    for old in CORPUS.iterdir():
        if old.is_file():
            old.unlink()

    def save(name, model):
        onnx.save(model, str(CORPUS / name))
        return C + name

    def write(name, data: bytes):
        (CORPUS / name).write_bytes(data)
        return C + name

    base = save("conv_net.onnx", conv_net())

    def save_npz(name, nan=False, **shapes):
        rng = np.random.default_rng(0)
        arrays = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
        if nan:
            next(iter(arrays.values()))[0, 0, 0, 0] = np.nan
        np.savez(CORPUS / name, **arrays)
        return C + name
    def save_npz_bool(name):
        np.savez(CORPUS / name, x=np.zeros((4, 3, 16, 16), dtype=bool))
        return C + name
    base_bytes = (CORPUS / "conv_net.onnx").read_bytes()
    rng = np.random.default_rng(1234)
    random_bytes = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert _fails_to_parse(random_bytes)
    truncated = base_bytes[: len(base_bytes) // 2]
    assert _fails_to_parse(truncated)
    tensor = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(4, 16), "t").SerializeToString()

    # plans, made by the installed onnxprune
    with tempfile.TemporaryDirectory() as tmp:
        run_cli("prune", CORPUS / "conv_net.onnx", "-o", Path(tmp) / "a.onnx", "--ratio", "0.3",
                "--plan-out", CORPUS / "plan_conv_net.json")
        save("other_net.onnx", conv_net(seed=5, width=48))
        run_cli("prune", CORPUS / "other_net.onnx", "-o", Path(tmp) / "b.onnx", "--ratio", "0.3",
                "--plan-out", CORPUS / "plan_other_model.json")
        (CORPUS / "other_net.onnx").unlink()
    plan = json.loads((CORPUS / "plan_conv_net.json").read_text())
    plan["groups"][0]["keep"][0][-1] = 999
    (CORPUS / "plan_out_of_range.json").write_text(json.dumps(plan, indent=1))
    (CORPUS / "plan_not_json.json").write_text("format: onnxprune.plan\ngroups: [0, 1\n")

    cases = [
        case("empty_file", write("empty.onnx", b""), "zero-byte file", "invalid_model", PRUNE, refuse(4, "empty")),
        case("random_bytes", write("random.onnx", random_bytes), "4096 seeded random bytes", "invalid_model", PRUNE,
             refuse(4, "not an ONNX model")),
        case("truncated", write("truncated.onnx", truncated), "conv_net.onnx cut in half", "invalid_model", PRUNE,
             refuse(4, "not an ONNX model")),
        case("tensor_proto", write("tensor_proto.onnx", tensor), "a serialized TensorProto (valid protobuf, not a model)",
             "invalid_model", PRUNE, refuse(4, "not an ONNX model")),
        case("model_without_graph", save("no_graph.onnx", _no_graph()),
             "a ModelProto with opset and IR version but no graph", "invalid_model", PRUNE,
             refuse(4, "no ONNX graph")),
        case("checker_failure", save("checker_failure.onnx", checker_fail()),
             "conv_net whose last conv reads an undefined tensor", "invalid_model", PRUNE, refuse(4, "onnx.checker")),
        case("opset_9", save("opset9.onnx", with_opset(conv_net(12), 9)), "conv_net stamped opset 9 (too old)",
             "unsupported", PRUNE, refuse(5, "opset 9")),
        case("opset_99", save("opset99.onnx", with_opset(conv_net(13), 99)), "conv_net stamped opset 99 (too new)",
             "unsupported", PRUNE, refuse(5, "opset 99")),
        case("custom_op_only", save("custom_only.onnx", custom_only()), "a single com.example op, no convs",
             "nothing_prunable", PRUNE, refuse(6, "nothing to prune")),
        case("custom_op_fixture", "models/custom_op.onnx", "fixture: conv -> com.example.MyOp -> conv",
             "nothing_prunable", PRUNE, refuse(6, "nothing to prune")),
        case("custom_op_middle", save("custom_middle.onnx", custom_middle()),
             "4 convs with a com.example op between the 2nd and 3rd: the groups away from it prune",
             "ok", PRUNE, OK),
        case("custom_op_middle_input_shape", C + "custom_middle.onnx",
             "the same with --input-shape: every shape is static and the custom op's output is declared in "
             "value_info, yet MACs stay unknown", "ok", PRUNE + ["--input-shape", "x=1x3x16x16"],
             {"exit": 0, "valid": True, "stdout_excludes": "pass --input-shape"}),
        case("if_fixture", "models/if_model.onnx", "fixture: prunable convs around an If with conv branches",
             "ok", PRUNE, OK),
        case("loop", save("loop.onnx", loop_model()), "convs before and after a Loop (elementwise body)",
             "ok", PRUNE, OK),
        case("scan", save("scan.onnx", scan_model()), "conv stem -> Scan running sum over width",
             "ok", PRUNE, OK),
        case("lstm_fixture", "models/lstm.onnx", "fixture: conv feature extractor -> LSTM -> Gemm", "ok", PRUNE, OK),
        case("lstm", save("lstm.onnx", rnn_model("LSTM")), "conv stem -> LSTM(8) -> Y_h", "ok", PRUNE, OK),
        case("gru", save("gru.onnx", rnn_model("GRU")), "conv stem -> GRU(8) -> Y_h", "ok", PRUNE, OK),
        case("rnn", save("rnn.onnx", rnn_model("RNN")), "conv stem -> RNN(8) -> Y_h", "ok", PRUNE, OK),
        case("qdq", save("qdq.onnx", qdq_model()),
             "QDQ conv net: uint8 activations, int8 weights with per-channel DequantizeLinear scales "
             "(today: refused as unsupported; pruning the float model first is the documented way)",
             "unsupported", PRUNE, refuse(5, "quantized")),
        case("qoperator", save("qoperator.onnx", qoperator_model()),
             "QOperator net: QLinearConv x3, int8 per-channel weights, int32 bias (today: refused as unsupported)",
             "unsupported", PRUNE, refuse(5, "quantized")),
        case("fp16", save("fp16.onnx", typed_conv_net(TensorProto.FLOAT16)), "conv_net entirely in float16",
             "ok", PRUNE, OK),
        case("bf16", save("bf16.onnx", typed_conv_net(TensorProto.BFLOAT16, opset=22, ir=10)),
             "conv_net entirely in bfloat16 at opset 22 (Conv accepts bfloat16 from opset 22; ONNX Runtime has "
             "no CPU kernel, so the test only checks the output with onnx.checker)", "ok", PRUNE,
             {"exit": 0, "valid": True, "ort": False}),
        case("bf16_opset17", save("bf16_opset17.onnx", typed_conv_net(TensorProto.BFLOAT16)),
             "conv_net in bfloat16 at opset 17, where Conv does not accept bfloat16 (fails full onnx.checker)",
             "invalid_model", PRUNE, refuse(4, "onnx.checker")),
        case("fp64", save("fp64.onnx", typed_conv_net(TensorProto.DOUBLE)),
             "conv_net entirely in float64 (ONNX Runtime has no CPU Conv for it: checked with onnx.checker only)",
             "ok", PRUNE, {"exit": 0, "valid": True, "ort": False}),
        case("opset_28", save("opset28.onnx", conv_net(15, opset=28, ir=10)),
             "conv_net at opset 28: within onnxprune's range, newer than ONNX Runtime 1.31 loads, so the result "
             "cannot be verified (the message should say so and point at --no-verify)", "verify", PRUNE,
             refuse(10, "--no-verify")),
        case("opset_28_no_verify", C + "opset28.onnx", "the opset-28 net with --no-verify: written unverified",
             "ok", PRUNE + ["--no-verify"], {"exit": 0, "valid": True, "ort": False}),
        case("no_prunable_group", save("single_conv.onnx", single_conv()), "one conv straight to the output",
             "nothing_prunable", PRUNE, refuse(6, "nothing to prune")),
        case("dynamic_hw_ratio", save("dynamic_hw.onnx", conv_net(14, shape=("N", 3, "H", "W"))),
             "input N x 3 x H x W, plain --ratio: prunes, MACs unknown", "ok", PRUNE, OK),
        case("dynamic_hw_target_macs", C + "dynamic_hw.onnx", "N x 3 x H x W with --target-macs and no --input-shape",
             "bad_argument", ["prune", "-o", "{out}", "--target-macs", "0.5"], refuse(7, "--input-shape")),
        case("dynamic_hw_target_macs_shape", C + "dynamic_hw.onnx", "N x 3 x H x W, --target-macs with --input-shape",
             "ok", ["prune", "-o", "{out}", "--target-macs", "0.6", "--input-shape", "x=1x3x16x16"], OK),
        case("ratio_1", base, "--ratio 1.0 (would remove everything)", "bad_argument",
             ["prune", "-o", "{out}", "--ratio", "1.0"], refuse(7, "ratio")),
        case("ratio_negative", base, "--ratio -0.1", "bad_argument",
             ["prune", "-o", "{out}", "--ratio", "-0.1"], refuse(7, "ratio")),
        case("target_macs_0", base, "--target-macs 0", "bad_argument",
             ["prune", "-o", "{out}", "--target-macs", "0"], refuse(7, "target")),
        case("target_macs_1.5", base, "--target-macs 1.5", "bad_argument",
             ["prune", "-o", "{out}", "--target-macs", "1.5"], refuse(7, "target")),
        case("output_is_input", base, "-o names the input model itself", "bad_argument",
             ["prune", "-o", "{model}", "--ratio", "0.3"], refuse(7, "input model")),
        case("output_folder_missing", base, "-o into a folder that does not exist", "output",
             ["prune", "-o", "{tmp}/out/no/such/dir/o.onnx", "--ratio", "0.3"], refuse(8, "does not exist")),
        case("output_unwritable", base,
             "-o /proc/onnxprune-corpus.onnx: /proc refuses file creation even for root (directory permissions "
             "do not stop root, so a read-only folder is no test here)", "output",
             ["prune", "-o", "/proc/onnxprune-corpus.onnx", "--ratio", "0.3"], refuse(8, "not writable")),
        case("val_data_wrong_input", base, "--val data whose array is named for another input", "data",
             PRUNE + ["--val", "{repo}/" + save_npz("val_wrong_name.npz", wrong=(4, 3, 16, 16))],
             refuse(11, "no array for model input")),
        case("val_data_nan", base, "--val data containing NaN", "data",
             PRUNE + ["--val", "{repo}/" + save_npz("val_nan.npz", x=(4, 3, 16, 16), nan=True)],
             refuse(11, "NaN")),
        case("val_budget_missed", base, "--max-drop 0 on validation data after heavy pruning: refused, "
             "nothing written", "validation",
             ["prune", "-o", "{out}", "--ratio", "0.6", "--round-to", "1", "--val", "{repo}/" + save_npz("val_ok.npz", x=(8, 3, 16, 16)), "--metric", "cosine", "--max-drop", "0"],
             refuse(12, "fails validation")),
        case("calib_wrong_input", base, "--calib data whose array is named for another input", "data",
             PRUNE + ["--criterion", "activation", "--calib", "{repo}/" + C + "val_wrong_name.npz"],
             refuse(11, "no array for model input")),
        case("calib_nan", base, "--calib data containing NaN", "data",
             PRUNE + ["--criterion", "taylor", "--calib", "{repo}/" + C + "val_nan.npz"], refuse(11, "NaN")),
        case("calib_wrong_shape", base, "--calib data with 16x16 images for a 3-channel input given 4 channels",
             "data", PRUNE + ["--criterion", "wanda", "--calib", "{repo}/" + save_npz("calib_4ch.npz",
                                                                                     x=(4, 4, 16, 16))],
             refuse(11, "dim 1 is 4")),
        case("calib_wrong_dtype", base, "--calib data of integers cast-safe but of booleans refused", "data",
             PRUNE + ["--criterion", "activation", "--calib", "{repo}/" + save_npz_bool("calib_bool.npz")],
             refuse(11, "bool")),
        case("calib_missing_for_criterion", base, "a data-aware criterion without --calib", "bad_argument",
             PRUNE + ["--criterion", "fisher"], refuse(7, "needs calibration data")),
        case("calib_random", base, "--calib random:8 with a gradient criterion: pruned, with a warning that "
             "synthetic data makes data-aware scores meaningless", "ok",
             PRUNE + ["--criterion", "fisher", "--calib", "random:8"], OK),
        case("calib_folder_empty", base, "--calib images: on a folder with no images", "data",
             PRUNE + ["--criterion", "activation", "--calib", "images:{tmp}/out"], refuse(11, "no image files")),
        case("output_is_directory", base, "-o names an existing folder", "output",
             ["prune", "-o", "{tmp}/out", "--ratio", "0.3"], refuse(8, "directory")),
        case("plan_out_folder_missing", base, "--plan-out into a folder that does not exist (the model itself "
             "could be written)", "output", PRUNE + ["--plan-out", "{tmp}/out/missing/plan.json"],
             refuse(8, "does not exist")),
        case("report_unwritable", base, "--report under /proc (cannot be created, even by root)", "output",
             PRUNE + ["--report", "/proc/onnxprune-corpus-report.json"], refuse(8, "not writable")),
        case("input_is_directory", None, "the model path is a folder", "input", PRUNE,
             refuse(3, "is a directory"), model="{tmp}"),
        case("input_missing", None, "the model path does not exist", "input", PRUNE,
             refuse(3, "no such file"), model="{tmp}/missing.onnx"),
        case("plan_not_json", base, "apply with a plan file that is not JSON", "plan",
             ["apply", "{repo}/" + C + "plan_not_json.json", "-o", "{out}"], refuse(9, "not valid JSON")),
        case("plan_other_model", base, "apply with a plan made for another model", "plan",
             ["apply", "{repo}/" + C + "plan_other_model.json", "-o", "{out}"], refuse(9, "another model")),
        case("plan_out_of_range", base, "apply with a plan keeping channel 999 of a 32-channel group", "plan",
             ["apply", "{repo}/" + C + "plan_out_of_range.json", "-o", "{out}"], refuse(9, "within 0..")),
        case("plan_valid", base, "apply with the plan made for this model (control)", "ok",
             ["apply", "{repo}/" + C + "plan_conv_net.json", "-o", "{out}"], OK),
        case("input_shape_not_input", base, "--input-shape naming a tensor that is not a model input",
             "bad_argument", PRUNE + ["--input-shape", "nosuch=1x3x16x16"], refuse(7, "not a model input")),
        case("input_shape_wrong_rank", base, "--input-shape with 3 dims for a rank-4 input", "bad_argument",
             PRUNE + ["--input-shape", "x=1x3x16"], refuse(7, "rank")),
        case("ray_unreachable", base, RAY_UNREACHABLE, "cluster",
             ["sensitivity", "--calib", "random:4", "--ray", "127.0.0.1:1"], refuse(13, "--ray")),
    ]
    for c in cases:
        if c["name"] in XFAIL:
            c["xfail"] = XFAIL[c["name"]]
    assert set(XFAIL) <= {c["name"] for c in cases}
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    (CORPUS / "manifest.json").write_text(json.dumps(cases, indent=1) + "\n")
    total = sum(f.stat().st_size for f in CORPUS.iterdir())
    print(f"wrote {len(cases)} cases, {len(list(CORPUS.iterdir()))} files, {total / 1e6:.2f} MB in {CORPUS}")


def _fails_to_parse(data: bytes) -> bool:
    try:
        onnx.ModelProto().ParseFromString(data)
    except Exception:
        return True
    return False


if __name__ == "__main__":
    main()
