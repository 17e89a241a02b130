"""A real OpenStack Swift on loopback for the tests, started by deploy/scale/swift-aio.

Started once per test session (the ``swift`` fixture in tests/conftest.py), stopped at
its end; each test gets a container of its own. Its proxy speaks HTTPS with a certificate
from a CA made for the session (``ca_file``), as a provider's Swift does. Skipped, with the reason, only where
Debian's Swift packages are not installed (``scripts/bootstrap test`` installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from gateway.vault.swift import SwiftStore
from gateway.vault.swift_client import SwiftAccount

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "scale" / "swift-aio"
PYTHON = "/usr/bin/python3"  # Debian's, with python3-swift; not the virtual environment's
NEEDED = ("/usr/bin/swift-proxy-server", "/usr/bin/swift-object-server",
          "/usr/bin/swift-container-server", "/usr/bin/swift-account-server",
          "/usr/bin/memcached", "/etc/swift/swift.conf")


def missing() -> str | None:
    """Why Swift cannot run here, or None."""
    absent = [p for p in NEEDED if not os.path.exists(p)]
    if not os.access(PYTHON, os.X_OK):
        absent.append(PYTHON)
    elif subprocess.run([PYTHON, "-c", "import swift.common.ring"], capture_output=True,
                        check=False).returncode:
        absent.append("python3-swift")
    if absent:
        return ("OpenStack Swift is not installed (" + ", ".join(absent) + "); "
                "scripts/bootstrap test installs Debian's swift packages")
    return None


@dataclass
class SwiftAio:
    folder: Path
    auth_url: str
    user: str
    key_file: Path
    ca_file: Path | None = None

    @property
    def key(self) -> str:
        return self.key_file.read_text(encoding="ascii").strip()

    def account(self) -> SwiftAccount:
        return SwiftAccount(self.auth_url, self.user, lambda: self.key, timeout=10,
                            ca_file=None if self.ca_file is None else str(self.ca_file))

    def vault_table(self, container: str, **more: object) -> str:
        """The [vault] table of a pli.toml that keeps its objects in ``container`` here."""
        lines = [f'auth_url = "{self.auth_url}"', f'user = "{self.user}"',
                 f'key_file = "{self.key_file}"', f'container = "{container}"']
        if self.ca_file is not None:
            lines.append(f'ca_file = "{self.ca_file}"')
        lines += [f"{name} = {value!r}" for name, value in more.items()]
        return '\n[vault]\nobjects = "swift"\n\n[vault.swift]\n' + "\n".join(lines) + "\n"

    def new_store(self) -> SwiftStore:
        """A store in a container no other test uses (close it after the test)."""
        store = SwiftStore(self.account(), f"pli-test-{uuid.uuid4().hex[:12]}")
        store.connect()
        return store

    def stop(self) -> None:
        run(["stop", str(self.folder)])


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PYTHON, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=90, check=False)
    if done.returncode:
        raise RuntimeError(f"swift-aio {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return done


def start(folder: Path, *, tls: bool = True) -> SwiftAio:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    args = ["start", str(folder / "swift")]
    ca_file = None
    if tls:
        import trustme

        authority = trustme.CA()
        issued = authority.issue_cert("127.0.0.1", "localhost")
        issued.private_key_pem.write_to_path(str(folder / "proxy-key.pem"))
        issued.cert_chain_pems[0].write_to_path(str(folder / "proxy-cert.pem"))
        ca_file = folder / "ca.pem"
        authority.cert_pem.write_to_path(str(ca_file))
        args += ["--tls-cert", str(folder / "proxy-cert.pem"),
                 "--tls-key", str(folder / "proxy-key.pem")]
    done = run(args)
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return SwiftAio(folder / "swift", env["SWIFT_AUTH_URL"], env["SWIFT_USER"],
                    Path(env["SWIFT_KEY_FILE"]), ca_file)
