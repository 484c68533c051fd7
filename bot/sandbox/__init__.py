"""A Replicate-compatible API on loopback for the offline demo, the tests and the benchmarks.

Built-in fake models render real (small) images and answer deterministically; faults can be
injected to rehearse throttling, outages, failed predictions, lost answers and lost webhooks.
"""

from bot.sandbox.app import create_sandbox_app
from bot.sandbox.config import SandboxConfig
from bot.sandbox.faults import Faults, HttpFault
from bot.sandbox.server import run_sandbox
from bot.sandbox.state import Sandbox
from bot.sandbox.webhooks import WebhookDelivery

__all__ = [
    "Faults",
    "HttpFault",
    "Sandbox",
    "SandboxConfig",
    "WebhookDelivery",
    "create_sandbox_app",
    "run_sandbox",
]
