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


def shared_weight_factors(a: np.ndarray, ds: list[np.ndarray], batch: int, bias: bool,
                          mode: str) -> tuple[np.ndarray, np.ndarray]:
    """K-FAC expand / reduce (Eschenhagen et al. 2023) from per-example inputs a [N, R, d_in] and output
    derivatives ds_k [N, R, d_out] (one per Fisher cotangent k), by explicit sums over examples n and positions r.

    expand: A = Σ_{n,r} ā ā ᵀ / (N R), G = Σ_k Σ_{n,r} ds ds ᵀ / B;
    reduce: A = Σ_n â_n â_nᵀ / N with â_n = mean_r ā_{n,r}, G = Σ_k Σ_n ĝ ĝᵀ / B with ĝ_n = Σ_r ds_{n,r}.
    """
    n_rows, positions, _ = a.shape
    if bias:
        a = np.concatenate([a, np.ones((n_rows, positions, 1))], axis=2)
    input_factor = np.zeros((a.shape[2], a.shape[2]))
    output_factor = np.zeros((ds[0].shape[2], ds[0].shape[2]))
    for n in range(n_rows):
        if mode == "expand":
            for r in range(positions):
                input_factor += np.outer(a[n, r], a[n, r]) / (n_rows * positions)
                for d in ds:
                    output_factor += np.outer(d[n, r], d[n, r]) / batch
        else:
            mean_a = a[n].mean(axis=0)
            input_factor += np.outer(mean_a, mean_a) / n_rows
            for d in ds:
                summed = d[n].sum(axis=0)
                output_factor += np.outer(summed, summed) / batch
    return input_factor, output_factor


def kron_solve(a: np.ndarray, g: np.ndarray, matrix: np.ndarray, damping: float) -> np.ndarray:
    """(A ⊗ G + factored damping)⁻¹ vec(M) as an explicit Kronecker solve, M [d_in, d_out] vectorised row-major:
    (A + π√λ I) ⊗ (G + √λ/π I) with π = sqrt((tr A / d_A) / (tr G / d_G)) (paper Eq. 3). A may be a diagonal (1-D)."""
    a = np.diag(a) if a.ndim == 1 else a
    pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
    damped = np.kron(a + pi * np.sqrt(damping) * np.eye(len(a)), g + np.sqrt(damping) / pi * np.eye(len(g)))
    return np.linalg.solve(damped, matrix.reshape(-1)).reshape(matrix.shape)


def bfloat16_rounded(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as float64: keep the top 16 bits."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def eigh_basis(factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvectors as columns, eigenvalues) of a symmetric factor, ascending."""
    values, vectors = np.linalg.eigh(factor)
    return vectors, values


def ekfac_scaling(inputs: np.ndarray, derivatives: list[np.ndarray], basis_a: np.ndarray, basis_g: np.ndarray,
                  batch: int) -> np.ndarray:
    """s = (1/B) Σ_k Σ_n (U_Aᵀ ∇W_nk U_G)², by explicit per-example gradients ∇W_nk = Σ_t ā_nt ds_ntkᵀ (outer
    products summed over positions t), projected one by one. inputs [N, T, d_A] (homogeneous), each ds [N, T, d_G]."""
    scaling = np.zeros((basis_a.shape[1], basis_g.shape[1]))
    for ds in derivatives:
        for n in range(inputs.shape[0]):
            gradient = sum(np.outer(inputs[n, t], ds[n, t]) for t in range(inputs.shape[1]))
            scaling += (basis_a.T @ gradient @ basis_g) ** 2
    return scaling / batch


def ekfac_solve(basis_a: np.ndarray, basis_g: np.ndarray, scaling: np.ndarray, matrix: np.ndarray,
                damping: float) -> np.ndarray:
    """U_A [(U_Aᵀ M U_G) / (s + λ)] U_Gᵀ for M [d_A, d_G]."""
    return basis_a @ ((basis_a.T @ matrix @ basis_g) / (scaling + damping)) @ basis_g.T
