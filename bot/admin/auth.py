"""Who may see the admin page: the token from CONJURE_ADMIN_TOKEN, a signed session, CSRF.

- A person signs in once with the token (a form); the answer is a session cookie: a random id,
  when it was issued, and an HMAC of both under a key derived from the token (changing the
  token signs everyone out). HttpOnly, SameSite=Strict, Secure when the public URL is https.
- A script sends `Authorization: Bearer <token>` on each request: no cookie, so no CSRF.
- Every change (POST) made with the cookie carries the session's CSRF token in a hidden field,
  an HMAC of the session id: checked in constant time, else 403 and nothing changes.

Every comparison of a secret is `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

COOKIE = "conjure_admin"
SESSION_SECONDS = 12 * 60 * 60


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    """Who is asking: signed in by cookie (`csrf` is the token a change must carry) or by
    Bearer (`csrf` is None: a script's request carries no ambient credential to forge)."""

    id: str
    csrf: str | None


class AdminAuth:
    def __init__(self, token: str, *, secure_cookie: bool) -> None:
        self._token = token.encode("utf-8")
        self._key = hmac.new(self._token, b"conjure admin session v1", hashlib.sha256).digest()
        self.secure_cookie = secure_cookie

    def token_matches(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode("utf-8"), self._token)

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode("ascii"), hashlib.sha256).digest())

    def new_cookie(self, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        body = f"{secrets.token_urlsafe(24)}.{issued}"
        return f"{body}.{self._sign(body)}"

    def csrf_for(self, session_id: str) -> str:
        return self._sign(f"csrf:{session_id}")

    def session(self, request: Request) -> Session | None:
        """The request's session, or None: not signed in (or a wrong token or cookie)."""
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, offered = header.partition(" ")
            if scheme.lower() == "bearer" and self.token_matches(offered.strip()):
                return Session("bearer", None)
            return None  # a wrong Authorization is refused, whatever cookie comes with it
        cookie = request.cookies.get(COOKIE, "")
        if not cookie.isascii():  # not one of ours ("²" passes isdigit, and HMACs take ASCII)
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(parts[2].encode("ascii", "replace"), self._sign(body).encode()):
            return None
        if not 0 <= time.time() - int(parts[1]) < SESSION_SECONDS:
            return None
        return Session(body, self.csrf_for(body))

    def csrf_ok(self, session: Session, offered: str) -> bool:
        if session.csrf is None:
            return True  # Bearer: nothing ambient for another site to borrow
        return hmac.compare_digest(offered.encode("utf-8", "replace"), session.csrf.encode())

    def cookie_options(self) -> dict[str, object]:
        return {
            "key": COOKIE,
            "httponly": True,
            "samesite": "strict",
            "secure": self.secure_cookie,
            "path": "/admin",
            "max_age": SESSION_SECONDS,
        }
