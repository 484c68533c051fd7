"""Language models priced per token, as Replicate bills its official ones.

The built-in prices are Replicate's: Llama 3 8B $0.05 / $0.25 a million input / output tokens,
70B $0.65 / $2.75, DeepSeek R1 $3.75 / $10. For "why is the sky blue?" (20 bytes):
- the ceiling reads every byte as a token plus 512 for the template (532 input tokens) and the
  whole `max_tokens` (512 for Llama, 2048 for R1);
- the estimate reads a token for four bytes (5) and a typical answer (300, R1 1200);
- the sandbox reports 5 input tokens (the prompt's words) and the tokens it streamed (26, R1 48
  with its reasoning), which is what a run is charged.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from bot.catalog import CatalogError, Price, default_catalog, load_catalog
from bot.catalog.specs import TEMPLATE_TOKENS, TokenBudget
from bot.commands.conjure import models_text
from bot.commands.parsing import parse_invocation
from bot.jobs import JobService
from bot.money import usd_to_micros
from bot.quotas.windows import month_window
from bot.replicate.client import Prediction
from bot.sandbox.outputs import llama_tokens
from storage.jobs import user_subject
from storage.models import Job, JobStatus, utcnow
from tests.harness import all_jobs, running_conjure, settle

QUESTION = "why is the sky blue?"
PRICES = {  # dollars a million input tokens, a million output tokens
    "llama-3-8b": (Decimal("0.05"), Decimal("0.25")),
    "llama-3-70b": (Decimal("0.65"), Decimal("2.75")),
    "deepseek-r1": (Decimal("3.75"), Decimal("10")),
}
# model: (estimate, ceiling, charged for the sandbox's answer), in micro-dollars
FIGURES = {
    "llama-3-8b": (76, 155, 7),  # 5x0.05+300x0.25; 532x0.05+512x0.25; 5x0.05+26x0.25
    "llama-3-70b": (829, 1754, 75),  # 5x0.65+300x2.75; 532x0.65+512x2.75; 5x0.65+26x2.75
    "deepseek-r1": (12_019, 22_475, 499),  # 5x3.75+1200x10; 532x3.75+2048x10; 5x3.75+48x10
}


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "conjure.toml"
    path.write_text(text, encoding="utf-8")
    return load_catalog(path)


def ask(model: str, extra: str = ""):  # type: ignore[no-untyped-def]
    return parse_invocation(default_catalog(), "ask", f"{QUESTION} --model {model}{extra}")


def charged(model: str, input_tokens: int, output_tokens: int) -> int:
    per_in, per_out = PRICES[model]
    return usd_to_micros((per_in * input_tokens + per_out * output_tokens) / 1_000_000)


# --------------------------------------------------------------------------- conjure.toml


def test_the_builtin_language_models_are_priced_per_token_not_per_second() -> None:
    catalog = default_catalog()
    for key, (per_in, per_out) in PRICES.items():
        price = catalog.models[key].price
        assert (price.per_second_usd, price.per_output_usd) == (None, None), key
        assert Decimal(str(price.per_million_input_tokens_usd)) == per_in
        assert Decimal(str(price.per_million_output_tokens_usd)) == per_out
    assert catalog.models["deepseek-r1"].price.max_output_tokens == 2048
    assert catalog.models["whisper"].price.per_second_usd == 0.0012  # hardware time stays


def test_the_loader_accepts_token_prices(tmp_path: Path) -> None:
    catalog = load(
        tmp_path,
        """
[models.mixtral]
ref = "mistralai/mixtral-8x7b-instruct-v0.1"
kind = "text"
price_per_million_input_tokens = 0.3
price_per_million_output_tokens = 1
max_output_tokens = 1000
expected_output_tokens = 250

[models.llama-3-70b]
price_per_million_output_tokens = 3
price_per_million_input_tokens = 0
""",
    )
    assert catalog.models["mixtral"].price == Price(
        per_million_input_tokens_usd=0.3,
        per_million_output_tokens_usd=1,
        max_output_tokens=1000,
        expected_output_tokens=250,
    )
    # A new price replaces the old; the built-in's answer length stays.
    assert catalog.models["llama-3-70b"].price == Price(
        per_million_input_tokens_usd=0, per_million_output_tokens_usd=3, max_output_tokens=512
    )


def test_a_new_price_of_another_kind_replaces_the_token_price(tmp_path: Path) -> None:
    price = load(tmp_path, "[models.llama-3-8b]\nprice_per_second = 0.0023\n").models["llama-3-8b"]
    assert price.price.per_second_usd == 0.0023 and not price.price.per_token
    assert price.build_input({"prompt": "hi"}) == {"prompt": "hi"}  # no max_tokens forced


@pytest.mark.parametrize(
    ("text", "at", "message"),
    [
        (
            "price_per_million_input_tokens = 0.1",
            "models.m.price_per_million_output_tokens",
            "missing: set it with price_per_million_input_tokens",
        ),
        (
            "price_per_million_output_tokens = 0.1",
            "models.m.price_per_million_input_tokens",
            "missing: set it with price_per_million_output_tokens",
        ),
        ("", "models.m.price_per_output", "price_per_million_input_tokens"),
        (
            "price_per_million_input_tokens = -1\nprice_per_million_output_tokens = 1",
            "models.m.price_per_million_input_tokens",
            "at least 0",
        ),
        (
            'price_per_million_input_tokens = 1\nprice_per_million_output_tokens = "1"',
            "models.m.price_per_million_output_tokens",
            "number",
        ),
        (
            "price_per_million_input_tokens = 1\nprice_per_million_output_tokens = nan",
            "models.m.price_per_million_output_tokens",
            "number",
        ),
        (
            "price_per_million_input_tokens = 1\nprice_per_million_output_tokens = 1\n"
            "max_output_tokens = 0",
            "models.m.max_output_tokens",
            "must be at least 1, not 0",
        ),
        (
            "price_per_million_input_tokens = 1\nprice_per_million_output_tokens = 1\n"
            "max_output_tokens = 51.5",
            "models.m.max_output_tokens",
            "integer",
        ),
        (
            "price_per_million_input_tokens = 1\nprice_per_million_output_tokens = 1\n"
            "max_output_tokens = 100\nexpected_output_tokens = 200",
            "models.m.expected_output_tokens",
            "must be at most max_output_tokens (100): an answer is stopped there",
        ),
    ],
)
def test_the_loader_refuses_bad_token_prices(
    tmp_path: Path, text: str, at: str, message: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, f'[models.m]\nref = "o/m"\nkind = "text"\n{text}\n')
    assert str(caught.value).startswith(f"{tmp_path / 'conjure.toml'}: {at}: ")
    assert message in str(caught.value)


def test_the_example_file_prices_llama_70b_per_token() -> None:
    root = Path(__file__).resolve().parent.parent
    price = load_catalog(root / "conjure.example.toml").models["llama-3-70b"].price
    assert (price.per_million_input_tokens_usd, price.per_million_output_tokens_usd) == (
        0.65,
        2.75,
    )
    assert price.max_output_tokens == 1024


# --------------------------------------------------------------------------- the figures


@pytest.mark.parametrize("model", list(FIGURES))
def test_estimate_ceiling_and_charge_of_a_question(model: str) -> None:
    estimate, ceiling, answer = FIGURES[model]
    invocation = ask(model)
    max_tokens = invocation.model.price.max_output_tokens
    assert invocation.input == {"prompt": QUESTION, "max_tokens": max_tokens}  # always sent
    assert invocation.estimate_micros() == estimate
    assert invocation.ceiling_micros() == ceiling
    assert invocation.deadline_seconds() is None  # max_tokens bounds it, not the clock
    assert ceiling == charged(model, len(QUESTION) + TEMPLATE_TOKENS, max_tokens)
    tokens = invocation.model.token_budget(invocation.input)
    outputs = len(llama_tokens(invocation.input, thinks=model == "deepseek-r1"))
    actual = invocation.model.price.actual_micros(
        1, 2.5, tokens=tokens, input_tokens=5, output_tokens=outputs
    )
    assert actual == answer == charged(model, 5, outputs)


def test_max_tokens_given_bounds_the_ceiling_and_the_estimate() -> None:
    invocation = ask("llama-3-70b", " --max-tokens 100")
    assert invocation.input["max_tokens"] == 100
    # 532 x 0.65 + 100 x 2.75 = 620.8; 5 x 0.65 + 100 x 2.75 (a typical 300 cut at 100) = 278.25
    assert (invocation.ceiling_micros(), invocation.estimate_micros()) == (621, 279)


def test_every_text_byte_of_the_input_counts_toward_the_ceiling() -> None:
    model = default_catalog().models["llama-3-8b"]
    prompt = "é" * 1000  # 2 bytes each: 2000 tokens at most, about 500 usually
    tokens = model.token_budget(model.build_input({"prompt": prompt, "system_prompt": "Be terse"}))
    assert tokens == TokenBudget(text_bytes=2008, max_output_tokens=512)
    assert (tokens.max_input_tokens, tokens.typical_input_tokens) == (2520, 502)


def test_a_missing_count_is_charged_at_its_bound_and_an_aborted_run_costs_nothing() -> None:
    price = default_catalog().models["llama-3-70b"].price
    tokens = TokenBudget(text_bytes=20, max_output_tokens=512)
    ceiling = price.ceiling_micros(1, tokens)
    assert price.actual_micros(1, 1.0, tokens=tokens) == ceiling == 1754
    # 5 x 0.65 + 512 x 2.75 = 1411.25: the answer's count is missing, the prompt's is known.
    assert price.actual_micros(1, 1.0, tokens=tokens, input_tokens=5) == 1412
    assert price.actual_micros(1, 1.0, tokens=tokens, input_tokens=5, output_tokens="26") == 1412
    assert price.actual_micros(0, None, tokens=tokens, ran=False) == 0
    # An overrun (a template longer than allowed) is charged as billed.
    assert price.actual_micros(1, 1.0, tokens=tokens, input_tokens=2000, output_tokens=512) == 2708


@pytest.mark.parametrize(
    ("status", "metrics", "micros"),
    [
        ("succeeded", {"predict_time": 1, "input_token_count": 5, "output_token_count": 26}, 75),
        ("succeeded", {"predict_time": 1}, 1754),  # counts not reported: the ceiling
        ("succeeded", None, 1754),
        ("canceled", {"predict_time": 1, "input_token_count": 5, "output_token_count": 3}, 12),
        ("failed", {"predict_time": 0.5}, 1754),  # it ran, for how many tokens is unknown
        ("failed", None, 0),  # never ran: nothing billed
        ("aborted", {"input_token_count": 5, "output_token_count": 0}, 0),
    ],
)
def test_what_a_job_is_charged_from_its_prediction(
    status: str, metrics: dict[str, object] | None, micros: int
) -> None:
    invocation = ask("llama-3-70b")
    job = Job(model="llama-3-70b", input=invocation.input, estimated_micros=1754)
    prediction = Prediction.model_validate({"id": "abc", "status": status, "metrics": metrics})
    service = SimpleNamespace(catalog=default_catalog())
    assert JobService._actual_cost(service, job, prediction) == micros  # type: ignore[arg-type]


def test_a_per_token_price_without_the_input_is_refused_not_guessed() -> None:
    price = default_catalog().models["llama-3-8b"].price
    with pytest.raises(ValueError, match="TokenBudget"):
        price.ceiling_micros(1)


def test_a_renamed_max_tokens_is_sent_under_the_models_name(tmp_path: Path) -> None:
    model = load(
        tmp_path,
        """
[models.m]
ref = "o/m"
kind = "text"
price_per_million_input_tokens = 1
price_per_million_output_tokens = 2
max_output_tokens = 64
rename = { max_tokens = "max_new_tokens" }
""",
    ).models["m"]
    sent = model.build_input({"prompt": "abcd"})
    assert sent == {"prompt": "abcd", "max_new_tokens": 64}
    assert model.price.expected_output_tokens == 64  # the default 300 is past its longest
    assert model.token_budget(model.build_input({"prompt": "abcd", "max_tokens": 8})) == (
        TokenBudget(4, 8)
    )


def test_models_show_token_prices() -> None:
    text = models_text(SimpleNamespace(catalog=default_catalog()))  # type: ignore[arg-type]
    assert (
        "llama-3-70b (text): Meta Llama 3 70B Instruct; $0.65/M input tokens, "
        "$2.75/M output tokens, answers up to 512 tokens"
    ) in text
    assert "$0.05/M input tokens, $0.25/M output tokens, answers up to 512 tokens" in text
    assert "$3.75/M input tokens, $10.00/M output tokens, answers up to 2048 tokens" in text


@pytest.mark.parametrize("count", [-1, 1.5, True, "12", 10**12])
def test_a_prediction_with_a_nonsense_token_count_is_refused(count: object) -> None:
    with pytest.raises(ValidationError, match="output_token_count"):
        Prediction.model_validate(
            {"id": "abc", "status": "succeeded", "metrics": {"output_token_count": count}}
        )
    ok = {"input_token_count": 5, "output_token_count": 26.0, "predict_time": 1}
    Prediction.model_validate({"id": "abc", "status": "succeeded", "metrics": ok})


# --------------------------------------------------------------------------- end to end


async def month_counter(conjure, user: str = "you"):  # type: ignore[no-untyped-def]
    subject = user_subject("console", "local", user)
    return await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)


@pytest.mark.parametrize("model", ["llama-3-70b", "deepseek-r1"])
async def test_an_ask_reserves_its_ceiling_and_is_charged_its_token_counts(
    model: str, sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    _, ceiling, answer = FIGURES[model]
    sandbox = sandbox_server.sandbox
    sandbox.faults.pause_after_tokens = 3  # holds mid-answer, so the reservation can be seen
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        running = asyncio.create_task(conjure.console.run_line(f"/ask {QUESTION} --model {model}"))
        while not any(len(p.get("output") or []) >= 3 for p in sandbox.predictions.values()):
            await asyncio.sleep(0.01)
        [job] = await all_jobs(conjure.runtime.store)
        held = await month_counter(conjure)
        assert job.estimated_micros == ceiling
        assert held is not None and held.reserved_micros == ceiling and held.spent_micros == 0
        sandbox.faults.pause_after_tokens = 0
        outcome = await running
        assert outcome.ok, outcome.error
        await settle(conjure, sandbox_server)

        job = await conjure.runtime.store.get(job.id)
        assert job is not None and job.job_status is JobStatus.SUCCEEDED
        prediction = sandbox.predictions[job.prediction_id]
        max_tokens = conjure.runtime.catalog.models[model].price.max_output_tokens
        assert prediction["input"]["max_tokens"] == max_tokens  # sent, though none was given
        assert "deadline" not in prediction  # no Cancel-After: max_tokens bounds the cost
        metrics = prediction["metrics"]
        assert metrics["output_token_count"] == len(prediction["output"])  # what it streamed
        used = metrics["input_token_count"], metrics["output_token_count"]
        assert job.actual_micros == charged(model, *used) == answer
        money = await month_counter(conjure)
        assert money is not None
        assert money.spent_micros == answer and money.reserved_micros == 0


async def test_an_ask_with_max_tokens_sends_it_and_is_cut_there(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line(f"/ask {QUESTION} --max-tokens 10")
        assert outcome.ok, outcome.error
        await settle(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)
        prediction = sandbox_server.sandbox.predictions[job.prediction_id]
        assert prediction["input"]["max_tokens"] == 10
        assert prediction["metrics"]["output_token_count"] == 10
        # 532 x 0.05 + 10 x 0.25 = 29.1 reserved; 5 x 0.05 + 10 x 0.25 = 2.75 charged
        assert (job.estimated_micros, job.actual_micros) == (30, 3)


async def test_a_budget_below_the_ceiling_refuses_the_ask_before_anything_runs(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    # R1's estimate ($0.012019) fits $0.02, its ceiling ($0.022475) does not.
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_usd_per_month=0.02
    ) as conjure:
        outcome = await conjure.console.run_line(f"/ask {QUESTION} --model deepseek-r1")
        assert not outcome.ok and outcome.error is not None
        assert "(about $0.012019, up to $0.022475" in outcome.error
        assert "would pass your monthly budget of $0.02" in outcome.error
        assert sandbox_server.sandbox.create_count == 0
        money = await month_counter(conjure)
        assert money is None or (money.spent_micros, money.reserved_micros) == (0, 0)
        # The same question to a cheaper model fits.
        assert (await conjure.console.run_line(f"/ask {QUESTION} --model llama-3-70b")).ok
