"""Change points along a release series (one value per release, ordered by version)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import ruptures

from monitor.detection.errors import DetectionError
from monitor.detection.traces import finite_floats

PENALTY_MULTIPLE = 3.0
MIN_SEGMENT = 2
EXACT_SCALE = 1e-9


def change_points(
    values: npt.ArrayLike,
    floor: float,
    *,
    penalty_multiple: float = PENALTY_MULTIPLE,
    min_segment: int = MIN_SEGMENT,
) -> list[int]:
    """Indices where a new level starts (the first release of each later segment).

    Pelt with the least-absolute-deviation cost (robust to one release's outlier, which the
    heavy-tailed logprob metrics produce); each extra segment costs `penalty_multiple` × floor,
    so a new level held by the last `min_segment` = 2 releases must sit about
    `penalty_multiple` / 2 noise floors away. A zero floor (bit-identical repeats) makes any
    real change a change point.
    """
    series = finite_floats("release series", values)
    if not np.isfinite(floor) or floor < 0.0:
        raise DetectionError(f"noise floor must be finite and non-negative, got {floor}")
    if not np.isfinite(penalty_multiple) or penalty_multiple <= 0.0:
        raise DetectionError(f"penalty_multiple must be positive, got {penalty_multiple}")
    if min_segment < MIN_SEGMENT:
        raise DetectionError(
            f"min_segment must be at least {MIN_SEGMENT} (the median cost needs two points), "
            f"got {min_segment}"
        )
    if series.size < 2 * min_segment:
        return []
    scale = floor if floor > 0.0 else EXACT_SCALE * max(1.0, float(np.abs(series).max()))
    model = ruptures.Pelt(model="l1", min_size=min_segment, jump=1).fit(series)
    breaks = model.predict(pen=penalty_multiple * scale)
    return [int(b) for b in breaks[:-1]]
