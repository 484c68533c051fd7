"""slack-bolt's logging, without request bodies.

bolt logs the whole body of a request whose signature it rejects, at INFO ("Invalid request
signature detected (signature: ..., timestamp: ..., body: ...)"): the legacy verification token,
the response_url, whatever an attacker sent, newlines and all (a forged log line; 314 MB for one
300 MiB body). It also quotes bodies when no listener matches a request, when a middleware does
not call next(), and in its sample error handlers. Conjure checks signatures before bolt sees a
request (adapters.slack.verify), so the first should not happen any more; this filter makes sure
that none of them reaches a log, whatever bolt's version does.

bolt copies the filters of the logger passed as `AsyncApp(logger=...)` to every logger it makes;
`bolt_logger()` is that logger, and `quiet_bolt_loggers()` adds the filter to bolt's loggers
that already exist.
"""

from __future__ import annotations

import logging

from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

from bot.rejections import Rejections

__all__ = ["WithoutRequestBodies", "bolt_logger", "quiet_bolt_loggers"]

BOLT = "slack_bolt"
log = logging.getLogger(__name__)

# The start of each bolt message that carries a request body, and what is logged instead, at
# most once a minute (bot.rejections; None: nothing at all).
_QUOTES_THE_BODY: dict[str, str | None] = {
    "Invalid request signature detected": "bolt refused a Slack request: invalid signature",
    "Unhandled request (": "bolt has no listener for a Slack request",
    "A global middleware (": "a bolt middleware neither called next() nor answered",
    "request body:": None,
    "Request body:": None,
}


class WithoutRequestBodies(logging.Filter):
    """Drops bolt's records that quote a request body (each is noted instead, by its reason and
    at a bounded rate), and escapes line breaks in the rest, so that nothing a request carries
    reaches a log or can forge a line in it."""

    def __init__(self) -> None:
        super().__init__()
        self.rejections = Rejections(log)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: drop it rather than guess what it holds
            return False
        # bolt reads SLACK_BOT_TOKEN from the environment itself and then warns, on every start,
        # that the client we pass (which carries that same token) takes precedence: not news.
        if message == warning_client_prioritized_and_token_skipped():
            return False
        for start, reason in _QUOTES_THE_BODY.items():
            if message.startswith(start):
                if reason is not None:
                    self.rejections.note(reason, level=record.levelno)
                return False
        if message.startswith("Failed to connect (error: "):
            # slack_sdk's Socket Mode retry, every 10 s while Slack is away: one line each (the
            # message names the error), not a traceback each.
            record.exc_info, record.exc_text = None, None
        if "\n" in message or "\r" in message:
            record.msg = message.replace("\r", "\\r").replace("\n", "\\n")
            record.args = None
        return True


_FILTER = WithoutRequestBodies()


def bolt_logger() -> logging.Logger:
    """The logger to pass as `AsyncApp(logger=...)`: bolt copies its filter to its own."""
    logger = logging.getLogger(BOLT)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def quiet_bolt_loggers() -> None:
    """Add the filter to every bolt logger that exists by now (bolt makes them as it builds an
    app; one made before `bolt_logger()` was passed would not have copied it)."""
    for name in list(logging.root.manager.loggerDict):
        if name == BOLT or name.startswith(BOLT + "."):
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
