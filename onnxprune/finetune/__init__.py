"""Finetuning by distillation inside ONNX Runtime: no training framework.

:func:`finetune` trains the remaining weights of a pruned model toward its dense original
on unlabeled data: the dense model's outputs (KL at a temperature for classifiers, MSE
otherwise) and, with ``distill='features'``/``'both'``, its residual-stream tensors. Weight
gradients come from the backward graph :mod:`onnxprune.calibration.autodiff` generates
and ORT runs; SGD/AdamW and the schedules run in numpy (:mod:`.optim`, :mod:`.schedule`).
See :class:`~.options.FinetuneOptions` for every knob.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import onnx

from ..calibration.autodiff.graph import elem_types
from ..data import load_data
from ..errors import BadArgumentError
from ..model import load_model
from ..shapes import infer_shapes, with_input_shapes
from .features import feature_terms
from .graph import Term, output_terms
from .loop import Teacher, Trainer, run, split_samples
from .options import FinetuneOptions
from .samples import resolve_augment, samples_of
from .trainable import as_inputs, fold_batchnorms, trainable_names, write_back

__all__ = ["FinetuneOptions", "FinetuneResult", "finetune"]


@dataclass
class FinetuneResult:
    model: onnx.ModelProto
    report: dict


def finetune(dense, pruned, data, options: FinetuneOptions | None = None, *, kept: dict | None = None,
             labels: str | None = None, image_options=None, input_shapes: dict | None = None,
             progress: bool | None = None, dataset=None) -> FinetuneResult:
    """Distil ``pruned`` toward ``dense`` on ``data`` (any form :func:`onnxprune.data.load_data`
    reads, or a ready ``dataset``). ``kept`` maps a tensor name to ``(axis, positions)``: the
    dense channels the pruned tensor kept (from the pruning plan), so feature terms can
    compare pruned tensors; without it only tensors of unchanged shape are compared."""
    started = time.perf_counter()
    o = options or FinetuneOptions()
    o.check()
    dense_m = load_model(dense)
    student = load_model(pruned)
    if {i.name for i in dense_m.graph.input} - {t.name for t in dense_m.graph.initializer} != \
            {i.name for i in student.graph.input} - {t.name for t in student.graph.initializer}:
        raise BadArgumentError("finetune: the dense and pruned models have different inputs")
    if dataset is None:
        dataset = load_data(data, student, labels_key=labels, batch_size=o.batch_size, input_shapes=input_shapes,
                            image_options=image_options)
    samples = samples_of(dataset)
    augment = resolve_augment(o.augment, samples)
    split = split_samples(samples.n, o.holdout, o.batch_size, o.seed)
    folded = fold_batchnorms(student) if o.fold_bn else 0
    base = copy.deepcopy(student)
    weights = trainable_names(student, o.freeze)
    if not weights:
        raise BadArgumentError("finetune: the pruned model has no float32 weights to train")
    params = as_inputs(student, weights)
    first = samples.batch(split.train[:split.batch], None, "none")
    shapes = infer_shapes(with_input_shapes(student, {k: list(v.shape) for k, v in first.items()}))
    terms = output_terms(student, shapes, o.output_loss) if o.distill in ("logits", "both") or o.blockwise else []
    skipped_features: list = []
    if o.distill in ("features", "both") or o.blockwise:
        dense_shapes = infer_shapes(with_input_shapes(dense_m, {k: list(v.shape) for k, v in first.items()}))
        feats, skipped_features = feature_terms(student, shapes, dense_shapes, kept or {})
        if not feats and not o.blockwise:
            raise BadArgumentError("finetune: no feature tensor to distil (no residual sum whose channels are known; "
                                   "give the pruning plan)")
        for t in feats:
            t.weight = o.feature_weight / len(feats)
        terms += feats
    if o.labels_weight > 0:
        if samples.labels is None:
            raise BadArgumentError("finetune: labels_weight needs labels in the data (--labels)")
        logits = next((t for t in terms if t.kind == "kl"), None)
        if logits is None:
            raise BadArgumentError("finetune: labels_weight needs a classifier output ([batch, classes] logits)")
        classes = shapes[logits.tensor][-1]
        terms.append(Term(logits.tensor, "ce", "", weight=o.labels_weight, classes=classes))
    teacher = Teacher(dense_m, terms, o.temperature, o.device, labels=samples.labels)
    raw = teacher.raw(first)
    for t in terms:
        if t.kind == "mse":
            target = t.target(raw[t.teacher], o.temperature)
            t.scale = 1.0 / max(float(np.var(target)), 1e-12)
    if o.blockwise:
        from .blocks import train_blockwise

        model, report = train_blockwise(student, base, params, terms, samples, split, teacher, o, augment, progress,
                                        started, shapes, elem_types(student))
        report.update({"folded_batchnorms": folded, "features_skipped": skipped_features})
        return FinetuneResult(model, report)
    trainer = Trainer(student, params, terms, samples, split, teacher, o, augment)
    if o.resume:
        trainer.load(o.resume)
    how = run(trainer, progress, started)
    best_loss, best_step, best_params = trainer.best
    model = write_back(base, best_params)
    evals = trainer.history.evals
    report = {
        "steps": trainer.step, **how, "best_step": best_step,
        "before": evals[0] if evals else None, "best": next((e for e in evals if e["step"] == best_step), None),
        "trainable_weights": len(trainer.trained), "trainable_parameters": int(sum(params[w].size for w in trainer.trained)),
        "frozen": trainer.graph.unavailable, "folded_batchnorms": folded,
        "terms": [{"tensor": t.tensor, "kind": t.kind, "weight": t.weight} for t in terms],
        "features_skipped": skipped_features,
        "samples": {"train": int(len(split.train)), "holdout": int(len(split.holdout)), "batch": split.batch},
        "augment": augment,
        "options": {k: v for k, v in vars(o).items()},
        "history": {"train": trainer.history.train, "evals": evals},
    }
    return FinetuneResult(model, report)
