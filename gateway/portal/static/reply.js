// A secure reply from the link's page: a text and a few documents, sealed here, in the
// browser, under a new link of their own (a new random secret, vault format v1), and
// sent to the server as ciphertext. Where it goes is not for this page to say: the
// server sends it back along the thread (to the practice, for a patient's reply), and
// this page only shows to whom.

import { deriveKeys, encodeManifest, newId, newNonceBases, newSecret, sealObject } from
  "./vault.js";

const $ = (id) => document.getElementById(id);

export class ReplyRefused extends Error {
  constructor(status, reason) {
    super(reason || `reply refused (${status})`);
    this.status = status;
    this.reason = reason;
  }
}

// Seal the reply (text, files) for `offer` (the state's "reply") and post it to `url`.
export async function sendReply(url, offer, { subject, text, files }) {
  const linkId = newId();
  const secret = newSecret();
  const keys = await deriveKeys(linkId, secret, { usages: ["encrypt"] });
  const objects = [];
  while (objects.length < files.length) {
    const id = newId();
    if (id !== linkId && !objects.includes(id)) objects.push(id);
  }
  const bases = newNonceBases(files.length + 1);
  const sealed = [];
  for (const [index, file] of files.entries()) {
    sealed.push(new Blob(await sealObject(keys.content, objects[index], file, bases[index + 1])));
  }
  const manifest = encodeManifest({
    sender: offer.from.join(", "),
    subject,
    date: new Date().toUTCString(),
    text,
    html: null,
    files: files.map((file, index) => ({
      name: file.name || "document", declared_type: file.type || "application/octet-stream",
      true_type: "", size: file.size, object: objects[index] })),
  });
  const form = new FormData();
  form.append("reply", JSON.stringify({ link: linkId, secret, objects }));
  form.append("manifest", new Blob(await sealObject(keys.manifest, "manifest", manifest,
    bases[0])), "manifest");
  sealed.forEach((blob, index) => form.append(objects[index], blob, objects[index]));
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form, credentials: "same-origin",
      cache: "no-store" });
  } catch {
    throw new ReplyRefused(0, "network");
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || !answer.ok) throw new ReplyRefused(response.status, answer.error);
  return answer;
}

// The reply's part of the page: shown when the link offers one.
export function offerReply({ url, offer, texts, subject, onUnavailable, onCodeRequired }) {
  const T = texts;
  $("reply-to").textContent = T.replyTo(offer.to.join(", "));
  $("reply-limits").textContent = T.replyLimits(offer.max_files, offer.max_bytes);
  $("reply-text").maxLength = offer.max_text;
  $("reply").hidden = false;
  $("reply-open").addEventListener("click", () => {
    $("reply-open").hidden = true;
    $("reply-form").hidden = false;
    $("reply-text").focus();
  });
  $("reply-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("reply-text").value;
    const files = [...$("reply-files").files];
    const size = files.reduce((n, f) => n + f.size, 0);
    const error = !text.trim() && !files.length ? T.replyEmpty
      : files.length > offer.max_files ? T.replyTooMany(offer.max_files)
      : size > offer.max_bytes ? T.replyTooBig(offer.max_bytes)
      : text.length > offer.max_text ? T.replyTooLong(offer.max_text) : "";
    $("reply-error").textContent = error;
    if (error) return;
    const button = $("reply-send");
    button.disabled = true;
    $("reply-status").textContent = T.replySending;
    try {
      const answer = await sendReply(url, offer, { subject, text, files });
      $("reply-form").hidden = true;
      $("reply-status").textContent = T.replySent(answer.to.join(", "));
      $("reply-status").classList.add("done");
    } catch (refused) {
      $("reply-status").textContent = "";
      if (refused.status === 404) return onUnavailable();
      if (refused.status === 401) return onCodeRequired();
      $("reply-error").textContent = refused.status === 429 ? T.replyThrottled
        : refused.status === 413 ? T.replyTooBig(offer.max_bytes)
        : refused.status === 0 ? T.network : T.replyFailed;
    } finally {
      button.disabled = false;
    }
  });
}
