// The console's one script (an ES module, no build step, no dependencies).
// It talks only to its own origin: /ui/session, /ui/stats, and /ui/api/...,
// which the broker forwards to its REST API with the signed-in key.

const $ = (id) => document.getElementById(id);

// h makes an element: h("div", {class: "x", text: "y"}, child, ...).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children) el.append(c);
  return el;
}

// pick returns the first present field of o among names (the API's JSON
// uses lowerCamelCase; some answers snake_case).
function pick(o, ...names) {
  if (!o) return undefined;
  for (const n of names) if (o[n] !== undefined && o[n] !== null) return o[n];
  return undefined;
}

const nf = new Intl.NumberFormat();
const fmtN = (n) => nf.format(Math.round(Number(n) || 0));

function relTime(ms) {
  const a = Math.abs(ms), sign = ms < 0 ? -1 : 1;
  const sec = Math.round(a / 1000);
  let text;
  if (sec < 60) text = `${sec} s`;
  else if (sec < 3600) text = `${Math.floor(sec / 60)} min ${String(sec % 60).padStart(2, "0")} s`;
  else if (sec < 86400) text = `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
  else text = `${Math.floor(sec / 86400)} d ${Math.floor((sec % 86400) / 3600)} h`;
  return sign < 0 ? `${text} ago` : `in ${text}`;
}

function fmtDate(d) {
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC", timeZoneName: "short" });
}

function tsOf(v) {
  if (!v) return null;
  const t = Date.parse(v);
  return Number.isNaN(t) || t <= 0 ? null : t;
}

// ---- session -------------------------------------------------------------

let session = null;

async function api(method, path, body) {
  const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = session ? session.csrf : "";
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (resp.status === 401 && path !== "/ui/session") {
    showSignIn("Your session ended; sign in again.");
  }
  return { status: resp.status, ok: resp.ok, data };
}

function errText(r) {
  return (r.data && (r.data.message || r.data.error)) || `HTTP ${r.status}`;
}

function showSignIn(msg) {
  session = null;
  stopWatch();
  $("nav").hidden = true;
  $("who").hidden = true;
  for (const p of document.querySelectorAll(".page")) p.hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = msg || "";
  $("signin-key").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const input = $("signin-key");
  const r = await api("POST", "/ui/session", { key: input.value });
  input.value = "";
  if (!r.ok) {
    $("signin-error").textContent = errText(r);
    return;
  }
  started(r.data);
}

function started(info) {
  session = info;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("role").textContent = info.admin ? "admin" : "read-only";
  route();
  startWatch();
}

async function signOut() {
  await api("DELETE", "/ui/session");
  showSignIn("Signed out.");
}

// ---- routing -------------------------------------------------------------

const pages = { overview: showOverview, keys: showKeys, usage: showUsage };

function route() {
  if (!session) return;
  const name = (location.hash.replace(/^#\/?/, "") || "overview").split("?")[0];
  const page = pages[name] ? name : "overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== `page-${page}`;
  pages[page]();
}

// ---- overview: live accounts ---------------------------------------------

let accounts = [];
let watchAbort = null;
let stats = null;

const STATUS = {
  TOKEN_STATUS_VALID: ["VALID", "ok", "\u2713", "The token is valid and is refreshed before it expires."],
  TOKEN_STATUS_PENDING: ["PENDING", "warn", "\u2026", "Waiting for the first token exchange with GitHub."],
  TOKEN_STATUS_STALE: ["STALE", "warn", "\u26a0", "GitHub's token exchange is failing; the still-valid token is served. See the error below and the broker's logs."],
  TOKEN_STATUS_EXPIRED: ["EXPIRED", "bad", "\u2716", "No valid token: exchanges keep failing and this account's requests fail until one succeeds."],
  TOKEN_STATUS_REJECTED: ["REJECTED", "bad", "\u2716", "GitHub refused the credential (revoked, expired or no Copilot seat): replace the account's GitHub token."],
};

function setLive(state, text) {
  const el = $("live");
  el.className = `live ${state}`;
  $("live-text").textContent = text;
}

function stopWatch() {
  if (watchAbort) watchAbort.abort();
  watchAbort = null;
}

// startWatch follows GET /v1/accounts:watch (NDJSON, one line per change)
// and reconnects with a backoff when the stream ends.
async function startWatch() {
  stopWatch();
  const ctl = new AbortController();
  watchAbort = ctl;
  let backoff = 500;
  while (!ctl.signal.aborted) {
    try {
      const resp = await fetch("/ui/api/v1/accounts:watch", { credentials: "same-origin", signal: ctl.signal, headers: { Accept: "application/json" } });
      if (resp.status === 401) { showSignIn("Your session ended; sign in again."); return; }
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      setLive("on", "live");
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const msg = JSON.parse(line);
          if (msg.result) {
            accounts = (msg.result.accounts || []).slice().sort((a, b) => (a.name || "").localeCompare(b.name || ""));
            backoff = 500;
            renderAccounts();
          } else if (msg.error) {
            throw new Error(msg.error.message || "watch failed");
          }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      setLive("off", "reconnecting");
    }
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function showOverview() {
  renderAccounts();
  loadStats();
}

async function loadStats() {
  const r = await api("GET", "/ui/stats");
  if (r.ok) {
    stats = r.data;
    renderStats();
  }
}

function meter(fraction, cls) {
  const bar = h("span");
  bar.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return h("div", { class: `meter ${cls || ""}`, role: "presentation" }, bar);
}

function levelOf(fraction) {
  return fraction < 0.1 ? "bad" : fraction < 0.25 ? "warn" : "";
}

const KIND_NAMES = { premium_interactions: "premium", chat: "chat", completions: "completions" };

function quotaRows(q) {
  const snaps = (q && q.snapshots) || [];
  if (!snaps.length) {
    return [h("p", { class: "muted", text: q && q.lastError ? `Quota unknown: ${q.lastError}` : "No quota reading yet." })];
  }
  const reset = tsOf(pick(q, "resetAt", "reset_at"));
  const order = (k) => (k === "premium_interactions" ? 0 : 1);
  return snaps.slice().sort((a, b) => order(a.kind) - order(b.kind) || a.kind.localeCompare(b.kind)).map((sn) => {
    const kind = KIND_NAMES[sn.kind] || sn.kind;
    const unlimited = !!sn.unlimited;
    const ent = Number(sn.entitlement) || 0;
    const rem = Number(sn.remaining) || 0;
    const pct = Number(pick(sn, "percentRemaining", "percent_remaining")) || 0;
    const frac = unlimited ? 1 : pct / 100;
    const label = unlimited ? "unlimited" : ent > 0 ? `${fmtN(rem)} / ${fmtN(ent)}` : `${Math.round(pct)} %`;
    const row = h("div", { class: "row" },
      h("span", { class: "kind", text: kind }),
      unlimited ? h("div", { class: "meter unlimited", role: "presentation" }) : meter(frac, levelOf(frac)),
      h("span", { class: "num", text: label }));
    row.setAttribute("aria-label", `${kind} quota: ${unlimited ? "unlimited" : `${label} left, ${Math.round(pct)} percent`}`);
    const parts = [row];
    if (!unlimited && reset) parts.push(h("div", { class: "row" }, h("span"), h("span", { class: "reset", "data-reset": String(reset) })));
    if (sn.exhausted) parts.push(h("p", { class: "error", text: `${kind} quota spent: requests get 402 until the reset.` }));
    return parts;
  }).flat();
}

function renderAccounts() {
  const box = $("accounts");
  if (!box || $("page-overview").hidden) return;
  const cards = accounts.map((a) => {
    const [word, cls, icon, meaning] = STATUS[a.status] || ["UNKNOWN", "warn", "?", "The broker reports no status."];
    const name = a.name || "default";
    const q = a.quota || {};
    const plan = q.plan || a.sku || "";
    const lastErr = a.lastError || pick(a, "last_error");
    return h("article", { class: "account", "data-account": name, "aria-label": `Account ${name}` },
      h("header", {},
        h("span", { class: "name", text: name }),
        h("span", { class: `status ${cls}` }, h("span", { "aria-hidden": "true", text: icon }), word),
        h("span", { class: "plan", text: plan })),
      h("p", { class: "meaning", text: lastErr && a.status !== "TOKEN_STATUS_VALID" ? `${meaning} Last error: ${lastErr}` : meaning }),
      h("div", { class: "token", "data-expires": String(tsOf(pick(a, "expiresAt", "expires_at")) || "") }),
      h("div", { class: "quota" }, quotaRows(q)));
  });
  box.replaceChildren(...(cards.length ? cards : [h("p", { class: "empty", text: "The broker serves no account yet." })]));
  const invalid = accounts.filter((a) => a.status !== "TOKEN_STATUS_VALID").length;
  $("ov-summary").replaceChildren(
    h("span", { text: `${accounts.length} account${accounts.length === 1 ? "" : "s"}` }),
    h("span", { text: invalid ? `${invalid} not valid` : "all valid" }),
    h("span", { id: "ov-watchers", text: watchersText() }));
  tick();
}

function watchersText() {
  if (!stats) return "";
  const n = Object.values(stats.watchers || {}).reduce((x, y) => x + y, 0);
  return `${n} token watcher${n === 1 ? "" : "s"}`;
}

function renderStats() {
  if (!stats) return;
  const w = $("ov-watchers");
  if (w) w.textContent = watchersText();
  const errs = Object.entries(stats.refresh_errors || {});
  const since = tsOf(stats.since);
  $("ov-errors").replaceChildren(
    h("p", { class: "muted", text: `Failed token exchanges with GitHub since ${since ? fmtDate(new Date(since)) : "start"} (at most the last hour).` }),
    errs.length ? h("div", { class: "kv" }, errs.map(([k, v]) => [h("span", { text: k }), h("span", { text: fmtN(v) })])) : h("p", { text: "None." }));
  const ws = Object.entries(stats.watchers || {}).sort();
  $("ov-proxies").replaceChildren(
    h("p", { class: "muted", text: "Open token streams by account: each proxy holds one per account it serves." }),
    ws.length ? h("div", { class: "kv" }, ws.map(([k, v]) => [h("span", { text: k || "default" }), h("span", { text: `${fmtN(v)} watching` })])) : h("p", { text: "No proxy connected." }),
    h("p", { class: "muted", text: `${fmtN(stats.key_watchers || 0)} proxy(ies) following the broker's keys; ${fmtN(stats.account_watchers || 0)} account watch stream(s) (consoles, dashboards).` }));
}

// tick updates the relative times in place once a second.
function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-expires]")) {
    const t = Number(el.dataset.expires);
    el.textContent = t ? (t > now ? `token expires ${relTime(t - now)}` : `token expired ${relTime(t - now)}`) : "no token";
  }
  for (const el of document.querySelectorAll("[data-reset]")) {
    const t = Number(el.dataset.reset);
    el.textContent = `resets ${fmtDate(new Date(t))} (${relTime(t - now)})`;
  }
  for (const el of document.querySelectorAll("[data-ago]")) {
    const t = Number(el.dataset.ago);
    el.textContent = t ? relTime(t - now) : "never";
  }
}

// ---- keys ----------------------------------------------------------------

let keyList = [];

function keyField(k, ...names) { return pick(k, ...names); }

function listOf(v) {
  if (!v) return [];
  if (Array.isArray(v)) return v.map(String);
  return String(v).split(",").map((x) => x.trim()).filter(Boolean);
}

function keyState(k) {
  const st = keyField(k, "state");
  if (st) return String(st).replace(/^KEY_STATE_/, "").toLowerCase();
  if (keyField(k, "revoked", "revokedAt", "revoked_at")) return "revoked";
  if (keyField(k, "disabled")) return "disabled";
  const exp = tsOf(keyField(k, "expiresAt", "expires_at"));
  if (exp && exp < Date.now()) return "expired";
  return "active";
}

async function showKeys() {
  const note = $("keys-note");
  $("key-new").hidden = !session.admin;
  if (!session.keys_api) {
    note.hidden = false;
    note.textContent = "This broker does not manage keys (no /v1/keys): update the broker to manage keys here.";
    $("keys-table").tBodies[0].replaceChildren();
    return;
  }
  if (!session.admin) {
    note.hidden = false;
    note.textContent = "Managing keys needs an admin broker key; this session is read-only.";
    $("keys-table").tBodies[0].replaceChildren();
    return;
  }
  note.hidden = true;
  const [r, b] = await Promise.all([api("GET", "/ui/api/v1/keys"), api("GET", "/ui/api/v1/budgets")]);
  if (!r.ok) {
    note.hidden = false;
    note.textContent = `Could not list keys: ${errText(r)}`;
    return;
  }
  keyList = (r.data && (r.data.keys || r.data)) || [];
  if (!Array.isArray(keyList)) keyList = [];
  // A broker without budgets (501, 404) lists none; any other failure is
  // said, and the keys are still shown.
  budgetList = b.ok && b.data && Array.isArray(b.data.budgets) ? b.data.budgets : [];
  budgetError = b.ok || b.status === 404 || b.status === 501 ? "" : `Could not list budgets: ${errText(b)}`;
  renderKeys();
}

// ---- budgets (GET /v1/budgets: ListBudgets) --------------------------------

let budgetList = [];
let budgetError = "";

// BUDGET_WARN is the part of a budget spent from which it is in warning
// (the broker's BUDGET_STATUS_WARNING, the proxies' X-Budget-Warning).
const BUDGET_WARN = 0.8;
// BUDGET_REFRESH_MS is how often the open keys page reads the budgets again.
const BUDGET_REFRESH_MS = 5000;
const unitsFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

// budgetBar is one monthly budget: a bar of what is left, "spent / limit
// unit", and data-spent/data-limit for tests and scripts.
function budgetBar(what, unit, spent, limit, fmt) {
  const frac = limit > 0 ? spent / limit : 0;
  const cls = frac >= 1 ? "bad" : frac >= BUDGET_WARN ? "warn" : "";
  const text = `${fmt(spent)} / ${fmt(limit)} ${unit}`;
  return h("div", { class: "budget", role: "group", "data-budget": what, "data-spent": String(spent), "data-limit": String(limit),
    "aria-label": `${what} budget: ${text} spent this month, ${Math.round(Math.min(frac, 1) * 100)} percent` },
  meter(1 - frac, cls), h("span", { class: "num", text }));
}

// budgetCell shows a budget's premium and token bars and its reset; keys
// without a monthly limit say so (an rpm limit alone shows in its column).
function budgetCell(b) {
  const premium = Number(pick(b, "monthlyPremium", "monthly_premium")) || 0;
  const tokens = Number(pick(b, "monthlyTokens", "monthly_tokens")) || 0;
  if (!premium && !tokens) return h("span", { class: "muted", text: "no budget" });
  const bars = [];
  if (premium) bars.push(budgetBar("premium", "premium units", Number(pick(b, "premiumSpent", "premium_spent")) || 0, premium, (n) => unitsFmt.format(n)));
  if (tokens) bars.push(budgetBar("tokens", "tokens", Number(pick(b, "tokensSpent", "tokens_spent")) || 0, tokens, fmtN));
  const reset = tsOf(pick(b, "resetsAt", "resets_at"));
  if (reset) bars.push(h("div", { class: "reset", "data-reset": String(reset) }));
  return bars;
}

// refreshBudgets updates the budget cells in place (the rest of the table,
// and the focus on its buttons, stay): the keys page follows spending while
// it is open.
async function refreshBudgets() {
  const b = await api("GET", "/ui/api/v1/budgets");
  if (!b.ok || !b.data || !Array.isArray(b.data.budgets) || $("page-keys").hidden) return;
  budgetList = b.data.budgets;
  for (const row of document.querySelectorAll("#keys-table tbody tr[data-key]")) {
    const bg = budgetList.find((x) => x.key === row.dataset.key) || {};
    row.querySelector("td.budgets").replaceChildren(...[budgetCell(bg)].flat());
    const rpm = Number(bg.rpm) || 0;
    const cell = row.querySelector("td[data-rpm]");
    cell.dataset.rpm = String(rpm);
    cell.textContent = rpm ? fmtN(rpm) : "\u2013";
  }
  renderAccountBudgets();
  tick();
}

// renderAccountBudgets lists the accounts' premium budgets under the keys.
function renderAccountBudgets() {
  const acc = budgetList.filter((b) => !b.key && b.account);
  $("account-budgets").hidden = !acc.length;
  $("account-budgets-table").tBodies[0].replaceChildren(...acc.map((b) => {
    const st = String(b.status || "").replace(/^BUDGET_STATUS_/, "").toLowerCase() || "ok";
    return h("tr", { "data-account-budget": b.account },
      h("th", { scope: "row", text: b.account }),
      h("td", { class: "budgets" }, budgetCell(b)),
      h("td", {}, h("span", { class: `status ${st === "exceeded" ? "bad" : st === "warning" ? "warn" : "ok"}`, text: st })));
  }));
  const note = $("budgets-note");
  note.hidden = !budgetError;
  note.textContent = budgetError;
}

function renderKeys() {
  const rows = keyList.map((k) => {
    const name = keyField(k, "name");
    const accts = listOf(keyField(k, "accounts"));
    const models = listOf(keyField(k, "models", "modelGlobs", "model_globs"));
    const budget = budgetList.find((b) => b.key === name) || {};
    const rpm = Number(budget.rpm) || 0;
    const last = tsOf(keyField(k, "lastUsedAt", "last_used_at", "lastUsed"));
    const exp = tsOf(keyField(k, "expiresAt", "expires_at"));
    const state = keyState(k);
    return h("tr", { "data-key": name },
      h("th", { scope: "row", text: name }),
      h("td", {}, h("div", { class: "chips" }, (accts.length ? accts : ["default"]).map((a) => h("span", { class: "chip", text: a === "*" ? "every account" : a })))),
      h("td", { text: models.length ? models.join(", ") : "all" }),
      h("td", { class: "budgets" }, budgetCell(budget)),
      h("td", { class: "n", "data-rpm": String(rpm), text: rpm ? fmtN(rpm) : "\u2013" }),
      h("td", { "data-ago": String(last || "") }),
      h("td", { text: exp ? fmtDate(new Date(exp)) : "never" }),
      h("td", {}, h("span", { class: `status ${state === "active" ? "ok" : "bad"}`, text: state })),
      h("td", {}, state === "revoked" ? "" : [
        h("button", { type: "button", class: "link", "aria-label": `Edit key ${name}`, onclick: () => openKeyDialog(k) }, "Edit"), " ",
        h("button", { type: "button", class: "link", "aria-label": `Revoke key ${name}`, onclick: () => openRevoke(name) }, "Revoke")]));
  });
  $("keys-table").tBodies[0].replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: "9", class: "empty", text: "No managed keys yet." }))]));
  renderAccountBudgets();
  tick();
}

let editing = null;

function openKeyDialog(k) {
  editing = k ? keyField(k, "name") : null;
  const f = $("key-form");
  f.reset();
  $("kf-error").textContent = "";
  $("key-dialog-title").textContent = editing ? `Edit key ${editing}` : "New key";
  $("kf-submit").textContent = editing ? "Save" : "Create";
  $("kf-name").disabled = !!editing;
  if (k) {
    $("kf-name").value = editing;
    $("kf-accounts").value = listOf(keyField(k, "accounts")).join(",");
    $("kf-models").value = listOf(keyField(k, "models", "modelGlobs", "model_globs")).join(",");
  }
  $("key-dialog").showModal();
  (editing ? $("kf-accounts") : $("kf-name")).focus();
}

// expiryOf turns "90d", "12h" or "30m" into a timestamp from now; "" when
// empty; null when it is not such a duration.
function expiryOf(text) {
  if (!text) return "";
  const m = /^(\d+)\s*([dhm])$/.exec(text);
  if (!m) return null;
  const unit = { d: 86400e3, h: 3600e3, m: 60e3 }[m[2]];
  return new Date(Date.now() + Number(m[1]) * unit).toISOString();
}

// keyBody is the JSON of CreateKey or UpdateKey (the API's field names).
function keyBody() {
  const body = {};
  const v = (id) => $(id).value.trim();
  const models = v("kf-models") ? v("kf-models").split(",").map((x) => x.trim()).filter(Boolean) : [];
  const expires = expiryOf(v("kf-expires"));
  if (expires === null) throw new Error("Expires in: write a number and d, h or m, e.g. 90d");
  if (!editing) {
    body.name = v("kf-name");
    body.accounts = v("kf-accounts");
    body.models = models;
    if (expires) body.expiresAt = expires;
  } else {
    body.accounts = v("kf-accounts");
    body.models = { globs: models };
    if (expires) body.expiresAt = expires;
  }
  return body;
}

async function submitKey(ev) {
  ev.preventDefault();
  let body;
  try {
    body = keyBody();
  } catch (e) {
    $("kf-error").textContent = e.message;
    return;
  }
  const r = editing
    ? await api("PATCH", `/ui/api/v1/keys/${encodeURIComponent(editing)}`, body)
    : await api("POST", "/ui/api/v1/keys", body);
  if (!r.ok) {
    $("kf-error").textContent = errText(r);
    return;
  }
  $("key-dialog").close();
  if (!editing) showSecret(body.name, pick(r.data, "secret") || pick(r.data && r.data.key, "secret"));
  showKeys();
}

// showSecret shows a new key's secret once; closing the dialog removes it
// from the page.
function showSecret(name, secret) {
  const base = (session.proxy_url || "http://127.0.0.1:4141").replace(/\/+$/, "");
  const lines = `export ANTHROPIC_BASE_URL=${base}\nexport ANTHROPIC_AUTH_TOKEN=${secret}\n\nexport OPENAI_BASE_URL=${base}/v1\nexport OPENAI_API_KEY=${secret}`;
  $("secret-body").replaceChildren(
    h("label", { for: "secret-value", text: `Secret of ${name}` }),
    h("div", { class: "secret" }, h("input", { id: "secret-value", readonly: true, value: secret, spellcheck: "false" })),
    h("label", { for: "secret-lines", text: "What its owner pastes" }),
    h("pre", { class: "paste", id: "secret-lines", tabindex: "0", text: lines }));
  $("secret-copy").textContent = "Copy";
  $("secret-dialog").showModal();
  $("secret-value").select();
}

async function copySecret() {
  const el = $("secret-value");
  if (!el) return;
  try {
    await navigator.clipboard.writeText(el.value);
  } catch {
    el.select();
    document.execCommand("copy");
  }
  $("secret-copy").textContent = "Copied";
}

function closeSecret() {
  $("secret-body").replaceChildren();
  $("secret-dialog").close();
}

let revoking = null;

function openRevoke(name) {
  revoking = name;
  $("revoke-form").reset();
  $("revoke-name").textContent = name;
  $("revoke-error").textContent = "";
  $("revoke-submit").disabled = true;
  $("revoke-dialog").showModal();
  $("revoke-input").focus();
}

async function submitRevoke(ev) {
  ev.preventDefault();
  if ($("revoke-input").value !== revoking) return;
  const r = await api("DELETE", `/ui/api/v1/keys/${encodeURIComponent(revoking)}`);
  if (!r.ok) {
    $("revoke-error").textContent = errText(r);
    return;
  }
  $("revoke-dialog").close();
  showKeys();
}

// ---- usage ---------------------------------------------------------------

let usageRows = [];
let usageSort = { col: "premium_requests", desc: true };

const USAGE_COLS = [
  ["requests", "Requests"], ["premium_requests", "Premium requests"], ["premium_units", "Premium units"],
  ["input_tokens", "Input tokens"], ["output_tokens", "Output tokens"], ["cached_tokens", "Cached tokens"],
];

function monthRange(m) {
  const [y, mo] = m.split("-").map(Number);
  const from = new Date(Date.UTC(y, mo - 1, 1));
  const to = new Date(Date.UTC(y, mo, 0));
  const iso = (d) => d.toISOString().slice(0, 10);
  return { from: iso(from), to: iso(to), days: to.getUTCDate(), y, mo };
}

function usageQuery(csv) {
  const { from, to } = monthRange($("usage-month").value);
  const q = new URLSearchParams({ from, to, group_by: `day,${$("usage-group").value}` });
  if (csv) q.set("format", "csv");
  return `/ui/api/v1/usage?${q}`;
}

async function showUsage() {
  const month = $("usage-month");
  if (!month.value) month.value = new Date().toISOString().slice(0, 7);
  const note = $("usage-note");
  $("usage-csv").href = usageQuery(true);
  $("usage-csv").setAttribute("download", `usage-${month.value}-by-${$("usage-group").value}.csv`);
  if (!session.admin) {
    note.hidden = false;
    note.textContent = "Usage needs an admin broker key; this session is read-only.";
    usageRows = [];
    renderUsage();
    return;
  }
  const r = session.usage_api ? await api("GET", usageQuery(false)) : { status: 404 };
  if (r.status === 404) {
    note.hidden = false;
    note.textContent = "This broker keeps no usage ledger (no /v1/usage).";
    usageRows = [];
  } else if (!r.ok) {
    note.hidden = false;
    note.textContent = `Could not read usage: ${errText(r)}`;
    usageRows = [];
  } else {
    note.hidden = true;
    // Rows as the API documents them (snake_case), whatever its JSON names.
    usageRows = ((r.data && r.data.rows) || []).map((row) =>
      Object.fromEntries(Object.entries(row).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v])));
  }
  renderUsage();
}

function renderUsage() {
  const g = $("usage-group").value;
  const { days, y, mo } = monthRange($("usage-month").value || new Date().toISOString().slice(0, 7));
  // Totals per group, and per day and group.
  const totals = new Map();
  const perDay = Array.from({ length: days }, () => new Map());
  const tokensPerDay = new Array(days).fill(0);
  for (const row of usageRows) {
    const name = String(row[g] ?? "");
    const t = totals.get(name) || Object.fromEntries(USAGE_COLS.map(([c]) => [c, 0]));
    for (const [c] of USAGE_COLS) t[c] += Number(row[c]) || 0;
    totals.set(name, t);
    const day = Number(String(row.day || "").slice(8, 10));
    if (day >= 1 && day <= days) {
      const m = perDay[day - 1];
      m.set(name, (m.get(name) || 0) + (Number(row.premium_requests) || 0));
      tokensPerDay[day - 1] += (Number(row.input_tokens) || 0) + (Number(row.output_tokens) || 0);
    }
  }
  const groups = [...totals.keys()].sort((a, b) => totals.get(b).premium_requests - totals.get(a).premium_requests || a.localeCompare(b));
  drawChart(perDay, tokensPerDay, groups, y, mo);
  // The table.
  const head = $("usage-table").tHead.rows[0];
  const th = (col, label, numeric) => {
    const sorted = usageSort.col === col;
    return h("th", { scope: "col", class: numeric ? "n" : "", "aria-sort": sorted ? (usageSort.desc ? "descending" : "ascending") : "none" },
      h("button", { type: "button", onclick: () => { usageSort = { col, desc: sorted ? !usageSort.desc : numeric }; renderUsage(); } },
        label + (sorted ? (usageSort.desc ? " \u25be" : " \u25b4") : "")));
  };
  head.replaceChildren(th("name", g, false), ...USAGE_COLS.map(([c, l]) => th(c, l, true)));
  const rows = [...totals.entries()].sort(([an, a], [bn, b]) => {
    const d = usageSort.col === "name" ? an.localeCompare(bn) : a[usageSort.col] - b[usageSort.col];
    return usageSort.desc ? -d : d;
  });
  $("usage-table").tBodies[0].replaceChildren(...(rows.length
    ? rows.map(([name, t]) => h("tr", {}, h("th", { scope: "row", text: name || "(none)" }), USAGE_COLS.map(([c]) => h("td", { class: "n", text: fmtN(t[c]) }))))
    : [h("tr", {}, h("td", { colspan: String(USAGE_COLS.length + 1), class: "empty", text: "No usage this month." }))]));
}

// drawChart draws stacked bars of premium requests per day by group and a
// line of tokens per day on its own scale, in SVG.
function drawChart(perDay, tokensPerDay, groups, y, mo) {
  const W = 900, H = 300, L = 48, R = 56, T = 12, B = 28;
  const shown = groups.slice(0, 7);
  const colour = (name) => { const i = shown.indexOf(name); return i >= 0 ? `c${i}` : "c7"; };
  const maxBar = Math.max(1, ...perDay.map((m) => [...m.values()].reduce((a, b) => a + b, 0)));
  const maxTok = Math.max(1, ...tokensPerDay);
  const n = perDay.length, bw = (W - L - R) / n;
  const ys = (v) => T + (H - T - B) * (1 - v / maxBar);
  const yt = (v) => T + (H - T - B) * (1 - v / maxTok);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Premium requests and tokens per day, ${y}-${String(mo).padStart(2, "0")}` });
  svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  for (const f of [0, 0.5, 1]) {
    svg.append(s("text", { x: L - 6, y: ys(maxBar * f) + 4, "text-anchor": "end", text: fmtN(maxBar * f) }));
    svg.append(s("text", { x: W - R + 6, y: yt(maxTok * f) + 4, text: fmtN(maxTok * f) }));
    svg.append(s("line", { class: "axis", x1: L, y1: ys(maxBar * f), x2: W - R, y2: ys(maxBar * f), "stroke-dasharray": "2 4" }));
  }
  perDay.forEach((m, i) => {
    let acc = 0;
    for (const name of groups) {
      const v = m.get(name) || 0;
      if (!v) continue;
      const r = s("rect", { class: colour(name), x: L + i * bw + 1, width: Math.max(1, bw - 2), y: ys(acc + v), height: ys(acc) - ys(acc + v) });
      r.append(s("title", { text: `${name}: ${fmtN(v)} premium requests on day ${i + 1}` }));
      svg.append(r);
      acc += v;
    }
    if ((i + 1) % 5 === 0 || i === 0) svg.append(s("text", { x: L + i * bw + bw / 2, y: H - 8, "text-anchor": "middle", text: String(i + 1) }));
  });
  // The line stops at today in the current month (the days to come are no zeros).
  const now = new Date();
  const last = now.getUTCFullYear() === y && now.getUTCMonth() + 1 === mo ? now.getUTCDate() : n;
  const pts = tokensPerDay.slice(0, last).map((v, i) => `${L + i * bw + bw / 2},${yt(v)}`).join(" ");
  svg.append(s("polyline", { class: "tokens", points: pts }));
  $("usage-chart").replaceChildren(svg);
  $("usage-legend").replaceChildren(
    ...shown.map((name) => h("span", {}, h("span", { class: `sw ${colour(name)}`, "aria-hidden": "true" }), name || "(none)")),
    groups.length > shown.length ? h("span", {}, h("span", { class: "sw c7", "aria-hidden": "true" }), "others") : "",
    h("span", { class: "muted", text: "line: input + output tokens (right axis)" }));
}

// ---- start ---------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("key-new").addEventListener("click", () => openKeyDialog(null));
  $("key-form").addEventListener("submit", submitKey);
  $("kf-cancel").addEventListener("click", () => $("key-dialog").close());
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-close").addEventListener("click", closeSecret);
  $("secret-dialog").addEventListener("cancel", () => $("secret-body").replaceChildren());
  $("revoke-form").addEventListener("submit", submitRevoke);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-input").addEventListener("input", () => { $("revoke-submit").disabled = $("revoke-input").value !== revoking; });
  $("usage-form").addEventListener("change", () => showUsage());
  $("usage-form").addEventListener("submit", (e) => e.preventDefault());
  window.addEventListener("hashchange", route);
  setInterval(tick, 1000);
  setInterval(() => { if (session && !$("page-overview").hidden) loadStats(); }, 10000);
  setInterval(() => { if (session && session.admin && !document.hidden && !$("page-keys").hidden) refreshBudgets(); }, BUDGET_REFRESH_MS);
}

async function boot() {
  wire();
  const r = await api("GET", "/ui/session");
  if (r.ok && r.data && r.data.signed_in) started(r.data);
  else showSignIn("");
}

boot();
