"""The chat page: the page itself (login required) and the Content-Security-Policy it is served with.

The page is static markup plus JavaScript modules (chat/static/chat/); everything live goes over
the WebSocket to the gateway, which the page authenticates with a short-lived ticket from the REST
API (chat.tickets), fetched before every connection. Also the login view, throttled.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.views.decorators.cache import never_cache

from . import users
from .conf import chat_settings
from .throttles import LoginRateThrottle, retry_after

# Where the page connects when GATEWAY_URL is not set: the page's own host, this port.
DEFAULT_GATEWAY_PORT = 8080

# Scripts and styles from this site only, and nothing inline: no `<script>` body, no `on…=`
# attribute, no `style=` attribute works. Trusted Types with no policy at all: string sinks such as
# `innerHTML` throw, so user text can only ever reach the page as text. Images: this site, and the
# `data:` favicon. Frames, plugins, `<base>`, and forms to another site: none.
CSP_DIRECTIVES: dict[str, str] = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "form-action": "'self'",
    "base-uri": "'none'",
    "object-src": "'none'",
    "require-trusted-types-for": "'script'",
    "trusted-types": "'none'",
    # Not honoured in a <meta> policy: header only (X-Frame-Options covers older browsers).
    "frame-ancestors": "'none'",
}
HEADER_ONLY_DIRECTIVES = {"frame-ancestors"}


def gateway_url(request: HttpRequest) -> str:
    """GATEWAY_URL, else the page's host on port 8080 (`wss:` when the page came over HTTPS)."""
    if chat_settings.GATEWAY_URL:
        return chat_settings.GATEWAY_URL
    hostname = urlsplit(f"//{request.get_host()}").hostname or "localhost"
    if ":" in hostname:  # an IPv6 address
        hostname = f"[{hostname}]"
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{hostname}:{DEFAULT_GATEWAY_PORT}/ws"


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL: the form a CSP source takes."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(connect_to: str | None = None, *, meta: bool = False) -> str:
    """The page's policy; `connect_to` (the gateway's URL) is added to connect-src. With `meta`,
    the directives a `<meta http-equiv>` policy may carry (the login page's, in its template)."""
    directives = dict(CSP_DIRECTIVES)
    if connect_to:
        directives["connect-src"] += " " + origin_of(connect_to)
    if meta:
        directives = {name: value for name, value in directives.items() if name not in HEADER_ONLY_DIRECTIVES}
    return "; ".join(f"{name} {value}" for name, value in directives.items())


@never_cache
@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The chat: rooms, the open room and the composer, in the blocks `head` and `body` of
    BASE_TEMPLATE. The JavaScript reads its settings from the `chat-config` JSON script element
    (json_script: data, never code); `username` is the user's name on the wire (chat.users)."""
    gateway = gateway_url(request)
    policy = content_security_policy(gateway)
    config = {
        "gatewayUrl": gateway,
        "username": users.display_name(request.user),
        "ticketUrl": reverse("chat:api-ticket"),
        "loginUrl": resolve_url(settings.LOGIN_URL),
    }
    response = render(request, "chat/index.html", {"config": config, "base_template": chat_settings.BASE_TEMPLATE})
    response["Content-Security-Policy"] = policy
    return response


class LoginView(auth_views.LoginView):
    """Django's login view, whose attempts (POSTs) are throttled per client address like the REST
    API's token endpoint: 429 with `Retry-After`, and the form again with a word on why."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        throttle = LoginRateThrottle()
        if throttle.allow_request(request, self):
            return super().post(request, *args, **kwargs)
        wait = retry_after(throttle)
        # An unbound form: a bound one would check the password, the very thing refused here.
        form = self.get_form_class()(request)
        response = self.render_to_response(self.get_context_data(form=form, retry_after=wait), status=429)
        response["Retry-After"] = wait
        return response
