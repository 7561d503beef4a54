"""Who may use the server: the access wing's five middlewares, outermost first (setup).

- `forwarded`: behind a reverse proxy named with --trusted-proxy, a request from
  that proxy is taken as the proxy says it came (X-Forwarded-Proto and
  X-Forwarded-For): over TLS or not, and from which client. From anyone else those
  headers mean nothing.
- `host_check`: a loopback server answers only requests addressed to this
  machine (or to a name given with --allow-host). A hostile page that points its
  own name at 127.0.0.1 (DNS rebinding) still sends its own name in `Host`.
- `cors`: the origins given with --cors-origin (e.g. the original React app) may call
  the API from their pages; no other origin may. It comes before the refusals below,
  so they still reach an allowed front end as responses it can read.
- `same_origin`: a request that changes something (any method but GET, HEAD and
  OPTIONS, so every route present and future) is refused when its `Origin`, or
  its `Referer` if no `Origin` is sent, names another site. That stops another
  site's form or script from uploading, deleting or retrying. Browsers also say
  where a request comes from in `Sec-Fetch-Site`, even when a page has them leave
  out `Referer`: `cross-site` and `same-site` then pass only with an `Origin` (or
  `Referer`) that is allowed. A client that sends none of these headers is not a
  browser acting for a visitor of some page: it passes.
- `token_check`: when the settings carry a token, every request but /healthz must
  bring it, as the cookie that visiting the printed `/?token=...` link sets, or as
  `Authorization: Bearer ...`.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_log import AccessLogger
from yarl import URL

from .config import Settings, is_loopback
from .errors import ApiError, wants_html
from .keys import SETTINGS, TRUSTED
from .tus import protocol as tus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_PARAM = "token"
# Open without the token, for monitoring; it then shows counts only (routes/pages.py).
OPEN_PATHS = frozenset({"/healthz"})
WORKER_PREFIX = "/worker/"  # routes/workers.py's, behind a token of their own (jobs.WORKER_PREFIX)
NEEDS_TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>video_async: token needed</title></head>
<body>
<h1>This server needs its access token</h1>
<p>Open the link the server printed when it started: it looks like
<code>http://…/?token=…</code>. Opening it once lets this browser in.</p>
<p>Not the one who started it? Ask the person who did for that link.</p>
</body></html>
"""


def setup(app: web.Application) -> None:
    """Plug access control in, ahead of the core's own middlewares.

    A trusted proxy's word on scheme and client first; then the Host check; CORS next,
    so the refusals after it still reach an allowed front end as responses it can read.
    """
    settings = app[SETTINGS]
    ours = [forwarded(settings), host_check(settings), cors(settings.cors_origins),
            same_origin(settings), token_check(settings)]
    for place, middleware in enumerate(ours):
        app.middlewares.insert(place, middleware)
    app[TRUSTED] = has_token


def forwarded(settings: Settings) -> Middleware:
    """A request relayed by a trusted proxy: its scheme and client as the proxy saw them."""
    proxies = frozenset(ipaddress.ip_address(address) for address in settings.trusted_proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if proxies and _address(request.remote) in proxies:
            # the last entry of each is the one the trusted proxy itself wrote
            scheme = _last(request.headers.get("X-Forwarded-Proto", "")).lower()
            client = _last(request.headers.get("X-Forwarded-For", ""))
            changes: dict[str, str] = {}
            if scheme in ("http", "https"):
                changes["scheme"] = scheme
            if _address(client) is not None:
                changes["remote"] = client
            if changes:
                request = request.clone(**changes)  # type: ignore[arg-type]
        return await handler(request)

    return middleware


def _last(listed: str) -> str:
    return listed.rpartition(",")[2].strip()


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return None


def host_name(host: str) -> str:
    """A Host header's name without its port: 'Example.com:8080' -> 'example.com', '[::1]:80' -> '::1'."""
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    return name.rstrip(".").lower()


def host_check(settings: Settings) -> Middleware:
    """On loopback, or whenever --allow-host names are given, serve only the names expected."""
    allowed = frozenset(host_name(name) for name in settings.allowed_hosts)
    checking = settings.on_loopback or bool(allowed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        # No Host at all is an HTTP/1.0 client, never a browser: nothing to rebind.
        if checking and host is not None:
            name = host_name(host)
            if not (is_loopback(name) or name in allowed):
                raise ApiError(403, "unknown_host",
                               f"This server answers only to localhost, 127.0.0.1 and [::1], and "
                               f"to names given with --allow-host; this request was addressed to "
                               f"{host[:100]!r}. Behind a reverse proxy, start the server with "
                               f"--allow-host {name[:100]}.")
        return await handler(request)

    return middleware


def same_origin(settings: Settings) -> Middleware:
    """Changes come only from this server's own pages, allowed front ends, or non-browsers."""
    allowed = frozenset(filter(None, (_origin_of(origin) for origin in settings.cors_origins)))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in SAFE_METHODS and not _may_change(request, allowed):
            raise ApiError(403, "cross_site",
                           "Another site's page tried to change something here, and only "
                           "this server's own page (or a front end allowed with "
                           "--cors-origin) may. Nothing was changed.")
        return await handler(request)

    return middleware


Origin = tuple[str, str, int]  # scheme, host name, port (the scheme's default if not written)
DEFAULT_PORTS = {"http": 80, "https": 443}


def _may_change(request: web.Request, allowed: frozenset[Origin]) -> bool:
    headers = request.headers
    source = headers.get("Origin") or headers.get("Referer")
    fetch_site = headers.get("Sec-Fetch-Site", "").strip().lower()
    if not source:
        # A browser sent by another page that hid where it came from is nobody we know.
        return fetch_site not in ("cross-site", "same-site")
    if not _from_here(source, headers.get("Host"), allowed):
        return False
    if fetch_site == "cross-site":
        # Only a front end listed with --cors-origin lives on another site by right.
        return _origin_of(source) in allowed
    return True  # same-origin, none (typed by the visitor), or same-site from an allowed origin


def _origin_of(source: str) -> Origin | None:
    """An Origin or Referer value as (scheme, host, port), with the default port filled in."""
    try:
        url = URL(source)
        port = url.port
    except ValueError:
        return None
    # "null" (a sandboxed frame, a file: page) has no host and is nobody we know.
    if not url.absolute or not url.host:
        return None
    return url.scheme, url.host.rstrip(".").lower(), port or DEFAULT_PORTS.get(url.scheme, 0)


def _from_here(source: str, host: str | None, allowed: frozenset[Origin]) -> bool:
    """Does an Origin or Referer value name this server, or an allowed front end?"""
    origin = _origin_of(source)
    if origin is None:
        return False
    if origin in allowed:
        return True
    if host is None:
        return False
    # Browsers write Host as the authority of the URL they requested, leaving out the
    # scheme's default port, which is then the port of the Origin's own scheme;
    # a proxy may write that port out. Either way, the same place.
    scheme, name, port = origin
    written = host.rpartition("]")[2] if host.startswith("[") else host
    _, colon, number = written.rpartition(":")
    try:
        host_port = int(number) if colon else DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return False
    return (name, port) == (host_name(host), host_port)


def cors(origins: tuple[str, ...]) -> Middleware:
    """Let the listed origins (e.g. the original React app) call the API; no one else."""
    allowed = frozenset(origin.rstrip("/") for origin in origins)
    exposed = ", ".join(dict.fromkeys(("Location", "ETag", *tus.CORS_EXPOSED_HEADERS)))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin not in allowed:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, HEAD, POST, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": ", ".join(
                    ("Authorization", "Content-Type", "If-None-Match",
                     *tus.CORS_REQUEST_HEADERS)),
                "Access-Control-Max-Age": "600",
            })
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers["Access-Control-Allow-Origin"] = origin
                exc.headers["Access-Control-Expose-Headers"] = exposed  # e.g. a 409's Upload-Offset
                exc.headers["Vary"] = "Origin"
                raise
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = exposed
        response.headers["Vary"] = "Origin"
        return response

    return middleware


def cookie_name(settings: Settings) -> str:
    # Cookies are shared by every port of a host: the port keeps two servers' tokens apart.
    return f"video_async_token_{settings.port}" if settings.port else "video_async_token"


def _matches(given: str, token: str) -> bool:
    # compare_digest takes as long wherever the first difference is: the timing
    # of a refusal tells nothing about how much of a guess was right.
    return hmac.compare_digest(given.encode(), token.encode())


def has_token(request: web.Request) -> bool:
    """True when the request brings the token (cookie or bearer header), or none is required."""
    settings = request.app[SETTINGS]
    if not settings.token:
        return True
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _matches(credentials.strip(), settings.token):
        return True
    cookie = request.cookies.get(cookie_name(settings))
    return cookie is not None and _matches(cookie, settings.token)


def token_check(settings: Settings) -> Middleware:
    """With a token set: let in who brings it, turn the printed link into a cookie, refuse the rest."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not settings.token:
            return await handler(request)
        offered = request.query.get(TOKEN_PARAM)
        if offered is not None and request.method in ("GET", "HEAD") \
                and _matches(offered, settings.token):
            return _let_in(request, settings)
        # the worker routes ask for the worker token themselves, and take no other
        if has_token(request) or request.path in OPEN_PATHS \
                or request.path.startswith(WORKER_PREFIX):
            return await handler(request)
        if wants_html(request):
            return web.Response(status=401, text=NEEDS_TOKEN_PAGE, content_type="text/html",
                                headers={"Cache-Control": "no-store"})
        raise ApiError(401, "token_required",
                       "This server needs its access token: send 'Authorization: Bearer <token>', "
                       "or open the link printed when the server started.",
                       headers={"WWW-Authenticate": 'Bearer realm="video_async"'})

    return middleware


def _let_in(request: web.Request, settings: Settings) -> web.Response:
    """The printed link: keep the token in a cookie, and send the browser on without it in the URL."""
    response = web.Response(status=303, headers={
        "Location": _same_site_location(request.rel_url.without_query_params(TOKEN_PARAM)),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    })
    # HttpOnly: no script can read it. Strict: no other site's request carries it. Secure
    # when the browser came over TLS, to this server or to a proxy named as trusted.
    response.set_cookie(cookie_name(settings), settings.token, path="/", httponly=True,
                        samesite="Strict", secure=request.secure)
    return response


def _same_site_location(url: URL) -> str:
    """The path and query of url, as a Location that cannot leave this site.

    A browser reads '//evil.example/' as another host, and so '/\\evil.example/' (a
    backslash counts as a slash) and slashes with tabs or line breaks between them
    (which it drops): a path that begins with any of those begins with one slash here.
    """
    path = "/" + url.raw_path.lstrip("/\\\t\r\n ")
    return f"{path}?{url.raw_query_string}" if url.raw_query_string else path


def page_links(settings: Settings) -> list[str]:
    """The page's address with the token, as start-up prints it, one per useful name."""
    if settings.host in ("0.0.0.0", "::", ""):
        # every interface: this machine's name for others, loopback for this one
        hosts = [socket.gethostname(), "127.0.0.1"]
    else:
        hosts = [f"[{settings.host}]" if ":" in settings.host else settings.host]
    return [f"http://{host}:{settings.port}/?{TOKEN_PARAM}={settings.token}" for host in hosts]


POLLED = frozenset({"/tasks", "/healthz"})  # what the page asks for again and again


# `token=` in any URL's query, wherever it is written (the request line, a Referer).
_TOKEN_IN_URL = re.compile(rf"(?i)([?&;]{TOKEN_PARAM}=)[^&#;\s\"]*")


def hide_token(text: str) -> str:
    """A URL, or any text holding one, with the value of its `token=` replaced."""
    return _TOKEN_IN_URL.sub(r"\1(hidden)", text)


class AccessLog(AccessLogger):
    """aiohttp's access log, with two changes: no token reaches it (a `?token=...` in the
    request line, or in a Referer, which is the address of the page the browser came
    from), and the page's own polling (GET /tasks and /healthz, every second or two
    while a tab is open) is logged at DEBUG, so it cannot bury the lines that matter."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.method == "GET" and request.path in POLLED and response.status in (200, 304):
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug('"%s %s" %s (a poll)', request.method, request.path,
                                  response.status)
            return
        super().log(request, response, time)

    def _format_line(self, request: web.BaseRequest, response: web.StreamResponse,
                     time: float) -> list[tuple[str | tuple[str, str], str]]:
        # every field: the request line and any header the format names
        return [(key, hide_token(value) if isinstance(value, str) else value)
                for key, value in super()._format_line(request, response, time)]
