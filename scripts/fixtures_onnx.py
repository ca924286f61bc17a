"""Hand-built ONNX fixtures (onnx.helper only, no torch).

Every builder returns an ``onnx.ModelProto``. Weights come from a numpy Generator seeded with 0
per fixture, so output is deterministic and independent of build order.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8  # loadable by every onnxruntime >= 1.14; fine for opsets 11..17


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
class G:
    """Tiny graph-builder: collects nodes/initializers, generates unique names."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def uid(self, prefix):
        self._n += 1
        return f"{prefix}_{self._n}"

    # weights ---------------------------------------------------------------------------
    def kaiming(self, *shape, fan_in=None):
        fan_in = fan_in or int(np.prod(shape[1:]))
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32)
                                                  if np.asarray(arr).dtype.kind == "f" else np.asarray(arr), name))
        return name

    def const_init(self, name, arr):
        """initializer keeping the array's dtype (for int64 shapes/axes etc.)."""
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    # nodes -------------------------------------------------------------------------------
    def node(self, op, inputs, outputs=None, name=None, domain=None, **attrs):
        name = name or self.uid(op)
        if outputs is None:
            outputs = [name + "_out"]
        elif isinstance(outputs, str):
            outputs = [outputs]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def conv(self, x, cin, cout, k=3, stride=1, pad=None, bias=True, name=None, w_name=None, b_name=None,
             group=1):
        name = name or self.uid("conv")
        pad = k // 2 if pad is None else pad
        w = w_name or self.init(name + ".weight", self.kaiming(cout, cin // group, k, k))
        ins = [x, w]
        if bias is True:
            ins.append(b_name or self.init(name + ".bias", self.rng.normal(0, 0.05, cout)))
        elif isinstance(bias, str):
            ins.append(bias)
        return self.node("Conv", ins, name=name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, group=group)

    def bn(self, x, c, name=None):
        name = name or self.uid("bn")
        s = self.init(name + ".scale", self.rng.uniform(0.5, 1.5, c))
        b = self.init(name + ".bias", self.rng.normal(0, 0.1, c))
        m = self.init(name + ".mean", self.rng.normal(0, 0.1, c))
        v = self.init(name + ".var", self.rng.uniform(0.5, 1.5, c))
        return self.node("BatchNormalization", [x, s, b, m, v], name=name, epsilon=1e-5)

    def gemm(self, x, cin, cout, name=None, transB=1, **attrs):
        name = name or self.uid("gemm")
        wshape = (cout, cin) if transB else (cin, cout)
        w = self.init(name + ".weight", self.kaiming(*wshape, fan_in=cin))
        b = self.init(name + ".bias", self.rng.normal(0, 0.05, cout))
        return self.node("Gemm", [x, w, b], name=name, transB=transB, **attrs)

    def model(self, name, inputs, outputs, opset, extra_opsets=(), functions=None):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
        m = helper.make_model(graph, opset_imports=ops, producer_name="onnxprune-fixtures",
                              producer_version="1")
        m.ir_version = IR_VERSION
        return m


def img_input(name="input", c=3, h=32, w=32):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", c, h, w])


def out_info(name="output", *dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *dims])


# --------------------------------------------------------------------------------------
# paddle_style.onnx : every weight is a Constant node output
# --------------------------------------------------------------------------------------
def build_paddle_style():
    g = G(0)
    pc = 0

    def const(arr, name):
        # PaddlePaddle-like: weights live in Constant nodes, not initializers
        t = numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)
        g.node("Constant", [], [name], name=name + "_const", value=t)
        return name

    def conv(x, cin, cout, k, stride=1, bias=True):
        nonlocal pc
        i = pc
        pc += 1
        w = const(g.kaiming(cout, cin, k, k), f"conv2d_{i}.w_0")
        ins = [x, w] + ([const(g.rng.normal(0, 0.05, cout), f"conv2d_{i}.b_0")] if bias else [])
        return g.node("Conv", ins, [f"conv2d_{i}.tmp_0"], name=f"conv2d_{i}", kernel_shape=[k, k],
                      strides=[stride] * 2, pads=[k // 2] * 4)

    bnc = 0

    def bn(x, c):
        nonlocal bnc
        i = bnc
        bnc += 1
        ins = [x,
               const(g.rng.uniform(0.5, 1.5, c), f"batch_norm_{i}.w_0"),
               const(g.rng.normal(0, 0.1, c), f"batch_norm_{i}.b_0"),
               const(g.rng.normal(0, 0.1, c), f"batch_norm_{i}.w_1"),
               const(g.rng.uniform(0.5, 1.5, c), f"batch_norm_{i}.w_2")]
        return g.node("BatchNormalization", ins, [f"batch_norm_{i}.tmp_2"], name=f"batch_norm_{i}",
                      epsilon=1e-5, momentum=0.9)

    x = conv("x", 3, 16, 3)                                   # conv2d_0 (+bias)
    x = bn(x, 16)
    r0 = g.node("Relu", [x], ["relu_0.tmp_0"], name="relu_0")
    y = conv(r0, 16, 16, 3, bias=False)                       # conv2d_1, bias as elementwise_add
    y = g.node("Add", [y, const(g.rng.normal(0, 0.05, (1, 16, 1, 1)), "conv2d_1.b_0")],
               ["elementwise_add_0"], name="elementwise_add_0")
    y = bn(y, 16)
    y = g.node("Relu", [y], ["relu_1.tmp_0"], name="relu_1")
    y = conv(y, 16, 16, 3)                                    # conv2d_2
    y = bn(y, 16)
    s = g.node("Add", [y, r0], ["elementwise_add_1"], name="elementwise_add_1")   # residual
    s = g.node("Relu", [s], ["relu_2.tmp_0"], name="relu_2")
    z = conv(s, 16, 32, 3, stride=2)                          # conv2d_3
    z = bn(z, 32)
    z = g.node("Relu", [z], ["relu_3.tmp_0"], name="relu_3")
    p = g.node("GlobalAveragePool", [z], ["pool2d_0.tmp_0"], name="pool2d_0")
    f = g.node("Flatten", [p], ["flatten_0.tmp_0"], name="flatten_0", axis=1)
    w = const(g.kaiming(32, 10, fan_in=32), "linear_0.w_0")
    b = const(g.rng.normal(0, 0.05, 10), "linear_0.b_0")
    g.node("Gemm", [f, w, b], ["linear_0.tmp_1"], name="linear_0", transB=0)
    return g.model("paddle_style", [img_input("x")], [out_info("linear_0.tmp_1", 10)], opset=11)


# --------------------------------------------------------------------------------------
# shared_weights.onnx : shared zero-bias and tied conv weights across independent groups
# --------------------------------------------------------------------------------------
def build_shared_weights():
    g = G(0)
    g.init("zero_bias_16", np.zeros(16, np.float32))
    g.init("zero_bias_24", np.zeros(24, np.float32))
    g.init("tied_w_16x16", g.kaiming(16, 16, 3, 3))  # shared by branch_a.conv2 and branch_b.conv3

    # branch A: 3 -> 16 -> 16
    a = g.conv("input", 3, 16, name="branch_a.conv1", bias="zero_bias_16")
    a = g.node("Relu", [a], name="branch_a.relu1")
    a = g.conv(a, 16, 16, name="branch_a.conv2", w_name="tied_w_16x16")
    a = g.node("Relu", [a], name="branch_a.relu2")
    a = g.node("GlobalAveragePool", [a], name="branch_a.pool")

    # branch B: 3 -> 24 -> 16 -> 16
    b = g.conv("input", 3, 24, name="branch_b.conv1", bias="zero_bias_24")
    b = g.node("Relu", [b], name="branch_b.relu1")
    b = g.conv(b, 24, 16, name="branch_b.conv2", bias="zero_bias_16")
    b = g.node("Relu", [b], name="branch_b.relu2")
    b = g.conv(b, 16, 16, name="branch_b.conv3", w_name="tied_w_16x16")
    b = g.node("Relu", [b], name="branch_b.relu3")
    b = g.node("GlobalAveragePool", [b], name="branch_b.pool")

    c = g.node("Concat", [a, b], name="concat", axis=1)      # 32 x 1 x 1
    f = g.node("Flatten", [c], name="flatten", axis=1)
    g.gemm(f, 32, 10, name="fc")
    g.nodes[-1].output[0] = "output"
    return g.model("shared_weights", [img_input()], [out_info("output", 10)], opset=13)


# --------------------------------------------------------------------------------------
# gemm_variants.onnx
# --------------------------------------------------------------------------------------
def build_gemm_variants():
    g = G(0)
    x = g.gemm("input", 32, 64, name="gemm_transB1", transB=1)
    x = g.node("Relu", [x], name="relu1")
    x = g.gemm(x, 64, 48, name="gemm_transB0", transB=0)
    x = g.node("Relu", [x], name="relu2")
    x = g.gemm(x, 48, 32, name="gemm_alpha_beta", transB=1, alpha=0.5, beta=2.0)
    x = g.node("Tanh", [x], name="tanh")
    w = g.init("matmul.weight", g.kaiming(32, 24, fan_in=32))
    x = g.node("MatMul", [x, w], name="matmul")
    x = g.node("Add", [x, g.init("matmul.bias", g.rng.normal(0, 0.05, 24))], name="matmul_bias")
    x = g.node("Relu", [x], name="relu3")
    g.gemm(x, 24, 10, name="gemm_out", transB=1)
    g.nodes[-1].output[0] = "output"
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 32])
    return g.model("gemm_variants", [inp], [out_info("output", 10)], opset=13)


# --------------------------------------------------------------------------------------
# lstm.onnx
# --------------------------------------------------------------------------------------
def build_lstm():
    g = G(0)
    hid, feat = 24, 32
    x = g.conv("input", 3, 16, stride=2, name="conv1")          # 16 x 16 x 16
    x = g.node("Relu", [x], name="relu1")
    x = g.conv(x, 16, feat, stride=2, name="conv2")             # 32 x 8 x 8
    x = g.node("Relu", [x], name="relu2")
    x = g.node("ReduceMean", [x], name="pool_h", axes=[2], keepdims=0)   # (N, 32, 8)
    seq = g.node("Transpose", [x], name="to_seq", perm=[2, 0, 1])        # (8, N, 32)
    W = g.init("lstm.W", g.rng.uniform(-0.2, 0.2, (1, 4 * hid, feat)))
    R = g.init("lstm.R", g.rng.uniform(-0.2, 0.2, (1, 4 * hid, hid)))
    B = g.init("lstm.B", g.rng.uniform(-0.1, 0.1, (1, 8 * hid)))
    Y, Yh, Yc = g.node("LSTM", [seq, W, R, B], ["lstm_Y", "lstm_Y_h", "lstm_Y_c"], name="lstm",
                       hidden_size=hid, direction="forward")
    axes = g.const_init("squeeze_axes", np.array([0], np.int64))
    h = g.node("Squeeze", [Yh, axes], name="squeeze_h")                 # (N, 24)
    g.gemm(h, hid, 10, name="fc")
    g.nodes[-1].output[0] = "output"
    return g.model("lstm", [img_input()], [out_info("output", 10)], opset=14)


# --------------------------------------------------------------------------------------
# if_model.onnx
# --------------------------------------------------------------------------------------
def build_if_model():
    g = G(0)
    x = g.conv("input", 3, 16, name="conv1")
    x = g.node("Relu", [x], name="relu1")
    feat = g.conv(x, 16, 16, stride=2, name="conv2")           # 16 x 16 x 16 (prunable, feeds If)
    feat = g.node("Relu", [feat], ["feat"], name="relu2")
    # data-dependent condition: mean(input) > 0
    m = g.node("ReduceMean", ["input"], name="input_mean", keepdims=0)
    cond = g.node("Greater", [m, g.init("zero_scalar", np.array(0.0, np.float32))], ["cond"], name="cond")

    # else-branch uses a weight from the OUTER scope (main-graph initializer)
    g.init("else_conv.weight", g.kaiming(16, 16, 1, 1))
    branch_out_shape = ["batch", 16, 16, 16]

    # then-branch: conv 3x3 with its own (subgraph) initializers + Relu
    tg = G(1)
    t = tg.conv("feat", 16, 16, name="then_conv")
    tg.node("Relu", [t], ["then_out"], name="then_relu")
    then_graph = helper.make_graph(tg.nodes, "then_branch", [],
                                   [helper.make_tensor_value_info("then_out", TensorProto.FLOAT,
                                                                  branch_out_shape)], tg.inits)
    eg = G(2)
    e = eg.node("Conv", ["feat", "else_conv.weight"], name="else_conv", kernel_shape=[1, 1])
    eg.node("Sigmoid", [e], ["else_out"], name="else_sigmoid")
    else_graph = helper.make_graph(eg.nodes, "else_branch", [],
                                   [helper.make_tensor_value_info("else_out", TensorProto.FLOAT,
                                                                  branch_out_shape)], eg.inits)
    y = g.node("If", [cond], ["if_out"], name="if", then_branch=then_graph, else_branch=else_graph)
    y = g.conv(y, 16, 32, stride=2, name="conv3")
    y = g.node("Relu", [y], name="relu3")
    y = g.node("GlobalAveragePool", [y], name="pool")
    y = g.node("Flatten", [y], name="flatten", axis=1)
    g.gemm(y, 32, 10, name="fc")
    g.nodes[-1].output[0] = "output"
    return g.model("if_model", [img_input()], [out_info("output", 10)], opset=13)


# --------------------------------------------------------------------------------------
# custom_op.onnx (analysis only: ORT has no com.example.MyOp kernel)
# --------------------------------------------------------------------------------------
def build_custom_op():
    g = G(0)
    x = g.conv("input", 3, 16, name="conv1")
    x = g.node("Relu", [x], name="relu1")
    x = g.node("MyOp", [x], name="my_op", domain="com.example", alpha=1.0)
    x = g.conv(x, 16, 8, name="conv2")
    g.nodes[-1].output[0] = "output"
    return g.model("custom_op", [img_input()], [out_info("output", 8, 32, 32)], opset=13,
                   extra_opsets=[("com.example", 1)])


# --------------------------------------------------------------------------------------
# elementwise_mix.onnx
# --------------------------------------------------------------------------------------
def build_elementwise_mix():
    g = G(0)
    C = 16

    def scalar(name, v):
        return g.init(name, np.array(v, np.float32))

    r1 = g.node("Relu", [g.conv("input", 3, C, name="conv1")], name="relu1")
    t2 = g.conv(r1, C, C, name="conv2")
    t3 = g.conv(r1, C, C, name="conv3")
    p2 = g.node("PRelu", [t2, g.init("prelu.slope", g.rng.uniform(0.05, 0.3, (C, 1, 1)))], name="prelu")
    l3 = g.node("LeakyRelu", [t3], name="leaky", alpha=0.1)
    e = g.node("Add", [p2, l3], name="add")
    pc_a = g.init("per_channel_1C11", g.rng.uniform(0.5, 1.5, (1, C, 1, 1)))
    e = g.node("Sub", [e, g.node("Mul", [l3, pc_a], name="mul_pc")], name="sub")
    pc_b = g.init("per_channel_C11", g.rng.uniform(1.0, 2.0, (C, 1, 1)))
    e = g.node("Div", [e, pc_b], name="div")
    e = g.node("Max", [e, g.node("Tanh", [t2], name="tanh")], name="max")
    sp = g.node("Add", [g.node("Softplus", [t3], name="softplus"), scalar("one", 1.0)], name="add_scalar")
    e = g.node("Min", [e, sp], name="min")
    pos = g.node("Greater", [e, scalar("zero", 0.0)], name="greater")
    e = g.node("Where", [pos, e, g.node("Mul", [e, scalar("point_one", 0.1)], name="mul_scalar")],
               name="where")
    pw = g.node("Pow", [g.node("Sigmoid", [t2], name="sigmoid"), scalar("two", 2.0)], name="pow")
    e = g.node("Add", [e, pw], name="add_pow")
    e = g.node("Add", [g.node("Erf", [e], name="erf"),
                       g.node("Clip", [e, scalar("clip_min", -1.0), scalar("clip_max", 1.0)], name="clip")],
               name="add_erf_clip")
    e = g.node("Add", [g.node("HardSwish", [e], name="hardswish"),
                       g.node("HardSigmoid", [e], name="hardsigmoid", alpha=0.2, beta=0.5)], name="add_hs")
    e = g.node("Identity", [e], name="identity")
    e = g.node("Dropout", [e], name="dropout")
    e = g.node("Cast", [e], name="cast", to=TensorProto.FLOAT)
    pads = g.const_init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    e = g.node("Pad", [e, pads], name="pad", mode="constant")
    r4 = g.node("Relu", [g.conv(e, C, 24, pad=0, name="conv4")], name="relu4")  # 24 x 32 x 32
    # SE via ReduceMean keepdims=1
    m = g.node("ReduceMean", [r4], name="reduce_mean", axes=[2, 3], keepdims=1)
    g1 = g.node("Mul", [r4, g.node("Sigmoid", [m], name="se_sigmoid")], name="se_mul")
    a = g.node("AveragePool", [g1], name="avgpool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    r5 = g.node("Relu", [g.conv(a, 24, 24, name="conv5")], name="relu5")
    r5 = g.node("MaxPool", [r5], name="maxpool", kernel_shape=[2, 2], strides=[2, 2])  # 24 x 16 x 16
    # Squeeze / Unsqueeze around a global pool
    gp = g.node("GlobalAveragePool", [r5], name="gap")
    ax = g.const_init("axes_23", np.array([2, 3], np.int64))
    sq = g.node("Squeeze", [gp, ax], name="squeeze")
    us = g.node("Unsqueeze", [sq, ax], name="unsqueeze")
    g2 = g.node("Mul", [r5, g.node("Sigmoid", [us], name="gate_sigmoid")], name="gate_mul")
    r6 = g.node("Relu", [g.conv(g2, 24, 32, name="conv6")], name="relu6")
    f = g.node("Flatten", [g.node("GlobalMaxPool", [r6], name="gmp")], name="flatten", axis=1)
    g.gemm(f, 32, 10, name="fc")
    g.nodes[-1].output[0] = "output"
    return g.model("elementwise_mix", [img_input()], [out_info("output", 10)], opset=17)


BUILDERS = {
    "paddle_style": (build_paddle_style, "x", (1, 3, 32, 32)),
    "shared_weights": (build_shared_weights, "input", (1, 3, 32, 32)),
    "gemm_variants": (build_gemm_variants, "input", (1, 32)),
    "lstm": (build_lstm, "input", (1, 3, 32, 32)),
    "if_model": (build_if_model, "input", (1, 3, 32, 32)),
    "custom_op": (build_custom_op, "input", (1, 3, 32, 32)),
    "elementwise_mix": (build_elementwise_mix, "input", (1, 3, 32, 32)),
}
