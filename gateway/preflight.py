"""Preflight: the server-level checks behind `pli check` and `pli run`'s start-up.

Where the policy, its lists and the notice templates are; the policy loaded with the
checks that need the server settings too (no relay through a consumer SMTP host, every
protect rule finds its templates); and everything else `pli check` reports (certificate,
users, upstream passwords, disk room). Both commands call the same functions, so both
say the same. The policy file itself is read by :mod:`gateway.policy.loader`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from gateway import defaults
from gateway.certs import ca_files, is_authority, renewable
from gateway.config import PLACEHOLDER_PRACTICE_NAME, Settings
from gateway.errors import ConfigError
from gateway.policy import Policy, check_policy, consumer_smtp_reason, load_policy
from gateway.policy.lists import CONSUMER_SMTP_FILE
from gateway.spool.connections import Connections
from gateway.spool.oauth import credential_problems
from gateway.spool.outcomes import TemporaryError
from gateway.spool.store import DiskRoom
from gateway.tls import certificate_expiry, server_context, utc_day
from gateway.transform.templates import load_templates
from gateway.users import load_users


def policy_path(settings: Settings) -> Path:
    if settings.policy is None:
        raise ConfigError(f"{settings.config_path}: `policy` is not set; pli init writes "
                          "policy = \"policy.toml\" next to pli.toml")
    return settings.policy


def lists_dir(settings: Settings) -> Path:
    """The policy's own lists folder, or the shipped one when the practice has none."""
    own = policy_path(settings).parent / defaults.LISTS
    if (own / CONSUMER_SMTP_FILE).exists():
        return own
    return defaults.folder() / defaults.LISTS  # says so when the defaults are missing


def template_dirs(settings: Settings) -> list[Path]:
    """Where notice templates are looked for: the practice's folder first, then Pli's
    (left out when this installation lacks them: a missing template names the folders)."""
    dirs = [policy_path(settings).parent / defaults.TEMPLATES]
    try:
        dirs.append(defaults.folder() / defaults.TEMPLATES)
    except ConfigError:
        pass
    return dirs


def upstream_problems(settings: Settings) -> list[str]:
    """Refuse to relay through a consumer provider's SMTP host (gmail, orange, ...).

    An account that logs in as a Google service account with domain-wide delegation is a
    Google Workspace mailbox (no personal Gmail account has such a delegation), so
    smtp.gmail.com is its server, as Google documents for XOAUTH2."""
    problems = []
    for account in settings.upstream:
        if account.oauth is not None and account.oauth.provider == "google":
            continue
        reason = consumer_smtp_reason(account.host, lists_dir(settings))
        if reason:
            problems.append(f"{settings.config_path}: upstream {account.name!r}: {reason}")
    return problems


def template_problems(settings: Settings, policy: Policy) -> list[str]:
    """Every protect rule must find its notice templates, or protecting would fail later."""
    problems = []
    for rule in policy.rules:
        how = rule.decision.protect
        if how is None:
            continue
        try:
            load_templates(template_dirs(settings), how.language, how.template)
        except ConfigError as exc:
            problems.append(f"{policy.path}: rule {rule.name!r}: {exc}{_without_defaults()}")
    return problems


def _without_defaults() -> str:
    """Why Pli's own templates were not looked in, when this installation lacks them."""
    try:
        defaults.folder()
    except ConfigError as exc:
        return f" ({exc})"
    return ""


def load_checked_policy(settings: Settings) -> Policy:
    """The policy for `pli run`: any policy error or consumer upstream stops start-up."""
    policy = load_policy(policy_path(settings))
    problems = upstream_problems(settings) + template_problems(settings, policy)
    if problems:
        raise ConfigError("\n".join(problems))
    return policy


def all_problems(settings: Settings) -> tuple[list[str], dict[str, int]]:
    """Every problem `pli check` reports, and counts for its summary line."""
    problems: list[str] = []
    counts = {"users": 0, "rules": 0, "certificate_expiry": 0}
    try:
        server_context(settings.tls.cert, settings.tls.key)
        expiry = certificate_expiry(settings.tls.cert)
        counts["certificate_expiry"] = int(expiry)
        if expiry < time.time():
            remedy = ("run `pli tls renew`" if renewable(settings.tls.cert)
                      else "put the renewed certificate in place")
            problems.append(
                f"TLS: {settings.tls.cert} expired on {utc_day(expiry)}: mail clients refuse it; "
                f"{remedy} and reload Pli")
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        counts["users"] = len(load_users(settings.users_file))
    except ConfigError as exc:
        problems.append(str(exc))
    for account in settings.upstream:
        try:
            account.password()
        except ConfigError as exc:
            problems.append(str(exc))
        problems += credential_problems(account)
    try:
        path = policy_path(settings)
        policy_problems = check_policy(path)
        problems += [str(p) for p in policy_problems]
        if not policy_problems:
            policy = load_policy(path)
            counts["rules"] = len(policy.rules)
            problems += template_problems(settings, policy)
        problems += upstream_problems(settings)
    except ConfigError as exc:
        problems.append(str(exc))
    problems += room_problems(settings)
    return problems, counts


async def upstream_sessions(settings: Settings) -> list[tuple[str, bool]]:
    """`pli check --upstream`: for each account, a token if it logs in with one, then a
    session to its provider (TLS, login) closed with QUIT, nothing sent. Each line says
    what worked, or what the provider or the token service answered."""
    connections = Connections(settings)
    lines: list[tuple[str, bool]] = []
    for account in settings.upstream:
        how = f"{account.auth} as {account.username}" if account.username else "no login"
        where = (f"upstream {account.name!r} {account.host}:{account.port} "
                 f"({account.security}, {how})")
        done: list[str] = []
        try:
            if account.auth == "xoauth2":
                token = await connections.tokens(account).get()
                done.append(f"token obtained (valid {_minutes(token.expires - time.time())})")
            smtp = await connections.open(account)
            done.append("connected" + ("" if account.security == "none"
                                       else f", {account.security.upper()}")
                        + (", logged in" if account.username else ""))
            with contextlib.suppress(Exception):
                await smtp.quit()
            smtp.close()
        except TemporaryError as exc:
            lines.append((f"{where}: {'; '.join([*done, ''])}FAILED: {exc.reply}", False))
            continue
        lines.append((f"{where}: {'; '.join(done)}: OK", True))
    return lines


def _minutes(seconds: float) -> str:
    return f"{max(0, round(seconds / 60))} min"


def tls_notes(settings: Settings) -> list[str]:
    """What works but should change: a certificate marked as a CA, as the one an older
    `pli init` wrote, is refused by Thunderbird once trusted as an authority, so each
    computer needs an exception per port instead."""
    try:
        authority = is_authority(settings.tls.cert)
    except ConfigError:
        return []  # reported as a problem already
    if not authority:
        return []
    return [f"TLS: {settings.tls.cert} is marked as a certificate authority (CA:TRUE): "
            f"Thunderbird refuses it once trusted as an authority, so each computer needs an "
            f"exception per port instead. `pli tls renew` replaces it with a certificate "
            f"from a practice CA ({ca_files(settings.tls.cert)[0].name}), which each computer "
            f"imports once (see the client guides); then reload Pli"]


def room_problems(settings: Settings) -> list[str]:
    """Pli refuses mail (452) while the data folder's disk has less than 1.5 times the
    largest allowed message free: say so before the practice finds out."""
    room = DiskRoom((settings.spool_dir, settings.vault_dir), settings.max_message_size)
    try:
        free = room.free()
    except OSError:
        return []  # unreadable here (another machine's mount): the server checks again
    if free >= room.need:
        return []
    return [f"{settings.data_dir}: {free / 2**20:.1f} MiB free, but Pli refuses mail (452) "
            f"while less than {room.need / 2**20:.1f} MiB are (1.5 times max_message_size): "
            f"free some space or lower max_message_size"]


def warnings(settings: Settings) -> list[str]:
    """What `pli check` points out without failing: Pli runs, but a person should act."""
    found = []
    if settings.practice.name.strip() == PLACEHOLDER_PRACTICE_NAME:
        found.append(f"{settings.config_path}: [practice] name is still "
                     f"{PLACEHOLDER_PRACTICE_NAME!r}: patients read it in every notice "
                     "(\"contactez Votre cabinet\" looks like phishing); write the practice's "
                     "name as patients know it, e.g. name = \"Cabinet du Dr Martin\"")
    return found
