// Fetching one document's ciphertext under the grant the server gave when it counted the
// download, decrypting it as it arrives. If the connection drops (or an answer stops
// short), the fetch goes on from the byte where it stopped, under the same grant: a
// dropped connection never costs a second download.

import { ObjectOpener, VaultError } from "./vault.js";

export const RETRIES = 5; // tries in a row that bring nothing, before giving up
const RETRY_DELAY = 2000; // ms between them

// The connection kept failing: the download stopped and nothing was saved.
export class DownloadInterrupted extends Error {}

// The server no longer serves under this grant (expired, or the link was switched off).
export class GrantRefused extends Error {
  constructor(status) {
    super(`grant refused (${status})`);
    this.status = status;
  }
}

// "bytes 100-199/1000" -> { start: 100, size: 1000 }
function contentRange(header) {
  const found = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header || "");
  return found ? { start: Number(found[1]), size: Number(found[3]) } : null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves to the plaintext records once the whole object opened; onProgress(received,
// size) is called as bytes come in. Throws VaultError, DownloadInterrupted, GrantRefused.
// onRecord: hand each authenticated record to it as it comes (a file being written)
// instead of keeping them; what it got is complete only once this resolves.
export async function fetchGranted(url, grant, key, objectId, onProgress = () => {},
  { onRecord = null } = {}) {
  const opener = new ObjectOpener(key, objectId, { onRecord });
  let received = 0;
  let size = null;
  let fruitless = 0;
  while (size === null || received < size) {
    const before = received;
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Authorization: `Bearer ${grant}`, Range: `bytes=${received}-` },
      });
      if (response.status !== 206 || !response.body) throw new GrantRefused(response.status);
      const range = contentRange(response.headers.get("Content-Range"));
      if (!range || range.start !== received || (size !== null && range.size !== size)) {
        throw new VaultError("range");
      }
      size = range.size;
      const reader = response.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (received + value.length > size) throw new VaultError("range");
          received += value.length;
          onProgress(received, size);
          await opener.push(value);
        }
      } catch (error) {
        reader.cancel().catch(() => {});
        throw error;
      }
    } catch (error) {
      if (error instanceof VaultError || error instanceof GrantRefused) throw error;
      // fetch() failed or the body broke off: the connection, go on where it stopped.
    }
    if (size !== null && received >= size) break;
    fruitless = received > before ? 0 : fruitless + 1;
    if (fruitless >= RETRIES) throw new DownloadInterrupted();
    if (received === before) await sleep(RETRY_DELAY);
  }
  return opener.finish();
}
