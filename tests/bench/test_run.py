"""`python -m bench --quick`: a short run of the whole benchmark against real processes
(gunicorn gateway, Django workers, the relay baseline, the Django Channels and the python-socketio
comparisons, embedded Redis), whose JSON must have every section with figures that agree with each other. No figure is asserted against a speed:
the figures are the benchmark's to print (docs/performance.md), not a test's to time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import KIB, TARGET_RTT_FACTOR, TARGET_RTT_SLACK_MS

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("connect", "connect_big_room", "rooms", "big_room", "lost_connections", "stray_frames")
RATIOS = ("rooms_sustained_deliveries_per_s", "big_room_sustained_deliveries_per_s", "round_trip_p50_at_100",
          "round_trip_p99_at_100", "fan_out_p99_at_100", "connect_per_s", "rss_per_connection")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[dict, dict, str]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--targets",
                           "real,baseline,channels,socketio",
                           "--json", str(out / "bench.json"), "--plot", str(out / "bench.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    return printed, json.loads((out / "bench.json").read_text()), done.stdout


def check_latencies(figures: dict) -> None:
    assert 0 < figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"]


def test_the_json_line_and_file_agree_and_have_every_section(run):
    printed, written, _ = run
    assert printed == written
    assert set(written["targets"]) == {"real", "baseline", "channels", "socketio"}
    for target in written["targets"].values():
        assert all(section in target for section in SECTIONS)
        assert target["lost_connections"] == 0
    assert set(written["ratios"]) == set(RATIOS)
    assert set(written["versus_channels"]) == set(RATIOS)
    assert set(written["versus_socketio"]) == set(RATIOS)
    assert [check["name"] for check in written["checks"]] == [
        "sustained deliveries/s, rooms of 10 >= 0.8x baseline",
        "round-trip p99 at 100 msg/s <= 2x baseline + 5 ms",
        "RSS per idle authenticated connection <= 16 KiB",
        "2,000 connections opened and authenticated in <= 2 s"]


def test_every_step_adds_up(run):
    _, result, _ = run
    for name, target in result["targets"].items():
        for scenario, recipients in (("rooms", 10), ("big_room", 50)):
            steps = target[scenario]["steps"]
            assert steps, (name, scenario)
            for step in steps:
                assert step["recipients_per_message"] == recipients
                assert step["messages"] == round(step["offered_per_s"] * step["seconds"])
                # Every delivered message reached each of its recipients once: the sender's own reply
                # included, deliveries are at least the messages fully delivered times the room size.
                assert step["deliveries"] >= step["delivered_messages"] * recipients
                assert step["deliveries"] <= step["deliveries_expected"] == step["messages"] * recipients
                assert step["frames_received"] >= step["deliveries"]
                check_latencies(step["round_trip_ms"])
                check_latencies(step["fan_out_ms"])
                if step["delivered_messages"] == step["messages"]:
                    # The last member hears of a message no sooner than its sender, message by message,
                    # and so quantile by quantile.
                    assert step["fan_out_ms"]["p99"] >= step["round_trip_ms"]["p99"]
                    assert step["fan_out_ms"]["p50"] >= step["round_trip_ms"]["p50"]
                assert step["cpu_pct"]["generator"] > 0 and step["cpu_pct"]["gateway"] > 0
                assert step["ok"] == (step["why"] == "")
            found = target[scenario]["sustained"]
            if found is not None:
                assert found["messages_per_s"] in [s["offered_per_s"] for s in steps if s["ok"]]
                assert found["deliveries_per_s"] == found["messages_per_s"] * recipients
        offered = [s["offered_per_s"] for s in target["rooms"]["steps"]]
        assert {50, 100} <= set(offered)


def test_connections_and_memory(run):
    _, result, _ = run
    for target in result["targets"].values():
        connect = target["connect"]
        assert connect["connections"] == 200 and connect["failed"] == 0
        assert connect["per_second"] == pytest.approx(200 / connect["seconds"], rel=0.01)
        assert connect["rss_after_bytes"] > connect["rss_before_bytes"] > 0
        assert 0 < connect["rss_per_connection_bytes"] < 1024 * KIB
        # The big room's connections come first, on the fresh stack, and are measured too.
        first = target["connect_big_room"]
        assert first["connections"] == 50 and first["failed"] == 0
        assert first["rss_after_bytes"] > first["rss_before_bytes"] > 0
        assert first["rss_per_connection_bytes"] == round(
            (first["rss_after_bytes"] - first["rss_before_bytes"]) / first["connections"])
    _, _, printed = run
    assert printed.count("connections (the big room's, on the fresh stack)") == 4
    # Channels and python-socketio have no bus workers: their server processes are all there is to measure.
    for name in ("channels", "socketio"):
        assert set(result["targets"][name]["connect"]["rss_per_connection_bytes_by_part"]) == {"gateway"}


def test_ratios_and_targets_are_computed_from_the_steps(run):
    _, result, _ = run
    real, baseline = result["targets"]["real"], result["targets"]["baseline"]
    real_100 = next(s for s in real["rooms"]["steps"] if s["offered_per_s"] == 100)
    base_100 = next(s for s in baseline["rooms"]["steps"] if s["offered_per_s"] == 100)
    ratio = real_100["round_trip_ms"]["p99"] / base_100["round_trip_ms"]["p99"]
    assert result["ratios"]["round_trip_p99_at_100"] == pytest.approx(ratio, abs=0.001)
    assert result["ratios"]["connect_per_s"] == pytest.approx(
        real["connect"]["per_second"] / baseline["connect"]["per_second"], abs=0.001)
    for name in ("channels", "socketio"):
        other, versus = result["targets"][name], result[f"versus_{name}"]
        assert versus["connect_per_s"] == pytest.approx(
            real["connect"]["per_second"] / other["connect"]["per_second"], abs=0.001)
        assert versus["rss_per_connection"] == pytest.approx(
            real["connect"]["rss_per_connection_bytes"] / other["connect"]["rss_per_connection_bytes"], abs=0.001)
        other_100 = next(s for s in other["rooms"]["steps"] if s["offered_per_s"] == 100)
        assert versus["round_trip_p99_at_100"] == pytest.approx(
            real_100["round_trip_ms"]["p99"] / other_100["round_trip_ms"]["p99"], abs=0.001)

    checks = {check["name"][:12]: check for check in result["checks"]}
    rtt = checks["round-trip p"]
    assert rtt["value"] == real_100["round_trip_ms"]["p99"]
    assert rtt["limit"] == pytest.approx(TARGET_RTT_FACTOR * base_100["round_trip_ms"]["p99"] + TARGET_RTT_SLACK_MS)
    assert rtt["pass"] == (rtt["value"] <= rtt["limit"])
    rss = checks["RSS per idle"]
    assert rss["value"] == pytest.approx(real["connect"]["rss_per_connection_bytes"] / KIB, abs=0.05)
    assert rss["pass"] == (rss["value"] <= 16)
    for check in result["checks"]:
        if check["name"].startswith("sustained") and check["value"] is None:
            continue  # a step of one side that never passed on a busy machine leaves no ratio
        assert isinstance(check["pass"], bool), check


def test_table_and_plot(run):
    _, result, stdout = run
    assert "== real / baseline" in stdout and "== real / channels" in stdout and "== targets" in stdout
    assert "== channels: the same chat on Django Channels" in stdout
    assert "== socketio: the same chat on python-socketio" in stdout and "== real / socketio" in stdout
    assert sum(stdout.count(verdict) for verdict in ("PASS ", "FAIL ", "n/a ")) >= 4
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "requirements-bench.txt" in result["plot_skipped"]
    else:
        assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_is_named_from_the_project_root_however_it_was_given(tmp_path, monkeypatch):
    # A relative --plot used to fail the run at its very end, after the measurements.
    from bench.run import shown_path

    monkeypatch.chdir(ROOT)
    assert shown_path(Path("docs/images/x.png")) == "docs/images/x.png"
    assert shown_path(ROOT / "docs" / "images" / "x.png") == "docs/images/x.png"
    monkeypatch.chdir(tmp_path)
    assert shown_path(Path("x.png")) == str(tmp_path.resolve() / "x.png")
