"""Benjamini–Hochberg q-values across all series of one release."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import false_discovery_control

from monitor.detection.errors import DetectionError


def q_values(p_values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """BH-adjusted p-values, in the order given; none for no series."""
    try:
        p = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DetectionError(f"p-values are not numeric: {exc}") from None
    if p.ndim != 1:
        raise DetectionError(f"p-values must be 1-D, got shape {p.shape}")
    if p.size == 0:
        return p
    if not np.all(np.isfinite(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise DetectionError("p-values must be finite and within [0, 1]")
    return np.asarray(false_discovery_control(p, method="bh"), dtype=np.float64)
