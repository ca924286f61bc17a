import math

import numpy as np
import pytest

from onnxprune.errors import BadArgumentError
from onnxprune.finetune.optim import SGD, AdamW, make_optimizer
from onnxprune.finetune.schedule import learning_rate


def test_adamw_matches_the_paper_update():
    p = {"w": np.array([1.0, -2.0], np.float32)}
    g = np.array([0.5, 0.1], np.float32)
    opt = AdamW(p, weight_decay=0.1)
    ref = p["w"].astype(np.float64).copy()
    m = v = np.zeros(2)
    for t in range(1, 4):
        opt.step(p, {"w": g}, lr=0.01)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref = ref * (1 - 0.01 * 0.1) - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(p["w"], ref, rtol=1e-5)


def test_sgd_nesterov_momentum():
    p = {"w": np.array([1.0], np.float32)}
    opt = SGD(p, momentum=0.5, nesterov=True)
    opt.step(p, {"w": np.array([2.0], np.float32)}, lr=0.1)  # v = 2, step = g + 0.5 v = 3
    np.testing.assert_allclose(p["w"], [0.7])
    opt.step(p, {"w": np.array([2.0], np.float32)}, lr=0.1)  # v = 3, step = 2 + 1.5
    np.testing.assert_allclose(p["w"], [0.35], rtol=1e-6)


def test_state_round_trips():
    p = {"w": np.ones(3, np.float32)}
    a = AdamW(p)
    a.step(p, {"w": np.ones(3, np.float32)}, 0.1)
    b = AdamW(dict(p))
    b.load_state_dict(a.state_dict())
    q1, q2 = {"w": p["w"].copy()}, {"w": p["w"].copy()}
    a.step(q1, {"w": np.ones(3, np.float32)}, 0.1)
    b.step(q2, {"w": np.ones(3, np.float32)}, 0.1)
    np.testing.assert_array_equal(q1["w"], q2["w"])


def test_unknown_optimizer():
    with pytest.raises(BadArgumentError, match="unknown optimizer"):
        make_optimizer("lamb", {}, 0, 0)


def test_schedules():
    assert learning_rate(0, 100, 1.0, "cosine", warmup=10) == pytest.approx(0.1)
    assert learning_rate(9, 100, 1.0, "cosine", warmup=10) == pytest.approx(1.0)
    assert learning_rate(10, 100, 1.0, "cosine", warmup=10) == pytest.approx(1.0)
    assert learning_rate(55, 100, 1.0, "cosine", warmup=10) == pytest.approx(0.5)
    assert learning_rate(100, 100, 1.0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(50, 100, 1.0, "linear") == pytest.approx(0.5)
    assert learning_rate(99, 100, 2.0, "constant") == 2.0
    assert [learning_rate(s, 90, 1.0, "step") for s in (0, 30, 60)] == pytest.approx([1.0, 0.1, 0.01])
    assert math.isclose(learning_rate(25, 100, 1.0, "cosine", min_ratio=0.1), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    with pytest.raises(BadArgumentError):
        learning_rate(0, 1, 1.0, "exp")
