"""Two real `pli run` behind HAProxy, sharing a PostgreSQL link index and an object store.

What a group runs, on one machine: each instance has its own folder, spool and audit
trail, the same certificate, users, policy and portal signing key, and its own ports;
HAProxy (deploy/scale/haproxy.cfg, read as it is, with its addresses in the environment)
spreads SMTP sessions and portal requests over both. The object store is a parameter:
``files`` is one folder both instances mount as their vault (as a network share would
be); another store adds its own pli.toml settings.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import smtplib
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from gateway.vault.format import (
    MANIFEST_OBJECT_ID,
    Manifest,
    b64url_decode,
    decode_manifest,
    decrypt_object,
    derive_keys,
)
from tests.engines import HAPROXY, ROOT, Postgres
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    PliProcess,
    Provider,
    free_port,
    make_gateway,
    wait_for_port,
    wait_until,
)

HAPROXY_CFG = ROOT / "deploy" / "scale" / "haproxy.cfg"
CODE = "4821"
PDF = (b"%PDF-1.4\n% a report\n"
       + b"".join(b"%% line %06d of the report\n" % i for i in range(2000)) + b"%%EOF\n")

PROTECT_ALL = """\
[lists]
consumer-webmail = "lists/consumer-webmail.txt"

[[rule]]
name = "patients"
default = true
action = "protect"
protect = { access_code = "sender-tag", max_download_limit = 10 }
"""

ShareStore = Callable[[Gateway, Path], tuple[str, str]]
"""Makes an instance use the shared object store: returns the settings to add to its
[vault] table, and the tables to add to its pli.toml."""


def share_files(gw: Gateway, shared: Path) -> tuple[str, str]:
    """The files store on a folder both instances mount as their vault."""
    vault = gw.settings().vault_dir
    shared.mkdir(exist_ok=True)
    if vault.exists() and not vault.is_symlink():
        shutil.rmtree(vault)
    vault.parent.mkdir(parents=True, exist_ok=True)
    vault.symlink_to(shared, target_is_directory=True)
    return "", ""


def share_swift(swift: Any, container: str) -> ShareStore:
    """One Swift container, the practice's, for both instances (its settings as the
    Swift tests write them, the [vault] line apart so the index can join it)."""
    table = swift.vault_table(container, timeout=5)
    keys, _, rest = table.partition("\n[vault.swift]\n")
    vault = keys.replace("\n[vault]\n", "", 1).strip() + "\n"

    def share(gw: Gateway, shared: Path) -> tuple[str, str]:
        return vault, "\n[vault.swift]\n" + rest
    return share


@dataclass
class Instance:
    name: str
    gw: Gateway
    portal_port: int
    metrics_port: int
    log: Path
    process: PliProcess | None = None

    def start(self) -> None:
        self.process = PliProcess(self.gw, self.log).start()
        wait_for_port(self.portal_port)
        wait_for_port(self.metrics_port)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None:
            self.process.kill(sig)
            self.process = None


@dataclass
class Cluster:
    instances: dict[str, Instance]
    provider: Provider | None
    submission_port: int
    portal_port: int
    haproxy: subprocess.Popen[bytes] | None = None
    sent: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.portal_port}"

    @property
    def a(self) -> Instance:
        return self.instances["a"]

    @property
    def b(self) -> Instance:
        return self.instances["b"]


def _configure(gw: Gateway, name: str, portal_url: str, postgres: Postgres | None,
               schema: str, key_file: Path, store: tuple[str, str]) -> None:
    """The instance's name, the balancer's address in links, the shared signing key,
    index and object store; its own ports stay as make_gateway drew them."""
    config = gw.config.read_text()
    config = re.sub(r"(?m)^url = .*$", f'url = "{portal_url}"', config, count=1)
    config = config.replace("[portal]", f'[portal]\nkey_file = "{key_file}"', 1)
    vault, tables = store
    if postgres is not None:
        config += postgres.toml(schema, vault)
    elif vault:
        config += f"\n[vault]\n{vault}"
    gw.config.write_text(f'instance = "{name}"\n' + config + tables)


@contextmanager
def running_cluster(folder: Path, postgres: Postgres | None, share: ShareStore,
                    loop: LoopThread | None, names: tuple[str, ...] = ("a", "b"),
                    provider_port: int | None = None) -> Iterator[Cluster]:
    """Provider, the instances (two by default) and HAProxy, all on loopback; stopped at
    the end. ``postgres`` None: each instance keeps its own SQLite index (one instance
    only makes sense then). With one instance, both of HAProxy's servers are it.
    ``provider_port``: a provider already listening there, instead of one of ours on
    ``loop``."""
    schema = "public" if postgres is None else postgres.new_schema()
    key_file = folder / "portal-key"
    key_file.write_text("k" * 8 + os.urandom(24).hex() + "\n")
    key_file.chmod(0o600)
    provider = None
    if provider_port is None:
        assert loop is not None
        provider = Provider(loop, None, free_port(), offer_starttls=False).start()
        provider_port = provider.port
    submission, submissions, portal = free_port(), free_port(), free_port()
    instances: dict[str, Instance] = {}
    first: Gateway | None = None
    for name in names:
        gw = make_gateway(folder / name, provider_port=provider_port, policy=PROTECT_ALL)
        if first is None:
            first = gw
        else:  # one certificate for the name clients connect to, whichever answers
            for pem in ("cert.pem", "key.pem", "ca.pem"):
                shutil.copy2(first.folder / "tls" / pem, gw.folder / "tls" / pem)
        _configure(gw, name, f"http://{HOST}:{portal}", postgres, schema, key_file,
                   share(gw, folder / "shared-objects"))
        settings = gw.settings()
        instances[name] = Instance(name, gw, settings.portal.port, settings.metrics.port,
                                   folder / f"{name}.log")
    cluster = Cluster(instances, provider, submission, portal)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PLI_LISTEN": HOST,
           "PLI_SUBMISSION": str(submission), "PLI_SUBMISSIONS": str(submissions),
           "PLI_PORTAL": str(portal)}
    servers = list(instances.values())
    for name, instance in zip(("a", "b"), servers + servers[:1], strict=False):
        prefix = f"PLI_{name.upper()}"
        env |= {prefix: HOST, f"{prefix}_SUBMISSION": str(instance.gw.submission_port),
                f"{prefix}_SUBMISSIONS": str(instance.gw.submissions_port),
                f"{prefix}_PORTAL": str(instance.portal_port),
                f"{prefix}_METRICS": str(instance.metrics_port)}
    try:
        for instance in instances.values():
            instance.start()
        with (folder / "haproxy.log").open("wb") as log:
            cluster.haproxy = subprocess.Popen([HAPROXY, "-f", str(HAPROXY_CFG)], env=env,
                                               stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(portal)
        wait_for_port(submission)
        wait_until(lambda: all_up(cluster), timeout=10)
        yield cluster
    finally:
        if cluster.haproxy is not None:
            cluster.haproxy.terminate()
            cluster.haproxy.wait(10)
        for instance in instances.values():
            instance.kill(signal.SIGTERM)
        if provider is not None:
            provider.stop()
        if postgres is not None:
            postgres.drop_schema(schema)


def all_up(cluster: Cluster) -> bool:
    """HAProxy has seen both its servers healthy ("a" and "b", the instances' names in
    the tests): it sends requests to each."""
    import urllib.request

    seen = set()
    for _ in range(4):
        try:
            with urllib.request.urlopen(f"{cluster.base}/l/AAAAAAAAAAAAAAAAAAAAAA",
                                        timeout=2) as response:
                seen.add(response.headers.get("X-Pli-Instance"))
        except OSError as exc:  # 404 is the answer for an unknown link
            headers = getattr(exc, "headers", None)
            if headers is not None:
                seen.add(headers.get("X-Pli-Instance"))
    return seen == {"a", "b"}


# -- mail in, links out -------------------------------------------------------------------

def protected_message(recipient: str, subject: str = f"Résultats [code:{CODE}]") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Dr Martin <{ADDRESS}>"
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message.set_content("Bonjour, voici le compte rendu.")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="cr.pdf")
    return message


def submit(port: int, gw: Gateway, message: EmailMessage, timeout: float = 10) -> None:
    """As a mail client: STARTTLS, login, send; raises if the message was not taken."""
    with smtplib.SMTP(HOST, port, timeout=timeout) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        client.send_message(message)


LINK = re.compile(r"/l/([\w-]{22})#([\w-]{43})")


def text_of(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    part = parsed.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def link_in(raw: bytes) -> tuple[str, str]:
    """The link id and secret a notice carries."""
    found = LINK.search(text_of(raw))
    assert found, "no link in the notice"
    return found.group(1), found.group(2)


def notice_for(provider: Provider, recipient: str, timeout: float = 15) -> bytes:
    def found() -> bytes | None:
        for received in list(provider.received):
            if tuple(received.rcpt_tos) == (recipient,):
                return received.content
        return None
    content: bytes = wait_until(found, timeout=timeout)
    return content


def open_manifest(link_id: str, secret: str, ciphertext: bytes) -> Manifest:
    keys = derive_keys(b64url_decode(secret, 32), b64url_decode(link_id, 16))
    return decode_manifest(b"".join(decrypt_object(keys.manifest, MANIFEST_OBJECT_ID,
                                                   ciphertext)))


def open_document(link_id: str, secret: str, object_id: str, ciphertext: bytes) -> bytes:
    keys = derive_keys(b64url_decode(secret, 32), b64url_decode(link_id, 16))
    return b"".join(decrypt_object(keys.content, object_id, ciphertext))


def instance_of(response: Any) -> str:
    served: str = response.headers["X-Pli-Instance"]
    return served
