// The portal's service worker: it answers the download of a document with a stream, so
// that the page can write the document to the file as it decrypts it, record by record,
// instead of holding the whole of it in memory first. It decrypts nothing and fetches
// nothing: the page hands it the records, one for each that the download asks for.
//
// Its scope is /static/save/ alone: it never sees the portal's pages or API. A classic
// script (no modules), so that every browser with service workers can run it.

"use strict";

const PREFIX = "/static/save/";
const jobs = new Map(); // id -> { name, type, size, port }
const UNCLAIMED = 60_000; // ms a download may take to start before it is forgotten

self.addEventListener("install", (event) => event.waitUntil(self.skipWaiting()));
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("message", (event) => {
  const job = event.data;
  const port = event.ports && event.ports[0];
  if (!job || job.type !== "save" || !port || typeof job.id !== "string") return;
  jobs.set(job.id, { name: String(job.name), type: String(job.type_), size: Number(job.size),
    port });
  setTimeout(() => jobs.delete(job.id), UNCLAIMED);
  port.postMessage({ type: "ready" });
});

// A file name for Content-Disposition: RFC 6266's filename* in UTF-8, and a plain
// ASCII one for the few that read only that.
function disposition(name) {
  const plain = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  const encoded = encodeURIComponent(name).replace(/['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${plain}"; filename*=UTF-8''${encoded}`;
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || !url.pathname.startsWith(PREFIX)) return;
  const id = url.pathname.slice(PREFIX.length);
  const job = jobs.get(id);
  if (!job) {
    event.respondWith(new Response("", { status: 404 }));
    return;
  }
  jobs.delete(id);
  let wake = null;
  const stream = new ReadableStream({
    start(controller) {
      job.port.onmessage = (message) => {
        const data = message.data || {};
        if (data.type === "chunk") controller.enqueue(new Uint8Array(data.data));
        else if (data.type === "end") controller.close();
        else if (data.type === "abort") controller.error(new Error("the document is damaged"));
        if (wake) {
          const resolve = wake;
          wake = null;
          resolve();
        }
      };
    },
    // One record asked for at a time: the page decrypts no further ahead than this.
    pull() {
      return new Promise((resolve) => {
        wake = resolve;
        job.port.postMessage({ type: "pull" });
      });
    },
    cancel() {
      job.port.postMessage({ type: "cancel" });
    },
  }, { highWaterMark: 2 });
  event.respondWith(new Response(stream, { headers: {
    "Content-Type": job.type,
    "Content-Length": String(job.size),
    "Content-Disposition": disposition(job.name),
    "X-Content-Type-Options": "nosniff",
  } }));
});
