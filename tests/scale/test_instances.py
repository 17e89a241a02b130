"""Two `pli run` behind HAProxy, sharing PostgreSQL and the object store: any instance
serves any link, a download limit of 1 gives one download whichever instances are asked,
wrong codes are counted across instances, and losing an instance loses no mail and no
link.

The engines are real (PostgreSQL 15, HAProxy 2.6, from Debian) and started once for the
module; the instances are real processes, killed with SIGKILL in the last test.
"""

from __future__ import annotations

import asyncio
import signal
import smtplib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.engines import Postgres, haproxy_missing
from tests.scale.cluster import (
    CODE,
    PDF,
    Cluster,
    ShareStore,
    instance_of,
    link_in,
    notice_for,
    open_document,
    open_manifest,
    protected_message,
    running_cluster,
    share_files,
    share_swift,
    submit,
)
from tests.spool.helpers import spool_of
from tests.support import LoopThread, Provider, wait_until

pytestmark = pytest.mark.skipif(haproxy_missing() is not None, reason=str(haproxy_missing()))

@pytest.fixture(scope="module", params=["files", "swift"])
def cluster(request: pytest.FixtureRequest, postgres: Postgres,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Both instances on one object store: one folder, or one Swift container."""
    share: ShareStore = share_files
    if request.param == "swift":
        share = share_swift(request.getfixturevalue("swift"), f"pli-{uuid.uuid4().hex[:8]}")
    loop = LoopThread()
    try:
        with running_cluster(tmp_path_factory.mktemp("scale"), postgres, share,
                             loop) as running:
            yield running
    finally:
        loop.close()


def provider(cluster: Cluster) -> Provider:
    assert cluster.provider is not None
    return cluster.provider


def run(coroutine: object, timeout: float = 30) -> object:
    async def bounded() -> object:
        return await asyncio.wait_for(coroutine, timeout)  # type: ignore[arg-type]
    return asyncio.run(bounded())


def http() -> aiohttp.ClientSession:
    """No cookie jar (each request says what it carries) and a connection per request,
    so HAProxy balances every one."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                 connector=aiohttp.TCPConnector(force_close=True, limit=40))


async def enter_code(session: aiohttp.ClientSession, base: str, link_id: str,
                     code: str = CODE) -> tuple[int, dict[str, object], str, str | None]:
    async with session.post(f"{base}/api/l/{link_id}/code", json={"code": code}) as response:
        morsel = response.cookies.get(f"pli_{link_id}")
        return (response.status, await response.json(), instance_of(response),
                None if morsel is None else f"{morsel.key}={morsel.value}")


def send_and_get_link(cluster: Cluster, recipient: str, port: int,
                      subject: str = f"Résultats [code:{CODE}]") -> tuple[str, str]:
    submit(port, cluster.a.gw, protected_message(recipient, subject))
    return link_in(notice_for(provider(cluster), recipient))


def test_a_message_sealed_by_one_instance_is_opened_through_the_other(cluster: Cluster) -> None:
    """Submitted to A itself; the code, the state and the message are asked of HAProxy,
    which sends them to both: B accepts A's cookie and serves what A sealed."""
    link_id, secret = send_and_get_link(cluster, "first@example.org",
                                        cluster.a.gw.submission_port)

    async def scenario() -> tuple[set[str], list[bytes]]:
        async with http() as session:
            status, _, _, cookie = await enter_code(session, cluster.base, link_id)
            assert status == 200 and cookie is not None
            seen: set[str] = set()
            manifests: list[bytes] = []
            for _ in range(2):
                async with session.get(f"{cluster.base}/api/l/{link_id}",
                                       headers={"Cookie": cookie}) as response:
                    state = await response.json()
                    assert response.status == 200 and state["needs_code"] is False
                    seen.add(instance_of(response))
                async with session.get(f"{cluster.base}/api/l/{link_id}/o/manifest",
                                       headers={"Cookie": cookie}) as response:
                    assert response.status == 200
                    seen.add(instance_of(response))
                    manifests.append(await response.read())
            return seen, manifests

    seen, manifests = run(scenario())  # type: ignore[misc]
    assert seen == {"a", "b"}
    for ciphertext in manifests:
        opened = open_manifest(link_id, secret, ciphertext)
        assert opened.subject == "Résultats" and opened.text.startswith("Bonjour")
        assert [f.name for f in opened.files] == ["cr.pdf"]


def test_a_limit_of_one_gives_one_download_of_twenty_spread_over_both(cluster: Cluster) -> None:
    link_id, secret = send_and_get_link(cluster, "once@example.org", cluster.submission_port,
                                        f"Résultats [code:{CODE}] [telechargements:1]")

    async def scenario() -> tuple[list[tuple[int, str, dict[str, object]]], bytes, str]:
        async with http() as session:
            _, _, _, cookie = await enter_code(session, cluster.base, link_id)
            assert cookie is not None
            async with session.get(f"{cluster.base}/api/l/{link_id}",
                                   headers={"Cookie": cookie}) as response:
                [document] = (await response.json())["documents"]
            object_id = document["object"]
            start = asyncio.Event()

            async def grant() -> tuple[int, str, dict[str, object]]:
                await start.wait()
                async with session.post(
                        f"{cluster.base}/api/l/{link_id}/o/{object_id}/grant", json={},
                        headers={"Cookie": cookie}) as response:
                    return response.status, instance_of(response), await response.json()

            tasks = [asyncio.create_task(grant()) for _ in range(20)]
            await asyncio.sleep(0.05)
            start.set()
            answers = await asyncio.gather(*tasks)
            [won] = [a for a in answers if a[0] == 200]
            async with session.get(f"{cluster.base}/api/l/{link_id}/o/{object_id}",
                                   headers={"Authorization": f"Bearer {won[2]['grant']}"}
                                   ) as response:
                assert response.status == 200
                return answers, await response.read(), object_id

    answers, ciphertext, object_id = run(scenario())  # type: ignore[misc]
    statuses = Counter(status for status, _, _ in answers)
    assert statuses[200] == 1, statuses
    assert statuses[200] + statuses[404] + statuses[410] == 20, statuses
    assert Counter(served for _, served, _ in answers) == {"a": 10, "b": 10}
    assert open_document(link_id, secret, object_id, ciphertext) == PDF


def test_five_wrong_codes_over_both_instances_lock_the_link(cluster: Cluster) -> None:
    link_id, _ = send_and_get_link(cluster, "guess@example.org", cluster.submission_port)

    async def scenario() -> tuple[list[tuple[int, dict[str, object], str]], int]:
        async with http() as session:
            wrong = []
            for guess in ("0000", "1111", "2222", "3333", "5555"):
                status, body, served, _ = await enter_code(session, cluster.base, link_id,
                                                           guess)
                wrong.append((status, body, served))
            right, _, _, _ = await enter_code(session, cluster.base, link_id)
            return wrong, right

    wrong, right = run(scenario())  # type: ignore[misc]
    assert [body["remaining"] for _, body, _ in wrong] == [4, 3, 2, 1, 0]
    assert [body["locked"] for _, body, _ in wrong] == [False] * 4 + [True]
    assert {served for _, _, served in wrong} == {"a", "b"}
    assert right == 404  # locked: even the right code opens nothing, on either instance


def test_an_instance_killed_mid_flow_loses_no_mail_and_no_link(cluster: Cluster,
                                                               tmp_path: Path) -> None:
    """The provider is away, so both spools fill; A is killed with SIGKILL while a
    client keeps sending through HAProxy: within HAProxy's check interval every new
    session goes to B; every link sealed so far opens through HAProxy with A dead; once
    A restarts and the provider is back, every message that got its 250 is delivered."""
    provider(cluster).stop()
    accepted: list[tuple[float, str]] = []
    refused: list[tuple[float, str]] = []
    stop = threading.Event()

    def client() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            recipient = f"flow{n}@example.org"
            began = time.monotonic()
            try:
                submit(cluster.submission_port, cluster.a.gw, protected_message(recipient),
                       timeout=5)
            except (OSError, smtplib.SMTPException):
                refused.append((began, recipient))
            else:
                accepted.append((began, recipient))
            time.sleep(0.05)

    sender = threading.Thread(target=client)
    sender.start()
    try:
        wait_until(lambda: len(accepted) >= 6, timeout=20)
        in_a = wait_until(lambda: spool_of(cluster.a.gw).ids(), timeout=10)
        assert in_a, "A took none of the messages"
        cluster.a.kill(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: len([t for t, _ in accepted if t > killed + 1.5]) >= 5, timeout=20)
    finally:
        stop.set()
        sender.join(20)
    late_refusals = [r for t, r in refused if t > killed + 1.0]
    assert late_refusals == [], "sessions begun a second after the kill must reach B"

    # With A dead, every link sealed by either instance opens through HAProxy (on B).
    links = []
    for instance in (cluster.a, cluster.b):
        spool = spool_of(instance.gw)
        for queue_id in spool.ids():
            content = spool.content(queue_id)
            if b"/l/" in content:
                links.append(link_in(content))
    assert len(links) >= len(accepted) - 1  # a notice each (less one in flight at the kill)

    async def open_all() -> set[str]:
        served = set()
        async with http() as session:
            for link_id, secret in links:
                status, _, _, cookie = await enter_code(session, cluster.base, link_id)
                assert status == 200 and cookie is not None
                async with session.get(f"{cluster.base}/api/l/{link_id}/o/manifest",
                                       headers={"Cookie": cookie}) as response:
                    assert response.status == 200, link_id
                    served.add(instance_of(response))
                    assert open_manifest(link_id, secret, await response.read()).files
        return served

    assert run(open_all(), timeout=60) == {"b"}

    provider(cluster).start()
    cluster.a.start()
    for _, recipient in accepted:
        notice_for(provider(cluster), recipient, timeout=30)
    wait_until(lambda: not spool_of(cluster.a.gw).ids() and not spool_of(cluster.b.gw).ids(),
               timeout=30)
