// Evaluated in a portal page by test_browser.py: opens the vault's test vector
// (tests/vault/vector-v1.json) with the portal's own vault.js, and tries it damaged.
async (v) => {
  const vault = await import("/static/vault.js");
  const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const sha = async (parts) => hex(await crypto.subtle.digest("SHA-256", vault.concat(parts)));
  const refused = async (key, id, data) => {
    try {
      await vault.openBytes(key, id, data);
      return "opened";
    } catch (error) {
      return error.name;
    }
  };

  const keys = await vault.deriveKeys(v.link_id, v.secret, { extractable: true });
  const out = {
    manifestKey: hex(await crypto.subtle.exportKey("raw", keys.manifest)),
    contentKey: hex(await crypto.subtle.exportKey("raw", keys.content)),
  };
  const manifest = await vault.openBytes(
    keys.manifest, "manifest", bytes(v.manifest.ciphertext_b64));
  out.manifestSha = await sha(manifest);
  out.manifest = JSON.parse(new TextDecoder().decode(vault.concat(manifest)));
  out.files = [];
  for (const f of v.files) {
    out.files.push(await sha(await vault.openBytes(keys.content, f.object_id,
                                                   bytes(f.ciphertext_b64))));
  }

  const [small, big] = v.files.map((f) => bytes(f.ciphertext_b64));
  const [smallId, bigId] = v.files.map((f) => f.object_id);
  const flipped = big.slice();
  flipped[100] ^= 1;
  const extended = new Uint8Array(big.length + 16);
  extended.set(big);
  out.refusals = {
    flipped: await refused(keys.content, bigId, flipped),
    cutAtRecord: await refused(keys.content, bigId, big.slice(0, 16 + 65552)),
    cutInRecord: await refused(keys.content, bigId, big.slice(0, big.length - 1)),
    extended: await refused(keys.content, bigId, extended),
    headerOnly: await refused(keys.content, smallId, small.slice(0, 16)),
    otherObject: await refused(keys.content, bigId, small),
    manifestKey: await refused(keys.manifest, smallId, small),
  };
  out.canonical = [
    vault.isSecret(v.secret),
    vault.isLinkId(v.link_id),
    vault.isLinkId(v.link_id.slice(0, 21) + "x"),
    vault.isLinkId(v.link_id + "="),
  ];
  return out;
}
