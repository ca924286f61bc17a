"""The distillation loop: teacher (dense) and student (pruned) run in ONNX Runtime, the
student's weight gradients come from its generated backward graph, updates happen in numpy.

Determinism: the order of samples is a function of (seed, epoch) and the augmentation of
(seed, micro-batch number), so a run resumed from a checkpoint continues exactly as the
uninterrupted run would. The weights returned are the best ones seen on the held-out
samples (the untouched student counts as the first evaluation: finetuning never returns a
model worse than it started on the held-out data).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import BadArgumentError
from ..progress import Progress
from ..runtime import session
from .graph import Term, build_train_graph
from .optim import make_optimizer
from .schedule import learning_rate

TEACHER_CACHE_BYTES = 1 << 30


@dataclass
class Split:
    train: np.ndarray
    holdout: np.ndarray
    batch: int

    @property
    def per_epoch(self) -> int:
        return max(len(self.train) // self.batch, 1)


def split_samples(n: int, holdout: float, batch_size: int, seed: int) -> Split:
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_hold = int(round(n * holdout)) if n * holdout >= 1 else 0
    if n - n_hold < 1:
        raise BadArgumentError(f"finetune: {n} samples leave none to train on after the held-out {holdout:.0%}")
    train = np.sort(perm[n_hold:])
    return Split(train, np.sort(perm[:n_hold]), min(batch_size, len(train)))


class Teacher:
    """The dense model's targets per batch, cached per sample when batches repeat exactly."""

    def __init__(self, dense: onnx.ModelProto, terms: list[Term], temperature: float, device: str,
                 labels: np.ndarray | None = None):
        names = list(dict.fromkeys(t.teacher for t in terms if t.kind != "ce"))
        self.sess = session(_forward_model(dense, names), device)
        self.names, self.terms, self.temperature, self.labels = names, terms, temperature, labels
        self.cache: dict[int, list] = {}
        self.cached_bytes = 0

    def raw(self, feeds: dict) -> dict:
        return dict(zip(self.names, self.sess.run(self.names, feeds)))

    def targets(self, feeds: dict, idx: np.ndarray | None = None, cacheable: bool = True) -> list[np.ndarray]:
        cacheable = cacheable and idx is not None
        if cacheable and all(int(i) in self.cache for i in idx):
            per = [self.cache[int(i)] for i in idx]
            return [np.stack([p[k] for p in per]) for k in range(len(self.terms))]
        raw = self.raw(feeds)
        out = [t.target(self.labels[idx] if t.kind == "ce" else raw[t.teacher], self.temperature)
               for t in self.terms]
        if cacheable and self.cached_bytes < TEACHER_CACHE_BYTES:
            for j, i in enumerate(idx):
                self.cache[int(i)] = [o[j] for o in out]
            self.cached_bytes += sum(o.nbytes for o in out)
        return out


def mix(feeds: dict, rng: np.random.Generator, alpha: float) -> dict:
    """MixUp of the batch with a shuffled copy of itself (one λ ~ Beta(α, α) per sample),
    teacher and student seeing the same mixed input ("function matching", Beyer et al. 2022)."""
    n = next(iter(feeds.values())).shape[0]
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    perm = rng.permutation(n)
    out = {}
    for k, v in feeds.items():
        if v.dtype.kind != "f":
            out[k] = v
            continue
        shape = (n,) + (1,) * (v.ndim - 1)
        out[k] = (lam.reshape(shape) * v + (1 - lam.reshape(shape)) * v[perm]).astype(v.dtype)
    return out


@dataclass
class History:
    train: list = field(default_factory=list)  # {step, loss, lr}
    evals: list = field(default_factory=list)  # {step, loss, agreement}


class Trainer:
    def __init__(self, student: onnx.ModelProto, params: dict, terms: list[Term], samples, split: Split, teacher,
                 options, augment: str):
        self.params, self.terms = params, terms
        self.samples, self.split, self.teacher, self.o = samples, split, teacher, options
        self.augment = augment
        feeds = samples.batch(split.train[:split.batch], None, "none")
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        graph = build_train_graph(student, list(params), terms, shapes, options.temperature)
        self.graph = graph
        self.trained = [w for w in params if w in graph.grads]
        if not self.trained:
            reason = next(iter(graph.unavailable.values()), "no trainable weight")
            raise BadArgumentError(f"finetune: no weight gets a gradient ({reason})")
        self.fetch = graph.outputs + [graph.grads[w] for w in self.trained]
        self.sess = session(graph.model, options.device)
        self.eval_sess = session(_forward_model(student, graph.outputs), options.device)
        self.opt = make_optimizer(options.optimizer, params, options.weight_decay, options.momentum)
        self.history = History()
        self.step = 0
        self.best: tuple | None = None  # (loss, step, params copy)
        self._perm: dict[int, np.ndarray] = {}

    # ---- data order ------------------------------------------------------------
    def micro_batch(self, m: int) -> np.ndarray:
        sp = self.split
        epoch, pos = divmod(m, sp.per_epoch)
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.o.seed, epoch]).permutation(sp.train)}
        return self._perm[epoch][pos * sp.batch:(pos + 1) * sp.batch]

    # ---- one step --------------------------------------------------------------
    def train_step(self, total: int) -> float:
        grads = {w: np.zeros_like(self.params[w]) for w in self.trained}
        loss = 0.0
        for micro in range(self.o.accumulate):
            m = self.step * self.o.accumulate + micro
            idx = self.micro_batch(m)
            fresh = self.augment != "none" or self.o.mixup > 0  # inputs differ every time they are drawn
            rng = np.random.default_rng([self.o.seed, 1, m]) if fresh else None
            feeds = self.samples.batch(idx, rng, self.augment)
            if self.o.mixup > 0:
                feeds = mix(feeds, rng, self.o.mixup)
            targets = self.teacher.targets(feeds, idx, cacheable=not fresh)
            values = self.sess.run(self.fetch, self._train_feeds(feeds, targets))
            outs, gvals = values[:len(self.terms)], values[len(self.terms):]
            loss += sum(t.loss(o, v, self.o.temperature) for t, o, v in zip(self.terms, outs, targets))
            for w, g in zip(self.trained, gvals):
                grads[w] += g
        if self.o.accumulate > 1:
            for g in grads.values():
                g /= self.o.accumulate
        warmup = self.o.warmup if self.o.warmup is not None else int(0.05 * total)
        lr = learning_rate(self.step, total, self.o.lr, self.o.lr_schedule, warmup)
        self.opt.step(self.params, grads, lr)
        self.step += 1
        loss /= self.o.accumulate
        self.history.train.append({"step": self.step, "loss": loss, "lr": lr})
        return loss

    def _train_feeds(self, feeds: dict, targets: list) -> dict:
        """The training graph's inputs: the data, the current weights, the targets."""
        return {**feeds, **self.params, **{t.input: v for t, v in zip(self.terms, targets)}}

    def probe(self) -> float:
        """Seconds one micro-batch takes (teacher, student forward and backward), timed
        on the first batch without updating anything."""
        idx = self.micro_batch(0)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            feeds = self.samples.batch(idx, None if self.augment == "none" else np.random.default_rng(0), self.augment)
            targets = self.teacher.targets(feeds, idx, cacheable=False)
            self.sess.run(self.fetch, self._train_feeds(feeds, targets))
            times.append(time.perf_counter() - t0)
        return float(np.median(times[1:]))

    # ---- held-out evaluation ------------------------------------------------------
    def evaluate(self) -> dict:
        idx_all = self.split.holdout if len(self.split.holdout) else self.split.train[:4 * self.split.batch]
        loss, agree, count = 0.0, 0, 0
        for start in range(0, len(idx_all), self.split.batch):
            idx = idx_all[start:start + self.split.batch]
            feeds = self.samples.batch(idx, None, "none")
            targets = self.teacher.targets(feeds, idx)
            feeds.update(self.params)
            outs = self.eval_sess.run(self.graph.outputs, feeds)
            n = len(idx)
            loss += n * sum(t.loss(o, v, self.o.temperature) for t, o, v in zip(self.terms, outs, targets))
            kl = [(o, v) for t, o, v in zip(self.terms, outs, targets) if t.kind == "kl"]
            if kl:
                o, v = kl[0]
                agree += int(np.sum(o.argmax(-1) == v.argmax(-1)))
            count += n
        result = {"step": self.step, "loss": loss / count}
        if any(t.kind == "kl" for t in self.terms):
            result["agreement"] = agree / count
        self.history.evals.append(result)
        if self.best is None or result["loss"] < self.best[0]:
            self.best = (result["loss"], self.step, {k: v.copy() for k, v in self.params.items()})
        return result

    # ---- checkpoints -------------------------------------------------------------
    def save(self, path: str) -> None:
        import json
        import os

        arrays = {f"p/{k}": v for k, v in self.params.items()}
        arrays.update({f"o/{k}": v for k, v in self.opt.state_dict().items()})
        arrays.update({f"b/{k}": v for k, v in self.best[2].items()})
        meta = {"step": self.step, "best_loss": self.best[0], "best_step": self.best[1],
                "train": self.history.train, "evals": self.history.evals}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        tmp = f"{path}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load(self, path: str) -> None:
        import json

        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except Exception as exc:
            raise BadArgumentError(f"finetune: cannot read checkpoint {path} ({type(exc).__name__})") from None
        params = {k[2:]: v for k, v in arrays.items() if k.startswith("p/")}
        if set(params) != set(self.params) or any(params[k].shape != self.params[k].shape for k in params):
            raise BadArgumentError(f"finetune: checkpoint {path} holds other weights than this model's")
        self.params.update(params)
        self.opt.load_state_dict({k[2:]: v for k, v in arrays.items() if k.startswith("o/")})
        self.best = (meta["best_loss"], meta["best_step"], {k[2:]: v for k, v in arrays.items() if k.startswith("b/")})
        self.step = meta["step"]
        self.history = History(meta["train"], meta["evals"])


def _forward_model(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``outputs``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs if n not in have)
    return m


def run(trainer: Trainer, progress: bool | None, started: float | None = None) -> dict:
    """Train until the step count (or the time budget, or early stopping) is reached."""
    o = trainer.o
    t0 = time.perf_counter() if started is None else started
    total = planned_steps(o, trainer.split)
    if trainer.best is None:
        trainer.evaluate()
    bar = None
    timed_steps = []
    stopped = None
    if total is None:  # fit the run into the time budget, from timed probe steps
        per = trainer.probe() * o.accumulate
        spent = time.perf_counter() - t0
        total = trainer.step + max(1, int((o.time_budget - spent) / (per * (1 + EVAL_SHARE))))
    eval_every = o.eval_every or max(total // 10, 1)
    last_improvement = len(trainer.history.evals)
    while trainer.step < total:
        s0 = time.perf_counter()
        loss = trainer.train_step(total)
        timed_steps.append(time.perf_counter() - s0)
        if bar is None:
            bar = Progress(total, "finetune", progress)
            bar.done = trainer.step - 1
        bar.step(1, f"loss {loss:.4g} lr {trainer.history.train[-1]['lr']:.2g}")
        if trainer.step % eval_every == 0 or trainer.step == total:
            before = trainer.best[0]
            trainer.evaluate()
            if trainer.best[0] < before:
                last_improvement = len(trainer.history.evals)
            if o.checkpoint:
                trainer.save(o.checkpoint)
            if o.patience and len(trainer.history.evals) - last_improvement >= o.patience:
                stopped = f"no held-out improvement in {o.patience} evaluations"
                break
    if bar is not None:
        bar.close()
    return {"planned_steps": total, "seconds": time.perf_counter() - t0,
            "step_seconds": float(np.median(timed_steps)) if timed_steps else None, "stopped_early": stopped}


def planned_steps(o, split: Split) -> int | None:
    if o.steps is not None:
        return o.steps
    if o.epochs is not None:
        return max(1, math.ceil(o.epochs * split.per_epoch / o.accumulate))
    if o.time_budget is not None:
        return None
    return max(1, math.ceil(DEFAULT_EPOCHS * split.per_epoch / o.accumulate))


DEFAULT_EPOCHS = 10
EVAL_SHARE = 0.15  # time-budgeted runs leave this share for held-out evaluations
