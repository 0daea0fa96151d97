"""Who may do what on the dashboard. Reading is open; requesting runs needs a signed-in user:
Streamlit's OIDC login when `[auth]` is configured in the secrets, otherwise the shared token
from settings (`PARITY_DASHBOARD_TOKEN`), compared in constant time. Every wrong token is logged
(never its value) and repeated failures from one client must wait longer and longer."""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import streamlit as st
from pydantic import SecretStr

from dashboard.escape import md

Mode = Literal["oidc", "token", "closed"]
LOG = logging.getLogger("dashboard.auth")
FREE_FAILURES = 2
"""Wrong tokens a client may give before it has to wait (a typo or two)."""
FIRST_DELAY_S = 2.0
"""The wait after the first failure beyond the free ones; it doubles with each further one."""
MAX_DELAY_S = 60.0
FORGET_S = 900.0
"""A client's failures are forgotten this long after its last one (or at a right token)."""
MAX_CLIENTS = 10_000
MAX_KEY_CHARS = 64
SESSION_KEY = "auth:session"


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


def delay_s(failures: int) -> float:
    """How long a client with this many recent failures waits before its next try."""
    if failures <= FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** (failures - FREE_FAILURES - 1))


class Throttle:
    """Recent failed token attempts per client, shared by every session of the server: how
    long each client must wait before its next attempt is even checked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}

    def _recent(self, client: str, now: float) -> tuple[int, float]:
        count, last = self._failures.get(client, (0, now))
        return (count, last) if now - last <= FORGET_S else (0, now)

    def wait_s(self, client: str) -> float:
        """Seconds before `client` may try again (0.0: now)."""
        with self._lock:
            now = self._clock()
            count, last = self._recent(client, now)
            return max(0.0, last + delay_s(count) - now)

    def failed(self, client: str) -> int:
        """Record a wrong token from `client`; its count of recent failures."""
        with self._lock:
            now = self._clock()
            count = self._recent(client, now)[0] + 1
            self._failures[client] = (count, now)
            if len(self._failures) > MAX_CLIENTS:
                oldest = sorted(self._failures, key=lambda key: self._failures[key][1])
                for key in oldest[: len(oldest) // 2]:
                    del self._failures[key]
            return count

    def succeeded(self, client: str) -> None:
        """Forget `client`'s failures (it gave the right token)."""
        with self._lock:
            self._failures.pop(client, None)


@st.cache_resource(show_spinner=False)
def throttle() -> Throttle:
    """The server's one record of failed token attempts."""
    return Throttle()


def client_key() -> str:
    """Who is trying: the client's address when Streamlit knows it (a remote client); for a
    client on this host, the last X-Forwarded-For hop (the one a local proxy added), else this
    browser session (a local client without a proxy)."""
    address = st.context.ip_address
    if isinstance(address, str) and address:
        return f"address {address}"
    hops = ",".join(map(str, st.context.headers.get_all("X-Forwarded-For"))).split(",")
    if hops[-1].strip():
        return f"forwarded {hops[-1].strip()[:MAX_KEY_CHARS]}"
    return f"session {st.session_state.setdefault(SESSION_KEY, secrets.token_hex(6))}"


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
        st.caption(f"Signed in as {md(found.user)}.")
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


def token_refused(
    found: Access, given: str, expected: SecretStr | None, action: str, outcome: str, name: str
) -> bool:
    """Whether a token-mode submit must be refused (a wrong or missing token, or a client that
    must still wait), saying so on the page with `outcome` (e.g. "nothing was queued.") and in
    one log line (the action, client and name, never the token)."""
    if found.mode != "token":
        return False
    client, record, shown_name = client_key(), throttle(), name[:MAX_KEY_CHARS]
    wait = record.wait_s(client)
    if wait > 0:
        LOG.warning(
            "%s: token not checked for %s (name %r): must wait %.1f s",
            action,
            client,
            shown_name,
            wait,
        )
        st.error(f"Too many wrong access tokens: try again in {math.ceil(wait)} s; {outcome}")
        return True
    if token_matches(given, expected):
        record.succeeded(client)
        return False
    failures = record.failed(client)
    wait = delay_s(failures)
    LOG.warning(
        "%s: wrong access token from %s (name %r), failure %d, next try in %.1f s",
        action,
        client,
        shown_name,
        failures,
        wait,
    )
    later = f" Too many wrong tokens: wait {math.ceil(wait)} s before the next try." if wait else ""
    st.error(f"Wrong access token: {outcome}{later}")
    return True
