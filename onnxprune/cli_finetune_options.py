"""The finetuning options shared by ``onnxprune finetune`` and ``onnxprune prune --finetune``."""

from __future__ import annotations

import click

FINETUNE_KEYS = ("steps", "epochs", "time_budget", "lr", "lr_schedule", "warmup", "optimizer", "momentum",
                 "weight_decay", "accumulate", "distill", "output_loss", "temperature", "feature_weight", "labels_weight", "holdout", "eval_every",
                 "patience", "augment", "mixup", "freeze", "fold_bn", "blockwise", "checkpoint", "resume")


def finetune_options(fn):
    """The training knobs (batch size, seed and device come from the command's own options)."""
    from .finetune.optim import OPTIMIZERS
    from .finetune.options import DISTILL
    from .finetune.samples import AUGMENTS
    from .finetune.schedule import SCHEDULES

    opts = [
        click.option("--steps", type=int, help="Optimizer steps (default: --epochs, else 10 epochs)."),
        click.option("--epochs", type=float, help="Passes over the training samples."),
        click.option("--time-budget", type=float, metavar="SECONDS",
                     help="With no --steps/--epochs: as many steps as fit in this time (timed on this machine)."),
        click.option("--lr", type=float, default=1e-4, show_default=True, help="Peak learning rate."),
        click.option("--lr-schedule", type=click.Choice(SCHEDULES), default="cosine", show_default=True),
        click.option("--warmup", type=int, help="Linear warm-up steps (default: 5% of the run)."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True),
        click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum (Nesterov)."),
        click.option("--weight-decay", type=float, default=0.0, show_default=True),
        click.option("--accumulate", type=int, default=1, show_default=True,
                     help="Micro-batches per optimizer step (gradient accumulation)."),
        click.option("--distill", type=click.Choice(DISTILL), default="logits", show_default=True,
                     help="Match the dense model's outputs, its residual-stream features, or both."),
        click.option("--output-loss", type=click.Choice(["auto", "kl", "mse"]), default="auto", show_default=True,
                     help="How outputs are matched: KL for classifier logits (auto: [N, K] made by a linear layer or "
                          "a softmax), MSE otherwise (embeddings)."),
        click.option("--temperature", type=float, default=4.0, show_default=True,
                     help="KL temperature for logits (the loss is scaled by T²)."),
        click.option("--feature-weight", type=float, default=1.0, show_default=True,
                     help="Total weight of the feature terms."),
        click.option("--labels-weight", type=float, default=0.0, show_default=True,
                     help="Weight of a cross-entropy term against --labels (0: distillation only)."),
        click.option("--holdout", type=float, default=0.1, show_default=True,
                     help="Fraction of the samples held out for evaluation and early stopping."),
        click.option("--eval-every", type=int, help="Steps between held-out evaluations (default: 10 per run)."),
        click.option("--patience", type=int, help="Stop after this many evaluations without improvement."),
        click.option("--augment", type=click.Choice(AUGMENTS), default="auto", show_default=True,
                     help="auto: random resized crop + flip for images:DIR, none for arrays."),
        click.option("--mixup", type=float, default=0.0, show_default=True, metavar="ALPHA",
                     help="Mix each training batch with itself shuffled, λ ~ Beta(ALPHA, ALPHA); teacher and student "
                          "see the same mixed input (0: off)."),
        click.option("--freeze", metavar="REGEX", help="Keep weights (or nodes) whose name matches constant."),
        click.option("--fold-bn/--no-fold-bn", default=True, show_default=True,
                     help="Fold BatchNormalization into the conv before training (statistics frozen)."),
        click.option("--blockwise", is_flag=True, help="Train block by block toward the dense block outputs."),
        click.option("--checkpoint", type=click.Path(), help="Write a checkpoint (.npz) at each evaluation."),
        click.option("--resume", type=click.Path(), help="Continue from this checkpoint."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def options_from(kwargs: dict, batch_size: int, seed: int, device: str):
    from .finetune import FinetuneOptions

    return FinetuneOptions(batch_size=batch_size, seed=seed, device=device,
                           **{k: kwargs.pop(k) for k in FINETUNE_KEYS})
