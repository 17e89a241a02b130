"""Thunderbird's autoconfig file: what its reader requires, with Pli as the way out."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gateway.config import Listener, Settings
from gateway.vault import Vault
from tests.portal.helpers import run, serve

PATHS = ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"]


def fetch(vault: Vault, settings: Settings, path: str, **options: object) -> tuple[int, str, str]:
    async def scenario() -> tuple[int, str, str]:
        async with serve(vault, settings, **options) as client:
            response = await client.get(path)
            return response.status, response.headers["Content-Type"], await response.text()
    return run(scenario)


def servers(root: ET.Element, kind: str) -> list[dict[str, str]]:
    provider = root.find("emailProvider")
    assert provider is not None
    return [{child.tag: (child.text or "") for child in server} | dict(server.attrib)
            for server in provider.findall(kind)]


@pytest.mark.parametrize("path", PATHS)
def test_the_outgoing_servers_are_pli_with_tls_and_the_user_name(
        vault: Vault, settings: Settings, path: str) -> None:
    status, content_type, body = fetch(
        vault, settings, path + "?emailaddress=dr.martin%40cabinet-martin.fr")
    assert status == 200 and content_type.startswith("text/xml")
    root = ET.fromstring(body.encode())
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "cabinet-martin.fr"
    assert provider.findtext("domain") == "cabinet-martin.fr"
    assert provider.findtext("displayName") == "Cabinet Martin"
    outgoing = servers(root, "outgoingServer")
    assert outgoing == [
        {"type": "smtp", "hostname": "pli.cabinet-martin.fr", "port": "587",
         "socketType": "STARTTLS", "username": "%EMAILLOCALPART%",
         "authentication": "password-cleartext"},
        {"type": "smtp", "hostname": "pli.cabinet-martin.fr", "port": "465",
         "socketType": "SSL", "username": "%EMAILLOCALPART%",
         "authentication": "password-cleartext"},
    ]


def test_an_incoming_server_is_present_because_thunderbird_requires_one(
        vault: Vault, settings: Settings) -> None:
    """Thunderbird's reader rejects a file with no valid incomingServer."""
    root = ET.fromstring(fetch(vault, settings, PATHS[0])[2].encode())
    [incoming] = servers(root, "incomingServer")
    assert incoming["type"] in {"imap", "pop3"}
    assert incoming["hostname"] == "ssl0.ovh.net"  # the upstream provider by default
    assert incoming["port"] == "993" and incoming["socketType"] == "SSL"
    assert incoming["username"] and incoming["authentication"] == "password-cleartext"
    root = ET.fromstring(fetch(vault, settings, PATHS[0],
                               incoming_mail_host="imap.example.fr")[2].encode())
    assert servers(root, "incomingServer")[0]["hostname"] == "imap.example.fr"


@pytest.mark.parametrize(("disabled", "offered"), [
    ("submissions", [("2587", "STARTTLS")]),
    ("submission", [("2465", "SSL")]),
])
def test_a_disabled_listener_is_not_offered(
        vault: Vault, settings: Settings, disabled: str, offered: list[tuple[str, str]]) -> None:
    settings = settings.model_copy(update={"submission": Listener(port=2587),
                                           "submissions": Listener(port=2465)})
    settings = settings.model_copy(update={disabled: Listener(enabled=False, port=1)})
    root = ET.fromstring(fetch(vault, settings, PATHS[1])[2].encode())
    assert [(s["port"], s["socketType"]) for s in servers(root, "outgoingServer")] == offered


@pytest.mark.parametrize("address", ["", "no-at-sign", "x@<evil>", "x@a b.fr", "x@" + "a" * 300])
def test_without_a_usable_address_the_domain_comes_from_plis_host_name(
        vault: Vault, settings: Settings, address: str) -> None:
    body = fetch(vault, settings, f"{PATHS[1]}?emailaddress={address}")[2]
    root = ET.fromstring(body.encode())
    assert root.find("emailProvider/domain").text == "cabinet-martin.fr"  # type: ignore[union-attr]
    assert "<evil>" not in body


def test_the_practice_name_is_escaped(vault: Vault, settings: Settings) -> None:
    settings = settings.model_copy(update={"practice": settings.practice.model_copy(
        update={"name": "Martin & <Durand>"})})
    root = ET.fromstring(fetch(vault, settings, PATHS[0])[2].encode())
    assert root.find("emailProvider/displayName").text == "Martin & <Durand>"  # type: ignore[union-attr]
