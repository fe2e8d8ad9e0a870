"""The benchmark's output: real/baseline ratios and the issue's targets, the table for people, the plot."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bench.load import NOISY_PCT

logger = logging.getLogger("bench")

KIB = 1024
# The targets ("Performance: a benchmark that proves the speed").
TARGET_SUSTAINED_RATIO = 0.8          # sustained deliveries/s, rooms of 10, real ≥ 0.8 × baseline
TARGET_RTT_FACTOR, TARGET_RTT_SLACK_MS = 2.0, 5.0   # round-trip p99 at 100 msg/s ≤ 2 × baseline + 5 ms
TARGET_RSS_PER_CONNECTION = 16 * KIB  # per idle authenticated connection
TARGET_CONNECTIONS, TARGET_CONNECT_SECONDS = 2000, 2.0  # opened and authenticated in ≤ 2 s
RTT_TARGET_LOAD = 100.0               # msg/s at which round trips are compared


def _ratio(real: float | None, baseline: float | None) -> float | None:
    if real is None or baseline is None or baseline == 0:
        return None
    return round(real / baseline, 3)


def step_at(target: dict[str, Any], scenario: str, rate: float) -> dict[str, Any] | None:
    for step in target.get(scenario, {}).get("steps", []):
        if step["offered_per_s"] == rate:
            return step
    return None


def _p(step: dict[str, Any] | None, kind: str, which: str) -> float | None:
    return None if step is None else step[kind][which]


# The scenarios a target's result may hold, in the table's order.
SCENARIOS = ("rooms", "big_room", "direct")
# How each target is titled in the table.
LABELS = {
    "real": "real: Django workers",
    "baseline": "baseline: bare relay workers (no Django, no database)",
    "channels": ("channels: the same chat on Django Channels (uvicorn, channels_redis; bench/channels_chat.py; "
                 "gw: its uvicorn processes, which do all the work)"),
    "socketio": ("socketio: the same chat on python-socketio (gunicorn's aiohttp worker, its Redis message "
                 "queue; bench/socketio_chat.py; gw: its processes, which do all the work)"),
}
# The ratios of the real stack to each of the others, as the result names them.
VERSUS = (("ratios", "real / baseline"), ("versus_channels", "real / channels"),
          ("versus_socketio", "real / socketio"))


def _sustained(target: dict[str, Any], scenario: str, key: str) -> float | None:
    found = target.get(scenario, {}).get("sustained")
    return None if found is None else found[key]


def ratios_of(real: dict[str, Any], other: dict[str, Any]) -> dict[str, float | None]:
    """Real's figures divided by another target's, measured in the same run."""
    real_100, other_100 = step_at(real, "rooms", RTT_TARGET_LOAD), step_at(other, "rooms", RTT_TARGET_LOAD)
    return {
        "rooms_sustained_deliveries_per_s": _ratio(_sustained(real, "rooms", "deliveries_per_s"),
                                                   _sustained(other, "rooms", "deliveries_per_s")),
        "big_room_sustained_deliveries_per_s": _ratio(_sustained(real, "big_room", "deliveries_per_s"),
                                                      _sustained(other, "big_room", "deliveries_per_s")),
        "round_trip_p50_at_100": _ratio(_p(real_100, "round_trip_ms", "p50"), _p(other_100, "round_trip_ms", "p50")),
        "round_trip_p99_at_100": _ratio(_p(real_100, "round_trip_ms", "p99"), _p(other_100, "round_trip_ms", "p99")),
        "fan_out_p99_at_100": _ratio(_p(real_100, "fan_out_ms", "p99"), _p(other_100, "fan_out_ms", "p99")),
        "connect_per_s": _ratio(real.get("connect", {}).get("per_second"),
                                other.get("connect", {}).get("per_second")),
        "rss_per_connection": _ratio(real.get("connect", {}).get("rss_per_connection_bytes"),
                                     other.get("connect", {}).get("rss_per_connection_bytes")),
    }


def compare(targets: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The real/baseline ratios and the issue's targets with PASS/FAIL (None: not measured)."""
    real, baseline = targets.get("real", {}), targets.get("baseline", {})
    real_100, base_100 = step_at(real, "rooms", RTT_TARGET_LOAD), step_at(baseline, "rooms", RTT_TARGET_LOAD)
    ratios = ratios_of(real, baseline)

    checks = []
    ratio = ratios["rooms_sustained_deliveries_per_s"]
    checks.append({"name": "sustained deliveries/s, rooms of 10 >= 0.8x baseline", "value": ratio,
                   "limit": TARGET_SUSTAINED_RATIO, "unit": "x",
                   "pass": None if ratio is None else ratio >= TARGET_SUSTAINED_RATIO})
    real_p99, base_p99 = _p(real_100, "round_trip_ms", "p99"), _p(base_100, "round_trip_ms", "p99")
    limit = None if base_p99 is None else round(TARGET_RTT_FACTOR * base_p99 + TARGET_RTT_SLACK_MS, 2)
    checks.append({"name": "round-trip p99 at 100 msg/s <= 2x baseline + 5 ms", "value": real_p99,
                   "limit": limit, "unit": "ms",
                   "pass": None if real_p99 is None or limit is None else real_p99 <= limit})
    rss = real.get("connect", {}).get("rss_per_connection_bytes")
    checks.append({"name": "RSS per idle authenticated connection <= 16 KiB",
                   "value": None if rss is None else round(rss / KIB, 1), "limit": TARGET_RSS_PER_CONNECTION / KIB,
                   "unit": "KiB", "pass": None if rss is None else rss <= TARGET_RSS_PER_CONNECTION})
    connect = real.get("connect")
    if connect and connect.get("per_second"):
        # Fewer connections than 2,000 (--quick): the same rate, as the time 2,000 would take.
        seconds = (connect["seconds"] if connect["connections"] == TARGET_CONNECTIONS
                   else round(TARGET_CONNECTIONS / connect["per_second"], 3))
        passed = seconds <= TARGET_CONNECT_SECONDS and connect["failed"] == 0
    else:
        seconds, passed = None, None
    checks.append({"name": "2,000 connections opened and authenticated in <= 2 s", "value": seconds,
                   "limit": TARGET_CONNECT_SECONDS, "unit": "s", "pass": passed,
                   "extrapolated": bool(connect) and connect.get("connections") != TARGET_CONNECTIONS})
    return ratios, checks


# -- the table ---------------------------------------------------------------------------------

def _fmt(value: Any, width: int, digits: int = 1) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.{digits}f}"
    return f"{value:>{width}}"


STEP_HEADER = (f"{'offered':>8} {'deliv/s':>8} {'sent':>6} {'done':>6} "
               f"{'rtt p50':>8} {'p90':>7} {'p99':>7} {'fan p50':>8} {'p90':>7} {'p99':>7} {'lag99':>6} "
               f"{'gen%':>5} {'gw%':>5} {'wk%':>5} {'rds%':>5} {'oth%':>5}  result")


def _rss_text(connect: dict[str, Any]) -> str:
    """RSS per connection, in all and by part."""
    return f"{connect['rss_per_connection_bytes'] / KIB:.1f} KiB" + "".join(
        f", {part} {value / KIB:.1f}" for part, value in connect["rss_per_connection_bytes_by_part"].items())


def step_line(step: dict[str, Any]) -> str:
    rtt, fan, cpu = step["round_trip_ms"], step["fan_out_ms"], step["cpu_pct"]
    result = "ok" if step["ok"] else f"FAIL: {step['why']}"
    if step["generator_bound"]:
        result += " (generator-bound)"
    if step.get("noisy"):
        result += " (noisy)"
    if step.get("warmup"):
        result = "warm-up"
    return (f"{step['offered_per_s']:>8g} {step['offered_deliveries_per_s']:>8.0f} {step['messages']:>6} "
            f"{step['delivered_messages']:>6} "
            f"{_fmt(rtt['p50'], 8)} {_fmt(rtt['p90'], 7)} {_fmt(rtt['p99'], 7)} "
            f"{_fmt(fan['p50'], 8)} {_fmt(fan['p90'], 7)} {_fmt(fan['p99'], 7)} "
            f"{_fmt(step['send_lag_ms']['p99'], 6)} "
            f"{_fmt(cpu.get('generator'), 5, 0)} {_fmt(cpu.get('gateway'), 5, 0)} "
            f"{_fmt(cpu.get('workers'), 5, 0)} {_fmt(cpu.get('redis'), 5, 0)} {_fmt(cpu.get('others'), 5, 0)}"
            f"  {result}")


def _check_value(check: dict[str, Any]) -> str:
    if check["value"] is None:
        return "not measured"
    text = f"{check['value']:g} {check['unit']}".replace(" x", "x")
    if check["unit"] == "ms" and check["limit"] is not None:
        text += f" (limit {check['limit']:g} ms)"
    if check.get("extrapolated"):
        text += " (from the rate; fewer connections)"
    return text


def table(result: dict[str, Any]) -> str:
    config = result["config"]
    gateways = (f"{config['gateways']} gateway(s) of one process" if config.get("gateways")
                else f"{config['gateway_processes']} gateway process(es)")
    stack = (f"the running stack at {config['gateway']}" if config.get("gateway") else
             f"{config['workers']} workers, {gateways}, database {config['database']}, Redis {config['redis']}")
    lines = [f"chat benchmark: {stack}",
             (f"open loop, {config['step_seconds']:g} s per step (drain {config['drain_seconds']:g} s); "
             f"sustained = every message delivered to every member, round-trip and fan-out p99 <= "
             f"{config['bound_ms']:g} ms. Latencies in ms from the scheduled send time; "
             f"CPU in % of one core (gen: this load generator, gw: gateway, wk: workers, rds: Redis, "
             f"oth: all other processes of this shared {config['cores']}-core machine; "
             f"(noisy): oth > {NOISY_PCT:g}%).")]
    for name, target in result["targets"].items():
        lines.append("")
        lines.append(f"== {LABELS.get(name, name)}")
        first = target.get("connect_big_room")
        if first and first.get("rss_per_connection_bytes") is not None:
            lines.append(f"first {first['connections']} connections (the big room's, on the fresh stack): "
                         f"{first['seconds']:.2f} s; RSS per connection {_rss_text(first)} (one-time costs included)")
        connect = target.get("connect")
        if connect:
            rss_text = "not measured" if connect.get("rss_per_connection_bytes") is None else _rss_text(connect)
            cpu = ", ".join(f"{name} {value:.0f}%" for name, value in connect["cpu_pct"].items())
            lines.append(f"{connect['connections']} connections opened and authenticated in {connect['seconds']:.2f} s "
                         f"({connect['per_second']:.0f}/s, {connect['concurrency']} at a time, {connect['failed']} "
                         f"failed; CPU {cpu}); RSS per idle authenticated connection: {rss_text}")
        for scenario in SCENARIOS:
            section = target.get(scenario)
            if not section:
                continue
            lines.append(f"-- {section['label']}")
            lines.append(STEP_HEADER)
            lines.extend(step_line(step) for step in section["steps"])
            found = section.get("sustained")
            if found:
                note = " (generator-bound)" if found.get("generator_bound") else ""
                lines.append(f"   sustained: {found['messages_per_s']:g} messages/s = "
                             f"{found['deliveries_per_s']:,.0f} deliveries/s{note}")
                step = next(s for s in section["steps"] if s["offered_per_s"] == found["messages_per_s"])
                costs = ", ".join(f"{name} {value:.2f}" for name, value in step["cpu_ms_per_message"].items()
                                  if name not in ("machine", "others", "steal"))
                lines.append(f"   CPU ms per message at that rate: {costs}")
            else:
                lines.append("   sustained: none of the steps passed")
            lines.extend(gateway_lines(section))
    for key, title in VERSUS:
        if result.get(key):
            lines.append("")
            lines.append(f"== {title}")
            for name, value in result[key].items():
                lines.append(f"{name:<40} {'-' if value is None else f'{value:.2f}x'}")
    lines.append("")
    lines.append("== targets")
    for check in result["checks"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[check["pass"]]
        lines.append(f"{verdict:<5} {check['name']:<55} {_check_value(check)}")
    if result.get("plot"):
        lines.append("")
        lines.append(f"plot: {result['plot']}")
    elif result.get("plot_skipped"):
        lines.append("")
        lines.append(f"plot skipped: {result['plot_skipped']}")
    return "\n".join(lines)


def gateway_step(section: dict[str, Any]) -> dict[str, Any] | None:
    """The step whose per-gateway figures the table shows: the sustained one, else the highest
    (None without per-gateway figures)."""
    steps = [step for step in section["steps"] if step.get("gateways")]
    if not steps:
        return None
    found = section.get("sustained")
    chosen = [step for step in steps if found and step["offered_per_s"] == found["messages_per_s"]]
    return chosen[0] if chosen else max(steps, key=lambda step: step["offered_per_s"])


def gateway_lines(section: dict[str, Any]) -> list[str]:
    """Each gateway process's envelopes and frames at one step, and how many processes an envelope reached."""
    step = gateway_step(section)
    if step is None:
        return []
    lines = [f"   per gateway process at {step['offered_per_s']:g} msg/s: envelopes received/s, frames "
             f"delivered/s, envelopes per delivered frame, CPU s per 1000 delivered frames, requests per "
             f"publish round trip"]
    for gateway in step["gateways"]:
        lines.append(f"   {gateway['gateway']:>4} {gateway['envelopes_per_s']:>10,.0f} {gateway['frames_per_s']:>10,.0f} "
                     f"{_fmt(gateway['envelopes_per_frame'], 8, 3)} {_fmt(gateway['cpu_s_per_1000_frames'], 8, 3)} "
                     f"{_fmt(gateway.get('requests_per_round_trip'), 7, 2)}")
    total = step["gateways_total"]
    lines.append(f"   all: {_fmt(total['envelopes_per_frame'], 0, 3).strip()} envelopes per delivered frame; "
                 f"each envelope reached {step['gateways_per_envelope']} of {len(step['gateways'])} gateway "
                 f"processes ({total['envelopes_received']} received / {step['messages']} published)")
    return lines


# -- the plot ----------------------------------------------------------------------------------

def plot(result: dict[str, Any], path: Path) -> str | None:
    """Latency against offered load, real vs baseline (and channels and socketio, if measured), as a PNG;
    the reason if it cannot be made."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed: .venv/bin/pip install -r requirements-bench.txt"
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import NullFormatter

    scenarios = [s for s in SCENARIOS if any(s in t for t in result["targets"].values())]
    figure, axes = pyplot.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.8), squeeze=False)
    styles = {"real": ("tab:red", "-"), "baseline": ("tab:blue", "--"), "channels": ("tab:green", "-."),
              "socketio": ("tab:purple", ":")}
    series = (("round_trip_ms", "p50", "o", "round trip p50"), ("round_trip_ms", "p99", "s", "round trip p99"),
              ("fan_out_ms", "p50", "^", "fan-out p50"), ("fan_out_ms", "p99", "v", "fan-out p99"))
    for axis, scenario in zip(axes[0], scenarios):
        label = ""
        rates: set[float] = set()
        for name, target in result["targets"].items():
            section = target.get(scenario)
            if not section:
                continue
            label = section["label"]
            steps = sorted((s for s in section["steps"] if not s.get("warmup")), key=lambda s: s["offered_per_s"])
            rates.update(s["offered_per_s"] for s in steps)
            color, line = styles.get(name, ("black", ":"))
            for kind, which, marker, what in series:
                points = [(s["offered_per_s"], s[kind][which]) for s in steps if s[kind][which] is not None]
                if not points:
                    continue
                alpha = 1.0 if which == "p99" else 0.55
                axis.plot([x for x, _ in points], [y for _, y in points], linestyle=line, marker=marker,
                          color=color, alpha=alpha, label=f"{name}: {what}")
            found = section.get("sustained")
            if found:
                axis.axvline(found["messages_per_s"], color=color, linestyle=line, linewidth=0.8, alpha=0.6)
        axis.axhline(result["config"]["bound_ms"], color="grey", linewidth=0.8, linestyle=":")
        axis.set_xscale("log")
        axis.set_yscale("log")
        # The offered loads themselves as the ticks, in plain numbers.
        axis.set_xticks(sorted(rates), [f"{rate:g}" for rate in sorted(rates)], fontsize=8)
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("offered load, new_message / s (open loop)")
        axis.set_ylabel("latency from the scheduled send, ms")
        axis.set_title(label, fontsize=10)
        axis.grid(True, which="both", alpha=0.25)
        axis.legend(fontsize=7, loc="upper left")
    config = result["config"]
    stack = (config["gateway"] if config.get("gateway") else
             f"{config['workers']} workers, {config['gateway_processes']} gateway process(es), {config['database']}")
    figure.suptitle(f"new_message latency vs offered load: {stack} "
                    f"(vertical lines: sustained rate; dotted: {config['bound_ms']:g} ms bound)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return None
