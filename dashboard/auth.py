"""Who may do what on the dashboard. Reading is open; requesting runs needs a signed-in user:
Streamlit's OIDC login when `[auth]` is configured in the secrets, otherwise the shared token
from settings (`PARITY_DASHBOARD_TOKEN`), compared in constant time."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

import streamlit as st
from pydantic import SecretStr

Mode = Literal["oidc", "token", "closed"]


@dataclass(frozen=True)
class Access:
    """How this dashboard lets people request runs, and who is signed in (OIDC only)."""

    mode: Mode
    user: str | None = None


def token_matches(given: str, expected: SecretStr | None) -> bool:
    """Whether `given` is the configured token (never true when none or an empty one is set)."""
    secret = expected.get_secret_value() if expected is not None else ""
    if not secret or not given:
        return False
    return hmac.compare_digest(given.encode(), secret.encode())


def oidc_configured() -> bool:
    """Whether Streamlit's OIDC login is configured (an `[auth]` section in the secrets)."""
    if not st.secrets.load_if_toml_exists():
        return False
    return "auth" in st.secrets


def access(token: SecretStr | None) -> Access:
    """The request mode: OIDC when configured, else a shared token when set, else closed."""
    if oidc_configured():
        if st.user.is_logged_in:
            who = st.user.get("email") or st.user.get("name") or st.user.get("sub")
            return Access("oidc", str(who) if who else "signed-in user")
        return Access("oidc")
    if token is not None and token.get_secret_value():
        return Access("token")
    return Access("closed")
