"""The per-gateway figures (bench/gateways.py), the direct-message scenario, `--gateways` and
`--scenario` on the command line, and their lines in the table: pure functions, no processes."""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest

from bench.gateways import Counters, gateway_figures, gateways_per_envelope, parse_counters, totals
from bench.load import DirectScenario
from bench.report import gateway_lines
from bench.run import MAX_GATEWAYS, parse_args
from websockets_gateway.metrics import GatewayMetrics


def test_the_counters_are_read_from_a_gateway_process_metrics():
    metrics = GatewayMetrics("gw-bench")
    for _ in range(7):
        metrics.envelopes_received.inc()
    for _ in range(3):
        metrics.frames_sent.inc()
    for _ in range(5):
        metrics.frames_received.inc()
    metrics.publish_round_trips.inc()
    counters = parse_counters(generate_latest(metrics.registry).decode())
    assert counters.envelopes_received == 7 and counters.frames_sent == 3
    assert counters.frames_received == 5 and counters.publish_round_trips == 1
    assert counters.cpu_seconds is not None and counters.cpu_seconds > 0  # this process's own, from /proc


def test_a_process_without_the_counters_reads_as_zero():
    assert parse_counters("# nothing here\n") == Counters(0.0, 0.0, None)


def test_figures_between_two_readings_per_process():
    before = [Counters(100, 1000, 1.0, 100, 90), Counters(100, 0, 2.0)]
    after = [Counters(300, 3000, 1.5, 300, 140), Counters(300, 200, 2.5)]
    first, second = gateway_figures(before, after, seconds=2.0)
    assert first == {"gateway": 1, "envelopes_received": 200, "frames_delivered": 2000, "envelopes_per_s": 100.0,
                     "frames_per_s": 1000.0, "envelopes_per_frame": 0.1, "cpu_s_per_1000_frames": 0.25,
                     "requests_per_round_trip": 4.0}
    assert second["requests_per_round_trip"] is None  # nothing published
    assert second["envelopes_per_frame"] == 1.0 and second["cpu_s_per_1000_frames"] == 2.5
    assert totals([first, second]) == {"envelopes_received": 400, "frames_delivered": 2200,
                                       "envelopes_per_frame": 0.182}


def test_a_process_that_delivered_nothing_has_no_ratio_and_no_cpu_without_a_reading():
    (figures,) = gateway_figures([Counters(0, 0, None)], [Counters(50, 0, None)], seconds=1.0)
    assert figures["envelopes_per_frame"] is None and figures["cpu_s_per_1000_frames"] is None
    assert figures["envelopes_received"] == 50


def test_how_many_processes_an_envelope_reached():
    # Eight processes subscribed to one shared topic: each reads every one of the 100 envelopes.
    everyone = gateway_figures([Counters(0, 0, None)] * 8, [Counters(100, 25, None)] * 8, seconds=1.0)
    assert gateways_per_envelope(everyone, 100) == 8.0
    # Delivery aimed at the processes holding a recipient: two of them per envelope.
    aimed = gateway_figures([Counters(0, 0, None)] * 8, [Counters(25, 25, None)] * 8, seconds=1.0)
    assert gateways_per_envelope(aimed, 100) == 2.0
    assert gateways_per_envelope(aimed, 0) is None


USERS = [{"id": pk, "username": f"user{pk}"} for pk in range(1, 11)]


def test_direct_pairs_cover_every_user_once_and_are_seeded():
    scenario = DirectScenario.paired(USERS)
    assert sorted(pk for pair in scenario.pairs for pk in pair) == list(range(1, 11))
    assert scenario.users == list(range(1, 11))
    assert DirectScenario.paired(USERS).pairs == scenario.pairs
    assert DirectScenario.paired(USERS, seed=2).pairs != scenario.pairs
    assert scenario.name == "5 pairs in direct messages (10 users)"


def test_a_direct_plan_goes_round_the_pairs_and_each_partner_takes_turns():
    scenario = DirectScenario("pairs", [(1, 2), (3, 4)], {pk: f"user{pk}" for pk in range(1, 5)})
    plan = scenario.plan(6, "t", connected={1, 2, 3, 4})
    assert [planned.sender for planned in plan] == [1, 3, 2, 4, 1, 3]
    frames = [json.loads(planned.frame) for planned in plan]
    assert [frame["to"] for frame in frames] == ["user2", "user4", "user1", "user3", "user2", "user4"]
    assert all(frame["action"] == "direct_message" and frame["uuid"] == planned.frame_uuid
               for frame, planned in zip(frames, plan))
    assert {planned.recipients for planned in plan} == {2}
    # A pair with a member not connected sends nothing.
    assert {planned.sender for planned in scenario.plan(4, "t", connected={1, 2, 3})} == {1, 2}


def test_gateways_on_the_command_line():
    args, _ = parse_args(["--gateways", "8", "--workers", "8"])
    assert args.gateways == 8 and args.workers == 8 and args.scenario == "rooms"
    args, _ = parse_args([])
    assert args.gateways is None and args.gateway_processes == 2
    args, _ = parse_args(["--gateway-processes", "1"])
    assert args.gateway_processes == 1


@pytest.mark.parametrize("argv", [
    ["--gateways", "2", "--gateway-processes", "2"],
    ["--gateways", "0"],
    ["--gateways", str(MAX_GATEWAYS + 1)],
    ["--gateways", "2", "--targets", "real,channels"],
    ["--gateways", "2", "--gateway", "ws://127.0.0.1:1/ws", "--fixtures", "f.json"],
])
def test_gateways_refuses_what_it_cannot_measure(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_the_direct_scenario_measures_the_real_workers_only():
    args, _ = parse_args(["--scenario", "direct", "--gateways", "8"])
    assert args.targets == ["real"] and args.scenario == "direct"


def test_the_table_shows_each_process_at_the_sustained_step():
    def step(rate, gateways):
        return {"offered_per_s": rate, "messages": rate, "gateways": gateways,
                "gateways_total": totals(gateways), "gateways_per_envelope": gateways_per_envelope(gateways, rate)}

    two = gateway_figures([Counters(0, 0, 0.0)] * 2, [Counters(100, 500, 0.1)] * 2, seconds=1.0)
    section = {"steps": [step(100, two), step(200, two)], "sustained": {"messages_per_s": 100}}
    lines = gateway_lines(section)
    assert lines[0].startswith("   per gateway process at 100 msg/s")
    assert len(lines) == 4
    assert "0.200" in lines[1] and "0.200" in lines[2]
    assert lines[3] == ("   all: 0.200 envelopes per delivered frame; each envelope reached 2.0 of 2 gateway "
                        "processes (200 received / 100 published)")
    # No step passed: the highest one; no per-gateway figures (one gunicorn of several processes): nothing.
    assert gateway_lines({**section, "sustained": None})[0].startswith("   per gateway process at 200 msg/s")
    assert gateway_lines({"steps": [{"offered_per_s": 50, "gateways": []}], "sustained": None}) == []
