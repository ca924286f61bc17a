"""Repair without training: correct the weights that remain after pruning from
calibration statistics (statistics correction, bias compensation, least-squares
reconstruction of every consumer of a pruned space)."""
