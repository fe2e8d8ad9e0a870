"""The chat page's views: login required, the Content-Security-Policy, the settings handed to the
JavaScript as data, and markup with no inline script."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders

from chat.views import content_security_policy

# WhiteNoise warns that STATIC_ROOT does not exist before `collectstatic`; not the page's business.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

PASSWORD = "a-long-test-password"
STATIC = Path(__file__).resolve().parents[2] / "chat" / "static" / "chat"


@pytest.fixture
def alice(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return get_user_model().objects.create_user(username="alice", password=PASSWORD)


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


class Markup(HTMLParser):
    """The tags of a page, with their attributes, and the text inside each <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def parse(html: str) -> Markup:
    markup = Markup()
    markup.feed(html)
    return markup


def directives(policy: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in policy.split(";") if part.strip()}


def test_the_page_needs_a_login(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_the_login_page_posts_with_csrf_and_its_policy_comes_in_a_meta_element(client, db):
    response = client.get("/login/?next=/")
    assert response.status_code == 200
    markup = parse(response.content.decode())
    assert not markup.scripts
    metas = [attrs for tag, attrs in markup.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    # The login view is Django's own; its template carries the page's policy, without the
    # header-only frame-ancestors.
    assert [meta["content"] for meta in metas] == [content_security_policy(meta=True)]
    names = {attrs.get("name") for tag, attrs in markup.tags if tag == "input"}
    assert {"csrfmiddlewaretoken", "username", "password", "next"} <= names


def test_logging_in_leads_to_the_page(client, alice):
    response = client.post("/login/", {"username": "alice", "password": PASSWORD, "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_the_page_is_sent_with_a_policy_that_allows_no_inline_script(logged_in, settings):
    settings.CHAT = {**settings.CHAT, "GATEWAY_URL": "wss://chat.example.com:8443/ws"}
    response = logged_in.get("/")
    assert response.status_code == 200
    policy = directives(response["Content-Security-Policy"])
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self' wss://chat.example.com:8443"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["require-trusted-types-for"] == "'script'"
    assert policy["base-uri"] == "'none'" and policy["object-src"] == "'none'"
    assert not any("unsafe" in value for value in policy.values())
    assert "no-cache" in response["Cache-Control"]


def test_the_page_has_no_inline_script_no_handler_and_no_style_attribute(logged_in):
    html = logged_in.get("/").content.decode()
    markup = parse(html)
    for attrs, text in markup.scripts:
        if attrs.get("type") == "application/json":
            json.loads(text)  # data, never code
        else:
            assert attrs.get("type") == "module" and attrs.get("src") and not text.strip(), attrs
    for tag, attrs in markup.tags:
        assert not [name for name in attrs if name.startswith("on") or name == "style"], (tag, attrs)
        for name in ("src", "href", "action"):
            value = attrs.get(name)
            assert value is None or value.startswith(("/", "data:")), (tag, name, value)


def test_the_settings_reach_the_script_as_json(logged_in, settings):
    settings.CHAT = {**settings.CHAT, "GATEWAY_URL": "ws://gateway.test:9000/ws"}
    markup = parse(logged_in.get("/").content.decode())
    (config_text,) = [text for attrs, text in markup.scripts if attrs.get("id") == "chat-config"]
    assert json.loads(config_text) == {
        "gatewayUrl": "ws://gateway.test:9000/ws",
        "username": "alice",
        "ticketUrl": "/api/auth/ticket/",
        "loginUrl": "/login/",
    }


def test_a_username_with_markup_is_escaped_in_the_page_and_its_json(client, db, settings):
    user = get_user_model().objects.create_user(username="a</script><b>")
    client.force_login(user)
    html = client.get("/").content.decode()
    assert "</script><b>" not in html
    markup = parse(html)
    (config_text,) = [text for attrs, text in markup.scripts if attrs.get("id") == "chat-config"]
    assert json.loads(config_text)["username"] == "a</script><b>"
    assert not [tag for tag, _ in markup.tags if tag == "b"]


@pytest.mark.parametrize(("host", "secure", "expected"), [
    ("chat.example.com", False, "ws://chat.example.com:8080/ws"),
    ("chat.example.com:8000", False, "ws://chat.example.com:8080/ws"),
    ("127.0.0.1:8000", True, "wss://127.0.0.1:8080/ws"),
    ("[::1]:8000", False, "ws://[::1]:8080/ws"),
])
def test_without_gateway_url_the_page_connects_to_its_own_host_on_8080(logged_in, settings, host, secure, expected):
    settings.CHAT = {**settings.CHAT, "GATEWAY_URL": ""}
    settings.ALLOWED_HOSTS = ["*"]
    response = logged_in.get("/", HTTP_HOST=host, **({"wsgi.url_scheme": "https"} if secure else {}))
    markup = parse(response.content.decode())
    (config_text,) = [text for attrs, text in markup.scripts if attrs.get("id") == "chat-config"]
    assert json.loads(config_text)["gatewayUrl"] == expected
    origin = expected.rsplit("/", 1)[0]
    assert directives(response["Content-Security-Policy"])["connect-src"] == f"'self' {origin}"


def test_the_session_gives_the_page_a_ticket_for_its_user(logged_in, alice):
    from chat import tickets

    body = logged_in.post("/api/auth/ticket/").json()
    assert tickets.users_for_tickets([body["ticket"]]) == [alice]


def test_every_module_the_page_loads_is_served(logged_in):
    markup = parse(logged_in.get("/").content.decode())
    sources = [attrs["src"] for attrs, _ in markup.scripts if attrs.get("src")]
    assert sources == ["/static/chat/app.js"]
    # And the modules app.js imports, relative to it, each found by the static files finders.
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert finders.find(f"chat/{name}"), name
        todo += re.findall(r'^import .* from "\./([\w-]+\.js)";$', (STATIC / name).read_text(), re.MULTILINE)
    assert {"chat-client.js", "rooms.js", "conversation.js", "composer.js", "commands.js"} <= seen


# What would let text become markup or code; none is in the page's scripts.
HTML_SINKS = re.compile(r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
                        r"\.setAttribute\(\s*[\"'](on|style)|\.style\.|cssText|https?://")


@pytest.mark.parametrize("script", sorted(path.name for path in STATIC.glob("*.js")))
def test_no_script_writes_html_or_loads_from_another_host(script):
    found = [line for line in (STATIC / script).read_text().splitlines() if HTML_SINKS.search(line)]
    assert found == []
