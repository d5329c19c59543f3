"""Independent numpy computations that the K-FAC tests compare against (no TensorFlow, no library code)."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def exact_logit_cotangents(logits: np.ndarray) -> list[np.ndarray]:
    """v_k = sqrt(p_k) (p − e_k): Σ_k v_k v_kᵀ = diag(p) − p pᵀ, the Fisher of the softmax in logit space."""
    p = softmax(logits)
    classes = p.shape[1]
    return [np.sqrt(p[:, k : k + 1]) * (p - np.eye(classes)[k]) for k in range(classes)]


def with_ones(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)


def same_padding(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF 'SAME': out = ceil(size/s); total pad = max((out−1)s + d(k−1) + 1 − size, 0), smaller half first."""
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return out, total // 2


def patches_by_loops(x: np.ndarray, k: int, stride: int, padding: str, dilation: int = 1) -> np.ndarray:
    """[B, H_out, W_out, k·k·C] patches, entries ordered (i, j, c), zero outside the image."""
    batch, height, width, channels = x.shape
    if padding == "same":
        out_h, top = same_padding(height, k, stride, dilation)
        out_w, left = same_padding(width, k, stride, dilation)
    else:
        out_h = (height - dilation * (k - 1) - 1) // stride + 1
        out_w = (width - dilation * (k - 1) - 1) // stride + 1
        top = left = 0
    result = np.zeros((batch, out_h, out_w, k * k * channels))
    for b in range(batch):
        for th in range(out_h):
            for tw in range(out_w):
                entries = []
                for i in range(k):
                    for j in range(k):
                        h = th * stride + i * dilation - top
                        w = tw * stride + j * dilation - left
                        inside = 0 <= h < height and 0 <= w < width
                        entries.append(x[b, h, w] if inside else np.zeros(channels))
                result[b, th, tw] = np.concatenate(entries)
    return result
