"""Per-gateway-process figures of a benchmark step, from each process's /metrics: envelopes read
from the bus, frames delivered, CPU; the work spent per delivered frame and how many gateway
processes each reply envelope reached."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

ENVELOPES = "chat_gateway_bus_envelopes_received"
FRAMES = "chat_gateway_frames_sent"
REQUESTS = "chat_gateway_frames_received"
ROUND_TRIPS = "chat_gateway_bus_publish_round_trips"
CPU = "process_cpu_seconds"
COUNTED = (ENVELOPES, FRAMES, REQUESTS, ROUND_TRIPS, CPU)
# A scrape slower than this is a gateway too busy to answer: the step gets no per-gateway figures.
SCRAPE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Counters:
    """One gateway process's counters at one moment (totals since it started)."""

    envelopes_received: float
    frames_sent: float
    cpu_seconds: float | None
    frames_received: float = 0.0
    publish_round_trips: float = 0.0


def parse_counters(text: str) -> Counters:
    """The counters of one process's /metrics text (a port of one process: one series each)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in COUNTED:
            for sample in family.samples:
                if sample.name in (f"{family.name}_total", family.name):
                    found[family.name] = found.get(family.name, 0.0) + sample.value
    return Counters(found.get(ENVELOPES, 0.0), found.get(FRAMES, 0.0), found.get(CPU),
                    found.get(REQUESTS, 0.0), found.get(ROUND_TRIPS, 0.0))


def _ratio(numerator: float, denominator: float, digits: int = 3) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


def gateway_figures(before: Sequence[Counters], after: Sequence[Counters], seconds: float) -> list[dict[str, Any]]:
    """Each gateway process's figures between two readings: envelopes received and frames delivered
    (in all and per second), envelopes per delivered frame (the work a frame cost: 0.1 when every
    envelope a process reads goes to 10 of its connections, 1 when it goes to one, more when most
    go to none of them), CPU seconds per 1,000 delivered frames, and the client frames (each a
    request published) per publish round trip to Redis (batching.py gathers those that come together)."""
    figures = []
    for index, (start, end) in enumerate(zip(before, after), 1):
        envelopes = end.envelopes_received - start.envelopes_received
        frames = end.frames_sent - start.frames_sent
        cpu = (None if start.cpu_seconds is None or end.cpu_seconds is None
               else end.cpu_seconds - start.cpu_seconds)
        requests = end.frames_received - start.frames_received
        round_trips = end.publish_round_trips - start.publish_round_trips
        figures.append({
            "gateway": index,
            "envelopes_received": int(envelopes),
            "frames_delivered": int(frames),
            "envelopes_per_s": round(envelopes / seconds, 1),
            "frames_per_s": round(frames / seconds, 1),
            "envelopes_per_frame": _ratio(envelopes, frames),
            "cpu_s_per_1000_frames": None if cpu is None else _ratio(cpu * 1000, frames),
            "requests_per_round_trip": _ratio(requests, round_trips, 2),
        })
    return figures


def gateways_per_envelope(figures: Sequence[dict[str, Any]], envelopes_published: int) -> float | None:
    """How many gateway processes each envelope reached, on average: the envelopes all of them read
    over the envelopes the workers published (one per request of the step). Every process that
    subscribes to a shared topic reads every envelope on it; delivery aimed at the processes
    that hold a recipient brings it down towards the recipients' processes."""
    return _ratio(sum(gateway["envelopes_received"] for gateway in figures), envelopes_published, 2)


def totals(figures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """All the processes together: envelopes per delivered frame over all of them."""
    envelopes = sum(gateway["envelopes_received"] for gateway in figures)
    frames = sum(gateway["frames_delivered"] for gateway in figures)
    return {"envelopes_received": envelopes, "frames_delivered": frames,
            "envelopes_per_frame": _ratio(envelopes, frames)}


async def scrape(session: aiohttp.ClientSession, urls: Sequence[str]) -> list[Counters] | None:
    """Every process's counters now, in the order of `urls`; None if one did not answer."""
    async def one(url: str) -> Counters:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)) as response:
            response.raise_for_status()
            return parse_counters(await response.text())

    try:
        return list(await asyncio.gather(*(one(url) for url in urls)))
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
