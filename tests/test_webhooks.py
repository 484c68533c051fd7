"""Webhook verification against Replicate's test vector and the `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks.webhooks as reference
from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Headers

from bot.replicate.client import ReplicateClient
from bot.replicate.webhooks import (
    TOLERANCE,
    WebhookVerificationError,
    WebhookVerifier,
    verify_webhook,
)

# Replicate's published test vector (replicate-api.md).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SENT_AT = datetime.fromtimestamp(TIMESTAMP, tz=UTC)


def vector_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": SIGNATURE,
    }
    headers.update({key.replace("_", "-"): value for key, value in overrides.items()})
    return headers


def signed(body: bytes, at: datetime, secret: str = SECRET) -> dict[str, str]:
    """Headers for `body` sent at `at`, signed by the reference implementation."""
    signature = Webhook(secret).sign(MSG_ID, at, body.decode())
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


FRESH_BODY = b'{"id": "abc", "status": "succeeded"}'
Change = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]


def _header(name: str, edit: Callable[[str], str]) -> Change:
    return lambda body, headers: (body, {**headers, name: edit(headers[name])})


def _other_signature(header: str) -> str:
    """The same header with the signature's first base64 character changed."""
    first = header[3]
    return header[:3] + ("B" if first == "A" else "A") + header[4:]


# What an attacker or a broken proxy could change in a fresh webhook signed with SECRET, and
# whether it must still verify. All are well-formed, so the reference library answers cleanly.
CHANGES: dict[str, tuple[Change, bool]] = {
    "nothing": (lambda body, headers: (body, headers), True),
    "the body": (lambda body, headers: (body.replace(b"abc", b"abd"), headers), False),
    "a byte appended": (lambda body, headers: (body + b" ", headers), False),
    "the id": (_header("webhook-id", lambda v: v + "x"), False),
    "the timestamp by a second": (_header("webhook-timestamp", lambda v: str(int(v) + 1)), False),
    "the signature": (_header("webhook-signature", _other_signature), False),
    "a wrong signature first": (_header("webhook-signature", lambda v: f"{SIGNATURE} {v}"), True),
    "the scheme": (_header("webhook-signature", lambda v: "v2," + v[3:]), False),
    "the headers' case": (
        lambda body, headers: (body, {k.upper(): v for k, v in headers.items()}),
        True,
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_conjure_accepts_exactly_what_the_reference_library_accepts(change: str) -> None:
    """Conjure re-implements the checks of `standardwebhooks` (to pin `now` and to say what is
    wrong), so on any well-formed webhook both must agree: same payload, or both refuse."""
    alter, genuine = CHANGES[change]
    body, headers = alter(FRESH_BODY, signed(FRESH_BODY, datetime.now(UTC)))

    def outcome(verify: Callable[[], dict[str, Any]], refusal: type[Exception]) -> object:
        try:
            return verify()
        except refusal:
            return "refused"

    ours = outcome(lambda: verify_webhook(SECRET, body, headers), WebhookVerificationError)
    theirs = outcome(
        lambda: Webhook(SECRET).verify(body, headers), reference.WebhookVerificationError
    )
    assert ours == theirs
    assert ours == ({"id": "abc", "status": "succeeded"} if genuine else "refused")


def test_vector_verifies_at_its_own_time() -> None:
    assert verify_webhook(SECRET, BODY, vector_headers(), now=SENT_AT) == {"test": 2432232314}


def test_vector_verifies_within_the_tolerance() -> None:
    verifier = WebhookVerifier(SECRET)
    almost = TOLERANCE - timedelta(seconds=1)
    assert verifier.verify(BODY, vector_headers(), now=SENT_AT + almost) == {"test": 2432232314}
    assert verifier.verify(BODY, vector_headers(), now=SENT_AT - almost) == {"test": 2432232314}


def test_vector_is_too_old_today() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(SECRET, BODY, vector_headers())


def test_tampered_body_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(SECRET, b'{"test": 2432232315}', vector_headers(), now=SENT_AT)


def test_wrong_secret_is_rejected() -> None:
    other = "whsec_" + "A" * 32
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(other, BODY, vector_headers(), now=SENT_AT)


def test_replayed_id_or_timestamp_change_breaks_the_signature() -> None:
    verifier = WebhookVerifier(SECRET)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verifier.verify(BODY, vector_headers(webhook_id="msg_other"), now=SENT_AT)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verifier.verify(BODY, vector_headers(webhook_timestamp=str(TIMESTAMP + 1)), now=SENT_AT)


def test_old_timestamp_is_rejected_even_when_correctly_signed() -> None:
    body = b'{"status": "succeeded"}'
    headers = signed(body, datetime.now(UTC) - TOLERANCE - timedelta(seconds=30))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(SECRET, body, headers)


def test_future_timestamp_is_rejected_even_when_correctly_signed() -> None:
    body = b'{"status": "succeeded"}'
    headers = signed(body, datetime.now(UTC) + TOLERANCE + timedelta(seconds=30))
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify_webhook(SECRET, body, headers)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_named(name: str) -> None:
    headers = vector_headers()
    del headers[name]
    with pytest.raises(WebhookVerificationError, match=f"missing header.*{name}"):
        verify_webhook(SECRET, BODY, headers, now=SENT_AT)


def test_empty_header_counts_as_missing() -> None:
    with pytest.raises(WebhookVerificationError, match=r"missing header.*webhook-signature"):
        verify_webhook(SECRET, BODY, vector_headers(webhook_signature=" "), now=SENT_AT)


def test_one_matching_signature_among_several_is_enough() -> None:
    header = " ".join(
        [
            "v1,bm90IHRoZSByaWdodCBzaWduYXR1cmUgYXQgYWxsIQ==",  # well-formed, wrong
            "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # another scheme: ignored
            "garbage",
            "v1,not*base64",
            SIGNATURE,
        ]
    )
    headers = vector_headers(webhook_signature=header)
    assert verify_webhook(SECRET, BODY, headers, now=SENT_AT) == {"test": 2432232314}


def test_malformed_signatures_only_are_a_verification_error() -> None:
    headers = vector_headers(webhook_signature="nonsense v1, v1,!!! ,v1")
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(SECRET, BODY, headers, now=SENT_AT)


@pytest.mark.parametrize("timestamp", ["soon", "1614265330.5", "-1614265330", "9" * 30])
def test_malformed_timestamp_is_a_verification_error(timestamp: str) -> None:
    headers = vector_headers(webhook_timestamp=timestamp)
    with pytest.raises(WebhookVerificationError, match="webhook-timestamp"):
        verify_webhook(SECRET, BODY, headers, now=SENT_AT)


def test_headers_in_any_case() -> None:
    upper = {key.upper(): value for key, value in vector_headers().items()}
    assert verify_webhook(SECRET, BODY, upper, now=SENT_AT) == {"test": 2432232314}
    raw = [(key.title().encode(), value.encode()) for key, value in vector_headers().items()]
    starlette = Headers(raw=[(key.lower(), value) for key, value in raw])
    assert verify_webhook(SECRET, BODY, starlette, now=SENT_AT) == {"test": 2432232314}


def test_signed_body_that_is_not_a_json_object_is_rejected() -> None:
    for body in (b"[1, 2]", b"not json"):
        headers = signed(body, datetime.now(UTC))
        with pytest.raises(WebhookVerificationError, match="JSON"):
            verify_webhook(SECRET, body, headers)


def test_non_utf8_body_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="UTF-8"):
        verify_webhook(SECRET, b"\xff\xfe", vector_headers(), now=SENT_AT)


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",  # empty
        "whsec_not base64 at all!",
        "whsec_MfKQ9r8G*YqrTwjUPD8ILPZIo2LaLaSw",
    ],
)
def test_bad_secret_fails_at_construction_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_") as excinfo:
        WebhookVerifier(secret)
    body = secret.removeprefix("whsec_")
    assert not body or body not in str(excinfo.value)


def test_a_secret_written_without_its_padding_still_verifies_its_webhooks() -> None:
    """Standard Webhooks secrets are sometimes copied without their trailing '=': the webhooks
    Replicate signs with the padded secret must verify all the same."""
    padded = "whsec_" + base64.b64encode(b"twenty-three byte key!!").decode()
    unpadded = padded.rstrip("=")
    assert unpadded != padded
    body = b'{"id": "abc", "status": "succeeded"}'
    headers = signed(body, datetime.now(UTC), secret=padded)
    assert WebhookVerifier(unpadded).verify(body, headers) == {"id": "abc", "status": "succeeded"}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        WebhookVerifier(unpadded).verify(body, signed(body, datetime.now(UTC)))


def test_secret_never_in_repr_or_errors() -> None:
    verifier = WebhookVerifier(SECRET)
    secret_part = SECRET.removeprefix("whsec_")
    assert secret_part not in repr(verifier)
    with pytest.raises(WebhookVerificationError) as excinfo:
        verifier.verify(b'{"test": 1}', vector_headers(), now=SENT_AT)
    assert secret_part not in str(excinfo.value)
    assert secret_part not in repr(excinfo.value)


async def test_webhook_sent_by_the_sandbox_verifies(sandbox_server: Any, webhook_receiver: Any):
    """End to end: the sandbox signs with its secret, fetched the way Conjure fetches it."""
    async with ReplicateClient(sandbox_server.url, sandbox_server.token) as client:
        secret = await client.default_webhook_secret()
        prediction = await client.create_prediction(
            model="black-forest-labs/flux-schnell",
            input={"prompt": "a red fox"},
            webhook=f"{webhook_receiver.url}/hook?job=1",
            webhook_events_filter=["completed"],
        )
    await asyncio.wait_for(webhook_receiver.arrived.wait(), timeout=5)
    received = webhook_receiver.received[0]
    payload = WebhookVerifier(secret).verify(received.body, received.headers)
    assert payload["id"] == prediction.id
    assert payload["status"] == "succeeded"
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        WebhookVerifier(secret).verify(received.body + b" ", received.headers)
