"""Exceptions detection raises on inputs it cannot judge; every message is one line."""

from __future__ import annotations


class DetectionError(ValueError):
    """Inputs detection cannot work from: empty, non-finite, wrongly shaped or ill-ordered."""


class PromptSetMismatchError(DetectionError):
    """Two runs compared prompt by prompt do not cover the same prompts."""
