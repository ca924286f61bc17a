"""Padding-aware statistics: which rows of a sequence model's activations are real tokens.

Sequence models are calibrated on padded batches (every sentence padded to the longest,
or to a fixed length), and their graphs take a 0/1 *token mask* input — Hugging Face's
``attention_mask`` — that keeps padded positions out of attention and pooling. The
activations at padded positions are still computed, and a repair that fits every
position spends its least squares on tokens whose outputs the model throws away (on
short sentences padded to 128, most rows).

A layer's rows are masked when its input is (batch, sequence, features) with channels
last and its (batch, sequence) dims are the mask's: the rows of a padded position are
dropped from the Gram matrices, the target rows and the per-channel moments. Layers on
other shapes (convolutions, pooled (batch, features) heads) use every row.

The mask is a graph input named ``attention_mask`` (or ending in it) of an integer or
bool type and rank 2, found automatically, or named explicitly; ``None`` uses every row.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..errors import BadArgumentError

AUTO = "auto"
MASK_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL,
              TensorProto.FLOAT, TensorProto.FLOAT16}


def _rank(value_info) -> int | None:
    t = value_info.type.tensor_type
    return len(t.shape.dim) if t.HasField("shape") else None


def find_token_mask(model, option: str | None) -> str | None:
    """The graph input that marks real tokens, per ``option`` (``"auto"``, a name, or
    None); a named input that is missing or is not a (batch, sequence) tensor is an error."""
    if option is None:
        return None
    inputs = {i.name: i for i in model.graph.input}
    if option != AUTO:
        vi = inputs.get(option)
        if vi is None:
            raise BadArgumentError(f"token mask '{option}' is not an input of the model "
                                   f"(inputs: {', '.join(inputs) or 'none'})")
        if _rank(vi) not in (None, 2):
            raise BadArgumentError(f"token mask '{option}' must be a (batch, sequence) input, it has rank {_rank(vi)}")
        return option
    found = [name for name, vi in inputs.items() if name.lower().endswith("attention_mask")
             and vi.type.tensor_type.elem_type in MASK_TYPES and _rank(vi) == 2]
    return found[0] if len(found) == 1 else None


def row_mask(mask: np.ndarray | None, x: np.ndarray, channel_axis: int) -> np.ndarray | None:
    """Boolean per-row selector for ``x``'s channels-last rows, or None when the mask does
    not describe ``x``'s rows (a different shape, or channels not last)."""
    if mask is None or x.ndim != mask.ndim + 1 or channel_axis % x.ndim != x.ndim - 1:
        return None
    if tuple(x.shape[:-1]) != tuple(mask.shape):
        return None
    return np.asarray(mask).reshape(-1) != 0
