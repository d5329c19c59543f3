"""Factored Tikhonov damping (paper Eq. 3; K-FAC 2015 §6.3) and its three-factor generalisation (paper Eq. 12)."""

from __future__ import annotations

import numpy as np

_TINY = 1e-30


def mean_eigenvalue(factor: np.ndarray) -> float:
    """tr(F)/dim F: for a PSD factor, its nuclear norm over its dimension (a 1-D factor is a diagonal)."""
    return float(np.trace(factor) if factor.ndim == 2 else np.sum(factor)) / factor.shape[0]


def trace_norm_pi(input_factor: np.ndarray, output_factor: np.ndarray) -> float:
    """π = sqrt((tr A / dim A) / (tr G / dim G)), so that A + π√λ I and G + √λ/π I share the damping fairly."""
    ratio = max(mean_eigenvalue(input_factor), _TINY) / max(mean_eigenvalue(output_factor), _TINY)
    return float(np.sqrt(ratio))


def factored_damping(input_factor: np.ndarray, output_factor: np.ndarray, damping: float) -> tuple[float, float]:
    """(π√λ, √λ/π): the multiples of I added to A and to G (paper Eq. 3)."""
    pi = trace_norm_pi(input_factor, output_factor)
    root = float(np.sqrt(damping))
    return pi * root, root / pi


def geometric_mean_pis(factors: list[np.ndarray]) -> list[float]:
    """π_i = (m_i^(n−1) / Π_{j≠i} m_j)^(1/n), m = tr/dim (paper Eq. 12 for n = 3); Π π_i = 1.

    Adding π_i λ^(1/n) I to factor i minimises the paper's triangle-inequality bound on the damping error.
    """
    means = [max(mean_eigenvalue(f), _TINY) for f in factors]
    n = len(means)
    log_means = np.log(means)
    return [float(np.exp(((n - 1) * log_means[i] - (log_means.sum() - log_means[i])) / n)) for i in range(n)]
