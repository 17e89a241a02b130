// Saving a document straight to a file as it is decrypted, where the browser allows it:
// the portal's service worker (save.js) answers the download with a stream, and this
// side hands it each record as soon as it is authenticated. Memory then stays at a few
// records whatever the document's size. Where there is no service worker (or it does
// not start), the page keeps its other path: the whole document in memory, then saved.
//
// A streamed file is written before its last record is known: if a record fails to
// open, the stream is broken off and the browser marks the download as failed, leaving
// no file under the document's name.

const WORKER = "/static/save.js";
const SCOPE = "/static/save/";
const READY = 5000; // ms for the worker to be ready, and for a download to start

export class DownloadCancelled extends Error {}

let registering = null;

function supported() {
  return window.isSecureContext && !!navigator.serviceWorker &&
    typeof MessageChannel === "function" && typeof ReadableStream === "function";
}

// Start the worker early (when the page opens): resolves to it, or to null.
export function prepareSaving() {
  if (!registering) registering = supported() ? register().catch(() => null)
    : Promise.resolve(null);
  return registering;
}

function within(ms, promise) {
  return Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve(null), ms))]);
}

async function register() {
  // Trusted Types: the one script address the page may hand over, and nothing else.
  const policy = window.trustedTypes?.createPolicy("pli-worker", {
    createScriptURL: (url) => {
      if (url !== WORKER) throw new TypeError("not the portal's worker");
      return url;
    },
  });
  const registration = await navigator.serviceWorker.register(
    policy ? policy.createScriptURL(WORKER) : WORKER, { scope: SCOPE });
  return within(READY, new Promise((resolve) => {
    const worker = registration.active || registration.waiting || registration.installing;
    if (!worker) return resolve(null);
    if (worker.state === "activated") return resolve(worker);
    worker.addEventListener("statechange", () => {
      if (worker.state === "activated") resolve(worker);
      else if (worker.state === "redundant") resolve(null);
    });
  }));
}

function randomId() {
  return [...crypto.getRandomValues(new Uint8Array(16))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

// One document being saved through the worker; null when it cannot be (then the page
// saves it the other way). write() waits until the download asks for more.
export async function startSaving({ name, type, size }) {
  const worker = await prepareSaving();
  if (!worker) return null;
  const channel = new MessageChannel();
  const port = channel.port1;
  let credits = 0;
  let cancelled = false;
  let waiting = null;
  const ready = new Promise((resolve) => {
    port.onmessage = (message) => {
      const data = message.data || {};
      if (data.type === "ready") resolve(true);
      else if (data.type === "pull") credits += 1;
      else if (data.type === "cancel") cancelled = true;
      if (waiting && (credits || cancelled)) {
        const wake = waiting;
        waiting = null;
        wake();
      }
    };
  });
  const id = randomId();
  worker.postMessage({ type: "save", id, name, type_: type, size }, [channel.port2]);
  if (!(await within(READY, ready))) return null;
  const link = document.createElement("a");
  link.href = `${SCOPE}${id}`;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  const untilAsked = () => new Promise((resolve) => { waiting = () => resolve(true); });
  // The download must ask for its first record: if the browser did not start it, the
  // page saves the document the other way.
  if (!credits && !(await within(READY, untilAsked()))) {
    port.postMessage({ type: "abort" }); // should it start after all, it fails at once
    port.close();
    return null;
  }
  let written = 0;
  return {
    get written() { return written; },
    async write(record) {
      while (!credits && !cancelled) await untilAsked();
      if (cancelled) throw new DownloadCancelled();
      credits -= 1;
      written += record.byteLength;
      port.postMessage({ type: "chunk", data: record }, [record]);
    },
    close() { port.postMessage({ type: "end" }); },
    abort() { port.postMessage({ type: "abort" }); },
  };
}
