"""How a sandbox is set up: the one token it accepts, its webhook secret, its clock speed and the
size of the images it draws.

The secret is generated when not given so that every sandbox signs webhooks with a real
Standard Webhooks key, exactly as Replicate's `GET /v1/webhooks/default/secret` would hand out.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from bot.sandbox.render import LONG_SIDE

SECRET_PREFIX = "whsec_"


def generate_webhook_secret() -> str:
    """A fresh `whsec_<base64>` key (standard alphabet: Replicate's client splits on `_`)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass
class SandboxConfig:
    """Settings of one sandbox; `speed` multiplies every simulated duration (0 = instant)."""

    api_token: str = "r8_sandbox_token"
    webhook_secret: str | None = None
    speed: float = 1.0
    # Long side, in pixels, of an image at one megapixel (512, as the demo shows). The test suite
    # draws 128: a 512-pixel WebP cost it ~14 ms of CPU to draw, a 128-pixel one ~2.6.
    image_side: int = LONG_SIDE

    def __post_init__(self) -> None:
        if self.webhook_secret is None:
            self.webhook_secret = generate_webhook_secret()
        elif not self.webhook_secret.startswith(SECRET_PREFIX):
            raise ValueError("webhook_secret must look like 'whsec_<base64>'")
        if self.speed < 0:
            raise ValueError("speed must be >= 0")
        if self.image_side < 16:
            raise ValueError("image_side must be >= 16")

    @property
    def secret(self) -> str:
        """The webhook secret, never None once the config exists."""
        assert self.webhook_secret is not None
        return self.webhook_secret
