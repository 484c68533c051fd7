"""`--no` on /imagine: a negative prompt for the models that take one (sdxl's `negative_prompt`),
and a plain refusal that names such a model for those that do not (flux would silently ignore
it), with nothing created or charged. Through the real command path against the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.adapter import CommandRequest, Reply
from bot.catalog import CatalogError, load_catalog
from bot.quotas.windows import day_window, month_window
from bot.sandbox import HttpFault
from storage.jobs import user_subject
from storage.models import utcnow
from tests.harness import Conjure, running_conjure, settle

REFUSED_ON_FLUX = (
    "flux-schnell has no negative prompt input, so --no would be ignored. "
    "sdxl has one: add --model sdxl."
)


async def imagine(conjure: Conjure, text: str, **options: Any) -> Reply:
    request = CommandRequest(
        "console", "local", "terminal", "you", "imagine", text, options=options or None
    )
    return await conjure.runtime.commands.handle(request)


async def nothing_charged(conjure: Conjure, sandbox_server: Any) -> None:
    """No prediction at the sandbox, no job recorded, no job or money counted."""
    assert sandbox_server.sandbox.predictions == {}
    assert sandbox_server.sandbox.create_count == 0
    assert await conjure.runtime.store.count() == 0
    subject = user_subject("console", "local", "you")
    for window in (day_window(utcnow()), month_window(utcnow())):
        counter = await conjure.runtime.store.counter("user", subject, window.key)
        assert counter is None or (counter.jobs, counter.reserved_micros) == (0, 0)


async def test_no_reaches_sdxl_as_its_negative_prompt(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        # Typed at the console (as in Slack), and as Discord's typed options.
        line = '/imagine a red fox --model sdxl --no "blurry, text"'
        typed = await conjure.console.run_line(line)
        assert typed.ok and len(typed.files) == 1, typed.error
        discord = await imagine(conjure, "a blue fox", model="sdxl", no="watermark")
        assert discord.job is not None, discord.text
        await settle(conjure, sandbox_server)
    inputs = sorted(
        (p["input"] for p in sandbox_server.sandbox.predictions.values()),
        key=lambda i: i["prompt"],
    )
    assert [(i["prompt"], i["negative_prompt"]) for i in inputs] == [
        ("a blue fox", "watermark"),
        ("a red fox", "blurry, text"),
    ]


async def test_no_on_flux_is_refused_naming_sdxl_and_nothing_is_charged(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine a red fox --no snow")
        assert not outcome.ok and outcome.error is not None
        text = outcome.error
        assert text.startswith(REFUSED_ON_FLUX), text
        # The usage line is flux-schnell's own: without the option it lacks.
        assert "Usage: /imagine <prompt> [--ar" in text and "--no" not in text.split("Usage:")[1]
        flux_dev = await imagine(conjure, "a red fox --model flux-dev --no snow")
        assert str(flux_dev.text).startswith("flux-dev has no negative prompt input")
        await nothing_charged(conjure, sandbox_server)


async def test_without_schemas_the_catalog_knows_which_models_take_no(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    # Replicate cannot say what the models take: the catalog's list of them (sdxl) decides.
    sandbox_server.sandbox.faults.http.append(
        HttpFault(status=503, count=1000, method="GET", path_prefix="/v1/models/")
    )
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        refused = await imagine(conjure, "a red fox --no snow")
        assert str(refused.text).startswith(REFUSED_ON_FLUX), refused.text
        assert "--no" not in str(refused.text).split("Usage:")[1]  # flux's usage, offline too
        await nothing_charged(conjure, sandbox_server)
        ran = await imagine(conjure, "a red fox --no snow --model sdxl")
        assert ran.job is not None, ran.text
        await settle(conjure, sandbox_server)
    [prediction] = sandbox_server.sandbox.predictions.values()
    assert prediction["input"]["negative_prompt"] == "snow"


def test_an_option_lists_only_known_models_and_forgets_disabled_ones(tmp_path: Path) -> None:
    path = tmp_path / "conjure.toml"
    path.write_text("[models.sdxl]\nenabled = false\n", encoding="utf-8")
    assert load_catalog(path).commands["imagine"].option("no").models == ()  # type: ignore[union-attr]
    path.write_text(
        '[[commands.imagine.options]]\nname = "no"\nmodels = ["sdxl", "sdxxl"]\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match=r"options\.no\.models\[1\]: unknown model 'sdxxl'"):
        load_catalog(path)
