"""Trailing padding is cut from sequence batches (onnxprune.data.trim_padding)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxprune.data import load_data, trim_padding
from onnxprune.runtime import session

from .recover.test_tokens import _mlp_with_mask


def _data(lengths, seq=12, left=False):
    n = len(lengths)
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    if left:
        mask = mask[:, ::-1].copy()
    x = np.random.default_rng(0).standard_normal((n, seq, 4)).astype(np.float32)
    return {"x": x, "attention_mask": mask}


def test_batches_end_at_the_longest_sequence_and_outputs_do_not_change():
    model = _mlp_with_mask()
    data = _data([3, 5, 2, 4, 9, 1])
    ds = load_data(data, model, batch_size=3)
    assert [b["x"].shape[1] for b in ds.batches] == [9, 9]  # one cut for all: outputs still concatenate
    assert [b["attention_mask"].shape[1] for b in ds.batches] == [9, 9]
    sess = session(model)
    full = sess.run(None, data)[0]
    cut = np.concatenate([sess.run(None, b)[0] for b in ds.batches])
    np.testing.assert_allclose(cut, full, rtol=1e-6, atol=1e-6)


def test_left_padding_fixed_dims_and_models_without_a_mask_stay_whole():
    model = _mlp_with_mask()
    left = _data([3, 5, 2], left=True)
    assert trim_padding([left], model)[0]["x"].shape[1] == 12
    fixed = _mlp_with_mask()
    for vi in fixed.graph.input:
        vi.type.tensor_type.shape.dim[1].dim_value = 12
    assert trim_padding([_data([3, 5])], fixed)[0]["x"].shape[1] == 12
    renamed = _mlp_with_mask("input_mask")
    batch = {"x": _data([3])["x"], "input_mask": _data([3])["attention_mask"]}
    assert trim_padding([batch], renamed)[0]["x"].shape[1] == 12


def test_only_inputs_on_the_masks_sequence_dim_are_cut():
    model = _mlp_with_mask()
    extra = helper.make_tensor_value_info("other", TensorProto.FLOAT, ["batch", "width"])
    model.graph.input.append(extra)
    batch = {**_data([2, 3]), "other": np.zeros((2, 12), np.float32)}
    out = trim_padding([batch], model)[0]
    assert out["x"].shape[1] == 3 and out["other"].shape[1] == 12
