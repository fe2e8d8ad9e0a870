"""deploy/nginx.conf: several gateways behind one nginx, WebSockets upgraded, the rest to web.

Three layers: checks of the parsed file that need no nginx; `nginx -t` on a copy adapted to this
machine (upstreams on 127.0.0.1, pid, logs and temp files in a temporary prefix, a self-signed
certificate); and that copy run for real in front of two stub gateways and a stub web process,
with WebSocket and HTTP clients going through it. The last two need an nginx binary (the Debian
package `nginx`); the test never installs one, it skips without.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest
import yaml
from aiohttp import web

from scripts.stack import ROOT, free_port, port_open, wait_for
from websockets_gateway.settings import GatewaySettings

CONFIG_TEXT = (ROOT / "deploy" / "nginx.conf").read_text()

# ---------------------------------------------------------------------------------------------
# A small reader of nginx's syntax: directives `name args;` and blocks `name args { ... }`.
# ---------------------------------------------------------------------------------------------

TOKEN = re.compile(r"""#[^\n]*|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[{};]|[^\s{};'"#]+""")


@dataclass
class Directive:
    name: str
    args: list[str]  # as written, quotes included (so the file can be written back)
    block: list["Directive"] | None = None

    @property
    def values(self) -> list[str]:
        """The arguments without their quotes."""
        return [a[1:-1] if len(a) >= 2 and a[0] == a[-1] and a[0] in "'\"" else a for a in self.args]

    def find(self, name: str) -> list["Directive"]:
        return [d for d in self.block or [] if d.name == name]

    def first(self, name: str) -> "Directive | None":
        found = self.find(name)
        return found[0] if found else None


def parse(text: str) -> list[Directive]:
    tokens = [t for t in TOKEN.findall(text) if not t.startswith("#")]
    position = 0

    def block() -> list[Directive]:
        nonlocal position
        directives: list[Directive] = []
        while position < len(tokens):
            if tokens[position] == "}":
                position += 1
                return directives
            words: list[str] = []
            while tokens[position] not in ("{", ";", "}"):
                words.append(tokens[position])
                position += 1
            end = tokens[position]
            assert end != "}", f"directive {words} not closed by ';'"
            position += 1
            directives.append(Directive(words[0], words[1:], block() if end == "{" else None))
        return directives

    return block()


def dump(directives: list[Directive], indent: int = 0) -> str:
    lines = []
    for d in directives:
        head = " " * indent + " ".join([d.name, *d.args])
        if d.block is None:
            lines.append(head + ";")
        else:
            lines += [head + " {", dump(d.block, indent + 4), " " * indent + "}"]
    return "\n".join(line for line in lines if line)


CONFIG = Directive("main", [], parse(CONFIG_TEXT))
HTTP = CONFIG.first("http")
UPSTREAMS = {u.values[0]: u for u in HTTP.find("upstream")}
SERVERS = HTTP.find("server")
TLS_SERVER = next(s for s in SERVERS if any("ssl" in listen.values for listen in s.find("listen")))


def location(path: str, exact: bool = False) -> Directive:
    for loc in TLS_SERVER.find("location"):
        if loc.values == (["=", path] if exact else [path]):
            return loc
    raise AssertionError(f"no location {'= ' if exact else ''}{path}")


def in_effect(loc: Directive, name: str) -> list[list[str]]:
    """A directive's values in a location: its own, else the server's (nginx inherits a directive
    from the enclosing level only when the location does not set it at all)."""
    own = loc.find(name)
    return [d.values for d in (own or TLS_SERVER.find(name))]


def upstream_of(loc: Directive) -> str:
    (target,) = loc.first("proxy_pass").values
    assert target.startswith("http://")
    return target.removeprefix("http://").rstrip("/")


def gateway_upstream() -> Directive:
    return UPSTREAMS[upstream_of(location("/ws", exact=True))]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()
    return int(number) * units[unit or "s"]


# ---------------------------------------------------------------------------------------------
# What the file promises, read without nginx
# ---------------------------------------------------------------------------------------------


def test_the_upgrade_map_turns_a_handshake_into_connection_upgrade():
    (mapping,) = [m for m in HTTP.find("map") if m.values == ["$http_upgrade", "$connection_upgrade"]]
    entries = {d.name: d.values for d in mapping.block}
    assert entries["default"] == ["upgrade"]
    # An empty Upgrade header must not say "upgrade".
    assert entries["''"] in ([""], ["close"])


def test_the_gateways_are_an_upstream_of_two_or_more_servers():
    servers = gateway_upstream().find("server")
    assert len(servers) >= 2
    assert len({s.values[0] for s in servers}) == len(servers)
    # WebSockets are long-lived: balance by open connections, not round robin, and no stickiness.
    assert gateway_upstream().find("least_conn")
    # least_conn counts connections across nginx's worker processes only with a shared zone.
    assert gateway_upstream().find("zone")
    assert not gateway_upstream().find("ip_hash") and not gateway_upstream().find("hash")


def test_the_websocket_location_upgrades_to_the_gateways():
    ws = location("/ws", exact=True)
    assert upstream_of(ws) in UPSTREAMS
    assert in_effect(ws, "proxy_http_version") == [["1.1"]]
    headers = {values[0].lower(): values[1] for values in in_effect(ws, "proxy_set_header")}
    assert headers["upgrade"] == "$http_upgrade"
    assert headers["connection"] == "$connection_upgrade"
    assert headers["host"] == "$host"
    assert headers["x-forwarded-proto"] == "$scheme"


def test_the_websocket_read_timeout_outlasts_the_gateways_heartbeat():
    """nginx closes a proxied connection that is silent for proxy_read_timeout (60 s unless said);
    the gateway pings every WS_HEARTBEAT seconds, so the timeout must leave room for a late ping."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    heartbeat = max(float(compose["x-app"]["environment"].get("WS_HEARTBEAT", 0)),
                    GatewaySettings.from_env({}).ws_heartbeat)
    ws = location("/ws", exact=True)
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (values,) = in_effect(ws, name)
        assert seconds(values[0]) >= 4 * heartbeat, f"{name} {values[0]} is too close to WS_HEARTBEAT {heartbeat}"


def test_healthz_goes_to_the_gateways_and_everything_else_to_web():
    gateways = upstream_of(location("/ws", exact=True))
    assert upstream_of(location("/healthz", exact=True)) == gateways
    web_upstream = upstream_of(location("/"))
    assert web_upstream != gateways and UPSTREAMS[web_upstream].find("server")
    static = location("/static/")
    assert static.first("alias") or upstream_of(static) == web_upstream


def test_metrics_are_not_served_to_the_internet():
    metrics = location("/metrics", exact=True)
    assert metrics.first("return").values == ["404"] and not metrics.first("proxy_pass")


def test_cookies_go_to_web_and_never_to_the_gateways():
    """The gateway authenticates by token; a handshake's headers stay in its memory for the
    connection's life, so a browser's cookies would cost every connection their size twice."""
    (mapping,) = [m for m in HTTP.find("map") if m.values == ["$uri", "$upstream_cookie"]]
    entries = {d.name: d.values for d in mapping.block}
    assert entries["default"] == ["$http_cookie"]
    assert entries["/ws"] in ([""], ["''"])
    for loc in TLS_SERVER.find("location"):
        if loc.first("proxy_pass"):
            headers = {values[0].lower(): values[1] for values in in_effect(loc, "proxy_set_header")}
            assert headers.get("cookie") == "$upstream_cookie", loc.values


def test_every_proxied_location_sends_the_host_and_the_scheme():
    """A location with a proxy_set_header of its own loses all of the server's: Django would then
    see the upstream's name as Host (400) and no X-Forwarded-Proto (a redirect loop)."""
    for loc in TLS_SERVER.find("location"):
        if loc.first("proxy_pass"):
            headers = {values[0].lower(): values[1] for values in in_effect(loc, "proxy_set_header")}
            assert headers.get("host") == "$host", loc.values
            assert headers.get("x-forwarded-proto") == "$scheme", loc.values


def test_plain_http_redirects_to_https_and_tls_is_configured():
    plain = next(s for s in SERVERS if s is not TLS_SERVER)
    (redirect,) = plain.first("location").find("return")
    assert redirect.values[0] == "301" and redirect.values[1].startswith("https://")
    assert TLS_SERVER.first("ssl_certificate") and TLS_SERVER.first("ssl_certificate_key")
    assert TLS_SERVER.first("ssl_protocols").values == ["TLSv1.2", "TLSv1.3"]


def test_the_reader_round_trips_the_file():
    assert parse(dump(CONFIG.block)) == CONFIG.block


# ---------------------------------------------------------------------------------------------
# nginx itself
# ---------------------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


NGINX = nginx_binary()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="no nginx binary (the Debian package `nginx`); "
                                                      "the checks above read the file without it")


@dataclass
class Adapted:
    """deploy/nginx.conf rewritten to run here, and where its parts listen."""

    prefix: Path
    conf: Path
    http_port: int
    https_port: int
    gateway_ports: list[int]
    web_ports: list[int]
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.prefix / "error.log"


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=chat.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def adapt(prefix: Path) -> Adapted:
    """The same config, with every path and address of the real deployment swapped for one here."""
    config = parse(CONFIG_TEXT)
    main = Directive("main", [], config)
    http_block = main.first("http")
    adapted = Adapted(prefix, prefix / "nginx.conf", free_port(), free_port(),
                      [free_port() for _ in gateway_upstream().find("server")],
                      [free_port() for _ in UPSTREAMS[upstream_of(location("/"))].find("server")])
    cert, key = self_signed_certificate(prefix)
    version = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr

    for d in main.block:
        if d.name == "pid":
            d.args = [str(prefix / "nginx.pid")]
        elif d.name == "error_log":
            d.args = [str(adapted.log), "info"]
        elif d.name == "worker_processes":
            d.args = ["1"]
        elif d.name == "worker_rlimit_nofile":
            d.args = ["1024"]
        elif d.name == "events":
            d.first("worker_connections").args = ["256"]
    http_block.first("access_log").args = [str(prefix / "access.log")]
    # Compiled-in temp folders are outside the prefix (Debian: /var/lib/nginx), and nginx -t
    # creates them: put them here, for the modules this build has.
    temp = [Directive("client_body_temp_path", [str(prefix / "body")]),
            Directive("proxy_temp_path", [str(prefix / "proxy")])]
    for module in ("fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in version:
            temp.append(Directive(f"{module}_temp_path", [str(prefix / module)]))
    http_block.block[:0] = temp
    for upstream, ports in ((gateway_upstream().values[0], adapted.gateway_ports),
                            (upstream_of(location("/")), adapted.web_ports)):
        servers = [d for d in http_block.find("upstream") if d.values[0] == upstream][0].find("server")
        for server, port in zip(servers, ports):
            server.args[0] = f"127.0.0.1:{port}"
    for server in http_block.find("server"):
        listens = server.find("listen")
        tls = any("ssl" in listen.values for listen in listens)
        server.block = [d for d in server.block if not (d.name == "listen" and d.values[0].startswith("["))]
        server.first("listen").args = [f"127.0.0.1:{adapted.https_port if tls else adapted.http_port}",
                                       *(["ssl"] if tls else [])]
        if tls:
            server.first("ssl_certificate").args = [str(cert)]
            server.first("ssl_certificate_key").args = [str(key)]
    # The http block's own text must have no real path left (a leak of the deployment's
    # paths into the test would make it depend on this machine).
    text = dump(main.block)
    assert "/etc/nginx/tls" not in text and "/var/log/nginx" not in text and ".internal" not in text
    adapted.conf.write_text(text + "\n")
    return adapted


@pytest.fixture
def adapted(tmp_path) -> Adapted:
    return adapt(tmp_path)


@needs_nginx
def test_nginx_accepts_the_config(adapted):
    result = subprocess.run([NGINX, "-t", "-p", str(adapted.prefix), "-c", str(adapted.conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[emerg]" not in result.stderr


# ---------------------------------------------------------------------------------------------
# The config run for real, in front of stub gateways and a stub web process
# ---------------------------------------------------------------------------------------------


def stub_gateway(name: str, full: dict[str, bool]) -> web.Application:
    """A gateway's two routes: /ws echoes with its name (or answers 503, as a gateway at
    MAX_CONNECTIONS does), /healthz names it."""

    async def ws_view(request: web.Request) -> web.StreamResponse:
        if full.get(name):
            raise web.HTTPServiceUnavailable(text="Gateway full")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"gateway": name, "host": request.host, "proto": request.headers.get("X-Forwarded-Proto"),
                            "origin": request.headers.get("Origin"), "cookie": request.headers.get("Cookie")})
        async for message in ws:
            await ws.send_str(f"{name}: {message.data}")
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"gateway": name})

    app = web.Application()
    app.router.add_get("/ws", ws_view)
    app.router.add_get("/healthz", healthz)
    return app


def stub_web(name: str) -> web.Application:
    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"web": name, "path": request.path, "host": request.host,
                                  "proto": request.headers.get("X-Forwarded-Proto"),
                                  "connection": request.headers.get("Connection"),
                                  "upgrade": request.headers.get("Upgrade"),
                                  "cookie": request.headers.get("Cookie")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


@pytest.fixture
def running_nginx(adapted) -> Iterator[Adapted]:
    if NGINX is None:
        pytest.skip("no nginx binary (the Debian package `nginx`)")
    proc = subprocess.Popen([NGINX, "-p", str(adapted.prefix), "-c", str(adapted.conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: port_open(adapted.https_port) and port_open(adapted.http_port), "nginx", 10, proc)
        yield adapted
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def serve(apps: list[tuple[web.Application, int]]) -> list[web.AppRunner]:
    runners = []
    for app, port in apps:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    return runners


@needs_nginx
def test_nginx_routes_websockets_to_every_gateway_and_pages_to_web(running_nginx):
    nginx = running_nginx
    names = [f"gateway-{i}" for i in range(1, len(nginx.gateway_ports) + 1)]
    full: dict[str, bool] = {}
    base = f"https://127.0.0.1:{nginx.https_port}"
    host = {"Host": "chat.example.com"}
    cookies = {"Cookie": "sessionid=abc123; csrftoken=def456"}
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE

    async def scenario() -> None:
        runners = await serve([(stub_gateway(n, full), p) for n, p in zip(names, nginx.gateway_ports)]
                              + [(stub_web(f"web-{i}"), p) for i, p in enumerate(nginx.web_ports, 1)])
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                # WebSockets: upgraded through nginx, frames both ways, spread over the gateways
                # (least_conn: the second open connection goes to the other gateway).
                sockets, seen = [], set()
                for _ in names:
                    ws = await session.ws_connect(f"wss://127.0.0.1:{nginx.https_port}/ws", ssl=insecure,
                                                  headers={**host, **cookies, "Origin": "https://chat.example.com"})
                    hello = await ws.receive_json()
                    assert hello["host"] == "chat.example.com" and hello["proto"] == "https"
                    assert hello["origin"] == "https://chat.example.com"
                    assert hello["cookie"] is None, "the browser's cookies are not passed to a gateway"
                    await ws.send_str("hi")
                    assert (await ws.receive()).data == f"{hello['gateway']}: hi"
                    seen.add(hello["gateway"])
                    sockets.append(ws)
                assert seen == set(names), "least_conn spreads open WebSockets over every gateway"
                for ws in sockets:
                    await ws.close()

                # A full gateway (503 at the handshake) is skipped: the client lands on another.
                full[names[0]] = True
                for _ in range(3):
                    ws = await session.ws_connect(f"wss://127.0.0.1:{nginx.https_port}/ws", ssl=insecure, headers=host)
                    assert (await ws.receive_json())["gateway"] != names[0]
                    await ws.close()
                full[names[0]] = False

                async with session.get(f"{base}/healthz", ssl=insecure, headers=host) as response:
                    assert response.status == 200 and (await response.json())["gateway"] in names

                for path in ("/", "/api/rooms/", "/static/chat/chat.css", "/admin/login/"):
                    async with session.get(f"{base}{path}", ssl=insecure, headers={**host, **cookies}) as response:
                        body = await response.json()
                    assert body["web"].startswith("web-") and body["path"] == path
                    assert body["cookie"] == cookies["Cookie"], "Django gets the cookies as they came"
                    assert body["host"] == "chat.example.com" and body["proto"] == "https"
                    # No "Connection: upgrade" to web for a plain request; keep-alive instead.
                    assert body["upgrade"] is None and (body["connection"] or "").lower() != "upgrade"

                async with session.get(f"{base}/metrics", ssl=insecure, headers=host) as response:
                    assert response.status == 404 and "json" not in response.content_type

                async with session.get(f"http://127.0.0.1:{nginx.http_port}/login/?next=/", headers=host,
                                       allow_redirects=False) as response:
                    assert response.status == 301
                    assert response.headers["Location"] == "https://chat.example.com/login/?next=/"
        finally:
            for runner in runners:
                await runner.cleanup()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "[emerg]" not in nginx.log.read_text()
