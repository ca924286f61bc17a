"""Optimizers in numpy over a dict of float32 parameters: SGD with (Nesterov) momentum and
AdamW (Loshchilov & Hutter 2019: decoupled weight decay). State is plain arrays, so a
checkpoint is one ``.npz``."""

from __future__ import annotations

import numpy as np

from ..errors import BadArgumentError

OPTIMIZERS = ("adamw", "sgd")


class Optimizer:
    def __init__(self, params: dict[str, np.ndarray], weight_decay: float = 0.0):
        self.weight_decay = weight_decay
        self.state: dict[str, np.ndarray] = {}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        self.t += 1
        for name, g in grads.items():
            self._update(name, params[name], g, lr)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:  # pragma: no cover
        raise NotImplementedError

    def _buffer(self, key: str, like: np.ndarray) -> np.ndarray:
        buf = self.state.get(key)
        if buf is None:
            buf = self.state[key] = np.zeros_like(like)
        return buf

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t), **{f"s/{k}": v for k, v in self.state.items()}}

    def load_state_dict(self, arrays: dict) -> None:
        self.t = int(arrays["t"])
        self.state = {k[2:]: np.array(v) for k, v in arrays.items() if k.startswith("s/")}


class SGD(Optimizer):
    def __init__(self, params, weight_decay: float = 0.0, momentum: float = 0.9, nesterov: bool = True):
        super().__init__(params, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov

    def _update(self, name, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            v = self._buffer(name, p)
            v *= self.momentum
            v += g
            g = g + self.momentum * v if self.nesterov else v
        p -= lr * g


class AdamW(Optimizer):
    def __init__(self, params, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, weight_decay)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def _update(self, name, p, g, lr):
        m, v = self._buffer("m/" + name, p), self._buffer("v/" + name, p)
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * np.square(g)
        mhat = m / (1 - self.b1 ** self.t)
        vhat = v / (1 - self.b2 ** self.t)
        if self.weight_decay:
            p *= 1 - lr * self.weight_decay
        p -= lr * mhat / (np.sqrt(vhat) + self.eps)


def make_optimizer(name: str, params: dict, weight_decay: float, momentum: float) -> Optimizer:
    if name == "adamw":
        return AdamW(params, weight_decay)
    if name == "sgd":
        return SGD(params, weight_decay, momentum)
    raise BadArgumentError(f"unknown optimizer '{name}' (choose from {', '.join(OPTIMIZERS)})")
