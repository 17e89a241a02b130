"""The real engines a group runs Pli on, started here for tests: PostgreSQL 15 and HAProxy.

Each is started once (a session fixture in tests/conftest.py) by the scripts a contractor
would use (``deploy/scale/postgres``), on loopback ports, in a temporary folder, and
stopped at the end. A test that needs one skips, with the reason, only when its package
is not installed on this machine.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SCRIPT = ROOT / "deploy" / "scale" / "postgres"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    if not (POSTGRES_BIN / "initdb").exists():
        return "PostgreSQL 15 is not installed (scripts/bootstrap test installs postgresql)"
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    return None


def haproxy_missing() -> str | None:
    if not Path(HAPROXY).exists():
        return "HAProxy is not installed (scripts/bootstrap test installs haproxy)"
    return None


@dataclass
class Postgres:
    folder: Path
    port: int
    dbname: str = "pli"

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={self.dbname} user=postgres"

    def toml(self, schema: str = "public", vault: str = "") -> str:
        """The pli.toml tables that put an instance's link index in this database;
        ``vault``: more settings of the [vault] table (its object store)."""
        return (f'\n[vault]\nindex = "postgresql"\n{vault}\n[vault.postgresql]\nhost = "127.0.0.1"\n'
                f'port = {self.port}\ndbname = "{self.dbname}"\nuser = "postgres"\n'
                f'schema = "{schema}"\n')

    def new_schema(self) -> str:
        """A schema name no test used yet: each test's index starts empty."""
        return "t_" + uuid.uuid4().hex[:16]

    def drop_schema(self, schema: str) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def running_postgres(*, fast: bool = True) -> Iterator[Postgres]:
    """A PostgreSQL 15 in a temporary folder; ``fast``: fsync off, for tests, which do
    not measure it (a benchmark keeps it on)."""
    parent = Path(tempfile.mkdtemp(prefix="pli-pg-"))
    parent.chmod(0o711)  # the server runs as the postgres user, who must reach its folder
    server = Postgres(parent / "db", free_port())
    try:
        subprocess.run([str(POSTGRES_SCRIPT), "start", str(server.folder), str(server.port)],
                       check=True, capture_output=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                            "PLI_PG_FAST": "1" if fast else "0"})
        yield server
    finally:
        subprocess.run([str(POSTGRES_SCRIPT), "stop", str(server.folder)],
                       capture_output=True, timeout=60)
        shutil.rmtree(parent, ignore_errors=True)
