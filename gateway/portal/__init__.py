"""The portal: the page a patient opens from a notice, to read a protected message.

The server never sees a link's secret (it stays in the URL fragment) and never decrypts
anything: it checks the access code, enforces expiry, revocation and each document's
download limit (a download is counted before a byte of it is served), and streams
ciphertext; the page's script (``static/``) derives the keys and decrypts in
the browser, as ``docs/vault-format.md`` says. It also serves Thunderbird's autoconfig
file, so mail clients find Pli as their outgoing server by themselves.

    runner = await start_portal(settings, vault)     # listens on [portal] host:port
    ...
    await runner.cleanup()

Routes:
    GET|HEAD /l/<id>                         the page (or the "no longer valid" page, 404)
    GET      /api/l/<id>                     state: needs_code, tries_left, expires, ...
    POST     /api/l/<id>/code                {"code": "..."} -> token cookie, or tries left
    POST     /api/l/<id>/o/<object id>/grant one download of a document, counted -> grant
    POST     /api/l/<id>/reply               a secure reply, sealed in the browser (reply.py)
    GET|HEAD /api/l/<id>/o/<object id>       ciphertext, Range ok: the manifest, or a
                                             document under its grant (Authorization)
    GET|HEAD /m/<id>                         the sender's page for the link (revoke, extend)
    POST     /api/m/<id>[/revoke|/extend]    {"key": the sender's secret, ...}: see manage.py
    GET      /static/<name>                  portal.js, vault.js, texts.js, portal.css, ...;
                                             save.js, the service worker whose scope,
                                             /static/save/, streams downloads to files
    GET      /.well-known/autoconfig/mail/config-v1.1.xml, /mail/config-v1.1.xml
"""

from gateway.portal.app import build_portal, start_portal

__all__ = ["build_portal", "start_portal"]
