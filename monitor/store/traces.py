"""Per-token traces as stored: each array as its packed little-endian bytes, with a fixed dtype
per column, so a 20k-token arm costs 28 bytes a token and decodes without parsing."""

from __future__ import annotations

import base64

import numpy as np

from monitor.metrics import TokenArrays
from monitor.schema import PackedArray, TokenTrace

TRACE_DTYPES: dict[str, str] = {
    "prompt_index": "<i4",
    "position": "<i4",
    "token_id": "<i4",
    "vllm_logprob": "<f8",
    "reference_logprob": "<f8",
}


def pack_trace(trace: TokenTrace) -> dict[str, bytes]:
    """Column name -> little-endian bytes in the column's stored dtype (the result's own bytes
    when its array already has that dtype)."""
    return {
        name: _column_bytes(getattr(trace, name), dtype) for name, dtype in TRACE_DTYPES.items()
    }


def _column_bytes(packed: PackedArray, dtype: str) -> bytes:
    if np.dtype(packed.dtype).newbyteorder("<") == np.dtype(dtype):
        return base64.b64decode(packed.data, validate=True)
    return np.ascontiguousarray(packed.unpack(), dtype=dtype).tobytes()


def unpack_trace(columns: dict[str, bytes], n_tokens: int) -> TokenArrays:
    """Decode stored columns; a column whose length disagrees with n_tokens raises ValueError."""
    arrays = {}
    for name, dtype in TRACE_DTYPES.items():
        raw = columns[name]
        expected = n_tokens * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise ValueError(
                f"stored trace column {name} has {len(raw)} bytes, expected {expected}"
            )
        wide = "int64" if dtype[1] == "i" else "float64"
        arrays[name] = np.frombuffer(raw, dtype=dtype).astype(wide)
    return TokenArrays(**arrays)
