"""How every error reaches a person: as one line."""

from __future__ import annotations


def one_line(exc: object) -> str:
    """An exception's message as one line (the database driver's own, when it has one)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
