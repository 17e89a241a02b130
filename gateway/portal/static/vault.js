// Opening Pli's sealed objects in the browser: the vault format, version 1
// (docs/vault-format.md). WebCrypto only: HKDF-SHA256 and AES-256-GCM.
//
// An object is refused as a whole unless every record opens, the last one carries the
// "last" flag and nothing follows it; callers get the plaintext only once it all opened.

export const HEADER_SIZE = 16;
export const RECORD_SIZE = 65536;
export const TAG_SIZE = 16;
const STEP = RECORD_SIZE + TAG_SIZE;
const MAGIC = [0x50, 0x4c, 0x49, 0x31]; // "PLI1"
const VERSION = 1;
const MAX_RECORDS = 2 ** 32;
const LINK_ID_SIZE = 16;
const SECRET_SIZE = 32;

export class VaultError extends Error {
  constructor(reason) {
    super(reason);
    this.name = "VaultError";
    this.reason = reason;
  }
}

const ALPHABET = /^[A-Za-z0-9_-]*$/;
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

export function b64urlEncode(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let j = 0; j < chars; j++) out += B64URL[(n >> (18 - 6 * j)) & 63];
  }
  return out;
}

// The canonical spelling only: the URL-safe alphabet, no padding, unused bits zero.
export function b64urlDecode(text, size) {
  if (typeof text !== "string" || !ALPHABET.test(text) || text.length % 4 === 1) {
    throw new VaultError("encoding");
  }
  let binary;
  try {
    binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    throw new VaultError("encoding");
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if ((size !== undefined && bytes.length !== size) || b64urlEncode(bytes) !== text) {
    throw new VaultError("encoding");
  }
  return bytes;
}

export function isLinkId(text) {
  try { b64urlDecode(text, LINK_ID_SIZE); return true; } catch { return false; }
}

export function isSecret(text) {
  try { b64urlDecode(text, SECRET_SIZE); return true; } catch { return false; }
}

// The two keys of a link: one opens the manifest only, the other every file.
// usages: ["encrypt"] to seal a new link (a reply) in the browser.
export async function deriveKeys(linkId, secret, { extractable = false,
  usages = ["decrypt"] } = {}) {
  const salt = b64urlDecode(linkId, LINK_ID_SIZE);
  const ikm = await crypto.subtle.importKey(
    "raw", b64urlDecode(secret, SECRET_SIZE), "HKDF", false, ["deriveKey"]);
  const derive = (info) => crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt, info: new TextEncoder().encode(info) },
    ikm, { name: "AES-GCM", length: 256 }, extractable, usages);
  return { manifest: await derive("pli v1 manifest"), content: await derive("pli v1 content") };
}

// -- sealing a new link in the browser (a secure reply) ---------------------------------

export const NONCE_BASE_SIZE = 7;
const MANIFEST_PADDING = 512;

const randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));

// A new link or object id: 16 random bytes, drawn again when its spelling would begin
// with "-" (so that it can be typed as a command-line argument), as Pli's sealer does.
export function newId() {
  for (;;) {
    const id = b64urlEncode(randomBytes(LINK_ID_SIZE));
    if (id[0] !== "-") return id;
  }
}

export function newSecret() {
  return b64urlEncode(randomBytes(SECRET_SIZE));
}

// Nonce bases for an object each: never two alike within a link.
export function newNonceBases(count) {
  const seen = new Set();
  const bases = [];
  while (bases.length < count) {
    const base = randomBytes(NONCE_BASE_SIZE);
    const key = b64urlEncode(base);
    if (!seen.has(key)) {
      seen.add(key);
      bases.push(base);
    }
  }
  return bases;
}

function recordIv(header, index, last) {
  const iv = new Uint8Array(12);
  iv.set(header.subarray(9, 16));
  new DataView(iv.buffer).setUint32(7, index);
  iv[11] = last ? 1 : 0;
  return iv;
}

export function objectHeader(nonceBase) {
  if (nonceBase.length !== NONCE_BASE_SIZE) throw new VaultError("nonce base");
  const header = new Uint8Array(HEADER_SIZE);
  header.set(MAGIC);
  header[4] = VERSION;
  new DataView(header.buffer).setUint32(5, RECORD_SIZE);
  header.set(nonceBase, 9);
  return header;
}

// Seal plaintext (a Blob or File, read 64 KiB at a time, or bytes) as one object: the
// header, then each record, as Uint8Arrays (docs/vault-format.md).
export async function sealObject(key, objectId, source, nonceBase) {
  const header = objectHeader(nonceBase);
  const id = new TextEncoder().encode(objectId);
  const aad = new Uint8Array(HEADER_SIZE + id.length);
  aad.set(header);
  aad.set(id, HEADER_SIZE);
  const size = source instanceof Blob ? source.size : source.byteLength;
  const count = Math.max(1, Math.ceil(size / RECORD_SIZE));
  const parts = [header];
  for (let i = 0; i < count; i++) {
    const start = i * RECORD_SIZE;
    const end = Math.min(size, start + RECORD_SIZE);
    const piece = source instanceof Blob ? await source.slice(start, end).arrayBuffer()
      : source.subarray(start, end);
    parts.push(new Uint8Array(await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: recordIv(header, i, i === count - 1), additionalData: aad,
        tagLength: 128 }, key, piece)));
  }
  return parts;
}

// The manifest's plaintext, byte for byte what Pli's sealer writes: compact UTF-8 JSON,
// its keys in this order, padded with spaces to a multiple of 512 bytes.
export function encodeManifest(manifest) {
  const document = {
    version: VERSION,
    sender: manifest.sender,
    subject: manifest.subject,
    date: manifest.date,
    text: manifest.text ?? null,
    html: manifest.html ?? null,
    files: manifest.files.map((f) => ({ name: f.name, declared_type: f.declared_type,
      true_type: f.true_type, size: f.size, object: f.object })),
  };
  const data = new TextEncoder().encode(JSON.stringify(document));
  const padded = new Uint8Array(Math.ceil(data.length / MANIFEST_PADDING) * MANIFEST_PADDING ||
    MANIFEST_PADDING);
  padded.fill(0x20);
  padded.set(data);
  return padded;
}

// Bytes arriving in chunks of any size, taken out in pieces of a chosen size.
class ByteQueue {
  constructor() { this.chunks = []; this.length = 0; }
  push(chunk) { if (chunk.length) { this.chunks.push(chunk); this.length += chunk.length; } }
  take(size) {
    const out = new Uint8Array(size);
    let filled = 0;
    while (filled < size) {
      const head = this.chunks[0];
      const n = Math.min(head.length, size - filled);
      out.set(head.subarray(0, n), filled);
      filled += n;
      if (n === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
    }
    this.length -= size;
    return out;
  }
}

// Feed it the sealed bytes with push(), in any chunks; finish() returns the plaintext
// records (ArrayBuffers) once the whole object opened, or throws VaultError.
// With onRecord, each record is handed to it as soon as it is authenticated (awaited,
// so a slow consumer holds the opener back) and none is kept: the caller must then
// treat what it got as incomplete until finish() returns.
export class ObjectOpener {
  constructor(key, objectId, { onRecord = null } = {}) {
    this.onRecord = onRecord;
    this.key = key;
    this.objectId = new TextEncoder().encode(objectId);
    this.queue = new ByteQueue();
    this.header = null;
    this.aad = null;
    this.index = 0;
    this.parts = [];
    this.size = 0;
  }

  async push(chunk) {
    this.queue.push(chunk);
    if (this.header === null && this.queue.length >= HEADER_SIZE) {
      this.readHeader(this.queue.take(HEADER_SIZE));
    }
    // A record is opened as "not last" only once more bytes are known to follow it.
    while (this.header !== null && this.queue.length > STEP) {
      await this.open(this.queue.take(STEP), false);
    }
  }

  async finish() {
    if (this.header === null) throw new VaultError("truncated");
    const rest = this.queue.take(this.queue.length);
    if (rest.length < TAG_SIZE) throw new VaultError("truncated");
    if (rest.length === TAG_SIZE && this.index > 0) throw new VaultError("empty last record");
    await this.open(rest, true);
    return this.parts;
  }

  readHeader(header) {
    const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
    if (!MAGIC.every((b, i) => header[i] === b)) throw new VaultError("not a sealed object");
    if (header[4] !== VERSION) throw new VaultError("unknown version");
    if (view.getUint32(5) !== RECORD_SIZE) throw new VaultError("unknown record size");
    this.header = header;
    this.aad = new Uint8Array(HEADER_SIZE + this.objectId.length);
    this.aad.set(header);
    this.aad.set(this.objectId, HEADER_SIZE);
  }

  async open(record, last) {
    if (this.index >= MAX_RECORDS) throw new VaultError("too many records");
    const iv = new Uint8Array(12);
    iv.set(this.header.subarray(9, 16));
    new DataView(iv.buffer).setUint32(7, this.index);
    iv[11] = last ? 1 : 0;
    let plain;
    try {
      plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv, additionalData: this.aad, tagLength: 128 }, this.key, record);
    } catch {
      throw new VaultError("damaged");
    }
    this.size += plain.byteLength;
    this.index += 1;
    if (this.onRecord) await this.onRecord(plain);
    else this.parts.push(plain);
  }
}

// A whole object held in memory (the manifest, the test vector).
export async function openBytes(key, objectId, sealed) {
  const opener = new ObjectOpener(key, objectId);
  await opener.push(sealed);
  return opener.finish();
}

// An object as it arrives from fetch(): decrypted record by record while it streams.
// onProgress(bytesReceived) is called as chunks come in.
export async function openStream(key, objectId, stream, onProgress = () => {}) {
  const opener = new ObjectOpener(key, objectId);
  const reader = stream.getReader();
  let received = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.length;
      onProgress(received);
      await opener.push(value);
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  }
  return opener.finish();
}

export function concat(parts) {
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(new Uint8Array(part), offset);
    offset += part.byteLength;
  }
  return out;
}
