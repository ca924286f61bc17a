"""Finetuning options, with defaults for distilling a pruned model from its dense original
on a few hundred unlabeled samples."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadArgumentError
from .optim import OPTIMIZERS
from .samples import AUGMENTS
from .schedule import SCHEDULES

DISTILL = ("logits", "features", "both")
OUTPUT_LOSSES = ("auto", "kl", "mse")


@dataclass
class FinetuneOptions:
    steps: int | None = None  # optimizer steps; None: from epochs, else from time_budget, else 1 epoch
    epochs: float | None = None
    time_budget: float | None = None  # seconds: with no steps/epochs, the step count that fits (timed)
    lr: float = 1e-4
    lr_schedule: str = "cosine"
    warmup: int | None = None  # warm-up steps (None: 5% of the run)
    optimizer: str = "adamw"
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0  # decoupled (AdamW) / L2 (SGD); 0: the dense weights are the prior
    batch_size: int = 16
    accumulate: int = 1  # micro-batches per optimizer step
    distill: str = "logits"
    output_loss: str = "auto"  # kl | mse | auto (kl for logits made by a linear layer or a softmax)
    temperature: float = 4.0  # the usual distillation temperature (Hinton et al. 2015; Tian et al. 2020)
    feature_weight: float = 1.0  # weight of each feature term against the output terms
    labels_weight: float = 0.0  # cross-entropy against labels, when the data has them
    holdout: float = 0.1  # fraction of samples held out for evaluation and early stopping
    eval_every: int | None = None  # steps between held-out evaluations (None: 10 per run)
    patience: int | None = None  # stop after this many evaluations without improvement (None: never)
    augment: str = "auto"
    mixup: float = 0.0  # MixUp Beta(α, α) of each training batch with itself shuffled (0: off)
    freeze: str | None = None  # regex of weight/node names kept constant
    fold_bn: bool = True
    blockwise: bool = False
    checkpoint: str | None = None  # .npz path written at each evaluation
    resume: str | None = None  # checkpoint to continue from
    seed: int = 0
    device: str = "auto"

    def check(self) -> None:
        def positive(name, value, integer=False):
            if value is not None and not (value > 0 and (not integer or int(value) == value)):
                raise BadArgumentError(f"finetune: {name} must be a positive {'integer' if integer else 'number'}, "
                                       f"got {value}")

        positive("steps", self.steps, True)
        positive("epochs", self.epochs)
        positive("time_budget", self.time_budget)
        positive("lr", self.lr)
        positive("batch_size", self.batch_size, True)
        positive("accumulate", self.accumulate, True)
        positive("temperature", self.temperature)
        positive("eval_every", self.eval_every, True)
        positive("patience", self.patience, True)
        if self.mixup < 0:
            raise BadArgumentError("finetune: mixup must be ≥ 0")
        if self.warmup is not None and self.warmup < 0:
            raise BadArgumentError("finetune: warmup must be ≥ 0")
        if not 0 <= self.holdout < 1:
            raise BadArgumentError(f"finetune: holdout must be in [0, 1), got {self.holdout}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise BadArgumentError("finetune: weight_decay must be ≥ 0 and momentum in [0, 1)")
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS), ("lr_schedule", self.lr_schedule,
                                     SCHEDULES), ("distill", self.distill, DISTILL), ("augment", self.augment,
                                     AUGMENTS), ("output_loss", self.output_loss, OUTPUT_LOSSES)):
            if value not in allowed:
                raise BadArgumentError(f"finetune: unknown {name} '{value}' (choose from {', '.join(allowed)})")
        if self.freeze is not None:
            import re

            try:
                re.compile(self.freeze)
            except re.error as exc:
                raise BadArgumentError(f"finetune: --freeze '{self.freeze}' is not a regular expression ({exc})") \
                    from None
