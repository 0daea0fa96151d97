"""Who may do what on the dashboard. Reading is open; requesting runs needs a signed-in user:
Streamlit's OIDC login when `[auth]` is configured in the secrets, otherwise the shared token
from settings (`PARITY_DASHBOARD_TOKEN`), compared in constant time."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Literal

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


def signed_in(token: SecretStr | None, action: str) -> Access | None:
    """Gate a form that changes something (`action`, e.g. "Requesting runs"): the access to use,
    or None after telling the visitor why not (switched off, or not signed in yet)."""
    found = access(token)
    if found.mode == "closed":
        st.info(
            f"{action} is switched off: configure an OIDC login (`[auth]` in "
            "`.streamlit/secrets.toml`) or set a shared token in `PARITY_DASHBOARD_TOKEN`."
        )
        return None
    if found.mode == "oidc" and found.user is None:
        st.caption(f"{action} needs a signed-in user.")
        st.button("Sign in", on_click=st.login)
        return None
    if found.mode == "oidc":
        st.caption(f"Signed in as {found.user}.")
        st.button("Sign out", on_click=st.logout)
    return found


def identity_inputs(found: Access, prefix: str, left: Any, right: Any) -> tuple[str, str]:
    """Inside a form: who is acting and the shared token they give (token mode asks for both;
    under OIDC the signed-in user, no token)."""
    if found.mode != "token":
        return found.user or "", ""
    name = left.text_input("Your name", max_chars=64, key=f"{prefix}:name")
    token = right.text_input("Access token", type="password", key=f"{prefix}:token")
    return str(name), str(token)


def token_refused(found: Access, given: str, expected: SecretStr | None) -> bool:
    """Whether a token-mode submit must be refused (a wrong or missing token)."""
    return found.mode == "token" and not token_matches(given, expected)
