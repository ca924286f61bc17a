"""Models past the 2 GB protobuf limit (issue 8, "Large models"), on scaled-down proxies.

With ``onnxprune.shapes.PROTOBUF_LIMIT`` lowered below a model's size, an external-data
model takes the path a > 2 GB one takes: its large weights stay in their file when it is
loaded and are read one at a time, only their sliced values enter the pruned model, which
is run from disk and saved with external data. ``LARGE_MODEL_BYTES`` lowered sends a model
through the path of 512 MiB - 2 GB ones (run from disk, saved serialized a piece at a time).
"""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
import onnxprune.shapes
from onnxprune.errors import InputError, InvalidModelError
from onnxprune.model import load_model, save_model, write_serialized
from onnxprune.runtime import random_inputs, session
from onnxprune.weights import WeightStore, on_disk
from tests.conftest import MODELS

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"


def _external(src: Path, folder: Path, name: str = "ext.onnx") -> Path:
    model = onnx.load(str(src))
    path = folder / name
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=name + ".data", size_threshold=1024)
    return path


def _past_the_limit(monkeypatch):
    """Every model counts as past the protobuf limit, and every float weight of more than
    64 values as large (left on disk, out of the checker's skeleton)."""
    monkeypatch.setattr(onnxprune.shapes, "PROTOBUF_LIMIT", 1000)
    monkeypatch.setattr(onnxprune.shapes, "SKELETON_MAX_ELEMENTS", 64)


@pytest.fixture
def past_the_limit(monkeypatch):
    _past_the_limit(monkeypatch)


def test_large_weights_stay_on_disk_when_loaded(tmp_path, past_the_limit):
    path = _external(MODELS / "resnet_bottleneck.onnx", tmp_path)
    eager = onnx.load(str(path))
    model = load_model(path)
    left = [t for t in model.graph.initializer if on_disk(t)]
    assert left and all(not t.HasField("raw_data") for t in left)
    assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer if not on_disk(t))
    assert onnxprune.shapes.approx_size(model) == onnxprune.shapes.approx_size(eager)
    lazy_store, eager_store = WeightStore(model.graph), WeightStore(eager.graph)
    for t in left:
        np.testing.assert_array_equal(lazy_store.get(t.name), eager_store.get(t.name))
    # saved as it is, the weights still on disk are copied file to file
    out = tmp_path / "out" / "copy.onnx"
    out.parent.mkdir()
    save_model(model, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.onnx", "copy.onnx.data"]
    again = onnx.load(str(out))
    for t in eager.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(next(u for u in again.graph.initializer
                                                                 if u.name == t.name)), numpy_helper.to_array(t))


@pytest.mark.parametrize("src", [MODELS / "resnet_bottleneck.onnx", MODELS / "shared_weights.onnx",
                                 MODELS / "paddle_style.onnx", MODELS / "mobilenetv2.onnx", MODELS / "unet.onnx",
                                 MODELS / "c2f.onnx", CORPUS / "fp16.onnx", CORPUS / "bf16.onnx"],
                         ids=lambda p: p.stem)
def test_the_on_disk_path_prunes_to_the_same_bytes(tmp_path, monkeypatch, src):
    """Weights read from disk, sliced and written back give the model the in-memory path
    gives, byte for byte (plans re-applied too)."""
    path = _external(src, tmp_path)
    eager = onnxprune.prune(str(path), ratio=0.5, round_to=1)
    _past_the_limit(monkeypatch)
    assert src.stem == "paddle_style" or any(on_disk(t) for t in load_model(path).graph.initializer)
    lazy = onnxprune.prune(str(path), ratio=0.5, round_to=1)
    assert lazy.serialized is None  # verified from disk, never serialized whole
    assert lazy.model.SerializeToString() == eager.model.SerializeToString()
    assert not any(on_disk(t) for t in lazy.model.graph.initializer)  # the result stands alone
    applied = onnxprune.apply(str(path), eager.plan)
    assert applied.model.SerializeToString() == eager.model.SerializeToString()


def test_external_data_problems_on_the_on_disk_path_are_clean_errors(tmp_path, past_the_limit):
    path = _external(MODELS / "resnet_bottleneck.onnx", tmp_path)
    data = tmp_path / "ext.onnx.data"
    good_model, good_data = path.read_bytes(), data.read_bytes()
    model = onnx.load(str(path), load_external_data=False)
    big = next(t for t in model.graph.initializer if onnxprune.shapes._left_out(t))

    def rewrite(key, value):
        for entry in big.external_data:
            if entry.key == key:
                old, entry.value = entry.value, value
        path.write_bytes(model.SerializeToString())
        return old

    old = rewrite("location", "../elsewhere.data")
    with pytest.raises(InputError, match="cannot load external data"):
        load_model(path)
    rewrite("location", old)
    old = rewrite("length", str(int(dict((e.key, e.value) for e in big.external_data)["length"]) - 4))
    with pytest.raises(InvalidModelError, match=big.name):
        load_model(path)
    rewrite("length", old)
    assert path.read_bytes() == good_model
    with open(data, "r+b") as f:
        f.truncate(len(good_data) // 2)
    with pytest.raises(InputError, match="cannot load external data"):
        load_model(path)


@pytest.mark.parametrize("src", [MODELS / "resnet_basic.onnx", MODELS / "paddle_style.onnx",
                                 CORPUS / "bf16.onnx", CORPUS / "qdq.onnx"], ids=lambda p: p.stem)
def test_serializing_in_pieces_writes_the_same_bytes(src):
    model = onnx.load(str(src))
    buf = io.BytesIO()
    write_serialized(model, buf)
    assert buf.getvalue() == model.SerializeToString()


def test_serializing_in_pieces_falls_back_on_a_payload_that_disagrees_with_its_dims():
    model = onnx.load(str(MODELS / "resnet_basic.onnx"))
    t = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    t.raw_data = t.raw_data[:-4]
    buf = io.BytesIO()
    write_serialized(model, buf)
    assert buf.getvalue() == model.SerializeToString()


def test_large_models_are_verified_from_disk_and_saved_unchanged(tmp_path, monkeypatch):
    """Between 512 MiB and the protobuf limit: the runtime maps the model from disk and the
    file written is the one the in-memory path writes."""
    src = MODELS / "resnet_basic.onnx"
    small = onnxprune.prune(str(src), ratio=0.5)
    small.save(tmp_path / "a.onnx")
    monkeypatch.setattr(onnxprune.shapes, "LARGE_MODEL_BYTES", 50_000)
    large = onnxprune.prune(str(src), ratio=0.5)
    assert large.serialized is None
    large.save(tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]


# ------------------------------------------------------------------ peak memory

LAYERS, WIDTH = 16, 2048  # 16 float32 weights of 16 MiB: 256 MiB


def _chain(folder: Path) -> tuple[Path, int]:
    """A MatMul/Relu chain whose weights (mostly zeros, a few random values) are external."""
    rng = np.random.default_rng(0)
    nodes, inits, x, offset = [], [], "x", 0
    nbytes = WIDTH * WIDTH * 4
    with open(folder / "chain.onnx.data", "wb") as data:
        for i in range(LAYERS):
            w = np.zeros((WIDTH, WIDTH), np.float32)
            w[rng.integers(0, WIDTH, 4096), rng.integers(0, WIDTH, 4096)] = rng.standard_normal(4096)
            data.write(w.tobytes())
            ref = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[WIDTH, WIDTH],
                              data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "chain.onnx.data"), ("offset", str(offset)), ("length", str(nbytes))):
                ref.external_data.add(key=key, value=value)
            inits.append(ref)
            offset += nbytes
            nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"h{i}"])]
            x = f"h{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", WIDTH])], inits)
    path = folder / "chain.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=8).SerializeToString())
    return path, offset


CHILD = textwrap.dedent("""
    import json, sys
    import numpy, onnx, onnxruntime  # imported before the baseline is taken
    import onnxprune.shapes
    from onnxprune.cli import main

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    onnxprune.shapes.PROTOBUF_LIMIT = 64 << 20  # the model counts as past the limit
    baseline = status("VmRSS")
    main(["prune", sys.argv[1], "-o", sys.argv[2], "--ratio", "0.5", "-q"])
    print(json.dumps({"baseline": baseline, "peak": status("VmHWM")}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads peak RSS from /proc")
def test_pruning_past_the_limit_does_not_hold_the_model_in_memory(tmp_path):
    """The whole CLI run (load, analysis, scoring, surgery, verification in ORT, saving
    with external data) in a child process: its peak RSS above what its imports take stays
    below the size of the weights. Loading them into the protobuf, as onnx does, took about
    2.5x (input, scoring copies, output, the runtime's copy)."""
    path, weight_bytes = _chain(tmp_path)
    out = tmp_path / "out" / "small.onnx"
    out.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out)], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    used = mem["peak"] - mem["baseline"]
    assert used < 1.0 * weight_bytes, f"peak {used / 2**20:.0f} MiB above baseline for {weight_bytes / 2**20:.0f} MiB"
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.onnx", "small.onnx.data"]
    assert out.stat().st_size < 64 << 10  # the weights are beside it
    onnx.checker.check_model(str(out), full_check=True)
    pruned = onnx.load(str(out))
    assert all(t.dims[0] < WIDTH or t.dims[1] < WIDTH for t in pruned.graph.initializer)
    feeds = random_inputs(pruned)
    (y,) = session(str(out)).run(None, feeds)
    assert y.shape == (1, WIDTH)
