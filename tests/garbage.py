"""Garbage requests for Conjure's public endpoints, from a seeded generator.

Used by tests/test_http_edge.py (a few hundred) and bench/fuzz.py (tens of thousands). Each is
what anyone on the internet could send to POST /slack/events or POST /webhooks/replicate:
invalid UTF-8, wrong content types, JSON content types with bodies that are not JSON, timestamps
that are not integers, JSON nested thousands deep, `payload=` that is not an object, huge headers,
line breaks meant to forge log lines. Given the secrets, some are signed as well, so the checks
after the signature (a 400, never a 500) are exercised too: Slack's `v0` signature, Replicate's
Standard Webhooks signature over predictions with malformed fields.

Every body carries MARKER, so a test can check that no log line quotes one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

SLACK_PATH = "/slack/events"
WEBHOOK_PATH = "/webhooks/replicate"
MARKER = "GARBAGE-MARKER"
FORGED = "\nERROR conjure: FORGED LOG LINE " + MARKER + "\n"

_CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "multipart/form-data; boundary=xyz",
    "application/octet-stream",
    "",
]
_BAD_TIMESTAMPS = [b"abc", b"1e9", b"-5", b"0x10", b"9" * 40, b"", b"1 2", b"\xb2\xb3", b"1.5"]
_STATUSES = ["starting", "processing", "succeeded", "failed", "canceled", "aborted", "queued", ""]


@dataclass
class Request:
    """One request to send: what it is (for reports), where, and the bytes."""

    kind: str
    path: str
    headers: dict[str, bytes]
    body: bytes


class Garbage:
    """A seeded stream of garbage requests; give the secrets to sign some of them."""

    def __init__(
        self,
        seed: int,
        *,
        slack_secret: str | None = None,
        webhook_secret: str | None = None,
        huge_header: int = 100_000,
    ) -> None:
        self.random = random.Random(seed)
        self.slack_secret = slack_secret
        self.webhook_secret = webhook_secret
        self.huge_header = huge_header

    def requests(self, count: int, path: str) -> Iterator[Request]:
        """`count` requests for `path` (SLACK_PATH or WEBHOOK_PATH)."""
        make = self.slack if path == SLACK_PATH else self.webhook
        for _ in range(count):
            yield make()

    # ---- Slack ----------------------------------------------------------------------------

    def slack(self) -> Request:
        r = self.random
        kind, body, content_type = r.choice(self._slack_bodies)(self)
        headers = {"content-type": content_type.encode()} if content_type else {}
        signing = r.random()
        if self.slack_secret and signing < 0.4:
            stamp = str(int(time.time())).encode()
            headers["x-slack-request-timestamp"] = stamp
            headers["x-slack-signature"] = _slack_signature(self.slack_secret, stamp, body)
            kind = f"signed {kind}"
        elif signing < 0.8:
            headers["x-slack-request-timestamp"] = r.choice(
                [*_BAD_TIMESTAMPS, str(int(time.time())).encode()]
            )
            headers["x-slack-signature"] = r.choice(
                [b"v0=" + r.randbytes(32).hex().encode(), b"v0=zz", b"", b"v1=abc", b"\xff\xfe"]
            )
        if r.random() < 0.05:
            headers["x-garbage"] = b"h" * self.huge_header
            kind += " + huge header"
        return Request(kind, SLACK_PATH, headers, body)

    def _invalid_utf8(self) -> tuple[str, bytes, str]:
        body = MARKER.encode() + self.random.randbytes(self.random.randint(1, 200)) + b"\xff\xc3("
        return "invalid UTF-8", body, self.random.choice(_CONTENT_TYPES)

    def _json_type_not_json(self) -> tuple[str, bytes, str]:
        body = self.random.choice([f"{MARKER} {{", "{" + MARKER, "[1, 2", "nul", "{}}"])
        return "JSON content type, not JSON", body.encode(), "application/json"

    def _deep_json(self) -> tuple[str, bytes, str]:
        depth = self.random.choice([100, 2_000, 50_000])
        body = self.random.choice(["[" * depth, '{"a":' * depth + "1" + "}" * depth])
        return "deep JSON", body.encode(), self.random.choice(["application/json", ""])

    def _garbage_payload(self) -> tuple[str, bytes, str]:
        payload = self.random.choice(
            [
                "{" + MARKER,
                "[1, 2]",
                "null",
                '"' + MARKER + '"',
                '{"type": 5, "actions": "' + MARKER + '"}',
                '{"type": "block_actions", "actions": [1], "team": "x", "user": 7}',
                '{"authorizations": "' + MARKER + '", "enterprise": 5}',
                "[" * 5_000,
            ]
        )
        body = urlencode({"payload": payload}) + self.random.choice(["", "&payload", "&x=%zz"])
        return "garbage payload=", body.encode(), "application/x-www-form-urlencoded"

    def _slash_command(self) -> tuple[str, bytes, str]:
        fields = {
            "token": "legacy-" + MARKER,
            "team_id": self.random.choice(["T0FAKE", "", "\x00", "T" * 500]),
            "user_id": "U0" + MARKER,
            "command": self.random.choice(["/conjure", "/nope", "/" + "x" * 300, "/a\nb"]),
            "text": MARKER + FORGED,
            "response_url": "https://hooks.slack.invalid/" + MARKER,
        }
        for name in self.random.sample(sorted(fields), self.random.randint(0, 3)):
            del fields[name]
        return "slash command, odd fields", urlencode(fields).encode(), _CONTENT_TYPES[0]

    def _random_form(self) -> tuple[str, bytes, str]:
        body = "&".join(
            quote(self._text()) + "=" + quote(self._text())
            for _ in range(self.random.randint(0, 8))
        )
        return "random form", (MARKER + FORGED + body).encode(), self.random.choice(_CONTENT_TYPES)

    def _random_json(self) -> tuple[str, bytes, str]:
        body = json.dumps({MARKER: self._value(4), "type": self._value(1)})
        return "random JSON", body.encode(), self.random.choice(_CONTENT_TYPES)

    _slack_bodies = [
        _invalid_utf8,
        _json_type_not_json,
        _deep_json,
        _garbage_payload,
        _slash_command,
        _random_form,
        _random_json,
    ]

    # ---- Replicate webhooks ---------------------------------------------------------------

    def webhook(self) -> Request:
        r = self.random
        kind, body = r.choice(self._webhook_bodies)(self)
        headers = {"content-type": b"application/json"}
        query = r.choice(
            ["", "?job=" + "a" * 20, "?job=%00", "?job=" + "x" * 500, "?job=%E2%80%AE", "?job"]
        )
        if self.webhook_secret and r.random() < 0.5:
            headers.update(
                _webhook_headers(self.webhook_secret, f"msg_{r.getrandbits(64):x}", body)
            )
            kind = f"signed {kind}"
        elif r.random() < 0.8:
            headers["webhook-id"] = r.choice([b"msg_1", b"", b"\xff" * 3, MARKER.encode()])
            headers["webhook-timestamp"] = r.choice(
                [*_BAD_TIMESTAMPS, str(int(time.time())).encode()]
            )
            headers["webhook-signature"] = r.choice(
                [b"v1,AAAA", b"v1," + r.randbytes(32).hex().encode(), b"v1,!!", b"\xfe", b""]
            )
        if r.random() < 0.05:
            headers["x-garbage"] = b"h" * self.huge_header
            kind += " + huge header"
        return Request(kind, WEBHOOK_PATH + query, headers, body)

    def _malformed_prediction(self) -> tuple[str, bytes]:
        prediction: dict[str, Any] = {
            "id": self.random.choice(["p" * 26, "x" * 300, "a b", 42, None, MARKER, "ü" * 10]),
            "status": self.random.choice([*_STATUSES, 3, None, ["succeeded"]]),
            "input": self.random.choice([{}, None, [1], "x"]),
            "output": self._value(3),
            "logs": self.random.choice(["", MARKER + FORGED, 5, None]),
            "error": self.random.choice([None, "boom\x00", MARKER + FORGED, {"a": 1}]),
            "metrics": self.random.choice(
                [
                    None,
                    {"predict_time": "5"},
                    {"predict_time": True},
                    {"predict_time": [1]},
                    {"predict_time": 1e20},
                    {"predict_time": -1},
                    {"predict_time": 2.5},
                    "fast",
                ]
            ),
            "created_at": self.random.choice([None, "yesterday", "2024-01-01T00:00:00Z", 5]),
            "webhook": self.random.choice([None, "http://127.0.0.1/webhooks/replicate?job=x", 1]),
        }
        for name in self.random.sample(sorted(prediction), self.random.randint(0, 3)):
            del prediction[name]
        text = json.dumps(prediction, allow_nan=True)
        if self.random.random() < 0.1:
            text = text.replace("2.5", "NaN")
        return "prediction with malformed fields", text.encode()

    def _webhook_not_json(self) -> tuple[str, bytes]:
        return "not JSON", self.random.choice(
            [MARKER.encode() + FORGED.encode(), b"\xff\xfe" + MARKER.encode(), b"", b"[]", b"5"]
        )

    def _webhook_deep(self) -> tuple[str, bytes]:
        depth = self.random.choice([100, 50_000])
        return "deep JSON", ('{"id":' * depth + "1" + "}" * depth).encode()

    _webhook_bodies = [_malformed_prediction, _webhook_not_json, _webhook_deep]

    # ---- values ---------------------------------------------------------------------------

    def _text(self) -> str:
        alphabet = "abc\n\r\x00é€🦊{}[]&=%\"'\\"
        return "".join(self.random.choice(alphabet) for _ in range(self.random.randint(0, 12)))

    def _value(self, depth: int) -> Any:
        r = self.random
        choice = r.randrange(8 if depth > 0 else 5)
        if choice == 0:
            return None
        if choice == 1:
            return r.choice([True, False, 0, -1, 2**70, 1e308, 0.5])
        if choice in (2, 3, 4):
            return self._text()
        if choice in (5, 6):
            return [self._value(depth - 1) for _ in range(r.randint(0, 4))]
        return {self._text(): self._value(depth - 1) for _ in range(r.randint(0, 4))}


def _webhook_headers(secret: str, msg_id: str, body: bytes) -> dict[str, bytes]:
    """Standard Webhooks headers over the raw bytes (which need not be UTF-8)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    stamp = str(int(time.time()))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id.encode(),
        "webhook-timestamp": stamp.encode(),
        "webhook-signature": b"v1," + base64.b64encode(digest),
    }


def _slack_signature(secret: str, timestamp: bytes, body: bytes) -> bytes:
    base = b"v0:" + timestamp + b":" + body
    return b"v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest().encode()
