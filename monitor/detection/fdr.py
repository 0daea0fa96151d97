"""Benjamini–Hochberg q-values across all series of one release."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import false_discovery_control

from monitor.detection.errors import DetectionError
from monitor.detection.traces import floats


def q_values(p_values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """BH-adjusted p-values, in the order given; none for no series."""
    p = floats("p-values", p_values)
    if p.size == 0:
        return p
    if not np.all(np.isfinite(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise DetectionError("p-values must be finite and within [0, 1]")
    return np.asarray(false_discovery_control(p, method="bh"), dtype=np.float64)
