"""The unit under a real systemd as PID 1: a Debian bookworm with systemd, made by
mmdebstrap, booted with `podman run --systemd=always`, and Pli installed in it as
deploy/README.md says (its wheel in /opt/pli/.venv, the sysusers file, /etc/pli made by
`pli init`, the provider password as a credential file).

Then: `systemctl start pli` returns once Pli says READY, a message goes through it to a
provider on the host, `systemctl reload pli` loads a changed policy, `systemd-analyze
security` scores the running unit as deploy/README.md says, the weekly whitelist update
(its service, as the timer starts it) replaces the list and reloads Pli, the watchdog restarts a
process that hangs (SIGSTOP), and `systemctl stop pli` drains and keeps the queue.

Two settings make the container a machine as systemd expects one: CAP_SYS_ADMIN, so
that systemd builds the unit's sandbox (mount namespaces for ProtectSystem= and the
like; without it systemd skips them, and the unit would not run as on a real machine);
and /run as a shared mount, as systemd makes it when it boots a real machine (it
leaves that to the container manager in a container): systemd sets up the credentials
in a mount namespace of their own, and only a shared /run lets the service see them.
Skipped, with the reason, where podman cannot run.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from tests.deploy import podman as pm
from tests.deploy.test_systemd import MAX_EXPOSURE
from tests.deploy.wheels import ROOT, Wheelhouse
from tests.support import HOST, LoopThread, Provider, Received, free_port, wait_for_port, wait_until
from tests.test_lists_update import ListServer

PASSWORD = "un mot de passe assez long"
PROVIDER_USER, PROVIDER_PASSWORD = "cabinet@cabinet-martin.fr", "le mot de passe du compte"
HOST_LOOPBACK_INSIDE = "10.0.2.2"  # slirp4netns: the host's 127.0.0.1, seen from inside
SYSTEMD = ROOT / "deploy" / "systemd"


@dataclass
class Machine:
    name: str
    smtp_port: int
    provider: Provider
    cert: Path  # the practice CA that issued the gateway's certificate, copied out

    def sh(self, script: str, *, stdin: str | None = None, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return pm.podman("exec", *(["-i"] if stdin is not None else []), self.name,
                         "sh", "-c", script, stdin=stdin, check=check, timeout=timeout)

    def show(self, *properties: str) -> dict[str, str]:
        args = " ".join(f"-p {p}" for p in properties)
        out = self.sh(f"systemctl show pli {args}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.sh("journalctl -u pli --no-pager -o cat").stdout

    def write(self, path: str, text: str) -> None:
        self.sh(f"cat > {path} && chown pli:pli {path}", stdin=text)


def boot(name: str, image: str, smtp_port: int) -> None:
    pm.podman("run", "-d", "--name", name, *pm.RUN_LIMITS, "--systemd=always",
              "--cap-add", "SYS_ADMIN", "--tmpfs", "/run:rw,nosuid,nodev,rshared",
              "--network", "slirp4netns:allow_host_loopback=true",
              "-p", f"{HOST}:{smtp_port}:587", image, "/sbin/init")
    deadline = time.monotonic() + 90
    while True:
        done = pm.podman("exec", name, "systemctl", "is-system-running", "--wait",
                         check=False, timeout=120)
        state = done.stdout.strip()
        if state in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"systemd says {state!r}: {done.stderr.strip()}")
        time.sleep(1)


def install(machine: Machine, house: Wheelhouse, provider_ca: str) -> None:
    """deploy/README.md's steps 1 to 7, with the wheels this run built."""
    pm.podman("cp", str(house.folder), f"{machine.name}:/tmp/wheels")
    pm.podman("cp", str(SYSTEMD / "pli.sysusers"), f"{machine.name}:/usr/lib/sysusers.d/pli.conf")
    pm.podman("cp", str(SYSTEMD / "pli.service"), f"{machine.name}:/etc/systemd/system/pli.service")
    machine.sh("python3 -m venv /opt/pli/.venv && /opt/pli/.venv/bin/pip install --quiet "
               "--no-index --find-links /tmp/wheels /tmp/wheels/pli-*.whl", timeout=300)
    machine.sh("systemd-sysusers")
    machine.sh(
        "install -d -o pli -g pli -m 0700 /etc/pli && "
        "runuser -u pli -- /opt/pli/.venv/bin/pli init /etc/pli --domain cabinet-martin.fr "
        f"--name 'Cabinet du Dr Martin' --upstream {HOST_LOOPBACK_INSIDE}:{machine.provider.port} "
        "--portal-url https://pli.cabinet-martin.fr && "
        "sed -i 's|^data_dir = \"data\" |data_dir = \"/var/lib/pli\"|' /etc/pli/pli.toml && "
        "rmdir /etc/pli/data && install -d -o pli -g pli -m 0700 /var/lib/pli")
    config = machine.sh("cat /etc/pli/pli.toml").stdout
    config = config.replace('# ca_file = "provider-ca.pem"', 'ca_file = "provider-ca.pem"')
    config = config.replace('# username = "cabinet@example.fr"',
                            f'username = "{PROVIDER_USER}"')
    config = config.replace('# password_credential = "upstream"',
                            'password_credential = "upstream"')
    assert 'password_credential = "upstream"' in config and "/var/lib/pli" in config
    machine.write("/etc/pli/pli.toml", config)
    machine.write("/etc/pli/provider-ca.pem", provider_ca)
    machine.sh("umask 077; cat > /etc/pli/upstream-password", stdin=PROVIDER_PASSWORD + "\n")
    machine.sh("runuser -u pli -- /opt/pli/.venv/bin/pli user add -c /etc/pli/pli.toml "
               "martin --address dr.martin@cabinet-martin.fr", stdin=PASSWORD + "\n")
    machine.sh("systemctl daemon-reload")


@pytest.fixture(scope="module")
def machine(wheelhouse: Wheelhouse,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    reason = pm.why_podman_cannot_run()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("systemd")
    image = pm.ensure_base_image(work, pm.SYSTEMD_IMAGE, pm.SYSTEMD_PACKAGES)
    ca = trustme.CA()
    provider_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST_LOOPBACK_INSIDE).configure_cert(provider_tls)
    loop = LoopThread()
    provider = Provider(loop, provider_tls, free_port(),
                        users={PROVIDER_USER: PROVIDER_PASSWORD})
    name = f"pli-test-systemd-{uuid.uuid4().hex[:8]}"
    m = Machine(name, free_port(), provider, work / "cert.pem")
    started = time.monotonic()
    try:
        try:
            boot(name, image, m.smtp_port)
        except AssertionError as exc:
            pytest.skip(f"podman cannot boot systemd here: {exc}")
        install(m, wheelhouse, ca.cert_pem.bytes().decode())
        pm.podman("cp", f"{name}:/etc/pli/tls/ca.pem", str(m.cert))
        print(f"booted and installed in {time.monotonic() - started:.1f} s")
        yield m
    finally:
        pm.podman("rm", "--force", "--time", "5", name, check=False)
        provider.stop()
        loop.close()


def send(machine: Machine, to: str) -> None:
    message = EmailMessage()
    message["From"] = "dr.martin@cabinet-martin.fr"
    message["To"] = to
    message["Subject"] = "Compte rendu"
    message.set_content("Bonjour,\nvoici le compte rendu.\n")
    context = ssl.create_default_context(cafile=str(machine.cert))
    context.check_hostname = False  # it names pli.cabinet-martin.fr
    with smtplib.SMTP(HOST, machine.smtp_port, timeout=20) as client:
        client.starttls(context=context)
        client.login("martin", PASSWORD)
        assert client.send_message(message) == {}


def delivered(machine: Machine, count: int) -> list[Received]:
    """The provider's messages once it has ``count``; the journal's end if it never does."""
    try:
        return wait_until(lambda: len(machine.provider.handler.received) >= count
                          and machine.provider.handler.received, timeout=30)
    except AssertionError:
        raise AssertionError(machine.journal()[-4000:]) from None


def test_sysusers_creates_the_pli_user(machine: Machine) -> None:
    entry = machine.sh("getent passwd pli").stdout.strip()
    _, _, uid, _, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and home == "/var/lib/pli" and shell == "/usr/sbin/nologin"


def test_start_returns_once_pli_is_ready(machine: Machine) -> None:
    started = time.monotonic()
    machine.sh("systemctl start pli", timeout=90)
    print(f"systemctl start: {time.monotonic() - started:.1f} s")
    state = machine.show("ActiveState", "SubState", "StatusText", "Type")
    assert state["ActiveState"] == "active" and state["SubState"] == "running"
    assert state["StatusText"].startswith("accepting on ports 587, 465")
    assert "pli.ready" in machine.journal()


def test_a_message_goes_through_with_the_credential(machine: Machine) -> None:
    machine.provider.start()
    wait_for_port(machine.smtp_port)
    send(machine, "dr.durand@cabinet-martin.fr")
    [got] = delivered(machine, 1)
    assert got.rcpt_tos == ["dr.durand@cabinet-martin.fr"]
    assert b"voici le compte rendu" in got.content


def test_reload_loads_the_changed_policy(machine: Machine) -> None:
    policy = machine.sh("cat /etc/pli/policy.toml").stdout
    extra = ('\n[[rule]]\nname = "partners"\nwhen = { recipient_is = ["labo-exemple.fr"] }\n'
             'action = "pass"\n')
    first = policy.index("[[rule]]")
    machine.write("/etc/pli/policy.toml", policy[:first] + extra.lstrip() + "\n" + policy[first:])
    pid = machine.show("MainPID")["MainPID"]
    machine.sh("systemctl reload pli", timeout=60)
    reloaded = wait_until(lambda: re.findall(r'"event": "policy.reloaded".*?"rules": (\d+)',
                                             machine.journal()), timeout=20)
    assert reloaded[-1] == "4"  # the default policy's 3 rules and the new one
    assert machine.show("MainPID")["MainPID"] == pid  # the same process, not a restart


def test_the_weekly_timer_updates_the_whitelist_and_reloads_pli(machine: Machine) -> None:
    """The update unit, started as its timer would start it, downloads the list from an
    HTTPS server on the host (a trustme CA given as ca_file), replaces the old list and
    reloads Pli."""
    ca = trustme.CA()
    loop = LoopThread()
    server = ListServer(loop, ca, name=HOST_LOOPBACK_INSIDE)
    try:
        for unit in ("pli-lists-update.service", "pli-lists-update.timer"):
            pm.podman("cp", str(SYSTEMD / unit), f"{machine.name}:/etc/systemd/system/{unit}")
        machine.write("/etc/pli/igc-sante-ca.pem", ca.cert_pem.bytes().decode())
        config = machine.sh("cat /etc/pli/pli.toml").stdout
        config = config.replace(
            'url = "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml"',
            f'url = "{server.url}"')
        config = config.replace('# ca_file = "igc-sante-ca.pem"', 'ca_file = "igc-sante-ca.pem"')
        machine.write("/etc/pli/pli.toml", config)
        machine.write("/etc/pli/lists/mssante-whitelist.txt",
                      "# the list before the update\nancien-operateur.mssante.fr\n")
        reloads = machine.journal().count('"event": "policy.reloaded"')
        machine.sh("systemctl daemon-reload && systemctl enable --now pli-lists-update.timer")
        timers = machine.sh("systemctl list-timers --all --no-pager pli-lists-update.timer").stdout
        assert "pli-lists-update.timer" in timers and "pli-lists-update.service" in timers
        machine.sh("systemctl start pli-lists-update.service", timeout=120)
    finally:
        server.close()
        loop.close()
    assert server.requests == 1
    said = machine.sh("journalctl -u pli-lists-update --no-pager -o cat").stdout
    assert "516 entries: 516 added, 1 removed, 0 unchanged" in said, said[-2000:]
    wait_until(lambda: machine.journal().count('"event": "policy.reloaded"') == reloads + 1,
               timeout=20)
    listed = machine.sh("stat -c %U /etc/pli/lists/mssante-whitelist.txt && "
                        "grep -c mssante.fr /etc/pli/lists/mssante-whitelist.txt").stdout.split()
    assert listed[0] == "pli" and int(listed[1]) >= 516


def test_the_running_unit_scores_as_the_readme_says(machine: Machine) -> None:
    done = machine.sh("systemd-analyze security --no-pager pli.service")
    match = re.search(r"Overall exposure level for pli\.service: ([0-9.]+)", done.stdout)
    assert match, done.stdout[-2000:]
    assert float(match[1]) <= MAX_EXPOSURE
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"exposure level for pli.service: {match[1]}" in readme
    # The sandbox is in force, not skipped: the service sees a read-only root.
    pid = machine.show("MainPID")["MainPID"]
    mounts = machine.sh(f"cat /proc/{pid}/mountinfo").stdout.splitlines()
    [root] = [line for line in mounts if line.split()[4] == "/"]
    assert " ro," in f" {root.split()[5]},"


def test_the_watchdog_restarts_a_hung_process(machine: Machine) -> None:
    machine.provider.stop()  # what is sent now stays queued through the restart
    send(machine, "dr.durand@cabinet-martin.fr")
    before = machine.show("MainPID", "NRestarts")
    hung = time.monotonic()
    machine.sh(f"kill -STOP {before['MainPID']}")
    after = wait_until(lambda: (s := machine.show("MainPID", "NRestarts", "ActiveState",
                                                   "SubState"))["NRestarts"]
                       != before["NRestarts"] and s["SubState"] == "running" and s,
                       timeout=90, step=1)
    print(f"restarted {time.monotonic() - hung:.1f} s after hanging")
    assert after["MainPID"] != before["MainPID"] and after["ActiveState"] == "active"
    assert "Watchdog timeout" in machine.sh("journalctl -u pli --no-pager").stdout
    machine.provider.start()
    machine.sh("runuser -u pli -- /opt/pli/.venv/bin/pli queue flush -c /etc/pli/pli.toml")
    assert len(delivered(machine, 2)) == 2


def test_stop_drains_and_keeps_the_queue(machine: Machine) -> None:
    machine.provider.stop()
    send(machine, "dr.durand@cabinet-martin.fr")
    stopping = time.monotonic()
    machine.sh("systemctl stop pli", timeout=90)
    print(f"systemctl stop: {time.monotonic() - stopping:.1f} s")
    state = machine.show("ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert "pli.stopped" in machine.journal()
    queued = machine.sh("runuser -u pli -- /opt/pli/.venv/bin/pli queue list "
                        "-c /etc/pli/pli.toml").stdout
    assert "1 message(s) queued" in queued and "dr.durand@cabinet-martin.fr" in queued
