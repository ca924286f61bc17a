"""Closed-form statistics repairs, each a few lines of algebra on per-channel moments:

- BatchNormalization statistics correction: set a BN's mean/var so that, on the
  calibration data, its output in the pruned model is distributed like the dense
  model's (the classic re-estimation when the dense input moments equal the running ones);
- the same for BN folded into a Conv by the exporter: an affine fix of each output
  channel's weights and bias so its mean and std match the dense channel's;
- bias compensation (FLAP): the removed inputs' mean contribution W[:, removed]·x̄ moved
  into the bias.
"""

from __future__ import annotations

import numpy as np

DEGENERATE = 1e-8  # relative variance below which a channel is treated as constant


def matched_bn(scale, mean, var, eps, m_p, v_p, m_d, v_d):
    """New (scale, mean, var) of a BatchNormalization whose input moments were (m_d, v_d)
    in the dense model and are (m_p, v_p) in the pruned one, such that its output on the
    pruned input is standardized like the dense output: γ((x−m_p)·s_d/s_p + m_d − μ)/σ + β."""
    scale, mean, var = (np.asarray(v, np.float64) for v in (scale, mean, var))
    sigma = np.sqrt(var + eps)
    ref = var + eps
    ok = (v_d > DEGENERATE * ref) & (v_p > DEGENERATE * ref)
    ratio = np.where(ok, np.sqrt(np.where(ok, v_p, 1.0) / np.where(ok, v_d, 1.0)), 1.0)  # s_p / s_d
    new_mean = m_p - (m_d - mean) * ratio
    new_sigma = sigma * ratio
    new_var = new_sigma ** 2 - eps
    new_scale = scale.copy()
    low = new_var < 0  # the variance cannot go below zero: the rest moves into the scale
    new_var = np.where(low, 0.0, new_var)
    new_scale = np.where(low, scale * np.sqrt(eps) / new_sigma, new_scale)
    return new_scale, new_mean, new_var


def output_moments(G: np.ndarray, W: np.ndarray, b: np.ndarray):
    """Mean and variance of each output column of [X 1]·[W; b] from the Gram [X 1]ᵀ[X 1]."""
    d = W.shape[0]
    n = max(G[d, d], 1.0)
    Wa = np.vstack([W, b[None, :]])
    mean = (G[d] @ Wa) / n
    second = np.einsum("ij,ij->j", Wa, G @ Wa) / n
    return mean, np.maximum(second - mean * mean, 0.0)


def affine_coeffs(m_p, v_p, m_d, v_d):
    """(k, t) per channel such that k·u + t has the dense (mean, var) (m_d, v_d) when u
    has (m_p, v_p); channels that are constant on either side only get their mean moved."""
    ref = np.maximum(v_d, v_p)
    ok = (v_d > DEGENERATE * ref) & (v_p > DEGENERATE * ref)
    k = np.where(ok, np.sqrt(np.where(ok, v_d, 1.0) / np.where(ok, v_p, 1.0)), 1.0)
    return k, m_d - k * m_p


def choose_affine(errors, m_p, v_p, m_d, v_d):
    """Per channel, the best of: unchanged, mean matched, mean and std matched, judged by
    ``errors(k, t)`` (calibration squared error per channel of k·u + t). Returns k, t and
    the (3, channels) errors of the candidates."""
    k_full, t_full = affine_coeffs(m_p, v_p, m_d, v_d)
    ones, zeros = np.ones_like(m_p), np.zeros_like(m_p)
    cands = [(ones, zeros), (ones, m_d - m_p), (k_full, t_full)]
    errs = np.stack([errors(k, t) for k, t in cands])
    pick = np.argmin(errs, axis=0)  # ties keep the smaller change
    k = np.choose(pick, [c[0] for c in cands])
    t = np.choose(pick, [c[1] for c in cands])
    return k, t, errs


def flap_bias(W_dense_full: np.ndarray, taps: int, kept_in: np.ndarray, kept_out, in_length: int,
              xbar_dense: np.ndarray) -> np.ndarray:
    """W_dense[kept_out, removed] · x̄_removed (summed over kernel taps): what the removed
    inputs contributed on average, to add to the bias. ``W_dense_full`` is the dense
    weight in math form (in_length·taps, all outputs); ``xbar_dense`` the dense input's
    per-channel means."""
    removed = np.setdiff1d(np.arange(in_length), kept_in)
    if removed.size == 0:
        return np.zeros(W_dense_full.shape[1] if kept_out is None else len(kept_out))
    per_channel = W_dense_full.reshape(in_length, taps, -1).sum(axis=1)  # (in_length, outputs)
    if kept_out is not None:
        per_channel = per_channel[:, kept_out]
    return xbar_dense[removed] @ per_channel[removed]
