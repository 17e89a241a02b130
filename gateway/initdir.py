"""``pli init DIR``: a working configuration folder a practice can start from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gateway import defaults
from gateway.certs import write_practice_certificates
from gateway.config import HOST_NAME_RULE, PLACEHOLDER_PRACTICE_NAME, is_host_name
from gateway.errors import ConfigError
from gateway.policy.domains import to_ascii
from gateway.providers import PRESETS


@dataclass
class InitOptions:
    domain: str | None = None
    hostname: str | None = None
    upstream_host: str = "smtp.example.net"
    upstream_port: int = 587
    upstream_security: str = "starttls"
    upstream_ca_file: str | None = None
    listen_host: str = "0.0.0.0"
    submission_port: int = 587
    submissions_port: int = 465
    portal_port: int = 8080
    portal_url: str | None = None
    practice_name: str | None = None
    data_dir: str = "data"
    scan_interval: float | None = None
    provider: str | None = None  # a name in gateway.providers.PRESETS


def _q(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def host_name(opts: InitOptions, fallback: str = "pli.localdomain") -> str:
    """The server's name: given, or pli.<domain> (an accented domain in its xn-- form)."""
    name = opts.hostname or (f"pli.{to_ascii(opts.domain)}" if opts.domain else fallback)
    if not is_host_name(name):
        given = "--hostname" if opts.hostname else "--domain"
        raise ConfigError(f"{given}: {name!r} cannot name the server; it must be "
                          f"{HOST_NAME_RULE}")
    return name


def upstream_block(opts: InitOptions) -> str:
    """The [[upstream]] account: the provider's preset (``--provider``), else a blank
    account to fill in."""
    ca_line = (f"ca_file = {_q(opts.upstream_ca_file)}" if opts.upstream_ca_file
               else "# ca_file = \"provider-ca.pem\"   # only for a provider with a private CA")
    head = f"""\
[[upstream]]
name = "default"
senders = ["*"]
host = {_q(opts.upstream_host)}
port = {opts.upstream_port}
security = {_q(opts.upstream_security)}   # starttls, tls, or none (loopback only)
verify_certificate = true
{ca_line}
"""
    if opts.provider is None:
        return head + """\
# username = "cabinet@example.fr"
# password_file = "upstream-password"      # the password itself never goes in this file
# password_credential = "upstream"         # or a systemd credential (LoadCredential=)
"""
    preset = PRESETS[opts.provider]
    domain = to_ascii(opts.domain) if opts.domain else "example.fr"
    limits = "".join(f"{name} = {value}\n" for name, value in preset.limits.items())
    block = preset.about + head
    block += f'username = "cabinet@{domain}"   # the mailbox Pli sends as: change it\n'
    if preset.auth == "xoauth2":
        block += 'auth = "xoauth2"                # an OAuth2 token, not a password\n'
    else:
        block += ('password_file = "upstream-password"      # the password itself never goes '
                  'in this file\n'
                  '# password_credential = "upstream"       # or a systemd credential '
                  '(LoadCredential=)\n')
    block += preset.limits_note + limits
    if preset.name == "microsoft365":
        tenant = domain if opts.domain else "your-tenant.onmicrosoft.com"
        block += f"""
[upstream.oauth]
provider = "microsoft365"
tenant = {_q(tenant)}      # the Directory (tenant) ID, or the tenant's domain
client_id = "APPLICATION-CLIENT-ID"   # the Application (client) ID: replace it
client_secret_file = "entra-client-secret"   # the secret's Value, alone in this file
# client_secret_credential = "entra-client-secret"   # or a systemd credential
# certificate_file = "entra.pem"        # or, instead of a secret, a certificate uploaded
# private_key_file = "entra-key.pem"    #   to the application, and its private key
"""
    elif preset.name == "google":
        block += """
[upstream.oauth]
provider = "google"
service_account_file = "google-service-account.json"   # its JSON key, readable by Pli only
# service_account_credential = "google-service-account" # or a systemd credential
"""
    return block


def render_config(opts: InitOptions) -> str:
    hostname = host_name(opts)
    delivery = ""
    if opts.scan_interval is not None:
        delivery = f"\n[delivery]\nscan_interval = {opts.scan_interval}\n"
    return f"""\
# Pli server settings. Relative paths are relative to this file's folder.
# Check a change with `pli check -c this-file` before restarting or reloading.

hostname = {_q(hostname)}       # name in the SMTP greeting and in Message-IDs
data_dir = {_q(opts.data_dir)}               # spool, vault and audit files (keep it backed up)
users_file = "users.toml"       # managed by `pli user add|del|list`
policy = "policy.toml"          # what Pli does with each message
max_message_size = 157286400    # bytes: a 100 MB attachment, once base64-encoded, fits
session_timeout = 600           # seconds a client may stay silent, DATA included
login_timeout = 300             # seconds from connecting to logging in (password prompt included)
max_sessions = 200              # connections at once, all clients together
max_sessions_per_client = 50    # connections at once from one address

[tls]
# Issued by the practice CA `pli init` made (tls/ca.pem: each computer imports it once,
# see the client guides); `pli tls renew` issues the next one. To use the NAS's real
# certificate instead, point these at its full-chain certificate and key (readable by
# the pli user). Either way, then reload Pli (SIGHUP: `systemctl reload pli`).
cert = "tls/cert.pem"
key = "tls/key.pem"

[submission]                    # port 587: STARTTLS, then AUTH (Thunderbird, Outlook)
enabled = true
host = {_q(opts.listen_host)}
port = {opts.submission_port}

[submissions]                   # port 465: TLS from the first byte, then AUTH
enabled = true
host = {_q(opts.listen_host)}
port = {opts.submissions_port}

[practice]
# shown to patients in notices and on the portal
name = {_q(opts.practice_name or PLACEHOLDER_PRACTICE_NAME)}
contact = ""                    # e.g. "01 23 45 67 89": whom to call when a link no longer works

[portal]                        # the page patients open; only it faces the internet
url = {_q(opts.portal_url or f"https://{hostname}")}   # public address, behind the reverse proxy
host = "127.0.0.1"              # the reverse proxy forwards to this address and port
port = {opts.portal_port}
trusted_proxies = ["127.0.0.1", "::1"]   # the reverse proxy's address(es), for X-Forwarded-For

[metrics]                       # /healthz and Prometheus /metrics; keep it on localhost
enabled = true
host = "127.0.0.1"
port = 9925

[mssante_whitelist]             # `pli lists update`: the national list of MSSanté domains
url = "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml"
list = "mssante-whitelist"      # the policy's list it replaces
# ca_file = "igc-sante-ca.pem"  # CA certificates for the download, if the system's lack them

# Where the vault keeps its sealed objects: files in data_dir (the default), or, for a
# group of practices, an OpenStack Swift container (deploy/scale/README.md):
# [vault]
# objects = "swift"
# [vault.swift]
# auth_url = "https://swift.example-host.fr/auth/v1.0"
# user = "account:user"
# key_file = "swift-key"        # or key_credential (systemd); never the key itself
# container = "pli-cabinet-martin"

# The practice's real provider. Several [[upstream]] blocks may exist: the first whose
# `senders` covers the sender is used ("*" for anyone, "@domain" or a full address).
# `pli init --provider microsoft365|google|ovh|gandi|ionos|orange-pro` writes one ready
# for that provider, its sending limits included.
{upstream_block(opts)}{delivery}"""


def init_dir(target: Path, opts: InitOptions) -> list[str]:
    """Create the folder's files; never overwrite an existing configuration."""
    config = target / "pli.toml"
    if config.exists():
        raise ConfigError(f"{config} already exists: pli init never overwrites a configuration")
    text = render_config(opts)  # a bad option stops here, before anything is written
    own_policy = (target / "policy.toml").exists()
    if not own_policy:
        defaults.folder()  # missing defaults stop here too, before anything is written
    target.mkdir(parents=True, exist_ok=True)
    data = target / opts.data_dir  # an absolute data_dir stays as it is
    data.mkdir(mode=0o700, parents=True, exist_ok=True)  # before pli.toml: a failed init
    data.chmod(0o700)                                    # can simply be run again
    created = [str(config)]
    config.write_text(text, encoding="utf-8")
    cert, key = target / "tls" / "cert.pem", target / "tls" / "key.pem"
    if not cert.exists():
        hostname = host_name(opts, fallback="localhost")
        created += [str(p) for p in write_practice_certificates(cert, key, hostname)]
    if not own_policy:
        created += [str(p) for p in defaults.copy_into(target, domain=opts.domain)]
    return created
