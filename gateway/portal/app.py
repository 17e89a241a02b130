"""The portal's aiohttp application: routes, security headers, static files, listener."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from importlib import resources

from aiohttp import web

from gateway.config import Settings
from gateway.logs import get_logger
from gateway.portal.autoconfig import autoconfig_xml, email_domain
from gateway.portal.clients import DEFAULT_TRUSTED_PROXIES, ClientAddresses, CodeThrottle
from gateway.portal.handlers import Handlers
from gateway.portal.manage import ManageHandlers
from gateway.portal.notify import Notices
from gateway.portal.tokens import AccessTokens
from gateway.vault import Vault

log = get_logger("pli.portal")

# Scripts and styles from the portal itself only, no inline script, no frames, no forms
# sent anywhere. Trusted Types: the one policy, "pli-worker", vouches only for the
# service worker's own address (saver.js); with no policy for HTML, any
# HTML-from-a-string sink (innerHTML, insertAdjacentHTML, document.write) throws, so data
# can only ever be text.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types pli-worker"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "X-Robots-Tag": "noindex, nofollow",
}

STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

MAX_REQUEST_BODY = 4096


def build_portal(
    vault: Vault,
    settings: Settings,
    *,
    trusted_proxies: Sequence[str] = DEFAULT_TRUSTED_PROXIES,
    clock: Callable[[], float] = time.time,
    code_throttle: CodeThrottle | None = None,
    tokens: AccessTokens | None = None,
    incoming_mail_host: str | None = None,
    notices: Notices | None = None,
) -> web.Application:
    """The portal as an aiohttp application.

    ``trusted_proxies``: addresses or networks whose X-Forwarded-For is believed (the
    reverse proxy). ``incoming_mail_host``: the practice's IMAP host for Thunderbird's
    autoconfig (default: the first upstream's host). ``notices``: where the senders'
    notices and the secure replies go (none: no notice, no reply)."""
    clients = ClientAddresses(trusted_proxies)
    throttle = code_throttle or CodeThrottle()
    handlers = Handlers(
        vault, settings,
        clients=clients,
        throttle=throttle,
        # A key from [portal] key_file: instances behind one balancer accept each
        # other's cookies and grants; none, a key drawn now.
        tokens=tokens or AccessTokens(clock=clock, key=settings.portal.signing_key()),
        clock=clock,
        notices=notices,
    )
    manage = ManageHandlers(vault, settings, clients=clients, throttle=throttle, clock=clock)
    static = _load_static()

    async def serve_static(request: web.Request) -> web.Response:
        found = static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def autoconfig(request: web.Request) -> web.Response:
        domain = email_domain(request.query.get("emailaddress"))
        log.info("portal.autoconfig", outcome="ok", client=handlers.client(request))
        return web.Response(text=autoconfig_xml(settings, domain, incoming_mail_host),
                            content_type="text/xml", charset="utf-8")

    app = web.Application(client_max_size=MAX_REQUEST_BODY)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/l/{link_id}", handlers.page, allow_head=False)
    app.router.add_route("HEAD", "/l/{link_id}", handlers.page)
    app.router.add_get("/api/l/{link_id}", handlers.state, allow_head=False)
    app.router.add_post("/api/l/{link_id}/code", handlers.code)
    app.router.add_post("/api/l/{link_id}/o/{object_id}/grant", handlers.grant)
    app.router.add_post("/api/l/{link_id}/reply", handlers.reply)
    app.router.add_get("/api/l/{link_id}/o/{object_id}", handlers.object, allow_head=False)
    app.router.add_route("HEAD", "/api/l/{link_id}/o/{object_id}", handlers.object)
    app.router.add_get("/m/{link_id}", manage.page)
    app.router.add_post("/api/m/{link_id}", manage.state)
    app.router.add_post("/api/m/{link_id}/revoke", manage.revoke)
    app.router.add_post("/api/m/{link_id}/extend", manage.extend)
    app.router.add_get("/static/{name}", serve_static)
    app.router.add_get("/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig)
    app.router.add_get("/mail/config-v1.1.xml", autoconfig)
    return app


async def start_portal(
    settings: Settings,
    vault: Vault,
    *,
    trusted_proxies: Sequence[str] = DEFAULT_TRUSTED_PROXIES,
    incoming_mail_host: str | None = None,
    shutdown_timeout: float = 10.0,
    notices: Notices | None = None,
) -> web.AppRunner:
    """Serve the portal on ``settings.portal.host:port``; stop it with ``runner.cleanup()``
    (downloads under way get ``shutdown_timeout`` seconds to finish)."""
    app = build_portal(vault, settings, trusted_proxies=trusted_proxies,
                       incoming_mail_host=incoming_mail_host, notices=notices)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, settings.portal.host, settings.portal.port,
                       reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("portal.listening", host=settings.portal.host, port=settings.portal.port,
             url=settings.portal.url)
    return runner


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "Pli"  # not the versions of Python and aiohttp


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The page's script and style, read once; only these names are ever served."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("gateway.portal").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files
