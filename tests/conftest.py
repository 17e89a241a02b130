from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import swiftaio
from tests.engines import Postgres, postgres_missing, running_postgres
from tests.support import Gateway, LoopThread, Provider, RunningApp, make_gateway
from tests.swiftaio import SwiftAio

if TYPE_CHECKING:
    from gateway.vault.pgindex import PostgresIndex


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return make_gateway(tmp_path / "pli")


@pytest.fixture
def provider_tls(gw: Gateway) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(gw.cert, gw.folder / "tls" / "key.pem")
    return context


@pytest.fixture
def provider(loop: LoopThread, gw: Gateway) -> Iterator[Provider]:
    """A plain aiosmtpd provider on the gateway's upstream port (security "none")."""
    p = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    yield p
    p.stop()


@pytest.fixture
def pli(loop: LoopThread, gw: Gateway) -> Iterator[RunningApp]:
    app = RunningApp(loop, gw).start()
    yield app
    app.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL 15 for the whole run; each test takes a schema of its own."""
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_index(postgres: Postgres) -> Iterator[PostgresIndex]:
    """A PostgreSQL link index, empty, in a schema of this test's own."""
    from gateway.vault.pgindex import PostgresIndex

    schema = postgres.new_schema()
    index = PostgresIndex(postgres.conninfo, schema=schema, pool_size=4)
    yield index
    index.close()
    postgres.drop_schema(schema)


@pytest.fixture(scope="session")
def swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftAio]:
    """One Swift All In One for the whole session (deploy/scale/swift-aio)."""
    reason = swiftaio.missing()
    if reason:
        pytest.skip(reason)
    running = swiftaio.start(tmp_path_factory.mktemp("swift"))
    yield running
    running.stop()
