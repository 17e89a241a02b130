"""What the index keeps of a link's life after sending: the sender's notices and whether
the message was opened, the sender's own secret (as a hash), extensions within the
link's maxima, the secure replies along a thread, and an index of version 1 upgraded."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.vault import LinkOptions, SealFile, Vault
from gateway.vault.index import _SCHEMA, SCHEMA_VERSION, StoredObject
from tests.vault.helpers import DAY, RECIPIENT, SENDER, manifest

OPTIONS = LinkOptions(language="en", template="hospital", notify=("opened", "expired"),
                      max_download_limit=8, reply_max_files=3, reply_max_bytes=1_000_000)


def seal(vault: Vault, *, expires_in: float = 14 * DAY, options: LinkOptions = OPTIONS,
         manage: bool = True, code: str | None = None, download_limit: int = 5):
    now = time.time()
    return vault.seal(manifest(), [SealFile("note.txt", "text/plain", "text/plain", b"hi")],
                      sender=SENDER, recipient=RECIPIENT, expires_at=now + expires_in,
                      download_limit=download_limit, access_code=code,
                      options=LinkOptions(**{**OPTIONS.__dict__, **options.__dict__,
                                             "max_expires": now + 30 * DAY}),
                      manage=manage)


def test_a_link_keeps_its_notices_language_maxima_and_reply_bounds(vault: Vault) -> None:
    link = seal(vault)
    info = vault.get(link.id)
    assert info is not None
    assert info.options.notify == ("opened", "expired")
    assert (info.options.language, info.options.template) == ("en", "hospital")
    assert info.max_download_limit == 8 and info.max_expires > info.expires
    assert (info.options.reply_max_files, info.options.reply_max_bytes) == (3, 1_000_000)
    assert info.replies_allowed and info.has_manage and info.opened is None
    assert (info.origin, info.parent, info.replies) == ("practice", None, 0)


def test_the_senders_secret_opens_its_link_only_and_is_never_stored(vault: Vault) -> None:
    link, other = seal(vault), seal(vault)
    assert link.manage_secret and link.manage_secret != link.secret
    assert link.manage_url("https://p.fr/") == f"https://p.fr/m/{link.id}#{link.manage_secret}"
    assert vault.check_manage(link.id, link.manage_secret)
    assert not vault.check_manage(other.id, link.manage_secret)
    assert not vault.check_manage(link.id, link.secret)  # the patient's key is not it
    assert not vault.check_manage(link.id, "not base64url!")
    assert not vault.check_manage("bad id", link.manage_secret)
    without = seal(vault, manage=False)
    assert without.manage_secret is None
    with pytest.raises(ValueError):
        without.manage_url("https://p.fr")
    assert not vault.check_manage(without.id, link.manage_secret)
    stored = b"".join(p.read_bytes() for p in vault.root.glob("index.sqlite3*"))
    assert link.manage_secret.encode() not in stored


def test_the_first_opening_is_noted_once_whoever_races_for_it(vault: Vault) -> None:
    link = seal(vault)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(vault.mark_opened(link.id)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    info = vault.get(link.id)
    assert info is not None and info.opened is not None
    assert not vault.mark_opened(link.id) and not vault.mark_opened("nonsense")


def test_an_extension_stays_within_the_links_maxima_unless_unbounded(vault: Vault) -> None:
    link = seal(vault)
    info = vault.get(link.id)
    assert info is not None
    extended = vault.extend(link.id, days=7, downloads=2)
    assert extended is not None
    assert extended.expires == pytest.approx(info.expires + 7 * DAY)
    assert extended.download_limit == 7
    capped = vault.extend(link.id, days=60, downloads=60)
    assert capped is not None
    assert capped.expires == pytest.approx(info.max_expires)
    assert capped.download_limit == 8
    beyond = vault.extend(link.id, days=60, downloads=60, bounded=False)
    assert beyond is not None and beyond.download_limit == 68
    assert beyond.expires == pytest.approx(info.max_expires + 60 * DAY)
    with pytest.raises(ValueError):
        vault.extend(link.id, days=-1)
    vault.revoke(link.id)
    assert vault.extend(link.id, days=1) is None and vault.extend("nonsense", days=1) is None


def test_more_downloads_alone_or_more_days_alone_change_that_alone(vault: Vault) -> None:
    """The sender's page and `pli links extend --downloads 2` give downloads without days
    (and `--days` days without downloads)."""
    link = seal(vault)
    info = vault.get(link.id)
    assert info is not None
    more = vault.extend(link.id, downloads=2)
    assert more is not None
    assert (more.expires, more.download_limit) == (info.expires, info.download_limit + 2)
    later = vault.extend(link.id, days=1)
    assert later is not None
    assert later.download_limit == info.download_limit + 2
    assert later.expires == pytest.approx(info.expires + DAY)


def test_an_expired_link_extended_counts_from_now_and_works_again(vault: Vault) -> None:
    link = seal(vault, expires_in=-DAY)
    assert vault.status(link.id) == "expired"
    extended = vault.extend(link.id, days=2)
    assert extended is not None and extended.expires == pytest.approx(time.time() + 2 * DAY,
                                                                      abs=5)
    assert vault.status(link.id) == "ok"


def test_an_unopened_link_that_expired_is_noticed_once_and_kept_until_then(
        vault: Vault) -> None:
    expired = seal(vault, expires_in=-60)
    opened = seal(vault, expires_in=-60)
    vault.mark_opened(opened.id, time.time() - 3600)
    silent = seal(vault, expires_in=-60, options=LinkOptions(notify=("opened",)))
    revoked = seal(vault, expires_in=-60)
    vault.revoke(revoked.id)
    seal(vault)  # not expired
    assert [i.id for i in vault.expired_unopened()] == [expired.id]
    # Purge keeps the one whose notice is to come, so that it can still name it.
    purged = vault.purge()
    assert purged.links == 3 and vault.get(expired.id) is not None
    assert vault.mark_expiry_noticed(expired.id) and not vault.mark_expiry_noticed(expired.id)
    assert vault.expired_unopened() == []
    vault.unmark_expiry_noticed(expired.id)  # the notice could not be queued: again
    assert [i.id for i in vault.expired_unopened()] == [expired.id]
    # A week later it goes whether or not the notice went.
    assert vault.purge(time.time() + 8 * DAY).links == 1  # the 14-day link stays
    assert vault.get(expired.id) is None and silent.id not in vault.index.ids()


def test_extending_a_noticed_link_makes_its_next_expiry_noticed_again(vault: Vault) -> None:
    link = seal(vault, expires_in=-60)
    assert vault.mark_expiry_noticed(link.id)
    vault.extend(link.id, days=1)
    assert vault.expired_unopened() == []
    assert [i.id for i in vault.expired_unopened(time.time() + 2 * DAY)] == [link.id]


def reply_to(vault: Vault, parent: str, reply: str, max_replies: int = 20) -> bool:
    return vault.index.create_reply(parent, reply, created=time.time(),
                                    objects=[StoredObject("manifest", 1040)],
                                    max_replies=max_replies)


def test_a_reply_goes_back_along_the_thread_with_its_parents_bounds(vault: Vault) -> None:
    link = seal(vault, code="4821", download_limit=3)
    assert reply_to(vault, link.id, "RRRRRRRRRRRRRRRRRRRRRQ")
    parent, reply = vault.get(link.id), vault.get("RRRRRRRRRRRRRRRRRRRRRQ")
    assert parent is not None and reply is not None and parent.replies == 1
    assert (reply.origin, reply.parent) == ("patient", link.id)
    assert (reply.sender, reply.recipients) == (SENDER, (RECIPIENT,))
    assert reply.has_code and not reply.has_manage and reply.download_limit == 3
    assert reply.options.reply_max_files == 3 and reply.options.language == "en"
    assert reply.expires - reply.created == pytest.approx(parent.expires - parent.created)
    assert [o.id for o in reply.objects] == ["manifest"]
    assert vault.check_code(reply.id, "4821").ok  # the thread's access code
    # The sender answers from the reply: back to the patient's side.
    assert reply_to(vault, reply.id, "AAAAAAAAAAAAAAAAAAAAAQ")
    answer = vault.get("AAAAAAAAAAAAAAAAAAAAAQ")
    assert answer is not None and (answer.origin, answer.parent) == ("practice", reply.id)


def test_a_reply_is_refused_once_the_link_is_revoked_expired_or_has_had_enough(
        vault: Vault) -> None:
    revoked, expired, busy = seal(vault), seal(vault, expires_in=-1), seal(vault)
    closed = seal(vault, options=LinkOptions(reply_max_files=0, reply_max_bytes=0))
    vault.revoke(revoked.id)
    assert not reply_to(vault, revoked.id, "RRRRRRRRRRRRRRRRRRRRRQ")
    assert not reply_to(vault, expired.id, "RRRRRRRRRRRRRRRRRRRRRQ")
    assert not reply_to(vault, closed.id, "RRRRRRRRRRRRRRRRRRRRRQ")
    assert vault.get("RRRRRRRRRRRRRRRRRRRRRQ") is None
    results: list[bool] = []
    threads = [threading.Thread(target=lambda n=n: results.append(reply_to(
        vault, busy.id, f"{n:A>21}Q", max_replies=3))) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 3 + [True] * 3
    info = vault.get(busy.id)
    assert info is not None and info.replies == 3


def test_an_index_of_version_1_is_brought_up_with_nothing_after_sending(tmp_path: Path) -> None:
    path = tmp_path / "vault" / "index.sqlite3"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute("INSERT INTO links (id, created, expires, download_limit, sender, recipients)"
                   " VALUES ('OLDOLDOLDOLDOLDOLDOLDA', ?, ?, 5, ?, ?)",
                   (time.time(), time.time() + DAY, SENDER, f'["{RECIPIENT}"]'))
        db.execute("INSERT INTO objects VALUES ('OLDOLDOLDOLDOLDOLDOLDA', 'manifest', 1, 0, 0)")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    finally:
        db.close()
    vault = Vault(tmp_path / "vault")
    with vault.index._connect() as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    info = vault.get("OLDOLDOLDOLDOLDOLDOLDA")
    assert info is not None and vault.status(info.id) == "ok"
    assert info.options == LinkOptions() and not info.has_manage and not info.replies_allowed
    assert info.max_expires == info.expires and info.max_download_limit == 5
    assert vault.expired_unopened(time.time() + 2 * DAY) == []
