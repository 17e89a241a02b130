"""The patient's browser saving a large document: memory with the document decrypted into
memory first (the page's path where there is no service worker) against streamed to the
file as it is decrypted (the portal's service worker), in headless Chromium.

    .venv/bin/python bench/portal_memory.py                 # a 200 MB document
    .venv/bin/python bench/portal_memory.py --mb 50 --rounds 3

A real `pli run` serves the portal on 127.0.0.1; the document is sealed straight into its
vault (random bytes, streamed, so this process never holds it). For each path, a fresh
page opens the link and saves the document while this script samples, every 100 ms:

- the page's JavaScript heap and the ArrayBuffers it holds, from the DevTools protocol
  (Performance.getMetrics' JSHeapUsedSize and Runtime.getHeapUsage's
  backingStorageSize): what the page's own objects take, decrypted records included
  (garbage not yet collected counts too);
- the resident memory of every Chromium process together (VmRSS from /proc, the
  browser's process tree): what the machine gives the browser, decrypted buffers,
  blobs and the download included.

Printed: each path's peak minus its value just before the click, the time to save, and
whether the saved file is the document, byte for byte (SHA-256). Debian's chromium,
driven by Playwright; nothing is downloaded from anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.vault import Manifest, SealFile, Vault  # noqa: E402
from tests.support import (  # noqa: E402
    ADDRESS,
    HOST,
    LoopThread,
    PliProcess,
    Provider,
    free_port,
    make_gateway,
    wait_for_port,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NO_SERVICE_WORKER = "Object.defineProperty(navigator, 'serviceWorker', { get: () => undefined });"
CHUNK = 1024 * 1024


def point_portal_at(config: Path, port: int) -> None:
    text = config.read_text()
    head, marker, rest = text.partition("[portal]")
    section, following, tail = rest.partition("\n[")
    section = re.sub(r"(?m)^url = .*$", f'url = "http://{HOST}:{port}"', section)
    section = re.sub(r"(?m)^port = .*$", f"port = {port}", section)
    config.write_text(head + marker + section + following + tail)


def document(size: int, seed: bytes) -> Iterator[bytes]:
    """Pseudo-random bytes, made as they are read (SHAKE-256 blocks)."""
    made = 0
    counter = 0
    while made < size:
        block = hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(min(CHUNK, size - made))
        counter += 1
        made += len(block)
        yield block


def digest(size: int, seed: bytes) -> str:
    h = hashlib.sha256()
    for block in document(size, seed):
        h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def chromium_rss_mb(profile: str) -> float:
    """VmRSS of the browser whose profile is ``profile`` and of all its descendants."""
    parents: dict[int, int] = {}
    roots: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        if profile.encode() in cmdline and b"--type=" not in cmdline:
            roots.append(int(entry))
    family = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in family and pid not in family:
                family.add(pid)
                grew = True
    total = 0
    for pid in family:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def measure(context: Any, profile: str, url: str, streamed: bool) -> dict[str, Any]:
    page = context.new_page()
    try:
        if not streamed:
            page.add_init_script(NO_SERVICE_WORKER)
        downloads: list[Any] = []
        page.on("download", lambda download: downloads.append(download))
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(url)
        button = page.locator("#documents .download").first
        button.wait_for()
        page.wait_for_timeout(1000)  # the service worker is up, the page at rest

        def heap() -> float:
            """The page's JavaScript heap and the ArrayBuffers it holds (their bytes live
            outside the heap: decrypted records are ArrayBuffers)."""
            metrics = {m["name"]: m["value"]
                       for m in cdp.send("Performance.getMetrics")["metrics"]}
            usage = cdp.send("Runtime.getHeapUsage")
            buffers = usage.get("backingStorageSize", 0)
            return (metrics["JSHeapUsedSize"] + buffers) / 1024 / 1024

        base_heap, base_rss = heap(), chromium_rss_mb(profile)
        peak_heap, peak_rss = base_heap, base_rss
        started = time.monotonic()
        button.click()
        progress = page.locator("#documents .progress").first
        while True:
            peak_heap = max(peak_heap, heap())
            peak_rss = max(peak_rss, chromium_rss_mb(profile))
            said = progress.inner_text()
            if said.startswith(("Enregistré", "Saved")) and downloads:
                break
            if "error" in (progress.get_attribute("class") or ""):
                raise RuntimeError(f"the download failed: {said}")
            page.wait_for_timeout(100)
        failure = downloads[0].failure()  # waits for the browser to finish the file
        elapsed = time.monotonic() - started
        return {"heap": peak_heap - base_heap, "rss": peak_rss - base_rss, "seconds": elapsed,
                "url": downloads[0].url, "failure": failure,
                "file": None if failure else Path(downloads[0].path())}
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="the document's size (MB)")
    parser.add_argument("--rounds", type=int, default=1, help="measures per path (median)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    size = args.mb * 1000 * 1000
    seed = os.urandom(16)
    work = Path(tempfile.mkdtemp(prefix="pli-portal-memory-"))
    loop = LoopThread()
    gw = make_gateway(work / "pli", policy=None)
    port = free_port()
    point_portal_at(gw.config, port)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    proc = PliProcess(gw, work / "pli-run.log").start()
    try:
        wait_for_port(port)
        vault = Vault(gw.settings().vault_dir)
        link = vault.seal(
            Manifest(sender=f"Dr Martin <{ADDRESS}>", subject="Scanner", date=""),
            [SealFile("scanner.bin", "application/octet-stream", "application/octet-stream",
                      document(size, seed))],
            sender=ADDRESS, recipient="patient@gmail.com", expires_at=time.time() + 3600,
            download_limit=100, access_code=None)
        expected = digest(size, seed)
        url = link.fragment_url(f"http://{HOST}:{port}")
        profile = str(work / "profile")
        results: dict[str, list[dict[str, Any]]] = {"in memory": [], "streamed": []}
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                accept_downloads=True, viewport={"width": 390, "height": 844})
            context.set_default_timeout(120_000)
            try:
                for _ in range(args.rounds):
                    for name in results:
                        result = measure(context, profile, url, streamed=name == "streamed")
                        saved = result["file"]
                        result["identical"] = saved is not None and file_digest(saved) == expected
                        if saved is not None:
                            saved.unlink()
                        results[name].append(result)
            finally:
                context.close()
        print(f"document: {args.mb} MB, Chromium {CHROMIUM}, {args.rounds} round(s), "
              "peaks above the value just before the click, medians")
        print(f"{'path':<10} {'page heap+buffers':>17} {'all Chromium RSS':>18} {'save':>8}  "
              "identical  how")
        for name, rows in results.items():
            failures = sorted({str(r["failure"]) for r in rows if r["failure"]})
            how = "service worker" if name == "streamed" else "blob"
            print(f"{name:<10} {statistics.median(r['heap'] for r in rows):>14.1f} MB"
                  f" {statistics.median(r['rss'] for r in rows):>15.1f} MB"
                  f" {statistics.median(r['seconds'] for r in rows):>6.1f} s  "
                  f"{'yes' if all(r['identical'] for r in rows) else 'NO':<9}  {how}"
                  + (f" (download failed: {', '.join(failures)})" if failures else ""))
    finally:
        proc.kill(15)
        provider.stop()
        loop.close()


if __name__ == "__main__":
    main()
