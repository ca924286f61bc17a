"""Repair without training: correct the weights that remain after pruning from
calibration statistics (statistics correction, bias compensation, least-squares
reconstruction of every consumer of a pruned space)."""

from .run import RecoverOptions, recover  # noqa: F401

__all__ = ["RecoverOptions", "recover"]
