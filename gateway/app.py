"""Composition root of ``pli run``: builds the services and runs them in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway import logs, metrics, sdnotify
from gateway.audit import AuditTrail, Retention
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.intake.server import Intake, start_intake
from gateway.logs import get_logger
from gateway.outbox import Outbox
from gateway.pipeline import Pipeline, default_steps
from gateway.policy import Policy
from gateway.portal import start_portal
from gateway.preflight import load_checked_policy, policy_path, template_dirs
from gateway.spool.store import DiskRoom, Spool
from gateway.spool.worker import DeliveryWorker
from gateway.tls import certificate_expiry, server_context, utc_day
from gateway.transform import Protector
from gateway.transform.sender import SenderMail
from gateway.users import UserStore
from gateway.vault import StoreUnavailable, Vault
from gateway.vault.index import LinkIndex
from gateway.vault.objects import ObjectStore
from gateway.vault.store import FileStore
from gateway.vault.swift import SwiftStore
from gateway.vault.swift_client import SwiftAccount

log = get_logger("pli.app")

PID_FILE = "pli.pid"
PURGE_INTERVAL = 3600.0
"""Seconds between two purges of the vault's expired and revoked links."""
AUDIT_EXPIRY_INTERVAL = 3600.0
"""Seconds between two deletions of audit files past the retention period."""


def open_audit(settings: Settings) -> AuditTrail:
    return AuditTrail(settings.audit_dir, Retention(
        days=settings.audit.retention_days,
        max_file_bytes=int(settings.audit.max_file_mb * 1024 * 1024)))


async def every(interval: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` now, then ``interval`` seconds after each run ends, until cancelled."""
    while True:
        await job()
        await asyncio.sleep(interval)


def build_object_store(settings: Settings) -> ObjectStore:
    """The store ``[vault] objects`` names: files under the vault's folder, or Swift."""
    swift = settings.vault.swift
    if settings.vault.objects == "swift" and swift is not None:
        account = SwiftAccount(swift.auth_url, swift.user, swift.key, timeout=swift.timeout,
                               ca_file=None if swift.ca_file is None else str(swift.ca_file))
        return SwiftStore(account, swift.container)
    return FileStore(settings.vault_dir)


def build_index(settings: Settings) -> LinkIndex | None:
    """The link index pli.toml names: None for SQLite (the vault's own file), or the
    PostgreSQL database several instances share."""
    chosen = settings.vault
    if chosen.index == "sqlite" or chosen.postgresql is None:
        return None
    try:
        from gateway.vault.pgindex import PostgresIndex
    except ImportError:
        raise ConfigError('[vault] index = "postgresql" needs psycopg 3, which is not '
                          "installed: pip install 'pli[postgresql]'") from None
    where = chosen.postgresql
    return PostgresIndex(where.conninfo(), password=where.password(), schema=where.db_schema,
                         pool_size=where.pool_size, connect_timeout=where.connect_timeout)


def build_vault(settings: Settings) -> Vault:
    """The vault with the object store and the link index pli.toml chose, the index's
    schema made or checked; a database that cannot be reached or used is a ConfigError
    saying so."""
    store = build_object_store(settings)
    index = build_index(settings)
    if index is None:
        return Vault(settings.vault_dir, store=store)
    try:
        return Vault(settings.vault_dir, store=store, index=index)
    except Exception as exc:
        index.close()
        store.close()
        from gateway.vault.pgindex import index_error

        problem = index_error(exc)
        if problem is None:
            raise
        raise ConfigError(f"the link index: {problem}") from None


def scale_problems(settings: Settings) -> list[str]:
    """What `pli check` says of what instances share: the portal's signing key, and the
    PostgreSQL index (reached, and its tables Pli's own; an empty database is made at
    start). Nothing is written."""
    problems: list[str] = []
    try:
        settings.portal.signing_key()
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        index = build_index(settings)
    except ConfigError as exc:
        return [*problems, str(exc)]
    if index is None:
        return problems
    from gateway.vault.pgindex import PostgresIndex, index_error

    assert isinstance(index, PostgresIndex)
    try:
        index.probe()
        problems += [f"the link index: {p}" for p in index.problems()]
    except Exception as exc:
        problem = index_error(exc)
        if problem is None:
            raise
        problems.append(f"the link index: {problem}")
    finally:
        index.close()
    return problems


class App:
    vault_purge_interval = PURGE_INTERVAL
    audit_expiry_interval = AUDIT_EXPIRY_INTERVAL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.audit = open_audit(settings)
        self.spool = Spool(settings.spool_dir)
        self.vault = build_vault(settings)
        self.users = UserStore(settings.users_file)
        self.worker: DeliveryWorker | None = None
        self.outbox: Outbox | None = None
        self.intake: Intake | None = None
        self.policy: Policy | None = None
        self.tls: ssl.SSLContext | None = None
        self.certificate_expiry: float | None = None  # of the certificate being served
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.room = DiskRoom((settings.spool_dir, settings.vault_dir), settings.max_message_size)
        self.metrics = metrics.Metrics(queue=metrics.spool_queue_stats(settings.spool_dir),
                                       free_bytes=self.room.free,
                                       certificate_expiry=self._served_certificate_expiry,
                                       instance=settings.instance)
        self._metrics_runner: Any = None
        self._portal_runner: Any = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.audit.start_writer()
        removed = await asyncio.to_thread(self.spool.recover)
        queued = len(self.spool.ids())
        log.info("spool.recovered", queued=queued, removed_partial=removed)
        self.users.users()  # a broken users file stops start-up with its error
        # Beside the start, not before it: a Swift that does not answer delays no mail.
        self._tasks.append(asyncio.create_task(self._connect_objects()))
        self.policy = load_checked_policy(settings)
        tls = self.tls = server_context(settings.tls.cert, settings.tls.key)
        self.certificate_expiry = certificate_expiry(settings.tls.cert)
        self.worker = DeliveryWorker(self.spool, settings)
        protector = Protector(self.vault, settings, template_dirs(settings),
                              tag_names=lambda: self.current_policy().tag_names)
        self.outbox = Outbox(self.spool, self.vault,
                             SenderMail(settings, template_dirs(settings)),
                             submit=self.worker.submit)
        pipeline = Pipeline(default_steps(self.current_policy, protector, self.spool,
                                          on_queued=self.worker.submit,
                                          hostname=settings.hostname))
        self.worker.start()
        self._tasks.append(asyncio.create_task(
            every(self.vault_purge_interval, self._purge_vault)))
        self._tasks.append(asyncio.create_task(
            every(self.audit_expiry_interval, self._expire_audit)))
        self.intake = await start_intake(settings, self.users, pipeline.process, tls,
                                         self.spool, has_room=self.room.enough)
        if settings.portal.enabled:
            self._portal_runner = await start_portal(
                settings, self.vault, trusted_proxies=settings.portal.trusted_proxies,
                incoming_mail_host=settings.portal.imap_host, notices=self.outbox)
        await self._start_metrics()
        self._write_pid()
        log.info("pli.ready", ports=self.intake.ports, queued=queued,
                 instance=settings.instance, index=self.vault.index.describe())
        sdnotify.ready(f"accepting on ports {', '.join(map(str, self.intake.ports))}; "
                       f"{queued} queued")
        self._tasks.append(asyncio.create_task(sdnotify.watchdog_loop(self._listening)))

    async def _connect_objects(self) -> None:
        """Reach the object store now, to say at start whether protected mail can be
        sealed; one that is away does not stop Pli (passed mail and the queue go on, a
        message to protect gets 451 until the store is back)."""
        vault = self.settings.vault
        try:
            await asyncio.to_thread(self.vault.store.connect)
        except (StoreUnavailable, ConfigError) as exc:
            log.error("vault.objects_unavailable", objects=vault.objects, problem=str(exc))
            return
        if vault.swift is not None:
            log.info("vault.objects", objects=vault.objects, container=vault.swift.container)

    def _servers(self) -> list[asyncio.Server]:
        return list(self.intake.servers) if self.intake is not None else []

    def _listening(self) -> bool:
        servers = self._servers()
        return bool(servers) and all(s.is_serving() for s in servers)

    async def _start_metrics(self) -> None:
        listener = self.settings.metrics
        if not listener.enabled:
            return
        app = metrics.build_metrics_app(
            self.metrics, metrics.gateway_health(self._servers, self.spool.tmp_dir, self.room))
        try:
            self._metrics_runner = await metrics.start_metrics(listener.host, listener.port, app)
        except OSError as exc:  # monitoring must not keep mail from flowing
            log.error("metrics.unavailable", host=listener.host, port=listener.port,
                      error=exc.strerror or type(exc).__name__)
            return
        log.info("metrics.listening", host=listener.host, port=listener.port)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let sessions and deliveries under way finish within ``grace``."""
        if self.intake is not None:
            self.intake.close()
            await self.intake.drain(grace)
        if self._portal_runner is not None:  # downloads under way get the grace period
            await self._portal_runner.cleanup()
            self._portal_runner = None
        if self.worker is not None:
            await self.worker.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._metrics_runner is not None:  # last: /healthz says 503 while draining
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        await asyncio.to_thread(self.spool.close)
        await asyncio.to_thread(self.vault.close)
        await asyncio.to_thread(self.audit.close)
        with contextlib.suppress(FileNotFoundError):
            (self.settings.data_dir / PID_FILE).unlink()
        log.info("pli.stopped")

    async def _purge_vault(self) -> None:
        """Tell the senders who asked of their links that expired unopened, then delete
        the vault objects of expired and revoked links for good (hourly). Instances that
        share an index take turns: the one that holds its purge lock does it, the others
        skip this hour's run."""
        try:
            held = await asyncio.to_thread(self.vault.index.try_lock, "purge")
        except Exception as exc:  # noqa: BLE001 - tried again at the next run
            log.error("vault.purge_failed", error=type(exc).__name__)
            return
        if held is None:
            log.info("vault.purge_skipped", reason="another instance is purging")
            return
        try:
            await self._purge_vault_held()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(held.release)

    async def _purge_vault_held(self) -> None:
        if self.outbox is not None:
            try:
                await self.outbox.expired_unopened()
            except Exception as exc:  # noqa: BLE001 - tried again at the next run
                log.error("notice.failed", notice="expired",
                          error=getattr(exc, "strerror", None) or type(exc).__name__)
        try:
            purged = await asyncio.to_thread(self.vault.purge, time.time())
        except Exception as exc:  # noqa: BLE001 - tried again at the next run
            log.error("vault.purge_failed", error=type(exc).__name__)
            return
        log.info("vault.purged", links=purged.links, objects=purged.objects,
                 bytes=purged.bytes)

    async def _expire_audit(self) -> None:
        """Delete audit files older than the retention period (hourly)."""
        try:
            expired = await asyncio.to_thread(self.audit.expire_old_files)
        except Exception as exc:  # noqa: BLE001 - tried again at the next run
            log.error("audit.expiry_failed", error=type(exc).__name__)
            return
        if expired:
            log.info("audit.files_expired", files=expired)

    def _served_certificate_expiry(self) -> float:
        if self.certificate_expiry is None:
            raise LookupError("not started")  # the gauge is left out until then
        return self.certificate_expiry

    def current_policy(self) -> Policy:
        assert self.policy is not None, "the policy is loaded at start"
        return self.policy

    def reload(self) -> bool:
        """SIGHUP: read the policy and its lists, and the TLS certificate and key, again;
        whichever does not load keeps the one in force. True if both loaded."""
        sdnotify.reloading()
        try:
            policy = self._reload()
            certificate = self._reload_tls()
            return policy and certificate
        finally:
            sdnotify.ready()

    def _reload_tls(self) -> bool:
        """A renewed certificate is served to the next connections; sessions under way keep
        theirs. The files are tried on a fresh context first, so a broken pair changes
        nothing."""
        cert, key = self.settings.tls.cert, self.settings.tls.key
        try:
            server_context(cert, key)
            expiry = certificate_expiry(cert)
            if self.tls is not None:
                self.tls.load_cert_chain(cert, key)
        except (ConfigError, OSError, ssl.SSLError) as exc:
            log.error("tls.reload_failed", cert=str(cert), problem=str(exc),
                      kept="previous certificate")
            return False
        self.certificate_expiry = expiry
        log.info("tls.reloaded", cert=str(cert), valid_until=utc_day(expiry))
        return True

    def _reload(self) -> bool:
        try:
            policy = load_checked_policy(self.settings)
        except ConfigError as exc:
            problems = str(exc).splitlines()
            log.error("policy.reload_failed", policy=str(policy_path(self.settings)),
                      problems=problems, kept="previous policy")
            return False
        self.policy = policy
        log.info("policy.reloaded", policy=str(policy.path), rules=len(policy.rules))
        return True

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, self._flush)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        try:
            await self._stop.wait()
        finally:
            log.info("pli.stopping")
            sdnotify.stopping()
            await self.stop()

    def _flush(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def _write_pid(self) -> None:
        path: Path = self.settings.data_dir / PID_FILE
        path.write_text(f"{os.getpid()}\n", encoding="ascii")


def run(settings: Settings) -> None:
    app = App(settings)
    logs.configure(level=logging.getLevelNamesMapping()[settings.log_level.upper()],
                   audit=app.audit, observers=[metrics.observer(app.metrics)])
    asyncio.run(app.run_until_stopped())
