// The sender's page for one link: reads the sender's secret from the address (it is in
// the sender's receipt only), shows what became of the link, and revokes it (after a
// confirmation) or extends it. The secret goes to the server in each request's body,
// never in an address. Everything shown is put on the page as text.

import { isLinkId, isSecret } from "./vault.js";
import { texts } from "./texts.js";

const T = document.documentElement.lang === "en" ? texts.en : texts.fr;
const M = T.manage;
const $ = (id) => document.getElementById(id);

const linkId = location.pathname.split("/").pop() || "";
const key = location.hash.slice(1);
if (location.hash) history.replaceState(null, "", location.pathname + location.search);
const api = `/api/m/${encodeURIComponent(linkId)}`;

class Unavailable extends Error {}
class Throttled extends Error {}

async function call(path, extra = {}) {
  let response;
  try {
    response = await fetch(api + path, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key, ...extra }),
    });
  } catch {
    throw new TypeError("network");
  }
  if (response.status === 404) throw new Unavailable();
  if (response.status === 429) throw new Throttled();
  const answer = await response.json().catch(() => ({}));
  if (!response.ok && !answer.status) throw new TypeError("network");
  return answer;
}

function formatTime(seconds) {
  return new Intl.DateTimeFormat(T.locale, { dateStyle: "long", timeStyle: "short" })
    .format(new Date(seconds * 1000));
}

function show(state) {
  $("recipients").textContent = (state.recipients || []).join(", ");
  $("created").textContent = formatTime(state.created);
  $("state").textContent = M.status[state.status] || state.status;
  $("opened").textContent = state.opened ? formatTime(state.opened) : M.notOpened;
  $("expires").textContent = formatTime(state.expires);
  $("downloads").textContent = M.downloads(state.documents || [], state.download_limit);
  $("notices").textContent = M.notices(state.notify || []);
  const days = Math.max(0, Math.floor((state.max_expires - Math.max(state.expires,
    Date.now() / 1000)) / 86400));
  const downloads = Math.max(0, state.max_download_limit - state.download_limit);
  const live = !state.revoked;
  $("days").max = String(days);
  $("more-downloads").max = String(downloads);
  $("extend-help").textContent = days || downloads ? M.extendHelp(days, downloads)
    : M.nothingToExtend;
  $("extend-submit").disabled = !(days || downloads);
  $("extend-step").hidden = !live;
  $("revoke-step").hidden = !live;
  $("confirm").hidden = true;
  $("revoke").hidden = false;
  $("link").hidden = false;
  setStatus("");
}

function setStatus(message, done = false) {
  const status = $("status");
  status.textContent = message;
  status.hidden = !message;
  status.classList.toggle("done", done);
}

function fail(error) {
  for (const id of ["link", "extend-step", "revoke-step"]) $(id).hidden = true;
  setStatus("");
  $("problem-text").textContent = error instanceof Unavailable ? M.unavailable
    : error instanceof Throttled ? M.throttled
    : error instanceof TypeError ? M.network : M.unexpected;
  $("problem").hidden = false;
  $("problem-heading").focus();
}

$("revoke").addEventListener("click", () => {
  $("revoke").hidden = true;
  $("confirm").hidden = false;
  $("cancel-revoke").focus();
});

$("cancel-revoke").addEventListener("click", () => {
  $("confirm").hidden = true;
  $("revoke").hidden = false;
  $("revoke").focus();
});

$("confirm-revoke").addEventListener("click", async () => {
  $("confirm-revoke").disabled = true;
  try {
    show(await call("/revoke"));
    setStatus(M.revoked, true);
    $("heading").focus();
  } catch (error) {
    fail(error);
  } finally {
    $("confirm-revoke").disabled = false;
  }
});

$("extend-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const days = Number($("days").value || 0);
  const downloads = Number($("more-downloads").value || 0);
  if (![days, downloads].every((n) => Number.isInteger(n) && n >= 0)) {
    $("extend-error").textContent = M.badNumber;
    return;
  }
  $("extend-error").textContent = "";
  $("extend-submit").disabled = true;
  try {
    show(await call("/extend", { days, downloads }));
    $("days").value = "0";
    $("more-downloads").value = "0";
    setStatus(M.extended, true);
  } catch (error) {
    fail(error);
  }
});

async function main() {
  if (!isLinkId(linkId) || !isSecret(key)) {
    setStatus("");
    $("problem-text").textContent = M.incomplete;
    $("problem").hidden = false;
    return;
  }
  show(await call(""));
}

main().catch(fail);
