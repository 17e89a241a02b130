"""Debian's Postfix as a submission relay, for the relay benchmark's fourth path.

An instance of its own in a temporary folder (configuration, queue, Cyrus SASL
database), never the machine's: a submission service on a loopback port with STARTTLS
required and AUTH (PLAIN, LOGIN) through Cyrus SASL's sasldb, relaying every message to
the benchmark's provider over STARTTLS with the provider's login, as a practice would
set Postfix up in front of its provider. Postfix's own defaults otherwise (20
connections to a destination, connections kept for reuse), its queue on the same disk
as Pli's, fsync'd as Postfix always does.

Needs the Debian packages postfix, libsasl2-modules and sasl2-bin, and root (Postfix's
daemons run as the postfix user, and the queue must belong to it).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

SERVICES = """\
{port} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def missing() -> str | None:
    """Why this path cannot run here, or None."""
    for tool in ("postfix", "postconf", "saslpasswd2"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install postfix libsasl2-modules sasl2-bin)"
    if os.geteuid() != 0:
        return "Postfix's daemons need root to start"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or the postdrop group is missing"
    return None


class PostfixRelay:
    def __init__(self, folder: Path, port: int, provider_port: int, cert: Path, key: Path,
                 users: list[tuple[str, str]], accounts: dict[str, tuple[str, str]]) -> None:
        """``users``: the (login, password) of the clients; ``accounts``: for each sender
        address, its (login, password) at the provider (each practitioner's mailbox)."""
        self.folder = folder
        self.port = port
        self.etc = folder / "etc"
        self.queue = folder / "queue"
        self.started = False
        self._write_config(provider_port, cert, key, users, accounts)

    def _write_config(self, provider_port: int, cert: Path, key: Path,
                      users: list[tuple[str, str]], accounts: dict[str, tuple[str, str]]) -> None:
        sasl = self.etc / "sasl"  # Debian's Postfix reads <config_directory>/sasl/smtpd.conf
        for folder in (self.etc, self.queue, self.folder / "data", sasl):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.folder, *self.folder.parents):  # the postfix user goes through
            if folder == Path("/"):
                break
            os.chmod(folder, os.stat(folder).st_mode | 0o011)
        postfix = pwd.getpwnam("postfix")
        os.chown(self.folder / "data", postfix.pw_uid, postfix.pw_gid)
        sasldb = sasl / "sasldb2"
        (sasl / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
            f"sasldb_path: {sasldb}\n")
        for user, password in users:
            subprocess.run(["saslpasswd2", "-c", "-p", "-f", str(sasldb), "-u", "bench.test",
                            user], input=password.encode(), check=True)
        os.chown(sasldb, postfix.pw_uid, postfix.pw_gid)
        secret = self.folder / "sasl_passwd"  # per sender, as each has its own mailbox
        secret.write_text("".join(f"{address} {login}:{password}\n"
                                  for address, (login, password) in accounts.items()))
        (self.etc / "master.cf").write_text(SERVICES.format(port=f"127.0.0.1:{self.port}"))
        (self.etc / "main.cf").write_text("\n".join([
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue}",
            f"data_directory = {self.folder / 'data'}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "myhostname = postfix.bench.test",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "smtputf8_enable = no",
            f"maillog_file_prefixes = {self.folder}",
            f"maillog_file = {self.folder / 'postfix.log'}",
            f"relayhost = [127.0.0.1]:{provider_port}",
            f"smtpd_tls_cert_file = {cert}",
            f"smtpd_tls_key_file = {key}",
            "smtpd_sasl_type = cyrus",
            "smtpd_sasl_path = smtpd",
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            "smtpd_sasl_local_domain = bench.test",
            "smtp_tls_security_level = encrypt",
            "smtp_sasl_auth_enable = yes",
            "smtp_sender_dependent_authentication = yes",
            f"smtp_sasl_password_maps = texthash:{secret}",
            "smtp_sasl_security_options = noanonymous",
            "smtp_sasl_tls_security_options = noanonymous",
            "",
        ]))

    def start(self) -> PostfixRelay:
        env = {**os.environ, "MAIL_CONFIG": str(self.etc)}
        for command in ("set-permissions", "start"):
            # postfix speaks only to syslog and a terminal: script(1) gives it one, so
            # that a refusal reaches the benchmark's output.
            done = subprocess.run(["script", "-qec", f"postfix -c {self.etc} {command}",
                                   "/dev/null"], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"postfix {command}: {done.stdout.strip()}")
        self.started = True
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        """The master and every daemon it started (their CPU adds up to Postfix's)."""
        master = self.master_pid()
        if master is None:
            return []
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                  text=True).stdout.split()
        return [master, *map(int, children)]

    def stop(self) -> None:
        if self.started:
            subprocess.run(["postfix", "-c", str(self.etc), "stop"],
                           env={**os.environ, "MAIL_CONFIG": str(self.etc)},
                           capture_output=True)
            self.started = False
