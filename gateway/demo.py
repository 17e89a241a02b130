"""``pli demo``: the whole gateway on localhost, with a local "provider" that writes each
message it receives as an .eml file, so a person can see what Pli would have sent."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import string
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import logs
from gateway.app import App
from gateway.config import load_settings
from gateway.initdir import InitOptions, init_dir
from gateway.logs import get_logger
from gateway.tls import server_context
from gateway.users import User, hash_password, load_users, save_users

log = get_logger("pli.demo")

DEMO_USER = "demo"
DEMO_ADDRESS = "secretariat@cabinet-demo.fr"
COLLEAGUE = "dr.martin@cabinet-demo.fr"


class OutboxHandler:
    """The demo provider: accepts everything and files it under ``outbox``."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        name = f"{len(list(self.outbox.glob('*.eml'))) + 1:04d}-{secrets.token_hex(3)}.eml"
        data = envelope.original_content or b""
        await asyncio.to_thread((self.outbox / name).write_bytes, data)
        log.info("demo.provider_received", file=name, recipients=len(envelope.rcpt_tos))
        return f"250 2.0.0 Stored as {name}"


async def start_outbox(host: str, port: int, outbox: Path, tls: ssl.SSLContext) -> asyncio.Server:
    outbox.mkdir(parents=True, exist_ok=True)
    handler = OutboxHandler(outbox)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, hostname="provider.localhost", tls_context=tls,
                     decode_data=False, enable_SMTPUTF8=True),
        host=host, port=port, reuse_address=True,
    )


def prepare(folder: Path, submission_port: int, submissions_port: int,
            provider_port: int, portal_port: int) -> tuple[Path, str]:
    """Write the demo configuration once; return its path and the demo password."""
    config = folder / "pli.toml"
    password_file = folder / "demo-password.txt"
    if not config.exists():
        init_dir(folder, InitOptions(
            domain="cabinet-demo.fr", hostname="localhost",
            upstream_host="127.0.0.1", upstream_port=provider_port,
            upstream_security="starttls", upstream_ca_file="tls/ca.pem",
            listen_host="127.0.0.1", submission_port=submission_port,
            submissions_port=submissions_port, portal_port=portal_port,
            portal_url=f"http://127.0.0.1:{portal_port}", practice_name="Cabinet Démo",
        ))
        # Letters and digits only: a password starting with "-" would read as an option
        # in the swaks line printed below.
        alphabet = string.ascii_letters + string.digits
        password = "".join(secrets.choice(alphabet) for _ in range(16))
        users = load_users(folder / "users.toml")
        users[DEMO_USER] = User(DEMO_USER, hash_password(password), (DEMO_ADDRESS,))
        save_users(folder / "users.toml", users)
        password_file.write_text(password + "\n", encoding="utf-8")
        password_file.chmod(0o600)
    return config, password_file.read_text(encoding="utf-8").strip()


def instructions(folder: Path, password: str, submission_port: int,
                 submissions_port: int, portal_port: int) -> str:
    ca = folder / "tls" / "ca.pem"
    return f"""
Pli demo is running. Everything stays on this machine.

  Folder:            {folder}
  Delivered mail:    {folder / 'outbox'}   (one .eml file per message the "provider" got)
  Patient portal:    http://127.0.0.1:{portal_port}   (the links in the notices open here)

Thunderbird, Account Settings > Outgoing Server (SMTP) > Add:
  Server name:           localhost
  Port:                  {submission_port}   (or {submissions_port} with "SSL/TLS")
  Connection security:   STARTTLS
  Authentication method: Normal password
  User name:             {DEMO_USER}
  Password:              {password}
  Send as:               {DEMO_ADDRESS}
  (Thunderbird trusts the server once {ca} is imported under Settings > Privacy &
  Security > Manage Certificates > Authorities > Import, "Trust this CA to identify
  websites" ticked; deploy/clients/thunderbird.md has the steps.)

Send a test message with swaks:
  swaks --server 127.0.0.1:{submission_port} --tls --tls-ca-path {ca} \\
        --auth LOGIN --auth-user {DEMO_USER} --auth-password '{password}' \\
        --from {DEMO_ADDRESS} --to {COLLEAGUE}

The policy is {folder / 'policy.toml'}. A colleague at cabinet-demo.fr receives the
message as it is. Send the same command with --to patient@gmail.com: the patient gets a
notice with a link (open it in a browser) and you get a receipt with the access code,
both in the outbox. `pli explain -c {folder / 'pli.toml'} MESSAGE.eml --from ... --to ...`
shows which rule decided and why.

Stop with Ctrl-C.
"""


async def run_demo(folder: Path, submission_port: int, submissions_port: int,
                   provider_port: int, portal_port: int) -> None:
    config, password = prepare(folder, submission_port, submissions_port, provider_port,
                               portal_port)
    settings = load_settings(config)
    tls = server_context(settings.tls.cert, settings.tls.key)
    provider = await start_outbox("127.0.0.1", provider_port, folder / "outbox", tls)
    app = App(settings)
    logs.configure(audit=app.audit)
    try:
        print(instructions(folder, password, submission_port, submissions_port, portal_port),
              flush=True)
        await app.run_until_stopped()
    finally:
        provider.close()
