"""Statistics of K gradient vectors ĝ_1..ĝ_K (one per batch): spread, direction, signal-to-noise, bootstrap intervals.

With ḡ = mean_i ĝ_i:

- ``trace_cov``: tr Cov(ĝ) = Σ_i ‖ĝ_i − ḡ‖² / (K − 1), the total variance of one batch's gradient (unbiased);
- ``cosine``: ḡ·r / (‖ḡ‖ ‖r‖) with a reference gradient r (1 for the same direction);
- ``snr``: ‖ḡ‖² / tr Cov(ĝ), how much of one batch's gradient is signal.

Everything is computed from the Gram matrix G = ĝ ĝᵀ (K × K) and the projections ĝ·r, so resampling the batches
(the bootstrap) costs K × K, not K × n_parameters, per resample. A resample is a vector of counts c (how often each
batch is drawn, Σc = K): ḡ = cᵀĝ / K, ‖ḡ‖² = cᵀGc / K², Σ_i c_i ‖ĝ_i‖² = c·diag(G).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GradientSample:
    """What the statistics need of K gradient vectors: their Gram matrix and projections on the reference."""

    gram: np.ndarray  # [K, K]
    projections: np.ndarray  # [K], ĝ_i · r / ‖r‖

    @classmethod
    def of(cls, gradients: np.ndarray, reference: np.ndarray) -> GradientSample:
        """From ``[K, n]`` gradients and the reference ``[n]`` (in float64)."""
        g = np.asarray(gradients, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] < 2:
            raise ValueError(f"need at least 2 gradient vectors as rows of a matrix, got shape {g.shape}")
        norm = np.linalg.norm(r)
        return cls(g @ g.T, g @ r / norm if norm > 0 else np.zeros(len(g)))

    @property
    def k(self) -> int:
        return len(self.gram)

    def statistics(self, counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``trace_cov``, ``mean_sq_norm``, ``cosine`` and ``snr`` for each row of ``counts`` (``[B, K]``; None: the
        sample itself, as one row of ones)."""
        k = self.k
        c = np.ones((1, k)) if counts is None else np.asarray(counts, dtype=np.float64)
        mean_sq_norm = np.einsum("bk,kl,bl->b", c, self.gram, c) / k**2
        sum_sq_norms = c @ np.diag(self.gram)
        trace_cov = np.maximum(sum_sq_norms - k * mean_sq_norm, 0.0) / (k - 1)
        mean_norm = np.sqrt(np.maximum(mean_sq_norm, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            cosine = np.where(mean_norm > 0, (c @ self.projections) / k / mean_norm, np.nan)
            snr = np.where(trace_cov > 0, mean_sq_norm / trace_cov, np.inf)
        return {"trace_cov": trace_cov, "mean_sq_norm": mean_sq_norm, "cosine": cosine, "snr": snr}


def trace_covariance(gradients: np.ndarray) -> float:
    """tr Cov(ĝ) of ``[K, n]`` gradients, K − 1 in the denominator."""
    return float(GradientSample.of(gradients, np.zeros(np.shape(gradients)[1])).statistics()["trace_cov"][0])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of the angle between two vectors."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def signal_to_noise(gradients: np.ndarray) -> float:
    """‖ḡ‖² / tr Cov(ĝ) of ``[K, n]`` gradients."""
    return float(GradientSample.of(gradients, np.zeros(np.shape(gradients)[1])).statistics()["snr"][0])


def bootstrap_counts(k: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, k]`` counts of K batches drawn with replacement; shared by every estimator, so that the
    resampled statistics stay paired (a ratio of two estimators' variances is resampled as a ratio)."""
    draws = rng.integers(0, k, size=(resamples, k))
    counts = np.zeros((resamples, k))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``samples`` (NaNs ignored; infinities kept)."""
    tail = round(100 * (1 - confidence) / 2, 9)  # 1 - 0.9 is 0.0999...
    finite = samples[~np.isnan(samples)]
    if not len(finite):
        return float("nan"), float("nan")
    # The nearest samples outward, not an interpolation (which an infinite SNR, of a resample whose batches are
    # all the same one, would turn into NaN).
    low = np.percentile(finite, tail, method="lower")
    high = np.percentile(finite, 100 - tail, method="higher")
    return float(low), float(high)
