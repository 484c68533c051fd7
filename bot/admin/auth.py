"""Who may see the admin page: the token from CONJURE_ADMIN_TOKEN, a signed session, CSRF.

- A person signs in once with the token (a form); the answer is a session cookie: a random id,
  when it was issued, and an HMAC of both under a key derived from the token (changing the
  token signs everyone out). HttpOnly, SameSite=Strict, Secure when the public URL is https.
- Logging out ends the session on the server: a hash of its id goes in a table every instance
  reads before it takes the cookie (storage.admin_sessions), so a copy of the cookie (a shared
  computer, a proxy's log, a profile backup) is refused from then on, wherever it is sent. That
  read comes after the signature and the age are checked (a forged cookie costs no query); it
  compares a hash of an id already proven genuine, which no timing of it can help forge. When
  the table cannot be read, a cookie is refused (SessionsUnreachable; the page answers 503).
- A script sends `Authorization: Bearer <token>` on each request: no cookie, so no CSRF, and no
  session to end.
- Every change (POST) made with the cookie carries the session's CSRF token in a hidden field,
  an HMAC of the session id: checked in constant time, else 403 and nothing changes.

Every comparison of a secret is `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import Request

from storage.admin_sessions import EndedSessions
from storage.errors import UNANSWERED

COOKIE = "conjure_admin"
SESSION_SECONDS = 12 * 60 * 60

log = logging.getLogger(__name__)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    """Who is asking: signed in by cookie (`csrf` is the token a change must carry) or by
    Bearer (`csrf` is None: a script's request carries no ambient credential to forge)."""

    id: str
    csrf: str | None
    valid_until: datetime | None = None  # a cookie's: when it lapses anyway (Bearer: None)


class SessionsUnreachable(Exception):
    """The table of ended sessions could not be read or written: the cookie's request is not
    let through (an unverifiable session changes nothing), nor is a logout said to be done."""


SESSION_ID_BYTES = 24
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32}")  # token_urlsafe(SESSION_ID_BYTES)


def _hash(session_id: str) -> str:
    """What the table keeps for a session: fixed length, and not the id itself."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


class AdminAuth:
    def __init__(self, token: str, *, secure_cookie: bool, ended: EndedSessions) -> None:
        self._token = token.encode("utf-8")
        self._key = hmac.new(self._token, b"conjure admin session v1", hashlib.sha256).digest()
        self.secure_cookie = secure_cookie
        self._ended = ended

    def token_matches(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode("utf-8"), self._token)

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode("ascii"), hashlib.sha256).digest())

    def new_cookie(self, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        body = f"{secrets.token_urlsafe(SESSION_ID_BYTES)}.{issued}"
        return f"{body}.{self._sign_session(body)}"

    def _sign_session(self, body: str) -> str:
        # Signed apart from a CSRF token ("session:" against "csrf:"): a CSRF token, which
        # every page shows, must never verify as a cookie's signature.
        return self._sign(f"session:{body}")

    def csrf_for(self, session_id: str) -> str:
        return self._sign(f"csrf:{session_id}")

    async def session(self, request: Request) -> Session | None:
        """The request's session, or None: not signed in (a wrong token or cookie, or a session
        ended by logging out, on any instance). Raises SessionsUnreachable when the ended
        sessions cannot be read: a cookie that cannot be checked is not taken."""
        session = self.signed(request)
        if session is None or session.valid_until is None:
            return session  # Bearer is checked against the token alone, as before
        try:
            ended = await self._ended.ended(_hash(session.id))
        except UNANSWERED as exc:
            log.warning("admin session not checked: %s", type(exc).__name__)
            raise SessionsUnreachable from exc
        return None if ended else session

    async def end(self, session: Session) -> None:
        """End a cookie's session on every instance (Bearer has none to end). Raises
        SessionsUnreachable when that cannot be recorded."""
        if session.valid_until is None:
            return
        try:
            await self._ended.end(_hash(session.id), session.valid_until)
        except UNANSWERED as exc:
            log.warning("admin session not ended: %s", type(exc).__name__)
            raise SessionsUnreachable from exc

    def signed(self, request: Request) -> Session | None:
        """The session the request's token or cookie proves, before asking whether it ended."""
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
        if len(parts) != 3 or not _SESSION_ID.fullmatch(parts[0]) or not parts[1].isdigit():
            return None
        body = f"{parts[0]}.{parts[1]}"
        signature = self._sign_session(body).encode()
        if not hmac.compare_digest(parts[2].encode("ascii", "replace"), signature):
            return None
        issued = int(parts[1])
        if not 0 <= time.time() - issued < SESSION_SECONDS:
            return None
        valid_until = datetime.fromtimestamp(issued + SESSION_SECONDS, UTC)
        return Session(body, self.csrf_for(body), valid_until)

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
