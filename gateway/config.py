"""Server settings from ``pli.toml``: listeners, TLS, upstream accounts, folders.

Validated by pydantic with unknown keys refused, so a typo is an error rather than a
setting silently ignored. Relative paths are relative to the folder holding the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError

CONFIG_ENV = "PLI_CONFIG"
DEFAULT_CONFIG = "pli.toml"

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Strict):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: Port


class TlsFiles(_Strict):
    cert: Path
    key: Path


MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


class OAuth(_Strict):
    """How Pli gets the access tokens an ``auth = "xoauth2"`` account logs in with.

    ``microsoft365``: the client credentials grant of an Entra ID application, with a
    client secret or a certificate; ``google``: a service account with domain-wide
    delegation, whose key signs the assertion. ``token_url`` and ``scope`` replace the
    provider's (any OAuth2 server that grants these ways)."""

    provider: Literal["microsoft365", "google"]
    tenant: str | None = None
    client_id: str | None = None
    client_secret_file: Path | None = None
    client_secret_credential: str | None = None
    certificate_file: Path | None = None  # the application's certificate, instead of a secret
    private_key_file: Path | None = None  # ... and its private key (PEM)
    private_key_credential: str | None = None
    service_account_file: Path | None = None  # Google's JSON key of the service account
    service_account_credential: str | None = None
    token_url: str | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> OAuth:
        microsoft = ("tenant", "client_id", "client_secret_file", "client_secret_credential",
                     "certificate_file", "private_key_file", "private_key_credential")
        google = ("service_account_file", "service_account_credential")
        if self.provider == "microsoft365":
            _none_of(self, google, "provider = \"microsoft365\"")
            if not self.client_id:
                raise ValueError("provider = \"microsoft365\" needs client_id (the "
                                 "application's id in Entra ID)")
            if not (self.tenant or self.token_url):
                raise ValueError("provider = \"microsoft365\" needs tenant (the directory's "
                                 "id or domain)")
            secrets = [self.client_secret_file, self.client_secret_credential,
                       self.certificate_file]
            if sum(x is not None for x in secrets) != 1:
                raise ValueError("give one of client_secret_file, client_secret_credential or "
                                 "certificate_file (the secret itself never goes in pli.toml)")
            keys = [self.private_key_file, self.private_key_credential]
            if self.certificate_file is not None and sum(x is not None for x in keys) != 1:
                raise ValueError("certificate_file needs its key: private_key_file or "
                                 "private_key_credential")
            if self.certificate_file is None and any(x is not None for x in keys):
                raise ValueError("a private key goes with certificate_file")
        else:
            _none_of(self, microsoft, "provider = \"google\"")
            if (self.service_account_file is None) == (self.service_account_credential is None):
                raise ValueError("provider = \"google\" needs service_account_file or "
                                 "service_account_credential (its JSON key), one of them")
        if self.token_url is not None:
            url = self.token_url
            host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
            if not (url.startswith("https://") or (url.startswith("http://")
                                                   and _is_loopback(host))):
                raise ValueError("token_url must be an https:// address (http:// on loopback "
                                 "only): the credentials travel in it")
        return self

    def default_token_url(self) -> str:
        if self.token_url:
            return self.token_url
        if self.provider == "microsoft365":
            return f"https://login.microsoftonline.com/{self.tenant}/oauth2/v2.0/token"
        return GOOGLE_TOKEN_URL

    def default_scope(self) -> str:
        if self.scope:
            return self.scope
        return MICROSOFT_SCOPE if self.provider == "microsoft365" else GOOGLE_SCOPE


def _none_of(table: BaseModel, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(table, f) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: not used with {what}")


class Upstream(_Strict):
    """One account at the practice's real provider, used for the senders it names."""

    name: str = "default"
    senders: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    host: str
    port: Port = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    # "password": AUTH PLAIN or LOGIN with password_file or password_credential;
    # "xoauth2": an OAuth2 access token from [upstream.oauth] (Microsoft 365, Google).
    auth: Literal["password", "xoauth2"] = "password"
    password_file: Path | None = None
    password_credential: str | None = None
    oauth: OAuth | None = None
    verify_certificate: bool = True
    ca_file: Path | None = None
    # What the provider lets one mailbox send (unset: no limit). Over the rate a message
    # waits its turn; over the recipients per message it goes as several transactions;
    # the day's counts are over a rolling 24 hours and survive a restart.
    max_messages_per_minute: Annotated[int, Field(ge=1, le=100_000)] | None = None
    max_recipients_per_message: Annotated[int, Field(ge=1)] | None = None
    max_recipients_per_day: Annotated[int, Field(ge=1)] | None = None
    max_messages_per_day: Annotated[int, Field(ge=1)] | None = None

    @field_validator("senders")
    @classmethod
    def _senders_lowercase(cls, value: list[str]) -> list[str]:
        return [s.strip().lower() for s in value]

    @model_validator(mode="after")
    def _password_source(self) -> Upstream:
        if self.auth == "xoauth2":
            if not self.username:
                raise ValueError("auth = \"xoauth2\" needs username: the mailbox Pli sends as")
            if self.oauth is None:
                raise ValueError("auth = \"xoauth2\" needs an [upstream.oauth] table saying "
                                 "how to get its tokens")
            if self.password_file or self.password_credential:
                raise ValueError("auth = \"xoauth2\" logs in with a token: remove "
                                 "password_file and password_credential")
            if self.security == "none" and not _is_loopback(self.host):
                raise ValueError("security = \"none\" would send the access token in clear; "
                                 "use starttls or tls")
            return self
        if self.oauth is not None:
            raise ValueError("[upstream.oauth] is set but auth = \"password\": set "
                             "auth = \"xoauth2\" to log in with its tokens")
        if self.username and not (self.password_file or self.password_credential):
            raise ValueError(
                "an upstream with a username needs password_file or password_credential "
                "(the password itself never goes in pli.toml)"
            )
        if self.password_file and self.password_credential:
            raise ValueError("give password_file or password_credential, not both")
        if self.security == "none" and self.username and not _is_loopback(self.host):
            raise ValueError(
                "security = \"none\" with a username would send the provider password in clear; "
                "use starttls or tls"
            )
        return self

    def matches(self, sender: str) -> bool:
        sender = sender.lower()
        domain = sender.rpartition("@")[2]
        for pattern in self.senders:
            if pattern == "*" or pattern == sender:
                return True
            if pattern.startswith("@") and pattern[1:] == domain:
                return True
        return False

    def password(self) -> str | None:
        """Read the password from its file or systemd credential, at the moment of use."""
        return self.secret("the password", self.password_file, self.password_credential)

    def secret(self, what: str, file: Path | None, credential: str | None) -> str | None:
        """A secret from its file or systemd credential, read at the moment of use (a
        rotated secret needs no restart); None when neither is given."""
        return read_secret(f"upstream {self.name!r}", what, file, credential)


def read_secret(owner: str, what: str, file: Path | None, credential: str | None) -> str | None:
    """A secret from its file or systemd credential, read at the moment of use; None when
    neither is given. ``owner`` and ``what`` name it in the error ("[portal]", "the
    signing key")."""
    if file is not None:
        path = file
    elif credential is not None:
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(
                f"{owner}: {what} is a systemd credential ({credential!r}) but systemd gave "
                "no CREDENTIALS_DIRECTORY (LoadCredential= in the unit)")
        path = Path(folder) / credential
    else:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{owner}: cannot read {what} from {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{owner}: {what} in {path} is not text (UTF-8)") from None


class Delivery(_Strict):
    # Connections to the provider at once, for each upstream account (each has its own
    # queue). Microsoft 365 accepts three per mailbox and answers 432 4.3.2 to a fourth
    # (that message then waits for its retry); three stays within the strictest
    # per-account limit we know of.
    concurrency: Annotated[int, Field(ge=1, le=64)] = 3
    # Connections to providers at once, all accounts together (as Postfix's default
    # destination concurrency limit): providers also limit connections per client address.
    max_connections: Annotated[int, Field(ge=1, le=256)] = 20
    retry_min: Seconds = 300.0
    retry_max: Seconds = 4000.0
    lifetime: Seconds = 5 * 86400.0
    scan_interval: Seconds = 10.0
    connect_timeout: Seconds = 30.0
    command_timeout: Seconds = 300.0
    # The wait for the provider's answer to the end of a message (the final dot): RFC
    # 5321 §4.5.3.2.6 asks for 10 minutes, as Postfix's smtp_data_done_timeout gives. A
    # provider that scans a large message before it answers must not be sent it twice.
    data_timeout: Seconds = 600.0
    idle_close: Seconds = 5.0


class AuthLimits(_Strict):
    """Failed logins per client address: slowed down, then refused for a while."""

    delay_after: Annotated[int, Field(ge=0)] = 2
    max_failures: Annotated[int, Field(ge=1)] = 5
    window: Seconds = 600.0
    lockout: Seconds = 900.0


# What notices say when the practice's name was never given; `pli check` warns about it.
PLACEHOLDER_PRACTICE_NAME = "Votre cabinet"


class Practice(_Strict):
    """Who the patient is dealing with: shown in notices and on the portal's pages."""

    name: str = PLACEHOLDER_PRACTICE_NAME
    contact: str = ""  # e.g. a phone number: what to do when a link no longer works

    @field_validator("name", "contact")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be a single line")
        return value.strip()


MIN_SIGNING_KEY = 32


class Portal(_Strict):
    """The page patients open. ``url`` is its public address, behind the reverse proxy."""

    url: str = "https://localhost:8443"
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8080
    # Addresses (or networks) of the reverse proxy: only they may say, in
    # X-Forwarded-For, which patient address a request comes from.
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # The practice's incoming (IMAP) server, for Thunderbird's autoconfig; by default
    # the first upstream's host.
    imap_host: str | None = None
    # The key that signs the portal's cookies and download grants. Unset: drawn at each
    # start (a restart asks for the code again). Instances behind one load balancer
    # share it (a file or a systemd credential), so each accepts the others' tokens.
    key_file: Path | None = None
    key_credential: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> Portal:
        if self.key_file is not None and self.key_credential is not None:
            raise ValueError("give key_file or key_credential, not both")
        return self

    def signing_key(self) -> bytes | None:
        """The shared signing key, or None (then each start draws its own)."""
        text = read_secret("[portal]", "the signing key", self.key_file, self.key_credential)
        if text is None:
            return None
        key = text.strip().encode("utf-8")
        if len(key) < MIN_SIGNING_KEY:
            raise ConfigError(
                f"[portal]: the signing key has {len(key)} characters, fewer than"
                f" {MIN_SIGNING_KEY}: make one with `head -c 32 /dev/urandom | base64`")
        return key

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith(("https://", "http://")) or any(c in value for c in " #?\r\n"):
            raise ValueError("must be the portal's address, such as https://pli.cabinet.fr")
        return value


_PG_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PASSWORD_IN_DSN = re.compile(r"(^|\s)password\s*=|://[^/@:]*:[^/@]*@", re.IGNORECASE)


class PostgresIndex(_Strict):
    """Where the shared link index is: ``dsn`` (a libpq connection string or URI, without
    the password) or host, port, dbname and user; the password from ``password_file`` or
    ``password_credential`` (systemd), never from pli.toml."""

    dsn: str | None = None
    host: str | None = None
    port: Port = 5432
    dbname: str | None = None
    user: str | None = None
    password_file: Path | None = None
    password_credential: str | None = None
    # The tables' schema: "public", or one per practice when several share a database.
    db_schema: str = Field("public", alias="schema")
    sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    pool_size: Annotated[int, Field(ge=1, le=100)] = 10
    connect_timeout: Seconds = 10.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _where(self) -> PostgresIndex:
        if (self.dsn is None) == (self.host is None):
            raise ValueError("give dsn, or host (with port, dbname and user): one of them")
        if self.dsn is not None:
            if any(v is not None for v in (self.dbname, self.user)):
                raise ValueError("dbname and user go inside dsn when dsn is given")
            if _PASSWORD_IN_DSN.search(self.dsn):
                raise ValueError("dsn holds a password: it never goes in pli.toml; use "
                                 "password_file or password_credential")
        elif not (self.dbname and self.user):
            raise ValueError("host needs dbname and user too (the database and the role "
                             "Pli connects as)")
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("give password_file or password_credential, not both")
        if not _PG_SCHEMA.match(self.db_schema):
            raise ValueError(f"schema {self.db_schema!r}: lower-case letters, digits and _, "
                             "not beginning with a digit")
        return self

    def conninfo(self) -> str:
        """The connection string, password left out (it is given apart)."""
        if self.dsn is not None:
            base = self.dsn
        else:
            base = " ".join(f"{k}={_conninfo_value(str(v))}" for k, v in (
                ("host", self.host), ("port", self.port), ("dbname", self.dbname),
                ("user", self.user)))
        if self.sslmode is not None:
            base = (f"{base}{'&' if '?' in base else '?'}sslmode={self.sslmode}"
                    if "://" in base else f"{base} sslmode={self.sslmode}")
        return base

    def password(self) -> str | None:
        return read_secret("[vault.postgresql]", "the password", self.password_file,
                           self.password_credential)


def _conninfo_value(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MetricsListener(_Strict):
    """/healthz and Prometheus /metrics, on a listener of their own (localhost by default)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9925


class Audit(_Strict):
    """The hash-chained audit trail in ``data_dir/audit``."""

    retention_days: Annotated[float, Field(gt=0)] = 365.0
    max_file_mb: Annotated[float, Field(gt=0)] = 16.0


class Whitelist(_Strict):
    """Where `pli lists update` downloads the national MSSanté whitelist, and into which
    of the policy's lists it goes."""

    url: str = "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml"
    list: str = "mssante-whitelist"
    # The CA certificates the download's server certificate is checked against, when the
    # system's do not cover it (the IGC-Santé chain, say); the system's otherwise.
    ca_file: Path | None = None
    timeout: Seconds = 60.0

    @field_validator("url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// address: the list decides who gets mail "
                             "in clear, so it is never fetched without TLS")
        return value


SWIFT_MAX_OBJECT = 5 * 1024**3
"""Swift's default limit for one object (max_file_size), which Pli writes in one PUT."""
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


class SwiftObjects(_Strict):
    """``[vault.swift]``: the OpenStack Swift container holding this practice's sealed
    objects, reached with Swift's v1 auth (tempauth, swauth, a provider's v1 endpoint).
    One container per practice; several instances of the same practice share it."""

    auth_url: str
    user: str  # "account:user" for tempauth
    key_file: Path | None = None
    key_credential: str | None = None
    container: str
    ca_file: Path | None = None  # the CA certificates Swift's certificate is checked against
    timeout: Seconds = 30.0

    @field_validator("auth_url")
    @classmethod
    def _auth_url(cls, value: str) -> str:
        host = value.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        if not (value.startswith("https://") or (value.startswith("http://")
                                                 and _is_loopback(host))):
            raise ValueError("must be an https:// address (http:// on loopback only): the key "
                             "travels in it")
        if any(c in value for c in " \r\n#"):
            raise ValueError("must be an address such as https://auth.cloud.example/auth/v1.0")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not value.strip() or any(c in value for c in "\r\n"):
            raise ValueError("must be the Swift user, such as \"account:user\"")
        return value.strip()

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        if not _CONTAINER.match(value):
            raise ValueError("must be a container name of letters, digits, dots, hyphens and "
                             "underscores (at most 255), such as \"pli-cabinet-martin\"")
        return value

    @model_validator(mode="after")
    def _key_source(self) -> SwiftObjects:
        if (self.key_file is None) == (self.key_credential is None):
            raise ValueError("give key_file or key_credential, one of them (the key itself "
                             "never goes in pli.toml)")
        return self

    def key(self) -> str:
        """Swift's key, read from its file or credential at each login."""
        key = read_secret("[vault.swift]", "the key", self.key_file, self.key_credential)
        if not key:
            raise ConfigError(f"[vault.swift]: the key in {self.key_file or self.key_credential}"
                              " is empty")
        return key


class VaultSettings(_Strict):
    """``[vault]``: where the sealed objects are kept, ``objects``: ``files`` (the
    default), under ``data_dir/vault``, or ``swift``, in the OpenStack Swift container of
    ``[vault.swift]``; and where the link index is, ``index``: ``sqlite`` (the default, a
    file in ``data_dir/vault``) or ``postgresql``, shared by several instances
    (``[vault.postgresql]``)."""

    objects: Literal["files", "swift"] = "files"
    swift: SwiftObjects | None = None
    index: Literal["sqlite", "postgresql"] = "sqlite"
    postgresql: PostgresIndex | None = None

    @model_validator(mode="after")
    def _table_for_index(self) -> VaultSettings:
        if self.index == "postgresql" and self.postgresql is None:
            raise ValueError('index = "postgresql" needs a [vault.postgresql] table saying '
                             "where the database is")
        if self.index == "sqlite" and self.postgresql is not None:
            raise ValueError('[vault.postgresql] is set but index = "sqlite": set '
                             'index = "postgresql" to use it')
        return self

    @model_validator(mode="after")
    def _table_for_store(self) -> VaultSettings:
        if self.objects == "swift" and self.swift is None:
            raise ValueError("objects = \"swift\" needs a [vault.swift] table: auth_url, user, "
                             "key_file or key_credential, container")
        if self.objects == "files" and self.swift is not None:
            raise ValueError("[vault.swift] is set but objects = \"files\": set "
                             "objects = \"swift\" to keep the objects there")
        return self


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")  # "_": some NAS names have one
HOST_NAME_RULE = ("a host name such as pli.cabinet-martin.fr: letters, digits, hyphens and "
                  "dots (an accented domain in its xn-- form)")


def is_host_name(name: str) -> bool:
    """An ASCII DNS name: what the greeting, Message-IDs and the certificate can carry."""
    return len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def _host_name_default() -> str:
    return socket.gethostname() or "pli"


class Settings(_Strict):
    hostname: str = "pli.localdomain"
    # This server's name among several behind one load balancer: a label of every metric
    # and said by `pli.ready`. By default the machine's host name.
    instance: str = Field(default_factory=_host_name_default)
    data_dir: Path = Path("data")
    users_file: Path = Path("users.toml")
    policy: Path | None = None
    max_message_size: Annotated[int, Field(ge=1024)] = 150 * 1024 * 1024
    session_timeout: Seconds = 600.0
    max_sessions: Annotated[int, Field(ge=1, le=10000)] = 200
    max_sessions_per_client: Annotated[int, Field(ge=1, le=10000)] = 50
    # Postfix's smtpd_timeout: a mail client asking its user for the password keeps the
    # connection open, unauthenticated, while the user looks for it.
    login_timeout: Seconds = 300.0
    tls: TlsFiles
    submission: Listener = Listener(port=587)
    submissions: Listener = Listener(port=465)
    upstream: list[Upstream] = Field(min_length=1)
    delivery: Delivery = Delivery()
    auth: AuthLimits = AuthLimits()
    practice: Practice = Practice()
    portal: Portal = Portal()
    audit: Audit = Audit()
    metrics: MetricsListener = MetricsListener()
    mssante_whitelist: Whitelist = Whitelist()
    vault: VaultSettings = VaultSettings()
    # What the journal gets ("warning": problems only). The audit trail and the metrics
    # see every event, whatever the level.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    config_path: Path | None = Field(default=None, exclude=True)

    @field_validator("hostname")
    @classmethod
    def _host_name(cls, value: str) -> str:
        value = value.strip().rstrip(".")
        if not is_host_name(value):
            raise ValueError(f"must be {HOST_NAME_RULE}")
        return value

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, value: str) -> str:
        value = value.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}", value):
            raise ValueError("must be a short name such as pli-a: letters, digits, and . _ : -")
        return value

    @model_validator(mode="after")
    def _some_listener(self) -> Settings:
        if not (self.submission.enabled or self.submissions.enabled):
            raise ValueError("both listeners are disabled: enable [submission] or [submissions]")
        names = [u.name for u in self.upstream]
        if len(set(names)) != len(names):
            raise ValueError("two [[upstream]] accounts share a name")
        if self.vault.objects == "swift" and self.max_message_size > SWIFT_MAX_OBJECT:
            raise ValueError("max_message_size is more than Swift takes in one object (5 GiB):"
                             " lower it to keep the vault's objects in Swift")
        return self

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def vault_dir(self) -> Path:
        return self.data_dir / "vault"

    @property
    def audit_dir(self) -> Path:
        return self.data_dir / "audit"

    def upstream_for(self, sender: str) -> Upstream | None:
        """The first upstream account whose ``senders`` covers this address."""
        for account in self.upstream:
            if account.matches(sender):
                return account
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_config_path(given: str | os.PathLike[str] | None) -> Path:
    if given:
        return Path(given)
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


_PATH_FIELDS = ("data_dir", "users_file", "policy")


def load_settings(path: Path) -> Settings:
    """Read and validate ``pli.toml``; every problem is reported in one ConfigError."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file (pli init DIR writes one)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = path.resolve().parent
    _absolutise(raw, base)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
    return settings.model_copy(update={"config_path": path.resolve()})


def _absolutise(raw: dict[str, object], base: Path) -> None:
    def fix(table: object, keys: tuple[str, ...]) -> None:
        if not isinstance(table, dict):
            return
        for key in keys:
            value = table.get(key)
            if isinstance(value, str):
                table[key] = str(base / value)

    for key in ("data_dir", "users_file"):  # left out, their defaults are relative too
        raw.setdefault(key, str(Settings.model_fields[key].default))
    fix(raw, _PATH_FIELDS)
    fix(raw.get("tls"), ("cert", "key"))
    upstreams = raw.get("upstream")
    if isinstance(upstreams, list):
        for account in upstreams:
            fix(account, ("password_file", "ca_file"))
            if isinstance(account, dict):
                fix(account.get("oauth"), ("client_secret_file", "certificate_file",
                                           "private_key_file", "service_account_file"))
    fix(raw.get("mssante_whitelist"), ("ca_file",))
    fix(raw.get("portal"), ("key_file",))
    vault = raw.get("vault")
    if isinstance(vault, dict):
        fix(vault.get("swift"), ("key_file", "ca_file"))
        fix(vault.get("postgresql"), ("password_file",))


def format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} error(s)"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown setting (misspelt?)"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)
