"""Budget alerts whose sender dies mid-post. The outbox (storage.quotas) was claimed by marking
an alert sent before posting it: a sender killed (kill -9, OOM, a host gone) between its claim
and its post left the alert marked sent, and the admins never heard that a budget hit 80%.
Through the real app, the sandbox and the fake Slack on loopback, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import OperationalError

import storage.quotas
from storage.engine import create_engine, write
from storage.models import BudgetAlert, utcnow
from storage.quotas import ALERT_LEASE, QuotaStore
from tests.fakes.slack_api import FakeSlack, SlackCall, serve_fake_slack
from tests.slack_harness import SlackConjure, running_slack_conjure
from tests.test_slack_streaming import eventually

ADMINS = "C0ADMINS"
BUDGET = {"conjure_user_usd_per_month": 0.0035}  # one $0.003 image: 85%, so one alert (80%)
SENDS = {**BUDGET, "conjure_alert_channels": f"slack:{ADMINS}"}
HELD = 0.5  # seconds the fake holds the doomed post, long enough to kill its sender first


def admin_posts(fake: FakeSlack) -> list[SlackCall]:
    """Posts to the admins' channel that reached Slack, landed or not."""
    calls = fake.calls_to("chat.postMessage")
    return [call for call in calls if call.args.get("channel") == ADMINS]


def told(fake: FakeSlack) -> list[str]:
    """What the admins' channel shows."""
    return [message.text for message in fake.channel_messages(ADMINS)]


async def an_alert_due(sandbox: Any, database_url: str, fake: FakeSlack) -> None:
    """Ada spends 85% of her month's budget on an instance with no admin channel set: the 80%
    alert waits in the outbox."""
    async with running_slack_conjure(sandbox, database_url, fake=fake, **BUDGET) as conjure:
        await conjure.slash("/imagine", "an expensive hat")
        await conjure.settle(sandbox)
    assert told(fake) == []


async def a_sender_dies_mid_post(sandbox: Any, database_url: str, fake: FakeSlack) -> None:
    """An instance that sends alerts starts (its recovery sends the outbox), claims the alert
    and is killed while its post is on the wire: the post never lands, its claim stays."""
    fake.delays["chat.postMessage"] = HELD
    fake.cannot_post[ADMINS] = "channel_not_found"  # the held post is dropped, not shown
    async with running_slack_conjure(sandbox, database_url, fake=fake, **SENDS) as doomed:
        await eventually(lambda: admin_posts(fake))
        for task in list(doomed.service._tasks):
            task.cancel()  # kill -9: nothing of the sender runs on, not even its except
        await doomed.service.wait_idle()
    [post] = admin_posts(fake)
    await eventually(lambda: post.error is not None)  # Slack dropped it
    fake.delays.clear()
    del fake.cannot_post[ADMINS]
    assert told(fake) == []


def the_clock_moves_on(monkeypatch: pytest.MonkeyPatch, leases: int = 1) -> None:
    """The outbox's clock a little more than `leases` leases later (not a wait of minutes)."""
    ahead = ALERT_LEASE * leases + timedelta(seconds=1)
    monkeypatch.setattr(storage.quotas, "utcnow", lambda: utcnow() + ahead)


@contextlib.asynccontextmanager
async def a_dead_senders_alert(sandbox: Any, database_url: str) -> AsyncIterator[FakeSlack]:
    """A fake Slack, and in the database an alert its dead sender claimed and never posted."""
    async with serve_fake_slack() as fake:
        await an_alert_due(sandbox, database_url, fake)
        await a_sender_dies_mid_post(sandbox, database_url, fake)
        yield fake


async def recovered(conjure: SlackConjure) -> None:
    """The sweeper's recovery duty, once (it sends the outbox)."""
    await conjure.service.recover()
    await conjure.service.wait_idle()


async def test_an_alert_whose_sender_died_mid_post_is_sent_once_its_claim_lapses(
    sandbox_server, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender was killed after claiming the alert and before its post landed. A fresh
    instance leaves it alone while the claim may still be live, then, once the claim has
    lapsed, posts it to the admins' channel: once, and not again later."""
    async with a_dead_senders_alert(sandbox_server, database_url) as fake:
        async with running_slack_conjure(
            sandbox_server, database_url, fake=fake, **SENDS
        ) as takeover:
            await recovered(takeover)  # its start-up recovery ran too
            assert told(fake) == []  # the claim may belong to a sender still posting

            the_clock_moves_on(monkeypatch)
            await recovered(takeover)
            [alert] = told(fake)
            assert alert.startswith("Budget alert: <@U0ADA> has used 80% of the monthly budget")

            the_clock_moves_on(monkeypatch, leases=3)  # its own claim lapsed long ago
            await recovered(takeover)
            assert told(fake) == [alert]


async def test_two_instances_taking_over_a_dead_senders_alert_at_once_post_it_once(
    sandbox_server, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two live instances find the dead sender's lapsed claim at the same moment: one takes
    the alert over and posts it, the other leaves it to that one."""
    async with a_dead_senders_alert(sandbox_server, database_url) as fake:
        async with (
            running_slack_conjure(sandbox_server, database_url, fake=fake, **SENDS) as first,
            running_slack_conjure(sandbox_server, database_url, fake=fake, **SENDS) as second,
        ):
            the_clock_moves_on(monkeypatch)
            fake.delays["chat.postMessage"] = 0.2  # the winner is still posting as the other looks
            await asyncio.gather(first.service.send_alerts(), second.service.send_alerts())
            await asyncio.gather(first.service.wait_idle(), second.service.wait_idle())
            fake.delays.clear()
            [alert] = told(fake)
            assert alert.startswith("Budget alert: <@U0ADA> has used 80%")
            assert len(admin_posts(fake)) == 2  # the dead sender's, and one takeover


async def test_an_alert_slack_refused_is_sent_by_the_next_sweep_not_a_lease_later(
    sandbox_server, database_url: str
) -> None:
    """A failure the sender sees (the bot not yet in the admins' channel) gives the alert
    back at once: the next sweep sends it, without waiting out a lease."""
    async with serve_fake_slack() as fake:
        await an_alert_due(sandbox_server, database_url, fake)
        fake.cannot_post[ADMINS] = "not_in_channel"
        async with running_slack_conjure(
            sandbox_server, database_url, fake=fake, **SENDS
        ) as sender:
            await eventually(lambda: admin_posts(fake))
            await sender.service.wait_idle()
            assert told(fake) == []
            del fake.cannot_post[ADMINS]  # an admin invites the bot
            await recovered(sender)
            [alert] = told(fake)
            assert alert.startswith("Budget alert: <@U0ADA> has used 80%")


async def test_a_sender_whose_lease_lapsed_does_not_give_back_its_successors(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender's post outlasts its lease and then fails: giving the alert back must not clear
    the lease of the sender that took it over meanwhile, or a third would post it too."""
    engine = create_engine(database_url)
    try:
        store = QuotaStore(engine)
        alert = BudgetAlert(
            scope="user",
            subject="slack:T0FAKE:U0ADA",
            period="month:2026-12",
            threshold=80,
            spent_micros=8,
            limit_micros=10,
        )
        async with write(engine) as conn:
            await conn.execute(insert(BudgetAlert).values(**alert.model_dump(exclude={"id"})))
        [due] = await store.unsent_alerts()
        first = await store.lease_alert(due.id or 0)
        assert first is not None
        the_clock_moves_on(monkeypatch)  # the first sender's post outlasts its lease
        second = await store.lease_alert(due.id or 0)
        assert second is not None and second != first
        await store.release_alert(due.id or 0, first)  # the first's post fails, late
        assert await store.unsent_alerts() == []  # the second still holds it
        await store.release_alert(due.id or 0, second)
        assert [a.id for a in await store.unsent_alerts()] == [due.id]
    finally:
        await engine.dispose()


async def test_an_alert_posted_while_the_database_blinks_is_recorded_and_not_sent_again(
    sandbox_server, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alert reaches the admins' channel and the database does not answer its record for
    a moment (a restart): the record is tried again, so the alert is not posted a second time
    once its lease lapses."""
    async with serve_fake_slack() as fake:
        await an_alert_due(sandbox_server, database_url, fake)
        async with running_slack_conjure(
            sandbox_server, database_url, fake=fake, **SENDS
        ) as sender:
            store = sender.service.quotas.store
            alert_sent = store.alert_sent
            blinks = [OperationalError("UPDATE budget_alert", {}, Exception("server closed"))]

            async def during_a_restart(alert_id: int) -> None:
                if blinks:
                    raise blinks.pop()
                await alert_sent(alert_id)

            monkeypatch.setattr(store, "alert_sent", during_a_restart)
            await recovered(sender)  # sends the outbox (its start-up recovery may have)
            await eventually(lambda: told(fake))
            await sender.service.wait_idle()
            assert not blinks  # the record met the restart

            the_clock_moves_on(monkeypatch, leases=2)
            await recovered(sender)
            [alert] = told(fake)
            assert alert.startswith("Budget alert: <@U0ADA> has used 80%")
