"""``pli``: the command line. Thin: parse arguments, call the module that does the work."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.config import Settings, load_settings, resolve_config_path
from gateway.errors import ConfigError, PliError
from gateway.providers import NAMES as PROVIDERS

if TYPE_CHECKING:
    from gateway.spool.store import QueuedMessage

if TYPE_CHECKING:
    from gateway.policy import ImportSummary


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PliError as exc:
        print(f"pli: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that cannot be made or written, said in words
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pli: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pli", description="Pli, the outbound mail gateway "
                                "that keeps patients' health data out of their mailboxes.")
    p.add_argument("--version", action="version", version=f"pli {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    def config_arg(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("-c", "--config", help="pli.toml (default: $PLI_CONFIG, then ./pli.toml)")

    init = sub.add_parser("init", help="create a configuration folder")
    init.add_argument("dir", type=Path)
    init.add_argument("--domain", help="the practice's own mail domain")
    init.add_argument("--provider", choices=list(PROVIDERS),
                      help="write the account for this provider: its server, how to log "
                           "in (OAuth2 for microsoft365 and google), its sending limits, "
                           "and what to create there")
    init.add_argument("--upstream", default=None, metavar="HOST:PORT",
                      help="the practice's real provider (default: the --provider's server, "
                           "else smtp.example.net:587)")
    init.add_argument("--upstream-security", choices=["starttls", "tls", "none"],
                      default=None, help="default: tls for port 465, otherwise starttls")
    init.add_argument("--submission-port", type=port_number, default=587)
    init.add_argument("--submissions-port", type=port_number, default=465)
    init.add_argument("--listen", default="0.0.0.0", help="address the SMTP listeners bind")
    init.add_argument("--portal-port", type=port_number, default=8080,
                      help="local port of the portal, behind the reverse proxy")
    init.add_argument("--portal-url", help="the portal's public address (https://...)")
    init.add_argument("--name", help="the practice's name, as patients know it (asked for "
                      "when not given; required without a terminal)")
    init.add_argument("--data-dir", default="data",
                      help="spool, vault and audit folder (default: DIR/data; the systemd "
                           "unit expects /var/lib/pli)")
    init.set_defaults(func=cmd_init)

    run = sub.add_parser("run", help="run the gateway")
    config_arg(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run everything on localhost with a local provider")
    demo.add_argument("--dir", type=Path, help="keep the demo here (default: a new temp folder)")
    demo.add_argument("--submission-port", type=port_number, default=2587)
    demo.add_argument("--submissions-port", type=port_number, default=2465)
    demo.add_argument("--provider-port", type=port_number, default=2525)
    demo.add_argument("--portal-port", type=port_number, default=8080)
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check", help="validate the configuration")
    config_arg(check)
    check.add_argument("--upstream", action="store_true",
                       help="also log in to each provider (a token first for OAuth2 "
                            "accounts), without sending anything")
    check.set_defaults(func=cmd_check)

    tls = sub.add_parser("tls", help="the certificate Pli presents to mail clients")
    tls_sub = tls.add_subparsers(metavar="ACTION", required=True)
    renew = tls_sub.add_parser("renew", help="issue a new server certificate from the "
                               "practice CA (made first for an installation without one)")
    config_arg(renew)
    renew.set_defaults(func=cmd_tls_renew)

    explain = sub.add_parser("explain", help="show what the policy does with a message")
    config_arg(explain)
    explain.add_argument("message", metavar="MESSAGE.eml")
    explain.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    explain.add_argument("--to", action="append", required=True, metavar="ADDR")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(func=cmd_explain)

    lists = sub.add_parser("lists", help="manage the policy's domain lists")
    lists_sub = lists.add_subparsers(metavar="ACTION", required=True)
    imp = lists_sub.add_parser("import", help="load a downloaded list (e.g. the MSSanté "
                               "whitelist) into one of the policy's lists")
    config_arg(imp)
    imp.add_argument("file")
    imp.add_argument("--into", required=True, metavar="NAME")
    imp.set_defaults(func=cmd_lists_import)
    upd = lists_sub.add_parser("update", help="download the national MSSanté whitelist "
                               "([mssante_whitelist] in pli.toml) into the policy's list")
    config_arg(upd)
    upd.add_argument("--into", metavar="NAME",
                     help="the policy's list to replace (default: [mssante_whitelist] list)")
    upd.set_defaults(func=cmd_lists_update)

    user = sub.add_parser("user", help="manage who may send through Pli")
    user_sub = user.add_subparsers(metavar="ACTION", required=True)
    add = user_sub.add_parser("add", help="add a user or change its password (read from stdin)")
    config_arg(add)
    add.add_argument("name")
    add.add_argument("--address", action="append", default=[],
                     help="an address this user may send as (repeat for several)")
    add.set_defaults(func=cmd_user_add)
    delete = user_sub.add_parser("del", help="remove a user")
    config_arg(delete)
    delete.add_argument("name")
    delete.set_defaults(func=cmd_user_del)
    lst = user_sub.add_parser("list", help="list users and their addresses")
    config_arg(lst)
    lst.set_defaults(func=cmd_user_list)

    links = sub.add_parser("links", help="secure links in the vault")
    links_sub = links.add_subparsers(metavar="ACTION", required=True)
    llist = links_sub.add_parser("list", help="every link, with its limits and state")
    config_arg(llist)
    llist.set_defaults(func=cmd_links_list)
    revoke = links_sub.add_parser("revoke", help="make a link unusable now (as its sender's "
                                  "page does)")
    config_arg(revoke)
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_links_revoke)
    extend = links_sub.add_parser("extend", help="give a link more days or more downloads "
                                  "(beyond what its rule lets its sender give)")
    config_arg(extend)
    extend.add_argument("id")
    extend.add_argument("--days", type=int, default=0,
                        help="it expires N days later (N days from now if it has expired)")
    extend.add_argument("--downloads", type=int, default=0,
                        help="each document may be downloaded N more times")
    extend.set_defaults(func=cmd_links_extend)
    purge = links_sub.add_parser("purge", help="delete expired and revoked links for good")
    config_arg(purge)
    purge.set_defaults(func=cmd_links_purge)

    audit = sub.add_parser("audit", help="the decision log: verify it, tell a story from it")
    audit_sub = audit.add_subparsers(metavar="ACTION", required=True)
    averify = audit_sub.add_parser("verify", help="check the hash chain of every record")
    config_arg(averify)
    averify.set_defaults(func=cmd_audit_verify)
    ashow = audit_sub.add_parser("show", help="records about one message or one link")
    config_arg(ashow)
    which = ashow.add_mutually_exclusive_group(required=True)
    which.add_argument("--message", metavar="ID", help="a queue id (as in 250 Queued as ID)")
    which.add_argument("--link", metavar="ID", help="a vault link id")
    ashow.set_defaults(func=cmd_audit_show)

    queue = sub.add_parser("queue", help="look at and act on the delivery queue")
    queue_sub = queue.add_subparsers(metavar="ACTION", required=True)
    qlist = queue_sub.add_parser("list", help="messages waiting for delivery")
    config_arg(qlist)
    qlist.set_defaults(func=cmd_queue_list)
    flush = queue_sub.add_parser("flush", help="retry every queued message now")
    config_arg(flush)
    flush.set_defaults(func=cmd_queue_flush)
    qdel = queue_sub.add_parser("delete", help="remove a message from the queue for good")
    config_arg(qdel)
    qdel.add_argument("id")
    qdel.set_defaults(func=cmd_queue_delete)
    release = queue_sub.add_parser("release", help="send a held message again (pli queue "
                                   "list says why it was held)")
    config_arg(release)
    release.add_argument("id")
    release.set_defaults(func=cmd_queue_release)
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(resolve_config_path(getattr(args, "config", None)))


def _audit(settings: Settings, event: str, **fields: object) -> None:
    """Admin commands leave their mark in the audit trail, typed fields only."""
    from gateway.app import open_audit

    open_audit(settings).record(event, **fields)


# -- init / run / demo / check -------------------------------------------------------

def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return int(text)


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.initdir import InitOptions, init_dir
    from gateway.providers import PRESETS

    preset = PRESETS[args.provider] if args.provider else None
    upstream = args.upstream
    if upstream is None:
        if preset is not None and preset.host is None:
            raise ConfigError(f"--provider {preset.name}: give the outgoing server your "
                              f"{preset.title} customer area names, with --upstream "
                              f"HOST:PORT (e.g. --upstream smtp.example.fr:{preset.port})")
        upstream = (f"{preset.host}:{preset.port}" if preset is not None
                    else "smtp.example.net:587")
    host, _, port_text = upstream.rpartition(":")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"--upstream {upstream!r}: expected HOST:PORT, e.g. smtp.ovh.net:587")
    port = int(port_text)
    security = args.upstream_security or (
        preset.security if preset is not None and port == preset.port
        else "tls" if port == 465 else "starttls")
    name = practice_name(args.name)
    created = init_dir(args.dir, InitOptions(
        domain=args.domain, upstream_host=host, upstream_port=port, upstream_security=security,
        listen_host=args.listen, submission_port=args.submission_port,
        submissions_port=args.submissions_port, portal_port=args.portal_port,
        portal_url=args.portal_url, practice_name=name, data_dir=args.data_dir,
        provider=args.provider,
    ))
    for path in created:
        print(f"created {path}")
    config = args.dir / "pli.toml"
    account = (preset.next_step.format(folder=args.dir) if preset is not None
               else "set the provider account (username, password_file)")
    print(f"""
Next steps:
  1. Read {config} and {account}.
  2. Add a user per person who sends mail:
       pli user add -c {config} NAME --address name@{args.domain or 'your-domain'}
  3. Check the whole configuration:   pli check -c {config}
     and the provider login:          pli check --upstream -c {config}
  4. Start:                            pli run -c {config}""")
    ca = args.dir / "tls" / "ca.pem"
    if str(ca) in created:
        print(f"""  5. On each computer that sends mail, import the practice CA once (the client
     guides say how): {ca}
{_fingerprints(ca, indent="     ")}""")
    return 0


def practice_name(given: str | None) -> str:
    """The practice's name for the notices: --name, or asked for at a terminal."""
    from gateway.config import PLACEHOLDER_PRACTICE_NAME

    name = (given or "").strip()
    if not name and given is None and sys.stdin.isatty():
        name = input("The practice's name, as patients know it "
                     "(e.g. Cabinet du Dr Martin): ").strip()
    if not name or name == PLACEHOLDER_PRACTICE_NAME:
        raise PliError('give the practice\'s name, e.g. --name "Cabinet du Dr Martin": '
                       "patients read it in every notice, and a notice from "
                       f"{PLACEHOLDER_PRACTICE_NAME!r} looks like phishing")
    return name
def _fingerprints(ca: Path, indent: str) -> str:
    from cryptography import x509

    from gateway.certs import fingerprint

    certificate = x509.load_pem_x509_certificate(ca.read_bytes())
    return (f"{indent}SHA-256 (Thunderbird): {fingerprint(certificate, 'sha256')}\n"
            f"{indent}SHA-1 (Windows thumbprint): {fingerprint(certificate, 'sha1')}")


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import run

    run(_settings(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    folder = args.dir or Path(tempfile.mkdtemp(prefix="pli-demo-"))
    asyncio.run(run_demo(folder.resolve(), args.submission_port, args.submissions_port,
                         args.provider_port, args.portal_port))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.app import scale_problems
    from gateway.preflight import all_problems, tls_notes, warnings
    from gateway.tls import utc_day

    settings = _settings(args)
    problems, counts = all_problems(settings)
    problems += scale_problems(settings)
    problems += _object_store_problems(settings)
    for warning in warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    for note in tls_notes(settings):
        print(f"note: {note}")
    sessions_ok = True
    if args.upstream:
        from gateway.preflight import upstream_sessions

        for line, ok in asyncio.run(upstream_sessions(settings)):
            print(line, file=sys.stdout if ok else sys.stderr)
            sessions_ok = sessions_ok and ok
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    if not sessions_ok:
        print("a provider could not be logged in to: see above", file=sys.stderr)
        return 1
    listeners = [f"{x.host}:{x.port}" for x in (settings.submission, settings.submissions)
                 if x.enabled]
    print(f"OK: {settings.config_path}: listeners {', '.join(listeners)}, "
          f"{len(settings.upstream)} upstream account(s) with "
          f"{settings.delivery.concurrency} connection(s) each (at most "
          f"{settings.delivery.max_connections} in all), {counts['users']} user(s), "
          f"policy with {counts['rules']} rule(s), audit kept {settings.audit.retention_days:g} "
          f"days in files of at most {settings.audit.max_file_mb:g} MB, TLS certificate valid "
          f"until {utc_day(counts['certificate_expiry'])}, link index "
          f"{settings.vault.index}")
    return 0


def _object_store_problems(settings: Settings) -> list[str]:
    """Can the vault's objects be written where ``[vault]`` says? (Swift: a login and the
    container.) A store that cannot be reached is a problem: protected mail would get 451."""
    if settings.vault.objects == "files":
        return []
    from gateway.app import build_object_store
    from gateway.vault import StoreUnavailable

    store = build_object_store(settings)
    try:
        store.connect()
    except (StoreUnavailable, ConfigError) as exc:
        return [f"vault: {exc}: protected messages would be refused (451) until it works"]
    finally:
        store.close()
    return []


def cmd_tls_renew(args: argparse.Namespace) -> int:
    from gateway.certs import renew
    from gateway.tls import utc_day

    settings = _settings(args)
    renewal = renew(settings.tls.cert, settings.tls.key, settings.hostname)
    print(f"renewed {renewal.cert} for {settings.hostname}: valid until "
          f"{utc_day(renewal.valid_until)}, issued by the practice CA {renewal.ca}, whose "
          f"fingerprints are:")
    if renewal.ca_created:
        print("That CA is new: import it once on each computer that sends mail (the client "
              "guides say how), and remove the exceptions made for the former certificate.")
    print(_fingerprints(renewal.ca, indent="  "))
    print("Reload Pli to serve it: systemctl reload pli (or kill -HUP its pid)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from gateway.inspect import inspect_bytes
    from gateway.intake.data import normalise_line_endings
    from gateway.policy import explain
    from gateway.preflight import load_checked_policy
    from gateway.types import Envelope

    settings = _settings(args)
    policy = load_checked_policy(settings)
    try:
        content = Path(args.message).read_bytes()
    except OSError as exc:
        raise PliError(f"{args.message}: cannot read: {exc.strerror}") from None
    envelope = Envelope(mail_from=args.sender, rcpt_tos=tuple(args.to))
    # The very steps the server runs on a submission: the intake's line ends (a file as
    # saved by a mail client may end its lines in LF alone), inspection, decision.
    facts = inspect_bytes(normalise_line_endings(content))
    explanation = explain(policy, envelope, facts)
    print(explanation.to_json() if args.json else explanation.to_text())
    return 0


def _policy_list(settings: Settings, name: str) -> Path:
    """The file of the policy's list ``name``."""
    from gateway.policy import load_policy
    from gateway.preflight import policy_path

    policy = load_policy(policy_path(settings))
    target = policy.lists.get(name)
    if target is None or target.path is None:
        raise PliError(f"the policy declares no list named {name!r}; known lists: "
                       f"{', '.join(sorted(policy.lists))}")
    return target.path


def _print_import(name: str, summary: ImportSummary) -> None:
    print(f"{name}: {summary}")
    for label, names in (("added", summary.added_names), ("removed", summary.removed_names)):
        if names:
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            print(f"  {label}: {', '.join(names[:20])}{more}")
    print("Reload the running server to use it: systemctl reload pli (or kill -HUP its pid)")


def cmd_lists_import(args: argparse.Namespace) -> int:
    from gateway.policy import import_list

    settings = _settings(args)
    summary = import_list(Path(args.file), _policy_list(settings, args.into))
    _print_import(args.into, summary)
    return 0


def cmd_lists_update(args: argparse.Namespace) -> int:
    from gateway.whitelist import update

    settings = _settings(args)
    name = args.into or settings.mssante_whitelist.list
    summary = update(settings.mssante_whitelist, _policy_list(settings, name))
    _print_import(name, summary)
    return 0


# -- users ---------------------------------------------------------------------------

def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise PliError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from gateway.users import User, hash_password, load_users, save_users

    settings = _settings(args)
    users = load_users(settings.users_file)
    existing = users.get(args.name)
    addresses = tuple(a.lower() for a in args.address) or (existing.addresses if existing else ())
    if not addresses:
        raise PliError("give at least one --address this user may send as")
    for address in addresses:
        if "@" not in address:
            raise PliError(f"{address!r} is not an email address")
    password = _read_password()
    if len(password) < 10:
        raise PliError("the password must have at least 10 characters")
    users[args.name] = User(args.name, hash_password(password), addresses)
    save_users(settings.users_file, users)
    _audit(settings, "admin.user_added", user=args.name, addresses=list(addresses))
    print(f"{'updated' if existing else 'added'} {args.name}: may send as {', '.join(addresses)}")
    return 0


def cmd_user_del(args: argparse.Namespace) -> int:
    from gateway.users import load_users, save_users

    settings = _settings(args)
    users = load_users(settings.users_file)
    if users.pop(args.name, None) is None:
        raise PliError(f"no user named {args.name!r}")
    save_users(settings.users_file, users)
    _audit(settings, "admin.user_removed", user=args.name)
    print(f"removed {args.name}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from gateway.users import load_users

    users = load_users(_settings(args).users_file)
    for user in sorted(users.values(), key=lambda u: u.name):
        print(f"{user.name}\t{', '.join(user.addresses)}")
    if not users:
        print("no users yet: pli user add NAME --address ADDR", file=sys.stderr)
    return 0


# -- links ---------------------------------------------------------------------------

def _vault(settings: Settings):  # type: ignore[no-untyped-def]
    from gateway.app import build_vault

    return build_vault(settings)


def cmd_links_list(args: argparse.Namespace) -> int:
    vault = _vault(_settings(args))
    now = time.time()
    rows = vault.links()
    for link in rows:
        size = sum(o.size for o in link.objects)
        expires = (f"expires in {_duration(link.expires - now)}" if link.expires > now
                   else "expired")
        # The limit is per document: show the most downloaded one, and how many are used up.
        files = link.files
        most = max((f.downloads for f in files), default=0)
        used_up = sum(1 for f in files if not link.downloads_left(f))
        # What the audit trail says too: when it was first opened, what the sender is told.
        opened = (f"opened {_when(link.opened)}" if link.opened is not None
                  else "not opened")
        notices = ("notices: " + ", ".join(link.options.notify) if link.options.notify
                   else "no notices")
        if link.replies:
            notices += f"  {link.replies} repl{'y' if link.replies == 1 else 'ies'}"
        if link.parent is not None:
            who = "the patient" if link.origin == "patient" else "the sender"
            notices += f"  reply from {who} to {link.parent}"
        print(f"{link.id}  {link.status(now):<9}  {link.sender} -> {', '.join(link.recipients)}"
              f"  {most}/{link.download_limit} downloads (most downloaded file,"
              f" {used_up} used up)  {expires}"
              f"  {'code' if link.has_code else 'no code'}"
              f"{f' ({link.failed_attempts} wrong)' if link.failed_attempts else ''}"
              f"  {len(files)} file(s), {size} B  {opened}  {notices}")
    print(f"{len(rows)} link(s)")
    return 0


def cmd_links_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not _vault(settings).revoke(args.id):
        raise PliError(f"no link {args.id} (or it was already revoked)")
    _audit(settings, "admin.link_revoked", link=args.id)
    print(f"revoked {args.id}: the patient now sees that the link is no longer valid")
    return 0


def cmd_links_extend(args: argparse.Namespace) -> int:
    if args.days < 0 or args.downloads < 0 or not (args.days or args.downloads):
        raise PliError("give --days N and/or --downloads N, each 1 or more")
    settings = _settings(args)
    info = _vault(settings).extend(args.id, days=args.days, downloads=args.downloads,
                                   bounded=False)
    if info is None:
        raise PliError(f"no link {args.id} (or it was revoked: a revoked link stays so)")
    _audit(settings, "admin.link_extended", link=args.id, days=args.days,
           downloads=args.downloads)
    print(f"extended {args.id}: valid until {_when(info.expires)}, "
          f"{info.download_limit} downloads per document")
    return 0


def cmd_links_purge(args: argparse.Namespace) -> int:
    settings = _settings(args)
    vault = _vault(settings)
    try:
        held = vault.index.try_lock("purge")  # instances sharing the index take turns
        if held is None:
            raise PliError("another instance is purging the shared link index right now: "
                           "try again in a moment")
        try:
            purged = vault.purge(time.time())
        finally:
            held.release()
    finally:
        vault.close()
    _audit(settings, "admin.links_purged", links=purged.links, objects=purged.objects)
    print(f"purged {purged.links} link(s), {purged.objects} object(s), {purged.bytes} B")
    return 0


# -- audit ---------------------------------------------------------------------------

def cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.app import open_audit
    from gateway.audit import verify

    trail = open_audit(_settings(args))
    count, findings = verify(trail)
    for finding in findings:
        print(finding, file=sys.stderr)
    if findings:
        print(f"{len(findings)} problem(s) in {count} record(s)", file=sys.stderr)
        return 1
    print(f"OK: {count} record(s) in {len(trail.files())} file(s), chain intact")
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    import json

    from gateway.app import open_audit
    from gateway.audit import story

    records = story(open_audit(_settings(args)), message=args.message, link=args.link)
    for record in records:
        details = {k: v for k, v in record.items()
                   if k not in ("seq", "ts", "event", "prev", "hash")}
        print(f"{record.get('ts')}  {record.get('event'):<22} "
              f"{json.dumps(details, ensure_ascii=False)}")
    if not records:
        print("no records about it", file=sys.stderr)
        return 1
    return 0


# -- queue ---------------------------------------------------------------------------

def cmd_queue_list(args: argparse.Namespace) -> int:
    from gateway.spool.limits import LIMITS_FILE, SendingLimits
    from gateway.spool.store import Spool

    settings = _settings(args)
    spool = Spool(settings.spool_dir)
    limits = SendingLimits(settings.data_dir / LIMITS_FILE, settings)
    limits.load()
    due_now: dict[str, int] = {}  # messages due now, by account: they take turns
    now = time.time()
    count = 0
    for message in spool.messages():
        count += 1
        wait = message.next_attempt - now
        due = "now" if wait <= 0 else f"in {_duration(wait)}"
        print(f"{_queue_line(message, now)}  (tries {message.attempts}, next {due})")
        if message.last_error:
            print(f"    last answer: {message.last_error}")
        account = settings.upstream_for(message.route_sender)
        if message.waiting and message.next_attempt > now:
            print(f"    waiting: {message.waiting}, until {_local(message.next_attempt)}")
        elif message.next_attempt <= now and account is not None:
            acct = limits.account(account)
            ahead = due_now[account.name] = due_now.get(account.name, -1) + 1
            held = acct.held_until(now)
            turn = acct.turns_for(now, ahead + 1)[-1]
            if held:
                print(f"    waiting: {acct.reason}, until {_local(held)}")
            elif turn > now + 1:
                print(f"    waiting its turn: account {account.name!r} sends at most "
                      f"{acct.per_minute} messages a minute; about {_local(turn)}")
    held = 0
    for message in spool.messages(held=True):
        held += 1
        print(f"{_queue_line(message, now)}  (held)")
        print(f"    held: {message.held or 'reason not recorded'}; "
              f"`pli queue release {message.id}` sends it again")
        if message.last_error:
            print(f"    last answer: {message.last_error}")
    print(f"{count} message(s) queued" + (f", {held} held" if held else ""))
    return 0


def _local(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _queue_line(message: QueuedMessage, now: float) -> str:
    sender = message.mail_from or "<>"
    pending = ", ".join(r.address for r in message.pending)
    return (f"{message.id}  {_duration(now - message.created):>6} old  {message.size:>9} B  "
            f"{sender} -> {pending}")


def cmd_queue_flush(args: argparse.Namespace) -> int:
    from gateway.spool.scheduler import FLUSH_MARKER
    from gateway.spool.store import Spool

    settings = _settings(args)
    spool = Spool(settings.spool_dir)
    spool.create()
    (spool.root / FLUSH_MARKER).touch()
    _audit(settings, "admin.queue_flushed")
    pid = _running_pid(settings)
    if pid is None:
        print("Pli is not running: the queue will be retried when it starts")
        return 0
    try:
        os.kill(pid, signal.SIGUSR1)
    except PermissionError:
        raise PliError(f"not allowed to signal Pli (pid {pid}): run this as the pli user "
                       "or root") from None
    except ProcessLookupError:
        print("Pli is not running: the queue will be retried when it starts")
        return 0
    print("every queued message will be retried now")
    return 0


def _running_pid(settings: Settings) -> int | None:
    """The pid of the running `pli run`, if the pid file names a live Pli process (a pid
    file left by a crash may name some other process by now)."""
    from gateway.app import PID_FILE

    try:
        pid = int((settings.data_dir / PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, PermissionError):
        return None
    args = [a for a in cmdline.split(b"\0") if a]
    is_pli = any(a == b"pli" or a.endswith(b"/pli") or a == b"gateway.cli" for a in args[:3])
    return pid if is_pli and b"run" in args else None


def _queue_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", text):
        raise PliError(f"{text!r} is not a queue id (pli queue list shows them)")
    return text


def cmd_queue_delete(args: argparse.Namespace) -> int:
    from gateway.spool.store import Busy, Spool

    settings = _settings(args)
    queue_id = _queue_id(args.id)
    spool = Spool(settings.spool_dir)
    try:
        with spool.locked(queue_id) as message:
            if message is None:
                with spool.locked(queue_id, held=True) as message:
                    if message is None:
                        raise PliError(f"no queued message {queue_id}")
                    spool.remove(queue_id)
            else:
                spool.remove(queue_id)
            _audit(settings, "admin.queue_deleted", queue_id=queue_id)
    except Busy:
        raise PliError(f"{queue_id} is being delivered right now; try again in a moment") from None
    print(f"deleted {queue_id} ({len(message.pending)} recipient(s) will not receive it)")
    return 0


def cmd_queue_release(args: argparse.Namespace) -> int:
    from gateway.spool.store import Busy, Spool

    settings = _settings(args)
    queue_id = _queue_id(args.id)
    spool = Spool(settings.spool_dir)
    try:
        with spool.locked(queue_id, held=True) as message:
            if message is None:
                raise PliError(f"no held message {queue_id} (pli queue list shows them)")
            spool.release(message)
            _audit(settings, "admin.queue_released", queue_id=queue_id)
    except Busy:
        raise PliError(f"{queue_id} is being handled right now; try again in a moment") from None
    pid = _running_pid(settings)
    if pid is not None:
        with contextlib.suppress(OSError):  # without the signal, the next scan finds it
            os.kill(pid, signal.SIGUSR1)
    print(f"released {queue_id}: it goes to {len(message.pending)} recipient(s) again"
          + ("" if pid is not None else " when Pli starts"))
    return 0


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


if __name__ == "__main__":
    sys.exit(main())
