"""Fixtures that start the real processes: Redis (embedded unless REDIS_URL is set, and with
REDIS_CLUSTER=1 a Redis Cluster's node: `python -m scripts.cluster run -- pytest tests/e2e`), gunicorn
gateways and Django workers, all on the test database that pytest-django created."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from django.core.management import call_command
from django.db import connection

from scripts.stack import Stack, free_port, port_open, wait_for
from tests.e2e.client import Client
from websockets_gateway import redis_clients


def database_url(settings_dict: dict[str, Any]) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if engine.endswith("postgresql"):
        auth = quote(settings_dict.get("USER") or "")
        if settings_dict.get("PASSWORD"):
            auth += ":" + quote(settings_dict["PASSWORD"])
        host = settings_dict.get("HOST") or "localhost"
        port = settings_dict.get("PORT") or 5432
        return f"postgres://{auth}@{host}:{port}/{settings_dict['NAME']}"
    raise RuntimeError(f"end-to-end tests do not know how to share a {engine} database")


@dataclass
class E2EStack:
    stack: Stack
    tag: str
    redis_url: str
    worker_topics: list[str]
    # Gateway A runs two gunicorn processes, gateway B a second, separate gateway.
    gateway_a: str
    gateway_b: str
    db_blocker: Any
    # The web server (chat page) is started on this port by the `web` fixture, when a test needs it.
    web_port: int

    def ws_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/ws"

    def fixtures(self, users: int, rooms: int = 0, room_size: int = 2) -> dict[str, Any]:
        """Users with tokens and rooms, made by the project's own chat_fixtures command."""
        out = StringIO()
        with self.db_blocker.unblock():
            call_command("chat_fixtures", users=users, rooms=rooms, room_size=room_size, stdout=out)
        return json.loads(out.getvalue())

    def room_of_two(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """A room of two members and a user outside it: (room, its first member, its second, the outsider)."""
        data = self.fixtures(users=3, rooms=1, room_size=2)
        room = data["rooms"][0]
        by_id = {user["id"]: user for user in data["users"]}
        outsider = next(user for user in data["users"] if user["id"] not in room["members"])
        return room, by_id[room["members"][0]], by_id[room["members"][1]], outsider

    def orm(self, work: Callable[[], Any]) -> Any:
        with self.db_blocker.unblock():
            return work()

    @property
    def redis_cluster(self) -> bool:
        """Whether the stack runs on a Redis Cluster (REDIS_CLUSTER=1 with REDIS_URL: scripts/cluster.py)."""
        return self.stack.redis_cluster

    def redis_client(self) -> redis_clients.SyncClient:
        """A client of the stack's Redis, as its parts make them (a cluster client on a cluster); the caller closes it."""
        return redis_clients.sync_client(self.redis_url, self.redis_cluster, socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture(scope="session")
def e2e_database_url(django_db_setup, django_db_blocker) -> str:
    with django_db_blocker.unblock():
        return database_url(connection.settings_dict)


@pytest.fixture(scope="session")
def e2e(e2e_database_url, django_db_blocker, tmp_path_factory) -> E2EStack:
    tag = f"e2e{secrets.token_hex(3)}"
    web_port = free_port()
    stack = Stack.create(
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        DATABASE_URL=e2e_database_url,
        WORKER_RESPONSE_TOPIC=f"{tag}_response",
        REQUEST_TIMEOUT="5",
        AUTH_TIMEOUT="10",
        ALLOWED_ORIGINS=f"http://allowed.example,http://127.0.0.1:{web_port}",
        LOG_LEVEL="INFO",
        # Every browser of the run logs in from this one address.
        THROTTLE_LOGIN_RATE="1000/min",
        # Long enough that a ticket refused in a test was refused for its session, not its age on a
        # busy machine (expiry is tested in tests/chat/test_tickets.py).
        TICKET_MAX_AGE="600",
    )
    try:
        redis_url = stack.start_redis()
        topics = [f"{tag}_worker_1", f"{tag}_worker_2"]
        stack.start_workers(topics)
        _, port_a = stack.start_gateway(processes=2, name="gateway-a")
        _, port_b = stack.start_gateway(processes=1, name="gateway-b")
        yield E2EStack(stack, tag, redis_url, topics, f"http://127.0.0.1:{port_a}/ws",
                       f"http://127.0.0.1:{port_b}/ws", django_db_blocker, web_port)
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def web(e2e) -> str:
    """The web part (login, chat page, REST API) on the test database; its page talks to gateway A."""
    e2e.stack.env["GATEWAY_URL"] = e2e.gateway_a.replace("http://", "ws://")
    e2e.stack.start_web(e2e.web_port)
    return f"http://127.0.0.1:{e2e.web_port}"


def run(scenario: Callable[[aiohttp.ClientSession], Awaitable[Any]]) -> Any:
    """Run one async scenario with a fresh HTTP session."""

    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            return await scenario(session)

    return asyncio.run(main())


async def connect(session: aiohttp.ClientSession, url: str, user: dict[str, Any] | None = None) -> Client:
    """A client on `url`, authenticated as `user` if given.

    Keep the client referenced while its connection should stay open: an aiohttp WebSocket
    whose response object is garbage-collected can be closed under the test.
    """
    client = await Client.connect(session, url)
    if user is not None:
        await client.authenticate(user)
    return client


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium on this machine (scripts/test installs it where it can)")
    return executable


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path))
        return path

    return take


@dataclass
class ChatPage:
    """A logged-in chat page in a browser context of its own, with what went wrong on it: uncaught
    JavaScript errors, console errors (a blocked inline script or style says so there) and dialogs
    (an `alert` that ran)."""

    page: Any
    errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


async def open_chat_page(browser, web: str, username: str, password: str, **context_options: Any) -> ChatPage:
    """Log in at `web` as `username` in a new context (`context_options`: viewport, locale,
    timezone_id…) and return once the page is connected to the gateway."""
    context = await browser.new_context(**{"viewport": {"width": 1000, "height": 700}, **context_options})
    page = await context.new_page()
    chat = ChatPage(page)
    page.on("pageerror", lambda error: chat.errors.append(str(error)))
    page.on("console", lambda message: chat.console_errors.append(message.text) if message.type == "error" else None)

    async def on_dialog(dialog) -> None:
        chat.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    await page.goto(f"{web}/")
    await page.fill("#id_username", username)
    await page.fill("#id_password", password)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#connection[data-state=connected]")
    return chat


@dataclass
class PageStack:
    """A web server whose chat page talks to a gateway of its own, on the shared Redis and
    workers: a test may stop that gateway and start it again on the same port."""

    e2e: E2EStack
    web: str
    gateway_port: int
    gateway_env: dict[str, str]
    name: str
    gateway: subprocess.Popen | None = None

    def start_gateway(self) -> None:
        assert self.gateway is None or self.gateway.poll() is not None, "the page's gateway is running"
        self.gateway, _ = self.e2e.stack.start_gateway(port=self.gateway_port, processes=1,
                                                       name=f"gateway-{self.name}", extra_env=self.gateway_env)

    def stop_gateway(self) -> int:
        """SIGTERM, by pid: the gateway closes its connections with 1001 and exits."""
        assert self.gateway is not None
        code = self.e2e.stack.stop_process(self.gateway)
        self.gateway = None
        return code


@pytest.fixture
def page_stack(e2e) -> Iterator[PageStack]:
    """A chat page (web server) and its own one-process gateway, stopped after the test."""
    name = f"page-{secrets.token_hex(3)}"
    web_port, gateway_port = free_port(), free_port()
    stack = PageStack(e2e, f"http://127.0.0.1:{web_port}", gateway_port,
                      {"ALLOWED_ORIGINS": f"http://127.0.0.1:{web_port}"}, name)
    web_env = dict(e2e.stack.env, GATEWAY_URL=f"ws://127.0.0.1:{gateway_port}/ws")
    web = e2e.stack.spawn(f"web-{name}", [sys.executable, "manage.py", "runserver", "--noreload",
                                          f"127.0.0.1:{web_port}"], env=web_env)
    try:
        stack.start_gateway()
        wait_for(lambda: port_open(web_port), "web server", 30, web)
        yield stack
    finally:
        if stack.gateway is not None:
            e2e.stack.stop_process(stack.gateway)
        e2e.stack.stop_process(web)
