"""The national MSSanté whitelist: `pli lists import` reads the ANS's XML (a real copy),
and `pli lists update` downloads it over HTTPS with the certificate checked, replacing
the policy's list only with what is really the whitelist. The server is aiohttp with a
trustme certificate on 127.0.0.1, never the real address."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from gateway.policy.mssante import NotAWhitelist, parse_whitelist
from tests.support import HOST, LoopThread, free_port, make_gateway

DATA = Path(__file__).parent / "policy" / "data" / "listeblanchemssante.xml"
GENERATED = "2025-03-13T14:54:10Z"


def pli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


def entries(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_the_real_whitelist_reads_with_its_date_and_domains() -> None:
    whitelist = parse_whitelist(DATA.read_bytes())
    assert whitelist.generated == GENERATED
    assert len(whitelist.domains) == 516  # 619 Domaine entries, some named twice
    assert {"adsea29.mssante.fr", "ae.mssante.fr", "psypro-reims.mssante.fr"} <= set(whitelist.domains)
    assert all(d.endswith(".mssante.fr") for d in whitelist.domains)
    assert whitelist.unclosed  # the ANS's copy does not close its root element


@pytest.mark.parametrize("cut", ["half", "no-list-end"])
def test_a_truncated_whitelist_is_refused(cut: str) -> None:
    data = DATA.read_bytes()
    data = data[:len(data) // 2] if cut == "half" else data.rstrip()[:-len("</ListeDomaines>")]
    with pytest.raises(NotAWhitelist, match="not well-formed"):
        parse_whitelist(data)


def test_xml_that_is_not_the_whitelist_is_refused() -> None:
    with pytest.raises(NotAWhitelist, match="root element"):
        parse_whitelist(b"<?xml version='1.0'?><html><body>Maintenance</body></html>")
    with pytest.raises(NotAWhitelist, match="DOCTYPE"):
        parse_whitelist(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')


def test_pli_lists_import_reads_the_xml_and_says_what_changed(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    target = gw.folder / "lists" / "mssante-whitelist.txt"
    target.write_text("# kept comment\n\nancien-operateur.mssante.fr\n")
    done = pli("lists", "import", str(DATA), "--into", "mssante-whitelist", "-c", str(gw.config))
    assert done.returncode == 0, done.stderr
    assert (f"mssante-whitelist: 516 entries: 516 added, 1 removed, 0 unchanged; whitelist "
            f"generated {GENERATED}") in done.stdout
    assert "removed: ancien-operateur.mssante.fr" in done.stdout
    assert len(entries(target)) == 516
    assert target.read_text().startswith("# kept comment\n")
    assert f"# DateDeGeneration: {GENERATED}" in target.read_text()


class ListServer:
    """An HTTPS server on 127.0.0.1 answering what the test says, with a trustme CA."""

    def __init__(self, loop: LoopThread, ca: trustme.CA, name: str = HOST) -> None:
        self.loop = loop
        self.port = free_port()
        self.name = name  # what its certificate names, and clients connect to
        self.body = DATA.read_bytes()
        self.status = 200
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        self.requests = 0

        async def serve(request: web.Request) -> web.Response:
            self.requests += 1
            return web.Response(body=self.body, status=self.status,
                                content_type="application/xml")

        app = web.Application()
        app.router.add_get("/listeblanchemssante.xml", serve)
        self.runner = web.AppRunner(app)
        loop.run(self.runner.setup())
        loop.run(web.TCPSite(self.runner, HOST, self.port, ssl_context=context).start())

    @property
    def url(self) -> str:
        return f"https://{self.name}:{self.port}/listeblanchemssante.xml"

    def close(self) -> None:
        self.loop.run(self.runner.cleanup())


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(loop: LoopThread, ca: trustme.CA) -> Iterator[ListServer]:
    s = ListServer(loop, ca)
    yield s
    s.close()


def configured(tmp_path: Path, server: ListServer, ca: trustme.CA | None) -> Path:
    gw = make_gateway(tmp_path / "pli", policy=None)
    text = gw.config.read_text()
    text = text.replace('url = "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml"',
                        f'url = "{server.url}"')
    if ca is not None:
        ca.cert_pem.write_to_path(str(gw.folder / "igc-sante-ca.pem"))
        text = text.replace('# ca_file = "igc-sante-ca.pem"', 'ca_file = "igc-sante-ca.pem"')
    gw.config.write_text(text)
    return gw.config


def test_update_downloads_checks_and_replaces_the_list(tmp_path: Path, server: ListServer,
                                                       ca: trustme.CA) -> None:
    config = configured(tmp_path, server, ca)
    target = config.parent / "lists" / "mssante-whitelist.txt"
    target.write_text(target.read_text().replace(
        f"# DateDeGeneration: {GENERATED}", "# DateDeGeneration: 2024-11-02T09:00:00Z"))
    lines = target.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    target.write_text("\n".join(lines[:first] + ["ancien-operateur.mssante.fr"]
                                + lines[first + 1:]) + "\n")
    done = pli("lists", "update", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert server.requests == 1
    assert (f"mssante-whitelist: 516 entries: 1 added, 1 removed, 515 unchanged; whitelist "
            f"generated {GENERATED} (the one replaced: 2024-11-02T09:00:00Z)") in done.stdout
    assert "removed: ancien-operateur.mssante.fr" in done.stdout
    assert "ancien-operateur.mssante.fr" not in entries(target) and len(entries(target)) == 516
    assert pli("check", "-c", str(config)).returncode == 0


@pytest.mark.parametrize("case", ["untrusted", "error-page", "truncated", "not-found"])
def test_update_leaves_the_list_as_it_was_when_the_download_is_not_the_whitelist(
        tmp_path: Path, server: ListServer, ca: trustme.CA, case: str) -> None:
    config = configured(tmp_path, server, None if case == "untrusted" else ca)
    target = config.parent / "lists" / "mssante-whitelist.txt"
    before = target.read_bytes()
    if case == "error-page":
        server.body = b"<!doctype html><html><body>Maintenance en cours</body></html>"
    elif case == "truncated":
        server.body = server.body[:len(server.body) // 3]
    elif case == "not-found":
        server.status, server.body = 404, b"<html>Not Found</html>"
    done = pli("lists", "update", "-c", str(config))
    assert done.returncode == 1
    assert target.read_bytes() == before
    assert "Traceback" not in done.stderr
    expected = {"untrusted": "certificate is not trusted",
                "error-page": "not the MSSanté whitelist",
                "truncated": "not the MSSanté whitelist: it is not well-formed XML",
                "not-found": "the server answered 404"}[case]
    assert expected in done.stderr, done.stderr


def test_the_setting_refuses_a_plain_http_address(tmp_path: Path, server: ListServer) -> None:
    config = configured(tmp_path, server, None)
    config.write_text(config.read_text().replace(server.url, server.url.replace("https", "http")))
    done = pli("lists", "update", "-c", str(config))
    assert done.returncode == 1 and "https://" in done.stderr and server.requests == 0
