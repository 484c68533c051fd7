"""The benchmark's pure helpers (bench/): process trees and their CPU, round-robin commands,
webhooks to the URL each job gave, the scaling efficiency and the aims."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from bench import report, scaling, speed
from bench.phases import cpu_ms_per, median_round
from bench.procs import cpu_used, tree, tree_cpu
from bench.slash import SlashSender
from bench.webhooks import sign_all

SPAWNS_A_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(30)\n"
)


def test_tree_finds_children_and_their_cpu() -> None:
    parent = subprocess.Popen([sys.executable, "-c", SPAWNS_A_CHILD], stdout=subprocess.PIPE)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while child not in tree(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree(parent.pid) == [parent.pid, child]
        reading = tree_cpu({"serve": parent.pid})
        assert set(reading) == {"serve", f"serve/{child}"}
        assert all(seconds >= 0 for seconds in reading.values())
    finally:
        parent.kill()
        parent.wait()
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_cpu_used_counts_newcomers_from_zero_and_drops_the_gone() -> None:
    before = {"serve": 1.0, "serve/10": 0.5, "serve/11": 0.2}
    after = {"serve": 1.5, "serve/10": 0.75, "serve/12": 0.25}
    assert cpu_used(before, after) == {"serve": 0.5, "serve/10": 0.25, "serve/12": 0.25}


def test_cpu_ms_per_item_each_process_and_total() -> None:
    assert cpu_ms_per({"serve": 1.0, "serve-2": 0.5}, 500) == {
        "serve": 2.0,
        "serve-2": 1.0,
        "total": 3.0,
    }
    assert cpu_ms_per({"serve": 1.0}, 0) == {"serve": None, "total": None}


def test_commands_go_round_robin_over_instances() -> None:
    sender = SlashSender(["http://a:1", "http://b:2/"], "http://slack:3", "secret")
    assert [sender.events_url(i) for i in range(3)] == [
        "http://a:1/slack/events",
        "http://b:2/slack/events",
        "http://a:1/slack/events",
    ]
    assert SlashSender("http://a:1", "http://slack:3", "s").events_url(7) == (
        "http://a:1/slack/events"
    )


def test_webhooks_go_to_the_url_the_job_gave() -> None:
    prediction = {
        "id": "p1",
        "status": "starting",
        "input": {"prompt": "x"},
        "webhook": "http://127.0.0.1:4002/webhooks/replicate?job=j7",
    }
    other = {**prediction, "webhook": None}
    signed = sign_all("whsec_" + "QUJD" * 8, [prediction, other], ["http://file"])
    assert [s.url for s in signed] == [prediction["webhook"]]
    assert json.loads(signed[0].body)["status"] == "succeeded"


def test_two_rounds_of_scaling_run_1_2_2_1_and_average_each() -> None:
    assert scaling.order(1) == [1, 2]
    assert scaling.order(2) == [1, 2, 2, 1]
    runs = [
        {"processes": 2, "complete": True, "cpu_ms_per_webhook": 4.0, "at_rate": {"rate": 80.0}},
        {"processes": 2, "complete": False, "cpu_ms_per_webhook": 5.0, "at_rate": {"rate": 80.0}},
    ]
    assert scaling.average(runs) == {
        "processes": 2,
        "complete": False,
        "cpu_ms_per_webhook": 4.5,
        "at_rate": {"rate": 80.0},
    }


def test_per_process_figures_of_runs_with_other_pids_are_averaged_busiest_first() -> None:
    runs = [
        {"by_process": {"serve": 0.0, "serve/11": 3.0, "serve/12": 5.0}},
        {"by_process": {"serve": 0.0, "serve/21": 4.0, "serve/22": 2.0}},
    ]
    assert scaling.average(runs) == {
        "by_process": {"process 1": 4.5, "process 2": 2.5, "process 3": 0.0}
    }


def test_efficiency_put_at_the_same_speed() -> None:
    """A second run that met the VM 10 % slower spent 10 % more CPU on the same work."""
    one = {"speed_gauge_ms": {"before": 200.0, "after": 200.0}}
    two = {"speed_gauge_ms": {"before": 210.0, "after": 230.0}}
    assert scaling.at_the_same_speed(0.9, one, two) == 0.99
    assert scaling.at_the_same_speed(0.9, one, {}) is None


def test_efficiency_of_the_second_process() -> None:
    one = {"delivered_per_cpu_second": 200.0}
    assert scaling.efficiency(one, {"delivered_per_cpu_second": 190.0}) == 0.95
    assert scaling.efficiency(one, {"delivered_per_cpu_second": None}) is None


def test_aims_of_issue_15() -> None:
    results = {
        "ack": {"p99_ratio": 1.1},
        "cpu_ms_per_command": 9.0,
        "webhooks": {"delivered_per_second": 350.0, "cpu_ms_per_webhook": 1.5},
        "scaling": {"efficiency": 0.92},
        "burst": {
            "commands": 3,
            "delivered": 3,
            "ack": {"n": 3, "failed": 0, "max": 2999.0},
            "last_image_over_model_s": 2.5,
        },
    }
    met = report.aims_met(results)
    assert met["ack_p99_ratio"] is True
    assert met["cpu_ms_per_command"] is False
    assert met["cpu_ms_per_webhook"] is True
    assert met["webhooks_per_second"] is True
    assert met["efficiency"] is True
    assert met["burst_ack_max_s"] is True
    assert met["burst_last_image_over_model_s"] is False
    assert met["overhead_p99_ms"] is None and met["inflight_rss_mib"] is None

    results["burst"]["ack"] = {"n": 2, "failed": 1, "max": 10.0}
    results["burst"]["last_image_over_model_s"] = 1.0
    results["burst"]["delivered"] = 2  # one image never came
    met = report.aims_met(results)
    assert met["burst_ack_max_s"] is False
    assert met["burst_last_image_over_model_s"] is False
    assert report.aims_met({})["burst_ack_max_s"] is None


def test_the_table_shows_burst_scaling_and_each_process() -> None:
    results = {
        "args": {"db": "postgres", "n": 10, "c": 2, "workers": 1, "instances": 2},
        "machine": {
            "nproc": 2,
            "cpu": "x",
            "python": "3.12",
            "speed_gauge_ms": {"before": 216.3, "after": 250.0},
        },
        "cpu_ms_per_command": 6.0,
        "cpu_ms_per_command_by_process": {"serve": 3.1, "serve-2": 2.9},
        "burst": {
            "commands": 500,
            "model_seconds": 2.0,
            "ack": {"n": 500, "failed": 0, "p50": 100.0, "p99": 900.0, "max": 1200.0},
            "delivered": 500,
            "first_command_to_last_image_s": 3.5,
            "last_image_over_model_s": 1.5,
            "cpu_seconds_others": {"sandbox": 4.0, "fake_slack": 1.0},
        },
        "scaling": {
            "scale_by": "instances",
            "webhooks": 3000,
            "1": {
                "complete": True,
                "delivered_per_second": 150.0,
                "cpu_ms_per_webhook": 5.0,
                "at_rate": {"rate": 80.0, "complete": True, "cpu_ms_per_webhook": 4.5},
            },
            "2": {"complete": False, "delivered_per_second": 16.0, "cpu_ms_per_webhook": 5.2},
            "efficiency": 0.96,
            "efficiency_at_full_load": 0.85,
        },
    }
    results["aims_met"] = report.aims_met(results)
    text = report.table(results)
    assert "1 worker(s) x 2 instance(s)" in text
    assert "speed gauge 216.3 / 250 ms" in text
    assert "serve-2" in text and "efficiency of the second process" in text
    assert "at 80/s: delivered/s, CPU ms/webhook" in text
    assert "the same at full load (2 shared cores)" in text
    assert "first command → last image s" in text and "met" in text
    assert text.count("INCOMPLETE") == 1

    results["args"]["scaling_only"] = True
    only = report.table(results)
    assert "efficiency of the second process" in only and "burst" not in only


def test_webhook_rounds_report_the_median_round_whole_with_every_rounds_figure() -> None:
    rounds = [
        {"cpu_ms_per_webhook": 2.7, "delivered_per_second": 360.0, "fired": 3000},
        {"cpu_ms_per_webhook": 1.7, "delivered_per_second": 570.0, "fired": 3000},
        {"cpu_ms_per_webhook": 2.1, "delivered_per_second": 470.0, "fired": 2999},
    ]
    chosen = median_round(rounds)
    assert chosen["cpu_ms_per_webhook"] == 2.1 and chosen["delivered_per_second"] == 470.0
    assert chosen["fired"] == 2999  # the median round's own figures, not a mix
    assert [r["cpu_ms_per_webhook"] for r in chosen["rounds"]] == [2.7, 1.7, 2.1]
    assert median_round(rounds[:2])["cpu_ms_per_webhook"] == 1.7  # the lower middle
    unmeasured = median_round([{"cpu_ms_per_webhook": None, "delivered_per_second": 0}])
    assert unmeasured["cpu_ms_per_webhook"] is None

    results = {
        "args": {"db": "sqlite", "n": 10, "c": 2},
        "machine": {"nproc": 2, "cpu": "x", "python": "3.11", "speed_gauge_ms": {}},
        "webhooks": chosen,
    }
    results["aims_met"] = report.aims_met(results)
    text = report.table(results)
    assert "each of 3 rounds: CPU ms per webhook" in text and "2.7 / 1.7 / 2.1" in text


def test_the_speed_gauge_reads_a_steady_workload() -> None:
    assert 10 < speed._one() < 5_000  # CPU milliseconds of the fixed workload


async def test_webhooks_fired_at_a_rate_are_spread_over_time() -> None:
    """--scaling-rate: the i-th webhook leaves i / rate seconds after the first."""
    from aiohttp import web

    from bench.webhooks import SignedWebhook, fire

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        hooks = [SignedWebhook(f"http://127.0.0.1:{port}/hook", b"{}", {}) for _ in range(6)]
        fired = await fire(hooks, 4, deadline=time.monotonic() + 30, rate=20.0)
    finally:
        await runner.cleanup()
    sent = sorted(f.sent_at for f in fired)
    assert [f.status for f in fired] == [200] * 6
    assert sent[-1] - sent[0] >= 5 / 20 - 0.01  # 6 webhooks at 20/s: a quarter of a second
