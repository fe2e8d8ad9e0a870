"""`python -m bench`: how fast the chat is, measured against a bare relay on the same path.

Starts two stacks side by side on embedded defaults (each its own embedded Redis; one fresh SQLite
file; or --redis-url, --database-url), each a gunicorn gateway with N workers: "real", the Django
workers, and "baseline", bare relay workers (bench/relay_worker.py: no Django, no database, the
same replies and envelopes). An open-loop load generator (bench/load.py) measures on both,
their steps interleaved: `new_message` round-trip and fan-out latency at fixed offered loads; the
highest sustained rate, by a ramp that doubles the load until it breaks, for rooms of 10 members
and for one room of 200; the RSS of an idle authenticated connection and the handshake +
authenticate rate of 2,000 connections. It prints a table, real/baseline ratios and the issue's
targets with PASS/FAIL, then one JSON line (also written to --json PATH), and draws a plot
(docs/images/bench-latency.png; needs matplotlib: requirements-bench.txt). `--targets
real,baseline,channels,socketio` adds the same chat on Django Channels (uvicorn and channels_redis;
bench/channels_chat.py) and on python-socketio (bench/socketio_chat.py), and real/their ratios. `--gateways N`
runs N gateways of one process each, the clients spread over them, with each process's envelopes,
frames and CPU per step (bench/gateways.py); `--scenario direct` measures direct messages between
pairs of users instead of the rooms; `--redis-cluster` runs each target on a local Redis Cluster of
three masters (scripts/cluster.py) instead of one Redis. With --gateway URL --fixtures PATH it measures a stack that is
already running instead. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import resource
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from bench.load import DirectScenario, LoadGenerator, Plannable, Scenario, StepResult, Watched
from bench.report import compare, plot, ratios_of, table
from scripts.cluster import MASTERS, ClusterUnavailable, LocalCluster
from scripts.stack import ROOT, Stack, StackError, subscribed, wait_for

logger = logging.getLogger("bench")

DEFAULT_PLOT = ROOT / "docs" / "images" / "bench-latency.png"
# The gateway's defaults are for browsers; a benchmark's clients must not meet them: its load is
# spread over many connections, but a step can still put a few hundred frames on one.
BENCH_ENV = {
    # As deployed: DEBUG off (with it on, Django records every query of a worker in memory), which
    # wants a SECRET_KEY of its own; nothing here is signed with it.
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "LOG_LEVEL": "WARNING",
    "RATE_LIMIT": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "MAX_IN_FLIGHT": "100000",
    "MAX_CONNECTIONS": "100000",
    "SEND_QUEUE_SIZE": "100000",
    "AUTH_TIMEOUT": "60",
    "ALLOWED_ORIGINS": "*",
}
# File descriptors: one per client here, one per client in the gateway, plus the stack's own.
FDS_PER_CONNECTION, FDS_SPARE = 1, 512
# --gateways: each is a gunicorn master and its process, a log and a port; past this, a machine
# running the whole benchmark measures its own crowding.
MAX_GATEWAYS = 16


@dataclass(frozen=True)
class Profile:
    users: int                 # users in the rooms of `room_size` (each in one room): the connections measured
    room_size: int
    big_room: int              # members of the one big room (users of their own)
    loads: tuple[float, ...]   # fixed offered loads, rooms of `room_size`, msg/s: the ramp's first steps
    rooms_max: float           # the ramp stops doubling past this
    big_start: float           # the big room's ramp starts here
    big_max: float
    step_seconds: float
    drain_seconds: float       # how long after the last scheduled send a message may still arrive
    warmup_seconds: float
    bound_ms: float
    connect_concurrency: int
    bisections: int = 2         # halvings of the interval where the doubling ramp broke
    halvings: int = 3           # steps below the first one, each half the last, while none has passed


FULL = Profile(users=2000, room_size=10, big_room=200, loads=(50, 100, 200, 400), rooms_max=6400,
               big_start=20, big_max=640, step_seconds=4.0, drain_seconds=1.5, warmup_seconds=1.0,
               bound_ms=250, connect_concurrency=100)
QUICK = Profile(users=200, room_size=10, big_room=50, loads=(50, 100), rooms_max=400, big_start=20, big_max=80,
                step_seconds=1.0, drain_seconds=1.0, warmup_seconds=0.5, bound_ms=250, connect_concurrency=50,
                bisections=0, halvings=0)


def raise_fd_limit(connections: int) -> dict[str, int]:
    """Raise the soft RLIMIT_NOFILE as far as needed (up to the hard limit); the stack inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections * FDS_PER_CONNECTION + FDS_SPARE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
        if soft < wanted:
            logger.warning("open files limited to %d (hard limit): %d connections may not fit", soft, connections)
    return {"soft": soft, "hard": hard}


# -- scenarios from fixtures -------------------------------------------------------------------

@dataclass
class Workload:
    users: dict[int, dict[str, Any]]   # user id → {"id", "username", "token"}
    rooms: Scenario
    big_room: Scenario | None

    def users_of(self, scenario: Scenario) -> list[dict[str, Any]]:
        return [self.users[pk] for pk in scenario.users if pk in self.users]


def workload(parts: list[dict[str, Any]]) -> Workload:
    """The rooms of the commonest size are the many-rooms scenario; the largest room, if larger,
    is the big room's."""
    users = {user["id"]: user for part in parts for user in part["users"]}
    rooms = [(room["id"], [m for m in room["members"] if m in users]) for part in parts for room in part["rooms"]]
    rooms = [room for room in rooms if room[1]]
    if not rooms:
        raise SystemExit("the fixtures hold no room with a member whose token they give")
    common = Counter(len(members) for _, members in rooms).most_common(1)[0][0]
    small = [room for room in rooms if len(room[1]) == common]
    largest = max(rooms, key=lambda room: len(room[1]))
    big = Scenario(f"one room of {len(largest[1])}", [largest]) if len(largest[1]) > common else None
    return Workload(users, Scenario(f"{len(small)} rooms of {common} ({len(small) * common} users)", small), big)


# -- the measurements: connections, then ramps, the targets' steps interleaved -------------------

class Ramp:
    """The loads of one scenario on one target: the fixed ones, then doubling while the last step
    passed (up to `ceiling`), then `bisections` steps, each halfway between the best pass and the
    lowest failure above it (two narrow a doubling to a quarter of it: 800 ok, 1600 failed ->
    1200 -> 1000 or 1400). While no step has passed, up to `halvings` steps go down instead,
    each half the lowest so far (a stack slower than the first step still gets a sustained rate:
    20 failed -> 10 -> 5), and the bisections then narrow what lies above the pass."""

    def __init__(self, fixed: tuple[float, ...], start: float, ceiling: float, bisections: int,
                 halvings: int = 0) -> None:
        self.fixed = fixed
        self.start = start
        self.ceiling = ceiling
        self.bisections = bisections
        self.halvings = halvings
        self.steps: list[StepResult] = []
        self._bisected = 0
        self._halved = 0

    def next_rate(self) -> float | None:
        if len(self.steps) < len(self.fixed):
            return self.fixed[len(self.steps)]
        if not self.steps:
            return self.start
        good = max((s.offered_per_s for s in self.steps if s.ok), default=0.0)
        if not good:
            if self._halved < self.halvings:
                self._halved += 1
                return min(s.offered_per_s for s in self.steps) / 2
            return None
        above = [s.offered_per_s for s in self.steps if not s.ok and s.offered_per_s > good]
        last = self.steps[-1]
        doubled = last.offered_per_s * 2
        if (not self._bisected and last.ok and doubled <= self.ceiling
                and (not above or doubled < min(above))):
            return doubled
        if self._bisected < self.bisections:
            self._bisected += 1
            if above:
                middle = float(round((good + min(above)) / 2))
                if good < middle < min(above):
                    return middle
        return None

    def summary(self, label: str) -> dict[str, Any]:
        steps = sorted(self.steps, key=lambda s: s.offered_per_s)
        best = max((s for s in steps if s.ok), key=lambda s: s.offered_per_s, default=None)
        sustained = None
        if best is not None:
            broke = next((s for s in steps if s.offered_per_s > best.offered_per_s and not s.ok), None)
            sustained = {
                "messages_per_s": best.offered_per_s,
                "deliveries_per_s": round(best.offered_per_s * best.figures["recipients_per_message"], 1),
                "recipients_per_message": best.figures["recipients_per_message"],
                # The load generator was itself near a full core at the limit: the server may do more.
                "generator_bound": best.figures["generator_bound"] or bool(broke and broke.figures["generator_bound"]),
                "broke_at": None if broke is None else broke.offered_per_s,
                "broke_because": None if broke is None else broke.figures["why"],
            }
        return {"label": label, "steps": [s.figures for s in steps], "sustained": sustained}


@dataclass(frozen=True)
class Endpoint:
    """Where a target's clients connect (one gateway, or several spread round-robin), and each
    gateway process's /metrics when there is one process per port (else none)."""

    urls: list[str]
    watched: Watched
    metrics_urls: list[str]


@dataclass
class Target:
    """One stack under measurement (real or baseline): its load generator and its figures so far."""

    name: str
    gen: LoadGenerator
    watched: Watched
    result: dict[str, Any]


async def connect(target: Target, work: Workload, profile: Profile) -> None:
    """Open and authenticate the big room's users, then the rooms' users, each with the RSS
    they add.

    The big room's go first so that the stack measured for the target has served connections
    before: what its processes allocate once, at their first connections and requests (lazily
    imported code, pools filled to their burst size, SQLite's page cache of the users' tables),
    is not counted as the rooms' connections' memory. The big room's own figure, on the fresh
    stack, shows that one-time cost.
    """
    if work.big_room is not None:
        big = await _connect_measured(target, work.users_of(work.big_room), profile)
        target.result["connect_big_room"] = big
    opened = await _connect_measured(target, work.users_of(work.rooms), profile)
    target.result["connect"] = opened
    logger.info("%s: %d connections opened and authenticated in %.2f s", target.name, opened["connections"],
                opened["seconds"])


async def _connect_measured(target: Target, users: list[dict[str, Any]], profile: Profile) -> dict[str, Any]:
    """Open and authenticate one connection per user; the time, and the RSS the gateway's and
    the workers' processes gained, 1 s after the last reply."""
    # The parts this target has (Channels has no bus workers: its server processes are its gateway).
    parts = [part for part in ("gateway", "workers") if target.watched.groups.get(part)]
    rss_before = {part: target.watched.rss([part]) for part in parts}
    opened = await target.gen.connect(users, profile.connect_concurrency)
    await asyncio.sleep(1.0)  # replies written, buffers settled
    rss_after = {part: target.watched.rss([part]) for part in parts}
    count = opened["connections"]
    if parts and None not in rss_before.values() and None not in rss_after.values() and count:
        before, after = sum(rss_before.values()), sum(rss_after.values())
        opened.update(rss_before_bytes=before, rss_after_bytes=after,
                      rss_per_connection_bytes=round((after - before) / count),
                      rss_per_connection_bytes_by_part={
                          part: round((rss_after[part] - rss_before[part]) / count) for part in parts})
    else:
        opened.update(rss_before_bytes=None, rss_after_bytes=None, rss_per_connection_bytes=None,
                      rss_per_connection_bytes_by_part={})
    if opened["failed"]:
        raise SystemExit(f"{target.name}: {opened['failed']} connections failed: {opened['failures']}")
    return opened


async def ramps(targets: list[Target], key: str, scenario: Plannable, fixed: tuple[float, ...], start: float,
                ceiling: float, profile: Profile) -> None:
    """One scenario's ramp on every target, their steps interleaved (A B, then B A, ...): on a
    shared, noisy machine a burst of someone else's load then falls on both sides, not on one."""
    plans = {target.name: Ramp(fixed, start, ceiling, profile.bisections, profile.halvings) for target in targets}

    async def run(target: Target, rate: float, seconds: float, tag: str) -> StepResult:
        for each in targets:  # no backlog of an earlier step, on either stack
            await each.gen.quiet()
        return await target.gen.step(scenario, rate, seconds, profile.drain_seconds, profile.bound_ms, tag)

    for target in targets:
        # Warm-up, not reported: caches, database connections, the first queries.
        await run(target, fixed[0] if fixed else start, profile.warmup_seconds, f"{target.name}-{key}-warmup")
    for round_number in itertools.count():
        order = targets if round_number % 2 == 0 else targets[::-1]
        progressed = False
        for target in order:
            rate = plans[target.name].next_rate()
            if rate is None:
                continue
            step = await run(target, rate, profile.step_seconds, f"{target.name}-{key}-{rate:g}")
            plans[target.name].steps.append(step)
            progressed = True
            logger.info("%-9s %-28s %6g msg/s: %s", target.name, scenario.name, rate,
                        "ok" if step.ok else f"FAIL ({step.figures['why']})")
        if not progressed:
            break
    for target in targets:
        target.result[key] = plans[target.name].summary(scenario.name)


async def measure(endpoints: dict[str, Endpoint], work: Workload, profile: Profile,
                  scenario: str = "rooms") -> dict[str, Any]:
    """Connect every target's users, then the ramps: rooms of `room_size` and the big room, or
    (`scenario` "direct") the rooms' users in pairs sending each other direct messages."""
    async with contextlib.AsyncExitStack() as stack:
        targets = []
        for name, endpoint in endpoints.items():
            gen = await stack.enter_async_context(
                LoadGenerator(endpoint.urls, endpoint.watched, metrics_urls=endpoint.metrics_urls))
            targets.append(Target(name, gen, endpoint.watched, {}))
        if scenario == "direct":
            work = replace(work, big_room=None)
        # One stack at a time, so that each one's memory and handshakes are its own.
        for target in targets:
            await connect(target, work, profile)
        if scenario == "direct":
            pairs = DirectScenario.paired(work.users_of(work.rooms))
            await ramps(targets, "direct", pairs, profile.loads, profile.loads[0], profile.rooms_max, profile)
        else:
            await ramps(targets, "rooms", work.rooms, profile.loads, profile.loads[0], profile.rooms_max, profile)
        if work.big_room is not None:
            await ramps(targets, "big_room", work.big_room, (), profile.big_start, profile.big_max, profile)
        for target in targets:
            target.result["lost_connections"] = target.gen.lost_connections
            target.result["stray_frames"] = target.gen.stray_frames
    return {target.name: target.result for target in targets}


# -- the local stacks --------------------------------------------------------------------------

def start_target(kind: str, redis_url: str | None, database_url: str, fixture_paths: list[Path], workers: int,
                 gateway_processes: int, log_dir: Path, log_level: str,
                 channels_layer: str = "core", gateways: int | None = None,
                 redis_cluster: bool = False) -> tuple[Stack, Endpoint]:
    """Start a Redis of its own (unless one is given; with `redis_cluster`, a local Redis Cluster of
    three masters, which `stop_target` stops with the stack), the workers ("real": Django;
    "baseline": relay) and the gateway (one gunicorn of `gateway_processes`, or `gateways`
    gunicorns of one process each, on ports of their own); return the stack and where its clients
    connect. A stack that fails to start is stopped before the error goes on."""
    # Topics of their own too, so that the two stacks never hear each other even on one Redis.
    stack = Stack.create(log_dir=log_dir, DATABASE_URL=database_url, WORKER_RESPONSE_TOPIC=f"bench_{kind}_responses",
                         **dict(BENCH_ENV, LOG_LEVEL=log_level))
    stack.env.pop("REDIS_CLUSTER", None)  # one Redis unless asked, whatever this shell's environment says
    try:
        return _start_target(stack, kind, redis_url, fixture_paths, workers, gateway_processes, channels_layer,
                             gateways, redis_cluster)
    except BaseException:
        stop_target(stack)
        raise


def stop_target(stack: Stack) -> None:
    """Stop a target's processes, then the Redis Cluster it ran on, if it had one."""
    stack.stop()
    if stack.cluster is not None:
        stack.cluster.stop()


def _start_target(stack: Stack, kind: str, redis_url: str | None, fixture_paths: list[Path], workers: int,
                  gateway_processes: int, channels_layer: str, gateways: int | None,
                  redis_cluster: bool) -> tuple[Stack, Endpoint]:
    if redis_cluster:
        stack.use_cluster(LocalCluster.start(data_dir=stack.log_dir / "cluster"))
    elif redis_url:
        stack.env["REDIS_URL"] = redis_url
    else:
        stack.env.pop("REDIS_URL", None)  # embedded, whatever this shell's environment says
    redis_url = stack.start_redis()
    if kind == "channels":
        return start_channels(stack, gateway_processes, channels_layer)
    if kind == "socketio":
        return start_socketio(stack, gateway_processes)
    assert kind in ("real", "baseline"), kind
    topics = [f"bench_{kind}_{n}" for n in range(1, workers + 1)]
    if kind == "real":
        worker_procs = stack.start_workers(topics)
    else:
        worker_procs = []
        for n, topic in enumerate(topics):
            args = [sys.executable, "-m", "bench.relay_worker", "--subscribe_topic", topic,
                    "--first-message-id", str(n + 1), "--message-id-step", str(workers)]
            for path in fixture_paths:
                args += ["--fixtures", str(path)]
            worker_procs.append(stack.spawn(f"relay-{topic}", args))
        stack.env["WORKER_PROCESS_TOPICS"] = ",".join(topics)
        wait_for(lambda: subscribed(redis_url, topics, stack.redis_cluster), "relay workers", 60)
    if gateways:
        started = [stack.start_gateway(processes=1, name=f"gateway-{n}") for n in range(1, gateways + 1)]
    else:
        started = [stack.start_gateway(processes=gateway_processes)]
    processes = 1 if gateways else gateway_processes
    for gateway, _ in started:
        # gunicorn answers /healthz as soon as one process does: wait for all of them.
        wait_for(lambda master=gateway: len(psutil.Process(master.pid).children()) >= processes,
                 "gateway processes", 30, gateway)
    # An embedded Redis (or the cluster's masters) is watched (CPU per step); one given with
    # --redis-url is not ours to watch.
    redis_pids = redis_pids_of(stack)
    masters = [gateway.pid for gateway, _ in started]
    watched = Watched({"gateway": masters, "workers": [p.pid for p in worker_procs], "redis": redis_pids},
                      tree_roots=masters)
    ports = [port for _, port in started]
    return stack, Endpoint([f"http://127.0.0.1:{port}/ws" for port in ports], watched,
                           [f"http://127.0.0.1:{port}/metrics" for port in ports] if gateways else [])


def redis_pids_of(stack: Stack) -> list[int]:
    """The pids of the Redis processes the stack started: its embedded Redis, or its cluster's masters."""
    if stack.cluster is not None:
        return [proc.pid for proc in stack.cluster.processes.values()]
    return [stack.redis_process.pid] if stack.redis_process is not None else []


def start_channels(stack: Stack, processes: int, layer: str) -> tuple[Stack, Endpoint]:
    """The Django Channels comparison (bench/channels_chat.py) on the stack's Redis and database:
    uvicorn with as many processes as the gateway has; they are its "gateway" (no bus workers)."""
    server, port = stack.start_channels(processes=processes, layer=layer)
    wait_for(lambda: len(psutil.Process(server.pid).children()) >= processes, "uvicorn processes", 30, server)
    redis_pids = redis_pids_of(stack)
    watched = Watched({"gateway": [server.pid], "workers": [], "redis": redis_pids}, tree_roots=[server.pid])
    return stack, Endpoint([f"http://127.0.0.1:{port}/ws"], watched, [])


def start_socketio(stack: Stack, processes: int) -> tuple[Stack, Endpoint]:
    """The python-socketio comparison (bench/socketio_chat.py) on the stack's Redis and database:
    gunicorn with as many processes as the gateway has; they are its "gateway" (no bus workers)."""
    server, port = stack.start_socketio(processes=processes)
    wait_for(lambda: len(psutil.Process(server.pid).children()) >= processes, "socketio processes", 30, server)
    redis_pids = redis_pids_of(stack)
    watched = Watched({"gateway": [server.pid], "workers": [], "redis": redis_pids}, tree_roots=[server.pid])
    return stack, Endpoint([f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"], watched, [])


def make_fixtures(stack: Stack, profile: Profile, work_dir: Path) -> list[Path]:
    stack.manage("migrate", "--noinput")
    paths = []
    rooms = profile.users // profile.room_size
    for name, args in (("rooms", ["--users", str(profile.users), "--rooms", str(rooms),
                                  "--room-size", str(profile.room_size)]),
                       ("big-room", ["--users", str(profile.big_room), "--rooms", "1",
                                     "--room-size", str(profile.big_room)])):
        if name == "big-room" and profile.big_room <= profile.room_size:
            continue
        done = stack.manage("chat_fixtures", *args, "--seed", "1")
        path = work_dir / f"fixtures-{name}.json"
        path.write_text(done.stdout)
        paths.append(path)
    return paths


def run_local(args: argparse.Namespace, profile: Profile, work_dir: Path) -> dict[str, dict[str, Any]]:
    database_url = args.database_url or f"sqlite:///{work_dir / 'bench.sqlite3'}"
    stacks: list[Stack] = []
    try:
        setup = Stack.create(log_dir=work_dir / "setup", DATABASE_URL=database_url, **BENCH_ENV)
        logger.info("database %s: migrating and creating fixtures", database_url.split("@")[-1])
        fixture_paths = make_fixtures(setup, profile, work_dir)
        work = workload([json.loads(path.read_text()) for path in fixture_paths])
        endpoints = {}
        for kind in args.targets:
            if kind == "channels":
                logger.info("channels: starting uvicorn with %d process(es), channels_redis's %s layer",
                            args.gateway_processes, args.channels_layer)
            elif kind == "socketio":
                logger.info("socketio: starting python-socketio with %d process(es), its Redis message queue",
                            args.gateway_processes)
            elif args.gateways:
                logger.info("%s: starting %d %s workers and %d gateways of one process", kind, args.workers,
                            "Django" if kind == "real" else "relay", args.gateways)
            else:
                logger.info("%s: starting %d %s workers and a gateway of %d process(es)", kind, args.workers,
                            "Django" if kind == "real" else "relay", args.gateway_processes)
            stack, endpoint = start_target(kind, args.redis_url, database_url, fixture_paths, args.workers,
                                           args.gateway_processes, work_dir / kind, args.log_level,
                                           args.channels_layer, args.gateways, args.redis_cluster)
            stacks.append(stack)
            endpoints[kind] = endpoint
        return asyncio.run(measure(endpoints, work, profile, args.scenario))
    finally:
        for stack in reversed(stacks):
            stop_target(stack)


def run_remote(args: argparse.Namespace, profile: Profile) -> dict[str, dict[str, Any]]:
    work = workload([json.loads(Path(path).read_text()) for path in args.fixtures])
    url = args.gateway if args.gateway.endswith("/ws") else args.gateway.rstrip("/") + "/ws"
    url = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    logger.info("running stack at %s: %s%s", url, work.rooms.name,
                f", {work.big_room.name}" if work.big_room else "")
    return asyncio.run(measure({"real": Endpoint([url], Watched(), [])}, work, profile, args.scenario))


# -- command line ------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Profile]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                     epilog="Figures, method and targets: docs/performance.md")
    parser.add_argument("--quick", action="store_true",
                        help="a ~25 s smoke run (the test's): 200 connections, 1 s steps")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, real and baseline alike (default 2)")
    parser.add_argument("--gateway-processes", type=int, default=None,
                        help="gunicorn gateway processes behind one port (default 2, as deployed: on 2 cores, "
                             "handshakes go ~1.7x faster than with 1 and the sustained rates are the same)")
    parser.add_argument("--gateways", type=int, default=None, metavar="N",
                        help="N gateways of one process each, on ports of their own, the clients spread over them "
                             "round-robin; each process's envelopes, frames and CPU per step (real and baseline "
                             "only; instead of --gateway-processes)")
    parser.add_argument("--scenario", choices=("rooms", "direct"), default="rooms",
                        help="rooms: rooms of --room-size and the big room (the default); direct: the rooms' users "
                             "in random pairs sending each other direct_message (real target only)")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default=None, help="default: an embedded redis-server")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="run each target on a fresh local Redis Cluster of three masters (a redis-server 7 or "
                             "later on the PATH: scripts/cluster.py) instead of one embedded Redis (real and "
                             "baseline only)")
    parser.add_argument("--gateway", default=None, metavar="URL",
                        help="measure a running stack at this gateway (ws://HOST:PORT/ws); needs --fixtures")
    parser.add_argument("--fixtures", action="append", default=[], metavar="PATH",
                        help="chat_fixtures JSON of the running stack (repeatable: rooms of 10, one big room)")
    parser.add_argument("--targets", default="real,baseline",
                        help="what to measure, in order: real (Django workers), baseline (relay workers), channels "
                             "(the same chat on Django Channels: bench/channels_chat.py), socketio (the same chat "
                             "on python-socketio: bench/socketio_chat.py); default real,baseline")
    parser.add_argument("--channels-layer", choices=("core", "pubsub"), default="core",
                        help="the channels target's channels_redis layer: RedisChannelLayer (core, the default) "
                             "or RedisPubSubChannelLayer (pubsub)")
    parser.add_argument("--no-baseline", action="store_true", help="the same as --targets real")
    parser.add_argument("--users", type=int, help="users in rooms of --room-size: the connections measured")
    parser.add_argument("--room-size", type=int)
    parser.add_argument("--big-room", type=int, help="members of the one big room (0: none)")
    parser.add_argument("--loads", help="fixed offered loads, msg/s, comma-separated (default 50,100,200,400)")
    parser.add_argument("--step-seconds", type=float)
    parser.add_argument("--bound-ms", type=float, help="p99 bound of a sustained step (default 250)")
    parser.add_argument("--bisections", type=int,
                        help="steps narrowing down where the ramp broke (default 2; 0 with --quick)")
    parser.add_argument("--halvings", type=int,
                        help="steps below the first one, each half the last, while none has passed (default 3; "
                             "0 with --quick)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON result here")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help=f"PNG of latency vs load (default {DEFAULT_PLOT.relative_to(ROOT)}; none with --quick)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--log-level", default="WARNING",
                        help="LOG_LEVEL of the benchmark's stacks (default WARNING; INFO logs every request, as "
                             "deployed)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, database)")
    args = parser.parse_args(argv)
    if args.gateway and not args.fixtures:
        parser.error("--gateway needs --fixtures (the output of manage.py chat_fixtures on that stack)")
    if args.gateways is not None and (args.gateway_processes is not None or args.gateway):
        parser.error("--gateways N starts N gateways of one process: not with --gateway-processes or --gateway")
    if args.gateways is not None and not 1 <= args.gateways <= MAX_GATEWAYS:
        parser.error(f"--gateways takes 1 to {MAX_GATEWAYS}")
    if args.gateway_processes is None:
        args.gateway_processes = 2
    profile = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    for name in ("users", "room_size", "big_room", "step_seconds", "bound_ms", "bisections", "halvings"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.loads:
        overrides["loads"] = tuple(float(x) for x in args.loads.split(","))
    profile = replace(profile, **overrides)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.no_baseline or args.gateway or args.scenario == "direct":
        args.targets = ["real"]
    if not args.targets or set(args.targets) - {"real", "baseline", "channels", "socketio"}:
        parser.error("--targets takes real, baseline, channels and/or socketio")
    if args.gateways is not None and set(args.targets) - {"real", "baseline"}:
        parser.error("--gateways applies to the real and baseline targets")
    if args.redis_cluster and (args.redis_url or args.gateway):
        parser.error("--redis-cluster starts a Redis Cluster of its own: not with --redis-url or --gateway")
    if args.redis_cluster and set(args.targets) - {"real", "baseline"}:
        parser.error("--redis-cluster applies to the real and baseline targets (channels_redis and "
                     "python-socketio's Redis queue take one Redis)")
    return args, profile


def shown_path(path: Path) -> str:
    """A path as the result names it: from the project's root when it is inside it (as given,
    relative or absolute, from any working directory), else absolute."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved)


def main(argv: list[str] | None = None) -> int:
    args, profile = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    fd_limit = raise_fd_limit(len(args.targets) * (profile.users + profile.big_room))
    work_dir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    started = time.monotonic()
    ok = False
    try:
        if args.gateway:
            targets = run_remote(args, profile)
        else:
            targets = run_local(args, profile, work_dir)
        ok = True
    except (StackError, ClusterUnavailable, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        logger.error("the benchmark's stack failed: %s\n%s\nlogs: %s", exc, detail, work_dir)
        return 1
    finally:
        if ok and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        elif args.keep or not ok:
            logger.info("working directory kept: %s", work_dir)

    ratios, checks = compare(targets)
    result: dict[str, Any] = {
        "benchmark": "chat",
        "command": command,
        "quick": args.quick,
        "config": {
            "workers": None if args.gateway else args.workers,
            "gateway_processes": None if args.gateway or args.gateways else args.gateway_processes,
            "gateways": args.gateways,
            "scenario": args.scenario,
            "database": "running stack's" if args.gateway else (
                args.database_url.split("://")[0] if args.database_url else "sqlite (fresh file)"),
            "redis": "running stack's" if args.gateway else (
                "given" if args.redis_url else f"cluster of {MASTERS} masters" if args.redis_cluster else "embedded"),
            "log_level": None if args.gateway else args.log_level,
            "channels_layer": args.channels_layer if "channels" in args.targets else None,
            "gateway": args.gateway,
            "cores": psutil.cpu_count(),
            "fd_limit": fd_limit,
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(profile).items()},
            "drain_seconds": profile.drain_seconds,
        },
        "targets": targets,
        "ratios": ratios if {"real", "baseline"} <= set(targets) else {},
        "versus_channels": ratios_of(targets["real"], targets["channels"]) if {"real", "channels"} <= set(targets)
        else {},
        "versus_socketio": ratios_of(targets["real"], targets["socketio"]) if {"real", "socketio"} <= set(targets)
        else {},
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
        "plot": None,
        "plot_skipped": None,
    }
    plot_path = None if args.no_plot else (args.plot or (None if args.quick else DEFAULT_PLOT))
    if plot_path is not None:
        skipped = plot(result, plot_path)
        if skipped:
            result["plot_skipped"] = skipped
        else:
            result["plot"] = shown_path(plot_path)
    else:
        result["plot_skipped"] = "no plot asked for (--plot PATH)" if args.quick or args.no_plot else None
    print(table(result))
    print(f"({result['seconds']:.0f} s)")
    line = json.dumps(result, separators=(",", ":"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
