"""The chat added to a product of its own (examples/host_project/), as a team would add it: the
distribution built and installed into a fresh venv, nothing of this repository on the path; the
product's users log in by e-mail and have no username; its own base template, action, permission
policy and a live event published from one of its views. Redis, a worker, the gateway and the web
server all run from that venv; two users go through the protocol, and one through the page."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from chat.client import ChatClient, ChatError
from scripts.stack import Stack, free_port, http_ok, subscribed, wait_for
from tests.distribution import ROOT, build, install, run
from tests.e2e.conftest import CHROMIUM_FLAGS

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "host_project"
WORKER_TOPIC = "shop_worker"
# The product's users: two in one team, one in another (host/policy.py: direct messages stay in a team).
MAKE_USERS = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
tokens = {}
for email, team in (("alice@example.com", "red"), ("bob@example.com", "red"), ("carol@example.com", "blue")):
    user = get_user_model().objects.create_user(email, "shop-password", team=team)
    tokens[email] = Token.objects.create(user=user).key
print(json.dumps(tokens))
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    base = tmp_path_factory.mktemp("shop")
    python, _ = install(base, build(base)["wheel"])
    project = base / "host_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    stack = Stack.create(log_dir=base / "logs")
    try:
        redis_url = stack.start_redis()
        gateway_port, web_port = free_port(), free_port()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               "DJANGO_SETTINGS_MODULE": "host.settings", "HOST_DB": str(base / "shop.sqlite3"),
               "REDIS_URL": redis_url, "GATEWAY_URL": f"ws://127.0.0.1:{gateway_port}/ws"}
        if stack.redis_cluster:
            # The shop's CHAT does not set REDIS_CLUSTER: its workers take it from the environment.
            env["REDIS_CLUSTER"] = "1"
        run(python, "manage.py", "migrate", cwd=project, env=env)
        tokens = json.loads(run(python, "manage.py", "shell", "-c", MAKE_USERS, cwd=project, env=env)
                            .strip().splitlines()[-1])
        worker = stack.spawn("worker", [str(python), "manage.py", "message_process_worker", "--subscribe_topic",
                                        WORKER_TOPIC], env=env, cwd=project)
        wait_for(lambda: subscribed(redis_url, [WORKER_TOPIC], stack.redis_cluster), "the shop's worker", 30, worker)
        gateway = stack.spawn("gateway", [str(python), "-m", "gunicorn", "websockets_gateway.app:app",
                                          "--worker-class", "aiohttp.GunicornWebWorker", "--bind",
                                          f"127.0.0.1:{gateway_port}", "--workers", "1", "--no-control-socket"],
                              env=dict(env, WORKER_PROCESS_TOPICS=WORKER_TOPIC,
                                       ALLOWED_ORIGINS=f"http://127.0.0.1:{web_port}"), cwd=base)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{gateway_port}/healthz"), "the shop's gateway", 30, gateway)
        web = stack.spawn("web", [str(python), "manage.py", "runserver", "--noreload", f"127.0.0.1:{web_port}"],
                          env=env, cwd=project)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{web_port}/login/"), "the shop's web server", 30, web)
        yield {"ws": f"ws://127.0.0.1:{gateway_port}/ws", "web": f"http://127.0.0.1:{web_port}", "tokens": tokens,
               "logs": base / "logs"}
    finally:
        stack.stop()


def ship(shop, order: int, token: str) -> dict:
    request = urllib.request.Request(f"{shop['web']}/orders/{order}/ship/", method="POST",
                                     headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.load(response)


def test_the_products_users_chat_with_its_action_policy_and_events(shop):
    tokens = shop["tokens"]

    async def scenario():
        async with ChatClient(shop["ws"], token=tokens["alice@example.com"]) as alice, \
                ChatClient(shop["ws"], token=tokens["bob@example.com"]) as bob:
            # Named by their e-mail (get_username()): the model has no username field.
            assert alice.user == {"username": "alice@example.com"}
            room = (await alice.request("create_room", name="Orders", members=["bob@example.com"]))["room"]
            assert [m["username"] for m in room["members"]] == ["alice@example.com", "bob@example.com"]
            sent = (await alice.request("new_message", room=room["id"], text="order 2 is late"))["message"]
            heard = await bob.next_frame(lambda f: f.get("action") == "new_message")
            assert heard["message"] == sent and sent["user"] == {"username": "alice@example.com"}

            # The product's own action (orders/chat_actions.py), resent safely by its catalogue.
            assert alice.may_retry("order_status")
            assert (await alice.request("order_status", order=1))["state"] == "packed"
            with pytest.raises(ChatError) as refused:
                await alice.request("order_status", order=0)
            assert refused.value.code == "invalid_message_format"

            # The product's policy (host/policy.py): direct messages stay within a team.
            assert (await alice.request("direct_message", to="bob@example.com", text="hi"))["status"] == "success"
            with pytest.raises(ChatError) as refused:
                await alice.request("direct_message", to="carol@example.com", text="hi")
            assert refused.value.code == "forbidden"

            # A live event published from one of the product's views (orders/views.py), to alice alone.
            shipped = asyncio.get_running_loop().create_future()
            alice.on("order_shipped", shipped.set_result)
            bob_heard: list = []
            bob.on("order_shipped", bob_heard.append)
            assert ship(shop, 2, tokens["alice@example.com"]) == {"order": 2, "shipped": True}
            assert await asyncio.wait_for(shipped, 15) == {"order": 2}
            # Bob's next reply comes on the gateway's subscription after the event: none for him.
            await bob.request("list_rooms")
            assert bob_heard == []

    asyncio.run(asyncio.wait_for(scenario(), 90))
    # The product's receiver of the chat's signal (orders/signals.py) heard each message, in the worker.
    audit = (shop["logs"] / "worker.log").read_text()
    assert "chat message" in audit and "by alice@example.com in room" in audit, audit[-2000:]


def test_the_page_sits_in_the_products_layout_and_connects(shop, chromium_executable):
    async def scenario():
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{shop['web']}/chat/")  # the chat asks the product's login first
                await page.fill("#id_username", "bob@example.com")
                await page.fill("#id_password", "shop-password")
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{shop['web']}/chat/")
                await expect(page.locator("#shop-nav")).to_contain_text("Example Shop")
                await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
                await expect(page.locator(".me")).to_contain_text("bob@example.com")
            finally:
                await browser.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_docs_integrate_shows_the_example_projects_own_code():
    # Every code block of docs/integrate.md is a piece of the example project, which the tests above run.
    text = (ROOT / "docs" / "integrate.md").read_text()
    blocks = re.findall(r"^```(?:python|html)\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 7
    sources = "\n".join(path.read_text() for path in EXAMPLE.rglob("*") if path.is_file()
                        and path.suffix in (".py", ".html"))
    for block in blocks:
        for line in block.splitlines():
            assert line.strip() in sources, f"docs/integrate.md shows a line the example project lacks: {line!r}"
