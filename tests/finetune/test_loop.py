import copy
import json

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.errors import BadArgumentError
from onnxprune.finetune import FinetuneOptions, finetune
from onnxprune.finetune.graph import build_train_graph, output_terms
from onnxprune.finetune.trainable import as_inputs, fold_batchnorms, trainable_names
from onnxprune.runtime import session
from onnxprune.shapes import infer_shapes, with_input_shapes
from tests.conftest import MODELS

RESNET = str(MODELS / "resnet_basic_bn.onnx")


def _data(n=48, seed=0):
    return {"input": np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)}


@pytest.fixture(scope="module")
def pruned():
    return onnxprune.prune(RESNET, ratio=0.5, verify=False).model


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_weight_gradients_of_the_distillation_loss_match_finite_differences(pruned, temperature):
    """The training graph's gradient == central differences of the loss the loop reports."""
    student = copy.deepcopy(pruned)
    fold_batchnorms(student)
    names = trainable_names(student)
    params = as_inputs(student, names)
    x = _data(8)["input"]
    shapes = infer_shapes(with_input_shapes(student, {"input": list(x.shape)}))
    terms = output_terms(student, shapes)
    graph = build_train_graph(student, names, terms, {"input": list(x.shape)}, temperature)
    assert not graph.unavailable
    teacher = session(RESNET).run(None, {"input": x})[0]
    target = terms[0].target(teacher, temperature)
    sess = session(graph.model)
    fetch = [graph.grads[n] for n in names]
    grads = dict(zip(names, sess.run(fetch, {"input": x, terms[0].input: target, **params})))
    fwd = session(student)
    rng = np.random.default_rng(1)

    def loss(p):
        out = fwd.run(None, {"input": x, **p})[0]
        return terms[0].loss(out, target, temperature)

    for name in [names[0], names[len(names) // 2], names[-1]]:
        for _ in range(2):
            idx = tuple(int(rng.integers(d)) for d in params[name].shape)
            eps = 1e-2 * max(1.0, abs(float(params[name][idx])))
            hi, lo = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
            hi[name][idx] += eps
            lo[name][idx] -= eps
            fd = (loss(hi) - loss(lo)) / (2 * eps)
            assert grads[name][idx] == pytest.approx(fd, rel=0.05, abs=2e-4 * max(1.0, abs(fd)) + 1e-6)


def test_distillation_lowers_the_held_out_loss_and_is_deterministic(pruned):
    opts = dict(steps=12, lr=1e-3, batch_size=8, holdout=0.25, eval_every=4)
    a = finetune(RESNET, pruned, _data(), FinetuneOptions(**opts), progress=False)
    b = finetune(RESNET, pruned, _data(), FinetuneOptions(**opts), progress=False)
    rep = a.report
    assert rep["best"]["loss"] < rep["before"]["loss"]
    assert rep["steps"] == 12 and rep["folded_batchnorms"] > 0 and rep["trainable_parameters"] > 0
    assert a.model.SerializeToString() == b.model.SerializeToString()
    onnx.checker.check_model(a.model, full_check=True)
    assert len(rep["history"]["train"]) == 12 and [e["step"] for e in rep["history"]["evals"]] == [0, 4, 8, 12]


def test_never_returns_worse_than_it_started(pruned):
    """A learning rate far too high: the held-out loss rises, the untouched weights come back."""
    rep = finetune(RESNET, pruned, _data(), FinetuneOptions(steps=4, lr=10.0, optimizer="sgd", batch_size=8,
                                                            holdout=0.25, eval_every=2), progress=False)
    assert rep.report["best_step"] == 0
    assert rep.report["best"]["loss"] == rep.report["before"]["loss"]


def test_resume_continues_exactly(pruned, tmp_path, monkeypatch):
    from onnxprune.finetune import loop

    ck = str(tmp_path / "ck.npz")
    opts = dict(steps=6, lr=1e-3, batch_size=8, holdout=0.25, eval_every=3, augment="flip", accumulate=2)
    full = finetune(RESNET, pruned, _data(), FinetuneOptions(**opts), progress=False)
    real_step = loop.Trainer.train_step

    def interrupted(self, total):
        if self.step == 4:
            raise KeyboardInterrupt
        return real_step(self, total)

    monkeypatch.setattr(loop.Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(RESNET, pruned, _data(), FinetuneOptions(checkpoint=ck, **opts), progress=False)
    monkeypatch.setattr(loop.Trainer, "train_step", real_step)
    resumed = finetune(RESNET, pruned, _data(), FinetuneOptions(resume=ck, **opts), progress=False)
    assert resumed.report["steps"] == 6
    assert resumed.report["history"]["train"] == full.report["history"]["train"]
    assert resumed.model.SerializeToString() == full.model.SerializeToString()


def test_feature_distillation_uses_the_plan(pruned, tmp_path):
    result = onnxprune.prune(RESNET, ratio=0.5, verify=False)
    from onnxprune.api import _analysis
    from onnxprune.finetune.features import kept_tensors
    from onnxprune.model import load_model

    kept = kept_tensors(_analysis(load_model(RESNET), None, False, in_place=True), result.plan)
    rep = finetune(RESNET, result.model, _data(), FinetuneOptions(steps=3, distill="features", batch_size=8),
                   kept=kept, progress=False).report
    feats = [t for t in rep["terms"] if t["kind"] == "mse"]
    assert feats and not rep["features_skipped"]
    assert sum(t["weight"] for t in feats) == pytest.approx(1.0)
    with pytest.raises(BadArgumentError, match="no feature tensor"):
        finetune(RESNET, result.model, _data(), FinetuneOptions(steps=1, distill="features"), progress=False)


@pytest.mark.parametrize("bad, match", [({"lr": 0}, "lr must be"), ({"holdout": 1.0}, "holdout"),
                                        ({"distill": "x"}, "unknown distill"), ({"freeze": "("}, "regular expression"),
                                        ({"steps": 2.5}, "steps must be")])
def test_bad_options(pruned, bad, match):
    with pytest.raises(BadArgumentError, match=match):
        finetune(RESNET, pruned, _data(), FinetuneOptions(**bad), progress=False)


def test_prune_with_finetune_reports_it(tmp_path):
    from importlib import resources

    import jsonschema

    from onnxprune.report import REPORT_SCHEMA

    r = onnxprune.prune(RESNET, ratio=0.5, calibration=_data(), finetune=FinetuneOptions(steps=2, batch_size=8),
                        progress=False)
    assert r.report["finetune"]["steps"] == 2
    schema = json.loads(resources.files("onnxprune").joinpath(REPORT_SCHEMA).read_text())
    jsonschema.validate(json.loads(json.dumps(r.report, default=str)), schema)


def test_blockwise_trains_every_block_toward_the_dense_tensors():
    result = onnxprune.prune(RESNET, ratio=0.5, verify=False)
    from onnxprune.api import _analysis
    from onnxprune.finetune.features import kept_tensors
    from onnxprune.model import load_model

    kept = kept_tensors(_analysis(load_model(RESNET), None, False, in_place=True), result.plan)
    rep = finetune(RESNET, result.model, _data(), FinetuneOptions(steps=24, lr=1e-3, batch_size=8, blockwise=True),
                   kept=kept, progress=False)
    blocks = rep.report["blockwise"]
    assert len(blocks) >= 4 and blocks[-1]["end"] == "outputs"
    assert all(b["best"] <= b["before"] for b in blocks)
    assert any(b["best"] < b["before"] for b in blocks)
    onnx.checker.check_model(rep.model, full_check=True)
    x = _data(16, seed=3)
    dense = session(RESNET).run(None, x)[0]
    err = [float(np.mean((session(m).run(None, x)[0] - dense) ** 2)) for m in (result.model, rep.model)]
    assert err[1] < err[0]


def test_labels_add_a_cross_entropy_term(pruned):
    data = dict(_data())
    data["y"] = np.random.default_rng(2).integers(0, 10, 48)
    rep = finetune(RESNET, pruned, data, FinetuneOptions(steps=4, lr=1e-3, batch_size=8, labels_weight=0.5),
                   labels="y", progress=False).report
    assert [t["kind"] for t in rep["terms"]] == ["kl", "ce"]
    assert rep["history"]["train"][0]["loss"] > 0
    with pytest.raises(BadArgumentError, match="needs labels"):
        finetune(RESNET, pruned, _data(), FinetuneOptions(steps=1, labels_weight=1.0), progress=False)


def test_mixup_is_seeded_and_trains(pruned):
    opts = dict(steps=4, lr=1e-3, batch_size=8, mixup=1.0, eval_every=2)
    a = finetune(RESNET, pruned, _data(), FinetuneOptions(**opts), progress=False)
    b = finetune(RESNET, pruned, _data(), FinetuneOptions(**opts), progress=False)
    assert a.report["history"]["train"] == b.report["history"]["train"]
    c = finetune(RESNET, pruned, _data(), FinetuneOptions(**{**opts, "mixup": 0.0}), progress=False)
    assert a.report["history"]["train"] != c.report["history"]["train"]


def test_output_loss_reads_logits_and_embeddings():
    from onnx import TensorProto, helper, numpy_helper

    def model(last):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
        w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h" if last else "y"])]
        if last:
            nodes.append(helper.make_node(last, ["h"], ["y"]))
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]))

    shapes = {"y": [2, 3], "h": [2, 3]}
    assert [t.kind for t in output_terms(model(None), shapes)] == ["kl"]
    assert [(t.kind, t.tensor) for t in output_terms(model("Softmax"), shapes)] == [("kl", "h")]
    assert [t.kind for t in output_terms(model("LpNormalization"), shapes)] == ["mse"]
    assert [t.kind for t in output_terms(model(None), shapes, "mse")] == ["mse"]
