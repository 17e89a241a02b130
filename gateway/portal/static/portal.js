// The link page: reads the key from the address, asks for the access code when the link
// has one, then fetches, decrypts and shows the message, and saves each document.
//
// Everything from the message is put on the page as text (textContent), never as HTML;
// the page's Content-Security-Policy (Trusted Types with no policy) enforces it. A message
// with an HTML body is shown by its plain-text part, or, when it has none, as the text of
// its HTML with the tags dropped: nothing of the sender's markup is ever rendered.

import { concat, deriveKeys, isLinkId, isSecret, openStream, VaultError } from "./vault.js";
import { DownloadInterrupted, fetchGranted, GrantRefused } from "./download.js";
import { offerReply } from "./reply.js";
import { DownloadCancelled, prepareSaving, startSaving } from "./saver.js";
import { texts } from "./texts.js";

const T = document.documentElement.lang === "en" ? texts.en : texts.fr;
const $ = (id) => document.getElementById(id);

// The secret travels in the fragment, which browsers never send; take it, then remove it
// from the address bar and the history entry, so it is not left on screen.
const linkId = location.pathname.split("/").pop() || "";
const secret = location.hash.slice(1);
if (location.hash) history.replaceState(null, "", location.pathname + location.search);
const api = `/api/l/${encodeURIComponent(linkId)}`;

let keys = null;
let state = null;
let manifest = null;
let replyOffered = false;

class Unavailable extends Error {}
class CodeRequired extends Error {}
class NetworkError extends Error {}
class UsedUp extends Error {}

async function main() {
  if (!window.crypto?.subtle || !window.ReadableStream || !window.TextDecoder) {
    return showProblem(T.oldBrowser);
  }
  if (!isLinkId(linkId) || !isSecret(secret)) return showProblem(T.incomplete);
  prepareSaving(); // the service worker that streams documents to files, if any
  keys = await deriveKeys(linkId, secret);
  state = await getState();
  if (state.needs_code) return showCodeStep();
  await openMessage();
}

// -- talking to the server ------------------------------------------------------------

async function request(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", cache: "no-store", ...options });
  } catch {
    throw new NetworkError();
  }
  if (response.status === 404) throw new Unavailable();
  if (response.status === 401) throw new CodeRequired();
  return response;
}

async function getState() {
  const response = await request(api);
  if (!response.ok) throw new NetworkError();
  return response.json();
}

async function fetchManifest() {
  const response = await request(`${api}/o/manifest`);
  if (!response.ok || !response.body) throw new NetworkError();
  try {
    return await openStream(keys.manifest, "manifest", response.body);
  } catch (error) {
    if (error instanceof VaultError) throw error;
    throw new VaultError("truncated"); // the connection broke: the object is incomplete
  }
}

// One download of a document, counted by the server now; its answer is the grant under
// which the ciphertext is then fetched, and how many downloads the document has left.
async function requestGrant(objectId) {
  const response = await request(`${api}/o/${encodeURIComponent(objectId)}/grant`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
  if (response.status === 410) throw new UsedUp();
  if (!response.ok) throw new NetworkError();
  const answer = await response.json().catch(() => ({}));
  if (typeof answer.grant !== "string") throw new NetworkError();
  return answer;
}

// -- the access code ------------------------------------------------------------------

function showCodeStep(message = "") {
  setStatus("");
  $("message").hidden = true;
  $("reply").hidden = true;
  $("code-step").hidden = false;
  $("code-error").textContent = message;
  const input = $("code");
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.focus();
}

$("code-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("code");
  const button = $("code-submit");
  const code = input.value.trim();
  if (!code) return codeError(T.codeEmpty);
  button.disabled = true;
  setStatus(T.codeChecking);
  try {
    const response = await request(`${api}/code`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok && answer.ok) {
      $("code-step").hidden = true;
      input.value = "";
      state = await getState(); // now with what is left of each document
      await openMessage();
    } else if (response.status === 429) {
      codeError(T.throttled(Math.max(1, Math.ceil((answer.retry_after || 60) / 60))));
    } else if (answer.locked) {
      $("code-step").hidden = true;
      showProblem(T.codeLocked);
    } else if (response.status === 403) {
      codeError(T.codeWrong(answer.remaining));
    } else {
      throw new NetworkError();
    }
  } catch (error) {
    if (error instanceof NetworkError) codeError(T.network);
    else fail(error);
  } finally {
    button.disabled = false;
  }
});

function codeError(message) {
  setStatus("");
  const input = $("code");
  $("code-error").textContent = message;
  input.setAttribute("aria-invalid", "true");
  input.focus();
  input.select();
}

// -- the message ----------------------------------------------------------------------

async function openMessage() {
  setStatus(T.decrypting);
  const parts = await fetchManifest();
  try {
    manifest = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(concat(parts)));
  } catch {
    throw new VaultError("manifest");
  }
  if (!manifest || manifest.version !== 1 || !Array.isArray(manifest.files)) {
    throw new VaultError("manifest");
  }
  showMessage();
}

function showMessage() {
  $("subject").textContent = text(manifest.subject) || T.noSubject;
  $("sender").textContent = text(manifest.sender);
  // A message sent without a Date: header gets the time Pli received it, as the copy
  // Pli passes on would; with neither, no date line at all.
  const date = formatMessageDate(text(manifest.date)) || formatTime(state?.received);
  $("date").textContent = date;
  $("date").hidden = $("date-label").hidden = !date;
  $("body").textContent = lines(text(manifest.text)).trim() ||
    htmlToText(lines(text(manifest.html))) || T.noText;
  const list = $("documents");
  list.replaceChildren();
  manifest.files.forEach((file, index) => list.append(documentItem(file, index)));
  if (!manifest.files.length) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = T.noDocuments;
    list.append(empty);
  }
  showLimits();
  $("code-step").hidden = true;
  $("problem").hidden = true;
  $("message").hidden = false;
  if (state?.reply && replyOffered) {
    $("reply").hidden = false;
  } else if (state?.reply) {
    replyOffered = true;
    offerReply({
      url: `${api}/reply`, offer: state.reply, texts: T,
      subject: T.replySubject(text(manifest.subject) || T.noSubject),
      onUnavailable: () => showProblem(T.unavailable),
      onCodeRequired: () => showCodeStep(T.codeExpired),
    });
  }
  setStatus("");
  $("subject").focus(); // announces the subject; the message follows in reading order
}

// Each document may be downloaded a number of times of its own; the server says how
// many are left (state.documents), and each download it grants says it again.
function downloadsLeft(file) {
  const found = (state?.documents || []).find((d) => d.object === file.object);
  return found ? Math.max(0, Number(found.downloads_left) || 0) : 0;
}

function setDownloadsLeft(file, left, button, leftText) {
  const found = (state?.documents || []).find((d) => d.object === file.object);
  if (found) found.downloads_left = left;
  leftText.textContent = T.left(left);
  button.disabled = left <= 0;
}

function documentItem(file, index) {
  const item = document.createElement("li");
  const name = document.createElement("p");
  name.className = "name";
  name.id = `document-${index}`;
  name.textContent = text(file.name);
  const info = document.createElement("p");
  info.className = "info";
  info.textContent = `${typeLabel(file)} · ${formatSize(Number(file.size) || 0)}`;
  const left = document.createElement("p");
  left.className = "left";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "download";
  button.textContent = T.download;
  button.setAttribute("aria-label", T.downloadNamed(text(file.name)));
  const status = document.createElement("p");
  status.className = "progress";
  status.setAttribute("role", "status");
  setDownloadsLeft(file, downloadsLeft(file), button, left);
  button.addEventListener("click", () => download(file, button, status, left));
  item.append(name, info, left, button, status);
  return item;
}

async function download(file, button, status, leftText) {
  button.disabled = true;
  status.classList.remove("error");
  status.textContent = T.downloading(0);
  try {
    const grant = await requestGrant(file.object);
    setDownloadsLeft(file, Number(grant.downloads_left) || 0, button, leftText);
    button.disabled = true;
    const url = `${api}/o/${encodeURIComponent(file.object)}`;
    const progress = (received, total) => {
      status.textContent = T.downloading(Math.floor((100 * received) / total));
    };
    const name = text(file.name) || "document";
    const saving = await startSaving({ name, type: blobType(file), size: Number(file.size) });
    if (saving) {
      // Straight to the file, a record at a time, as it is decrypted.
      try {
        await fetchGranted(url, grant.grant, keys.content, file.object, progress,
          { onRecord: (record) => saving.write(record) });
        if (saving.written !== Number(file.size)) throw new VaultError("size");
      } catch (error) {
        saving.abort(); // the browser marks the download failed: no file under its name
        throw error;
      }
      saving.close();
    } else {
      const parts = await fetchGranted(url, grant.grant, keys.content, file.object, progress);
      const blob = new Blob(parts, { type: blobType(file) });
      if (blob.size !== Number(file.size)) throw new VaultError("size");
      save(blob, name);
    }
    status.textContent = T.downloaded;
  } catch (error) {
    status.classList.add("error");
    if (error instanceof VaultError) status.textContent = T.damagedFile;
    else if (error instanceof UsedUp) {
      setDownloadsLeft(file, 0, button, leftText);
      status.textContent = T.usedUp;
    } else if (error instanceof Unavailable ||
      (error instanceof GrantRefused && error.status === 404)) {
      return showProblem(T.unavailable); // the link stopped working meanwhile
    } else if (error instanceof DownloadInterrupted || error instanceof GrantRefused ||
      error instanceof DownloadCancelled) {
      status.textContent = T.interrupted;
    } else if (error instanceof CodeRequired) return showCodeStep(T.codeExpired);
    else if (error instanceof NetworkError) status.textContent = T.network;
    else status.textContent = T.unexpected;
  } finally {
    button.disabled = downloadsLeft(file) <= 0;
  }
}

function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function showLimits() {
  if (!state) return;
  const date = new Intl.DateTimeFormat(T.locale, { dateStyle: "long", timeStyle: "short" })
    .format(new Date(state.expires * 1000));
  $("limits").textContent = T.limits(date, state.download_limit);
}

// -- problems -------------------------------------------------------------------------

function showProblem(message) {
  setStatus("");
  for (const id of ["code-step", "message", "reply"]) $(id).hidden = true;
  $("problem-text").textContent = `${message} ${$("contact").textContent}`;
  $("problem").hidden = false;
  $("problem-heading").focus();
}

function fail(error) {
  if (error instanceof Unavailable) showProblem(T.unavailable);
  else if (error instanceof CodeRequired) showCodeStep(T.codeExpired);
  else if (error instanceof VaultError) showProblem(T.damagedMessage);
  else if (error instanceof NetworkError) showProblem(T.network);
  else showProblem(T.unexpected);
}

function setStatus(message) {
  const status = $("status");
  status.textContent = message;
  status.hidden = !message;
}

// -- formatting -----------------------------------------------------------------------

function text(value) {
  return typeof value === "string" ? value : "";
}

function lines(value) {
  return value.replace(/\r\n?/g, "\n");  // mail bodies end their lines with CRLF
}

function formatSize(bytes) {
  if (bytes < 1024) return T.bytes(bytes);
  const number = new Intl.NumberFormat(T.locale, { maximumFractionDigits: 1 });
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < T.units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${number.format(value)} ${T.units[unit]}`;
}

function typeLabel(file) {
  const type = text(file.true_type) || text(file.declared_type);
  if (type === "application/pdf") return T.types.pdf;
  if (type.startsWith("image/")) return `${T.types.image} ${type.slice(6).toUpperCase()}`;
  if (type.startsWith("text/")) return T.types.text;
  return T.types.other;
}

function blobType(file) {
  const declared = text(file.declared_type);
  const type = declared && declared !== "application/octet-stream" ? declared
    : text(file.true_type) || "application/octet-stream";
  return /^[a-z0-9.+-]+\/[a-z0-9.+-]+$/i.test(type) ? type : "application/octet-stream";
}

function formatMessageDate(value) {
  const date = new Date(value);
  if (!value.trim() || Number.isNaN(date.getTime())) return value.trim();
  return formatTime(date.getTime() / 1000);
}

function formatTime(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  return new Intl.DateTimeFormat(T.locale, { dateStyle: "full", timeStyle: "short" })
    .format(new Date(seconds * 1000));
}

// A message with only an HTML body is shown as its text: tags dropped, a few entities
// decoded. The result goes to textContent, so nothing in it can run or load.
const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

export function htmlToText(html) {
  return html
    .replace(/<(script|style|head|title)\b[\s\S]*?<\/\1\s*>/gi, "")
    .replace(/<br\s*\/?>/gi, "\n")
    .replace(/<\/(p|div|li|tr|h[1-6]|blockquote|table)\s*>/gi, "\n")
    .replace(/<li\b[^>]*>/gi, "• ")
    .replace(/<[^>]*>/g, "")
    .replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
      if (name[0] === "#") {
        const code = name[1] === "x" || name[1] === "X"
          ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
        return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
      }
      return ENTITIES[name.toLowerCase()] ?? whole;
    })
    .replace(/[ \t]+\n/g, "\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}

main().catch(fail);
