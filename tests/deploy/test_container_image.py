"""The container image, built and run with podman as root: `pli init`, `pli user add`,
`pli check` and `pli run` in it with the two volumes, a message through the published
port to a provider on the host, the image's health check reporting healthy, and a stop
with SIGTERM that loses nothing of the queue.

The container runs as compose.yaml says (uid 10001, every capability dropped,
no-new-privileges, a read-only root, an init that forwards signals). It reaches the
provider on the host's loopback through slirp4netns (10.0.2.2 inside is 127.0.0.1
outside), and the test reaches it through a port published on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import smtplib
import ssl
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.deploy import podman as pm
from tests.deploy.wheels import NOT_SOURCE, ROOT, Wheelhouse
from tests.support import HOST, LoopThread, Provider, free_port, wait_for_port, wait_until

UID = 10001
PASSWORD = "un mot de passe assez long"
HOST_LOOPBACK_INSIDE = "10.0.2.2"  # slirp4netns: the host's 127.0.0.1, seen from inside


@pytest.fixture(scope="session")
def image(wheelhouse: Wheelhouse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's image, built once per run on the local base, offline: the build
    context is the project's source with the run's wheels in deploy/container/wheels/."""
    reason = pm.why_podman_cannot_run()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("image")
    base = pm.ensure_base_image(work)
    try:
        pm.podman("run", "--rm", *pm.RUN_LIMITS, base, "true", timeout=120)
    except AssertionError as exc:
        pytest.skip(f"podman cannot start a container here: {exc}")
    context = work / "context"
    shutil.copytree(ROOT, context, ignore=NOT_SOURCE)
    for wheel in wheelhouse.folder.glob("*.whl"):
        shutil.copy(wheel, context / "deploy" / "container" / "wheels")
    tag = f"localhost/pli-test:{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    stages = pm.build_image(context, tag, base, "deploy/container/Containerfile",
                            str(context / "deploy" / "container" / "Containerfile.dockerignore"),
                            build_args=["PIP_OPTIONS=--no-index"])
    print(f"image built in {time.monotonic() - started:.1f} s")
    yield tag
    pm.podman("rmi", tag, *stages, check=False)


class Practice:
    """config/ and data/ beside each other, as compose.yaml mounts them."""

    def __init__(self, folder: Path, image: str) -> None:
        self.config = folder / "config"
        self.data = folder / "data"
        for path in (self.config, self.data):
            path.mkdir(parents=True)
            shutil.chown(path, UID, UID)
        self.image = image
        self.name = f"pli-test-{uuid.uuid4().hex[:8]}"

    def volumes(self) -> list[str]:
        return ["-v", f"{self.config}:/etc/pli", "-v", f"{self.data}:/var/lib/pli"]

    def hardening(self) -> list[str]:
        """compose.yaml's settings for the service, as podman run options."""
        return ["--user", f"{UID}:{UID}", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "--read-only", "--tmpfs", "/tmp",
                "--init", "--sysctl", "net.ipv4.ip_unprivileged_port_start=0"]

    def pli(self, *args: str, stdin: str | None = None) -> str:
        """`docker compose run --rm pli ARGS`."""
        interactive = ["-i"] if stdin is not None else []
        return pm.podman("run", "--rm", *interactive, *pm.RUN_LIMITS, *self.hardening(),
                         "--network", "none", *self.volumes(), self.image, *args,
                         stdin=stdin).stdout

    def start(self, smtp_port: int) -> None:
        """`docker compose up -d`, the first time; `podman start` after a stop."""
        if pm.podman("container", "exists", self.name, check=False).returncode == 0:
            pm.podman("start", self.name)
            return
        pm.podman("run", "-d", "--name", self.name, *pm.RUN_LIMITS, *self.hardening(),
                  "--network", "slirp4netns:allow_host_loopback=true",
                  "-p", f"{HOST}:{smtp_port}:587", *self.volumes(), self.image)

    def health(self) -> str:
        """Run the image's HEALTHCHECK now (podman schedules it with systemd timers,
        and systemd is not running here) and return the state it leaves."""
        pm.podman("healthcheck", "run", self.name, check=False)
        return pm.podman("inspect", "--format", "{{.State.Health.Status}}",
                         self.name).stdout.strip()

    def logs(self) -> str:
        done = pm.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        pm.podman("rm", "--force", "--time", "5", self.name, check=False)


def send(port: int, cert: Path, to: str) -> str:
    message = EmailMessage()
    message["From"] = "dr.martin@cabinet-martin.fr"
    message["To"] = to
    message["Subject"] = "Compte rendu"
    message.set_content("Bonjour,\nvoici le compte rendu.\n")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # it names pli.cabinet-martin.fr; the test dials 127.0.0.1
    with smtplib.SMTP(HOST, port, timeout=20) as client:
        client.starttls(context=context)
        client.login("martin", PASSWORD)
        refused = client.send_message(message)
        assert refused == {}
        return str(client.noop()[0])


def test_the_image_takes_a_message_stays_healthy_and_stops_without_losing_it(
        image: str, tmp_path: Path) -> None:
    practice = Practice(tmp_path, image)
    provider_port, smtp_port = free_port(), free_port()
    practice.pli("init", "/etc/pli", "--domain", "cabinet-martin.fr", "--name",
                 "Cabinet du Dr Martin", "--upstream", f"{HOST_LOOPBACK_INSIDE}:{provider_port}",
                 "--upstream-security", "none", "--data-dir", "/var/lib/pli")
    config = practice.config / "pli.toml"
    text = config.read_text()
    # deploy/README.md's one edit for a container: the portal listens on every address.
    text = text.replace('host = "127.0.0.1"              # the reverse proxy',
                        'host = "0.0.0.0"              # the reverse proxy')
    config.write_text(text)
    practice.pli("user", "add", "-c", "/etc/pli/pli.toml", "martin", "--address",
                 "dr.martin@cabinet-martin.fr", stdin=PASSWORD + "\n")
    assert "OK:" in practice.pli("check", "-c", "/etc/pli/pli.toml")

    loop = LoopThread()
    provider = Provider(loop, None, provider_port, offer_starttls=False)
    try:
        practice.start(smtp_port)
        # The published port accepts as soon as podman forwards it: wait for Pli itself.
        wait_until(lambda: '"event": "pli.ready"' in practice.logs(), timeout=60, step=0.5)
        wait_for_port(smtp_port, timeout=10)
        # The provider is not there yet: the message is queued, and must survive the stop.
        send(smtp_port, practice.config / "tls" / "ca.pem", "dr.durand@cabinet-martin.fr")
        assert wait_until(lambda: practice.health() == "healthy", timeout=60, step=1)
        stopped = time.monotonic()
        pm.podman("stop", "--time", "45", practice.name, timeout=90)  # SIGTERM, then wait
        assert time.monotonic() - stopped < 40, "pli did not stop on SIGTERM"
        state = pm.podman("inspect", "--format", "{{.State.ExitCode}}", practice.name)
        assert state.stdout.strip() == "0", practice.logs()[-3000:]
        logs = practice.logs()
        assert '"event": "pli.stopped"' in logs and '"event": "spool.queued"' in logs
        queued = practice.pli("queue", "list", "-c", "/etc/pli/pli.toml")
        assert "1 message(s) queued" in queued and "dr.durand@cabinet-martin.fr" in queued

        provider.start()
        practice.start(smtp_port)
        wait_until(lambda: practice.logs().count('"event": "pli.ready"') == 2, timeout=60)
        pm.podman("exec", practice.name, "pli", "queue", "flush", "-c", "/etc/pli/pli.toml")
        got = wait_until(lambda: provider.handler.received, timeout=60)
    finally:
        practice.remove()
        provider.stop()
        loop.close()
    [message] = got
    assert message.rcpt_tos == ["dr.durand@cabinet-martin.fr"]
    assert b"voici le compte rendu" in message.content
