// Evaluated in a portal page by test_after_sending.py: seals the reply vector's inputs
// (tests/vault/vector-reply-v1.json) with the portal's own vault.js, as the page seals a
// secure reply, and compares every byte with what the Python sealer wrote.
async (v) => {
  const vault = await import("/static/vault.js");
  const b64 = (bytes) => {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 8192) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
    }
    return btoa(binary);
  };
  const fromB64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const fromHex = (hex) => Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));
  const pattern = (size) => Uint8Array.from({ length: size }, (_, i) => i % 251);

  const keys = await vault.deriveKeys(v.link_id, v.secret, { usages: ["encrypt", "decrypt"] });
  const plain = vault.encodeManifest({
    ...v.manifest,
    files: v.files.map((f) => ({ name: f.name, declared_type: f.declared_type,
      true_type: f.true_type, size: f.size, object: f.object_id })),
  });
  const out = { manifestPlaintext: b64(plain) === v.manifest.plaintext_b64 };
  const manifest = vault.concat(await vault.sealObject(
    keys.manifest, "manifest", plain, fromHex(v.manifest.nonce_base_hex)));
  out.manifest = b64(manifest) === v.manifest.ciphertext_b64;
  out.files = [];
  for (const f of v.files) {
    const data = f.plaintext_b64 ? fromB64(f.plaintext_b64) : pattern(f.size);
    // As the page does: from a File, read a record at a time.
    const file = new File([data], f.name, { type: f.declared_type });
    const sealed = vault.concat(await vault.sealObject(
      keys.content, f.object_id, file, fromHex(f.nonce_base_hex)));
    out.files.push(b64(sealed) === f.ciphertext_b64);
  }
  const opened = JSON.parse(new TextDecoder().decode(vault.concat(
    await vault.openBytes(keys.manifest, "manifest", manifest))));
  out.opened = [opened.sender, opened.subject, opened.text, opened.files.length];
  const ids = Array.from({ length: 300 }, () => vault.newId());
  out.ids = ids.every((id) => vault.isLinkId(id) && id[0] !== "-");
  const bases = vault.newNonceBases(6);
  out.bases = bases.every((b) => b.length === 7) &&
    new Set(bases.map((b) => b64(b))).size === 6;
  out.secret = vault.isSecret(vault.newSecret());
  return out;
}
