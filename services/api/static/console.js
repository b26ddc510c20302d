"use strict";
// The agent console: one page, no build step, no third-party code. Everything it shows comes from the
// agent API (/api/v1) with the token in an Authorization header (never in a URL; the live stream opens
// with a single-use ticket). After a command it reads with `Sb-Min-Position` set to the command's
// position, so what it shows next includes what the agent just did, without guessing delays.
//
// Every piece of text from a customer or another agent goes in with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const S = {
  token: sessionStorage.getItem("sb-token") || "",
  me: null,            // {id, email, name, role} of a signed-in agent; {role} for an API token
  view: "unassigned",  // mine | unassigned | all | resolved | queue:NAME | dashboard | merges
  rows: [],            // case rows of the view, in order
  cursor: null,
  selected: -1,        // keyboard selection in the list
  caseId: null,        // the case on screen: the reply box belongs to it and only it
  caseData: null,
  customerId: null,
  position: 0,         // the highest position of any command of ours: reads wait for it
  canned: [], queues: [], agents: [], attributes: [],
  noteMode: false,
  events: null, retry: 1000,
};
const SUPERVISORS = ["supervisor", "admin"];
const WRITERS = ["agent", "supervisor", "admin"];

// -- small helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
// replaceChildren with what is there: null, undefined and false (a part left out) are skipped.
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
const list = (r) => (Array.isArray(r) ? r : (r && (r.items || r.results)) || []);
const when = (t) => (t ? new Date(t).toLocaleString() : "—");
function ago(t) {
  if (!t) return "";
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return Math.round(s) + "s";
  if (s < 3600) return Math.round(s / 60) + "m";
  if (s < 86400) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
function until(t) {
  const s = (new Date(t).getTime() - Date.now()) / 1000;
  if (s <= 0) return "breached " + ago(t) + " ago";
  if (s < 3600) return "due in " + Math.ceil(s / 60) + "m";
  if (s < 86400) return "due in " + Math.round(s / 3600) + "h";
  return "due " + when(t);
}
function toast(message, kind = "error") {
  const node = el("div", { class: "toast " + kind, text: message });
  $("toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 8000 : 3000);
}
const canWrite = () => S.me && WRITERS.includes(S.me.role);
const isSupervisor = () => S.me && SUPERVISORS.includes(S.me.role);

class ApiError extends Error {
  constructor(status, body) { super((body && body.detail) || "HTTP " + status); this.status = status; this.body = body; }
}

// Every call goes through here: the token header, JSON, the read-your-writes position, errors.
async function api(path, { method = "GET", body, quiet = false, accept } = {}) {
  const headers = { authorization: "Bearer " + S.token };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (accept) headers.accept = accept;
  if (method === "GET" && S.position) headers["sb-min-position"] = String(S.position);
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    if (!quiet) toast("Cannot reach Switchboard: " + e.message);
    throw e;
  }
  if (response.status === 401 && path !== "/api/v1/auth/login") { signedOut("Your session ended. Sign in again."); throw new ApiError(401, {}); }
  const data = response.status === 204 ? null : (accept ? await response.text() : await response.json().catch(() => null));
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (!quiet) toast(error.message);
    throw error;
  }
  if (data && typeof data.position === "number" && data.position > S.position) S.position = data.position;
  return data;
}

// -- sign-in ---------------------------------------------------------------------------------------

function signedOut(message) {
  S.token = ""; S.me = null; sessionStorage.removeItem("sb-token");
  if (S.events) { S.events.close(); S.events = null; }
  $("app").hidden = true; $("signin").hidden = false;
  $("loginError").textContent = message || "";
  $("loginEmail").focus();
}

async function signIn(event) {
  event.preventDefault();
  $("loginError").textContent = "";
  const email = $("loginEmail").value.trim(), password = $("loginPassword").value;
  if (!email || !password) { $("loginError").textContent = "Email and password, please."; return; }
  $("loginSubmit").disabled = true;
  try {
    const r = await fetch("/api/v1/auth/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email, password }) });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { $("loginError").textContent = r.status === 401 ? "Wrong email or password." : (data.detail || "Cannot sign in now."); return; }
    S.token = data.token; S.me = data.agent; sessionStorage.setItem("sb-token", S.token);
    $("loginPassword").value = "";
    await start();
  } catch (e) {
    $("loginError").textContent = "Cannot reach Switchboard: " + e.message;
  } finally {
    $("loginSubmit").disabled = false;
  }
}

async function useToken() {
  S.token = $("loginToken").value.trim();
  if (!S.token) return;
  sessionStorage.setItem("sb-token", S.token);
  S.me = null;
  await start();
}

async function whoAmI() {
  const who = await api("/api/v1/auth/me", { quiet: true });
  if (!who.agent_id) return { id: null, name: who.name || "API token", role: who.role, email: "" };
  try { return await api("/api/v1/agents/me", { quiet: true }); }
  catch (e) { return { id: who.agent_id, name: who.name, role: who.role, email: "" }; }
}

async function signOut() {
  try { await api("/api/v1/auth/logout", { method: "POST", quiet: true }); } catch (e) { /* ended anyway */ }
  signedOut("Signed out.");
}

// -- start -----------------------------------------------------------------------------------------

async function start() {
  try { S.me = await whoAmI(); } catch (e) { signedOut(e.status === 401 ? "That token is not valid." : e.message); return; }
  $("signin").hidden = true; $("app").hidden = false;
  $("who").textContent = S.me.name || S.me.email || "";
  $("who").title = S.me.role;
  $("presence").value = S.me.status || "online";
  $("presence").disabled = !S.me.id;
  $("supervisorViews").hidden = !isSupervisor();
  document.body.classList.toggle("readonly", !canWrite());
  await Promise.all([loadQueues(), loadCanned(), loadAgents(), loadAttributes()]);
  if (!S.viewChosen) await setView(S.me.id ? "mine" : "unassigned"); // unless the agent already chose one
  listen();
}

async function loadQueues() {
  try { S.queues = list(await api("/api/v1/queues", { quiet: true })); } catch (e) { S.queues = []; }
  const names = new Set(S.queues.map((q) => q.name));
  for (const ch of ["chat", "email", "sms", "whatsapp", "messenger", "instagram", "telegram"]) if (!names.has(ch)) S.queues.push({ name: ch });
  fill($("queueViews"), ...S.queues.map((q) => el("button", { class: "view", "data-view": "queue:" + q.name, "data-testid": "view-queue-" + q.name },
    q.name, el("span", { class: "count", text: q.unassigned ? String(q.unassigned) : "" }), q.breached ? el("span", { class: "breach", title: "breached", text: "!" + q.breached }) : null)));
  for (const b of $("queueViews").querySelectorAll(".view")) b.onclick = () => { S.viewChosen = true; setView(b.dataset.view); };
  fill($("transfer"), ...S.queues.map((q) => el("option", { value: q.name, text: q.name })));
  markView();
}
async function loadCanned() {
  try { S.canned = list(await api("/api/v1/canned-responses", { quiet: true })); } catch (e) { S.canned = []; }
  const chosen = $("canned").value;
  fill($("canned"), el("option", { value: "", text: "Canned response…" }),
    ...S.canned.map((c) => el("option", { value: c.id, text: "/" + c.shortcut + " — " + c.text.slice(0, 40) })));
  if (S.canned.some((c) => c.id === chosen)) $("canned").value = chosen;
}
async function loadAgents() {
  try { S.agents = list(await api("/api/v1/agents", { quiet: true })); } catch (e) { S.agents = []; }
}
async function loadAttributes() {
  try { S.attributes = list(await api("/api/v1/attribute-definitions", { quiet: true })); } catch (e) { S.attributes = []; }
}
const agentName = (id) => { const a = S.agents.find((x) => x.id === id); return a ? a.name : id; };

// -- views and the case list ------------------------------------------------------------------------

function viewQuery(view) {
  const p = new URLSearchParams({ limit: "50" });
  if (view === "mine") { p.set("assignee", S.me.id || "none"); p.set("status", "open,pending,snoozed"); }
  else if (view === "unassigned") { p.set("assignee", "none"); p.set("status", "open,pending"); }
  else if (view === "all") p.set("status", "open,pending,snoozed");
  else if (view === "resolved") p.set("status", "resolved");
  else if (view.startsWith("queue:")) { p.set("queue", view.slice(6)); p.set("status", "open,pending,snoozed"); }
  return p;
}
function markView() {
  for (const b of document.querySelectorAll(".view")) b.setAttribute("aria-current", b.dataset.view === S.view ? "page" : "false");
}
async function setView(view) {
  S.view = view; markView();
  document.body.classList.remove("nav-open");
  const board = view === "dashboard" || view === "merges";
  $("boardPane").hidden = !board;
  for (const id of ["listPane", "casePane", "sidePane"]) $(id).hidden = board;
  if (view === "dashboard") return renderDashboard();
  if (view === "merges") return renderMerges();
  $("listTitle").textContent = { mine: "Mine", unassigned: "Unassigned", all: "All open", resolved: "Resolved" }[view] || "Queue " + view.slice(6);
  await loadCases();
}
async function loadCases(append = false) {
  const p = viewQuery(S.view);
  if (append && S.cursor) p.set("cursor", S.cursor);
  let r;
  try { r = await api("/api/v1/cases?" + p); } catch (e) { return; }
  S.rows = append ? S.rows.concat(list(r)) : list(r);
  S.cursor = r.next_cursor || null;
  $("more").hidden = !S.cursor;
  renderList();
  updateCounts();
}
function belongs(c) {
  const active = c.status !== "resolved";
  switch (true) {
    case S.view === "mine": return active && c.assignee === S.me.id;
    case S.view === "unassigned": return !c.assignee && (c.status === "open" || c.status === "pending");
    case S.view === "all": return active;
    case S.view === "resolved": return c.status === "resolved";
    case S.view.startsWith("queue:"): return active && c.queue === S.view.slice(6);
    default: return false;
  }
}
function slaBadge(c) {
  if (c.sla_breached) return el("span", { class: "sla breached", text: "SLA breached" });
  if (c.sla_due_at && c.status !== "resolved") {
    const left = new Date(c.sla_due_at).getTime() - Date.now();
    return el("span", { class: "sla " + (left < 0 ? "breached" : left < 15 * 60e3 ? "soon" : "ok"), text: until(c.sla_due_at) });
  }
  return null;
}
function caseRow(c, i) {
  const last = c.last_message || {};
  const waiting = c.waiting_since || (last.direction === "inbound" ? last.occurred_at : null);
  return el("div", {
    class: "row" + (c.id === S.caseId ? " active" : "") + (i === S.selected ? " selected" : ""),
    role: "listitem", tabindex: "0", "data-testid": "case-row", "data-case-id": c.id,
    onclick: () => openCase(c.id), onkeydown: (e) => { if (e.key === "Enter") openCase(c.id); },
  },
  el("div", { class: "line" },
    el("b", { class: "name", text: c.customer_name || "Unnamed customer" }),
    el("span", { class: "muted small", text: waiting ? "waiting " + ago(waiting) : ago(c.updated_at) })),
  el("div", { class: "preview", text: (last.direction === "outbound" ? "You: " : "") + (last.text || "") }),
  el("div", { class: "line" },
    el("span", { class: "pill " + c.status, text: c.status }),
    el("span", { class: "pill", text: c.channel }),
    c.priority !== "normal" ? el("span", { class: "pill prio-" + c.priority, text: c.priority }) : null,
    ...(c.tags || []).slice(0, 3).map((t) => el("span", { class: "pill tag", text: "#" + t })),
    slaBadge(c),
    c.assignee ? el("span", { class: "muted small right", text: agentName(c.assignee) }) : null));
}
function renderList() {
  const box = $("caseList");
  if (!S.rows.length) { fill(box, el("div", { class: "empty", text: "Nothing here." })); return; }
  fill(box, ...S.rows.map(caseRow));
}
// A live change to one case: fetch that case alone and put it where it belongs (or out).
async function patchCase(caseId) {
  let c;
  try { c = await api("/api/v1/cases/" + caseId, { quiet: true }); } catch (e) { return; }
  // The case view has the conversation: its last message is the row's preview.
  const messages = c.messages || [];
  const last = messages[messages.length - 1];
  if (last) c.last_message = { text: (last.text || "").slice(0, 140), direction: last.direction, occurred_at: last.occurred_at };
  const lastOut = [...messages].reverse().find((m) => m.direction === "outbound");
  const waiting = messages.find((m) => m.direction === "inbound" && (!lastOut || m.occurred_at > lastOut.occurred_at));
  c.waiting_since = waiting ? waiting.occurred_at : null;
  const at = S.rows.findIndex((r) => r.id === caseId);
  if (belongs(c)) {
    if (at >= 0) S.rows[at] = { ...S.rows[at], ...c };
    else S.rows.unshift(c);
  } else if (at >= 0) S.rows.splice(at, 1);
  renderList();
  if (caseId === S.caseId) renderCase(c);
}
async function updateCounts() {
  if (!S.me) return;
  const count = async (view, key) => {
    try { const r = await api("/api/v1/cases?" + viewQuery(view).toString().replace("limit=50", "limit=100"), { quiet: true }); const n = list(r).length; document.querySelector(`[data-count="${key}"]`).textContent = n ? (n >= 100 ? "99+" : String(n)) : ""; } catch (e) { /* leave */ }
  };
  await Promise.all([S.me.id ? count("mine", "mine") : null, count("unassigned", "unassigned")]);
}

// -- one case ----------------------------------------------------------------------------------------

async function openCase(caseId) {
  S.caseId = caseId;
  S.selected = S.rows.findIndex((r) => r.id === caseId);
  renderList();
  let c;
  try { c = await api("/api/v1/cases/" + caseId); } catch (e) { return; }
  if (S.caseId !== caseId) return; // another case was opened meanwhile
  document.body.classList.add("case-open");
  renderCase(c);
  loadCanned(); // supervisors may have added some since
  openCustomer(c.customer_id);
}
function renderCase(c) {
  S.caseData = c;
  $("caseEmpty").hidden = true; $("caseView").hidden = false;
  $("caseView").dataset.caseId = c.id;
  $("caseTitle").textContent = (c.customer_name || "Case") + " · " + c.channel;
  fill($("caseMeta"), 
    el("span", { class: "pill " + c.status, text: c.status }), " ",
    "queue " + c.queue + " · opened " + when(c.opened_at),
    c.assignee ? " · assigned to " + agentName(c.assignee) : " · unassigned", " ", slaBadge(c) || "",
    c.csat ? " · CSAT " + "★".repeat(c.csat) : "");
  fill($("assignee"), el("option", { value: "", text: "nobody" }),
    ...S.agents.map((a) => el("option", { value: a.id, text: a.name + (a.status ? " (" + a.status + ")" : "") })));
  $("assignee").value = c.assignee || "";
  if (![...$("transfer").options].some((o) => o.value === c.queue)) $("transfer").append(el("option", { value: c.queue, text: c.queue }));
  $("transfer").value = c.queue;
  $("priority").value = c.priority;
  $("resolve").textContent = c.status === "resolved" ? "Reopen" : "Resolve";
  $("assignMe").disabled = !S.me.id || c.assignee === S.me.id;
  renderTags(c);
  renderConversation(c);
}
function renderTags(c) {
  const add = el("input", { class: "addtag", placeholder: "+ tag", "aria-label": "Add a tag", size: "8" });
  add.onkeydown = (e) => { if (e.key === "Enter" && add.value.trim()) { command("tags", { tags: [add.value.trim()] }); add.value = ""; } };
  fill($("tags"), ...(c.tags || []).map((t) => el("span", { class: "pill tag", text: "#" + t })), canWrite() ? add : null);
}
function renderConversation(c) {
  const items = [];
  for (const m of c.messages || []) items.push({ at: m.occurred_at, node: messageNode(m) });
  for (const n of c.notes || []) items.push({ at: n.created_at, node: el("div", { class: "msg note", "data-testid": "case-note" },
    el("div", { class: "meta", text: "note · " + agentName(n.author) + " · " + when(n.created_at) }), el("div", { class: "text", text: n.text })) });
  items.sort((a, b) => new Date(a.at) - new Date(b.at));
  const box = $("conversation");
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  fill(box, ...items.map((i) => i.node));
  if (!items.length) box.append(el("div", { class: "empty", text: "No messages yet." }));
  if (atEnd || box.dataset.caseId !== c.id) box.scrollTop = box.scrollHeight;
  box.dataset.caseId = c.id;
}
function messageNode(m) {
  const delivery = m.delivery ? (typeof m.delivery === "string" ? m.delivery : m.delivery.status) : null;
  const reason = m.delivery && m.delivery.reason;
  return el("div", { class: "msg " + m.direction + (delivery === "failed" ? " failed" : ""), "data-testid": "timeline-item", "data-message-id": m.id },
    el("div", { class: "meta" }, (m.channel || "") + " · " + when(m.occurred_at) + (m.kind && m.kind !== "message" ? " · " + m.kind : ""),
      delivery ? el("span", { class: "delivery " + delivery, "data-testid": "delivery", title: reason || delivery, text: " · " + delivery + (reason ? " (" + reason + ")" : "") }) : null),
    el("div", { class: "text", text: m.text || "" }),
    (m.attachments || []).length ? el("div", { class: "attachments" }, ...m.attachments.map(attachmentNode)) : null);
}
function attachmentNode(a) {
  // Attachments need the token: fetched with it, handed to the browser as a blob, never a tokened URL.
  const link = el("button", { class: "attachment secondary", type: "button", text: "📎 " + a.name + " (" + Math.ceil((a.size || 0) / 1024) + " KB)" });
  link.onclick = async () => {
    try {
      const r = await fetch(a.url, { headers: { authorization: "Bearer " + S.token } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const url = URL.createObjectURL(await r.blob());
      const anchor = el("a", { href: url, download: a.name });
      document.body.append(anchor); anchor.click(); anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) { toast("Cannot download " + a.name + ": " + e.message); }
  };
  return link;
}

// A command on the case on screen. The case id is taken when the agent acts, so a reply or an action
// can never land on another case than the one they were looking at.
async function command(action, body = {}, caseId = S.caseId) {
  if (!caseId) return null;
  let result;
  try { result = await api(`/api/v1/cases/${caseId}/${action}`, { method: "POST", body }); } catch (e) { return null; }
  await patchCase(caseId);
  return result;
}

async function sendReply(event) {
  event.preventDefault();
  const caseId = $("caseView").dataset.caseId; // the case whose conversation is on screen
  if (!caseId || caseId !== S.caseId) return;
  const text = $("replyInput").value.trim();
  const cannedId = $("canned").value;
  if (!text && !cannedId) return;
  $("replySend").disabled = true;
  try {
    let body;
    if (S.noteMode) body = { text };
    else if (cannedId && (!text || text === cannedText(cannedId))) body = { canned: cannedId };
    else body = { text };
    const done = await command(S.noteMode ? "notes" : "reply", body, caseId);
    if (done) { $("replyInput").value = ""; $("canned").value = ""; if (!S.noteMode) toast("Sent", "ok"); }
  } finally { $("replySend").disabled = false; }
}
const cannedText = (id) => { const c = S.canned.find((x) => x.id === id); return c ? c.text : ""; };
function pickCanned() {
  const c = S.canned.find((x) => x.id === $("canned").value);
  if (c) { $("replyInput").value = c.text; $("replyInput").focus(); }
}
function expandShortcut() {
  // "/thanks" + space or Tab expands to that canned response's text (placeholders are filled on send).
  const input = $("replyInput");
  const m = /^\/(\S+)$/.exec(input.value.trim());
  if (!m) return false;
  const c = S.canned.find((x) => x.shortcut === m[1]);
  if (!c) return false;
  input.value = c.text; $("canned").value = c.id;
  return true;
}

// -- the customer beside the case ---------------------------------------------------------------------

async function openCustomer(customerId) {
  S.customerId = customerId;
  let p, t;
  try {
    [p, t] = await Promise.all([api("/api/v1/customers/" + customerId), api(`/api/v1/customers/${customerId}/timeline?limit=50`)]);
  } catch (e) { return; }
  if (S.customerId !== customerId) return;
  const attrs = Object.entries(p.attributes || {});
  $("profile").className = "profile";
  fill($("profile"), 
    el("h2", { text: p.name || "Unnamed customer" }),
    el("div", { class: "muted small", text: `${p.interaction_count} touchpoints · ${p.open_cases} open · first seen ${when(p.first_seen)} · last seen ${when(p.last_seen)}` }),
    el("div", { class: "identities" }, ...(p.identities || []).map((i) => el("span", { class: "pill", text: `${i.kind}: ${i.value}` })),
      ...(p.claims || []).map((i) => el("span", { class: "pill claim", title: "claimed, not verified", text: `${i.kind}?: ${i.value}` }))),
    attrs.length ? el("dl", { class: "attrs" }, ...attrs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })])) : null,
    attributeEditor("customer", customerId),
    el("h3", { text: "Timeline" }),
    el("div", { class: "timeline" }, ...list(t).map((i) => el("div", { class: "titem " + i.direction, "data-testid": "profile-timeline-item" },
      el("div", { class: "meta", text: `${i.channel} · ${when(i.occurred_at)}` + (i.case_id && i.case_id !== S.caseId ? " · other case" : "") }),
      el("div", { class: "text", text: i.text || "" }),
      i.case_id && i.case_id !== S.caseId ? el("button", { class: "link", type: "button", text: "open that case", onclick: () => openCase(i.case_id) }) : null))));
}
function attributeEditor(appliesTo, id) {
  const defs = S.attributes.filter((d) => (d.applies_to || "customer") === appliesTo);
  if (!defs.length || !canWrite()) return null;
  const key = el("select", { "aria-label": "Attribute" }, ...defs.map((d) => el("option", { value: d.key, text: d.key + " (" + d.type + ")" })));
  const value = el("input", { "aria-label": "Value", placeholder: "value" });
  const save = el("button", { class: "secondary", type: "button", text: "Set" });
  save.onclick = async () => {
    const d = defs.find((x) => x.key === key.value);
    let v = value.value.trim();
    if (d.type === "number") v = Number(v); else if (d.type === "boolean") v = v === "true" || v === "yes";
    try {
      await api(`/api/v1/${appliesTo === "customer" ? "customers" : "cases"}/${id}/attributes`, { method: "PATCH", body: { [d.key]: v } });
      value.value = "";
      if (appliesTo === "customer") openCustomer(id); else patchCase(id);
    } catch (e) { /* toast shown */ }
  };
  return el("div", { class: "attrform" }, key, value, save);
}

// -- search -------------------------------------------------------------------------------------------

let searchTimer = null;
async function search() {
  const q = $("searchInput").value.trim();
  if (!q) return;
  let r;
  try { r = await api("/api/v1/search?q=" + encodeURIComponent(q)); } catch (e) { return; }
  // Searching shows people and messages; it never changes which case the reply box belongs to.
  $("profile").className = "profile";
  fill($("profile"), el("h2", { text: "Search: " + q }),
    ...list(r).map((hit) => {
      const customerId = hit.customer_id || (hit.kind === "customer" ? hit.id : null);
      return el("div", { class: "row", "data-testid": "search-result", tabindex: "0",
        onclick: () => (hit.case_id ? openCase(hit.case_id) : customerId && openCustomer(customerId)) },
      el("b", { text: hit.name || hit.customer_name || (hit.kind === "customer" ? "Customer" : "Message") }),
      el("div", { class: "muted small", text: (hit.kind || "") + (hit.occurred_at ? " · " + when(hit.occurred_at) : "") }),
      el("div", { class: "preview", text: hit.snippet || hit.text || "" }));
    }),
    list(r).length ? null : el("div", { class: "empty", text: "Nothing found." }));
}

// -- supervisors -----------------------------------------------------------------------------------

async function renderDashboard() {
  const board = $("board");
  $("boardTitle").textContent = "Dashboard";
  const today = new Date(); today.setHours(0, 0, 0, 0);
  const range = "from=" + encodeURIComponent(today.toISOString()) + "&to=" + encodeURIComponent(new Date(Date.now() + 60e3).toISOString());
  const [queues, agents, metrics, waiting] = await Promise.all([
    api("/api/v1/queues", { quiet: true }).catch(() => []),
    api("/api/v1/agents", { quiet: true }).catch(() => []),
    api("/api/v1/metrics?" + range, { quiet: true }).catch(() => ({})),
    api("/api/v1/cases?assignee=none&status=open,pending&limit=500", { quiet: true }).catch(() => ({ items: [] })),
  ]);
  if (S.view !== "dashboard") return;
  // The longest wait of each queue's unassigned cases (the customer's last unanswered message).
  const oldest = {};
  for (const c of list(waiting)) {
    const since = c.waiting_since || c.opened_at;
    if (since && (!oldest[c.queue] || since < oldest[c.queue])) oldest[c.queue] = since;
  }
  const fmt = (s) => (s == null ? "—" : s < 120 ? Math.round(s) + "s" : Math.round(s / 60) + "m");
  const overall = metrics.overall || {};
  const csat = overall.csat || {};
  fill(board,
    el("div", { class: "tiles" },
      tile("Opened today", metrics.cases_opened), tile("First response (median)", fmt(overall.first_response ? overall.first_response.median_s : metrics.first_response_time_s)),
      tile("SLA attainment", metrics.sla_attainment == null ? "—" : Math.round(metrics.sla_attainment * 100) + "%"),
      tile("CSAT today", csat.avg == null ? (metrics.csat == null ? "—" : metrics.csat.toFixed(1)) : csat.avg.toFixed(1) + " (" + csat.count + ")")),
    el("h3", { text: "Queues" }),
    table(["Queue", "Strategy", "Open", "Unassigned", "Longest wait", "Breached"], list(queues).map((q) => [q.name, q.strategy || "manual", q.open, q.unassigned, oldest[q.name] ? ago(oldest[q.name]) : "—", q.breached]), "dashboard-queues"),
    el("h3", { text: "Agents" }),
    table(["Agent", "Status", "Load", "Teams"], list(agents).map((a) => [a.name, a.status, `${a.open_assigned ?? 0} / ${a.capacity ?? "—"}`, (a.teams || []).join(", ")]), "dashboard-agents"));
}
const tile = (label, value) => el("div", { class: "tile" }, el("div", { class: "muted small", text: label }), el("div", { class: "big", text: value == null ? "—" : String(value) }));
function table(head, rows, testid) {
  return el("table", { "data-testid": testid }, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", { text: c == null ? "—" : String(c) }))))));
}
async function renderMerges() {
  const board = $("board");
  $("boardTitle").textContent = "Merge suggestions";
  let r;
  try { r = await api("/api/v1/merge-suggestions"); } catch (e) { return; }
  const items = list(r);
  fill(board, ...items.map((s) => {
    const side = (c) => el("div", { class: "side" }, el("b", { text: (c && c.name) || "Unnamed" }),
      el("div", {}, ...((c && c.identities) || []).map((i) => el("span", { class: "pill", text: `${i.kind}: ${i.value}` }))));
    return el("div", { class: "merge", "data-testid": "merge-suggestion" },
      el("div", { class: "pair" }, side(s.customer || s.customers?.[0]), el("span", { text: "⇄" }), side(s.other || s.customers?.[1])),
      el("div", { class: "muted small", text: s.reason || "" }),
      el("div", { class: "replybar" },
        el("button", { type: "button", text: "Merge", onclick: async () => { await api(`/api/v1/merge-suggestions/${s.id}/accept`, { method: "POST" }).catch(() => null); renderMerges(); } }),
        el("button", { type: "button", class: "secondary", text: "Not the same person", onclick: async () => { await api(`/api/v1/merge-suggestions/${s.id}/reject`, { method: "POST" }).catch(() => null); renderMerges(); } })));
  }), items.length ? null : el("div", { class: "empty", text: "No suggestions waiting." }));
  document.querySelector('[data-count="merges"]').textContent = items.length ? String(items.length) : "";
  $("boardTitle").textContent = "Merge suggestions";
}

// -- live ------------------------------------------------------------------------------------------

// EventSource cannot send headers: the stream opens with a single-use ticket asked for with the token.
async function listen() {
  if (S.events) { S.events.close(); S.events = null; }
  if (!S.token) return;
  let ticket;
  try { ({ ticket } = await api("/api/v1/events/ticket", { method: "POST", quiet: true })); }
  catch (e) { $("live").textContent = "offline"; setTimeout(listen, S.retry); S.retry = Math.min(S.retry * 2, 30000); return; }
  const source = new EventSource("/api/v1/events?ticket=" + encodeURIComponent(ticket));
  S.events = source;
  source.addEventListener("ready", () => { $("live").textContent = "live"; $("live").className = "live on"; S.retry = 1000; });
  source.addEventListener("case", (e) => { const d = JSON.parse(e.data); if (d.case_id) queuePatch(d.case_id); });
  source.addEventListener("timeline", (e) => {
    const d = JSON.parse(e.data);
    if (d.case_id) queuePatch(d.case_id);
    if (d.customer_id && d.customer_id === S.customerId) refreshCustomerSoon();
  });
  source.addEventListener("revoked", () => { source.close(); signedOut("Your access was revoked."); });
  source.onerror = () => {
    source.close();
    if (S.events !== source) return;
    $("live").textContent = "reconnecting…"; $("live").className = "live";
    setTimeout(listen, S.retry); S.retry = Math.min(S.retry * 2, 30000);
  };
}
// Live changes arrive in bursts: each changed case is fetched once per burst.
const pending = new Set();
let patchTimer = null, customerTimer = null, boardTimer = null;
function queuePatch(caseId) {
  pending.add(caseId);
  if (!patchTimer) patchTimer = setTimeout(async () => {
    patchTimer = null;
    const ids = [...pending]; pending.clear();
    if (S.view === "dashboard") { if (!boardTimer) boardTimer = setTimeout(() => { boardTimer = null; renderDashboard(); }, 1000); return; }
    for (const id of ids) await patchCase(id);
    updateCounts();
  }, 150);
}
function refreshCustomerSoon() {
  if (!customerTimer) customerTimer = setTimeout(() => { customerTimer = null; if (S.customerId) openCustomer(S.customerId); }, 300);
}

// -- keyboard ------------------------------------------------------------------------------------

let gPressed = false;
function onKey(e) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
  if (e.key === "Escape") { document.activeElement.blur(); document.body.classList.remove("case-open", "nav-open"); return; }
  if (typing) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && document.activeElement === $("replyInput")) $("replyForm").requestSubmit();
    return;
  }
  if (gPressed) {
    gPressed = false;
    const to = { m: "mine", u: "unassigned", a: "all" }[e.key];
    if (to) { e.preventDefault(); setView(to); }
    return;
  }
  const move = (d) => {
    if (!S.rows.length) return;
    S.selected = Math.max(0, Math.min(S.rows.length - 1, S.selected + d));
    renderList();
    const row = $("caseList").children[S.selected]; if (row) row.focus();
  };
  switch (e.key) {
    case "j": move(1); break;
    case "k": move(-1); break;
    case "Enter": if (S.selected >= 0 && S.rows[S.selected]) openCase(S.rows[S.selected].id); break;
    case "r": if (S.caseId) { e.preventDefault(); $("replyInput").focus(); } break;
    case "a": if (S.caseId && S.me.id) command("assign", { assignee: "me" }); break;
    case "e": if (S.caseData) command(S.caseData.status === "resolved" ? "reopen" : "resolve"); break;
    case "/": e.preventDefault(); $("searchInput").focus(); break;
    case "?": $("shortcuts").showModal(); break;
    case "g": gPressed = true; break;
    default: return;
  }
}

// -- wiring ------------------------------------------------------------------------------------------

$("signinForm").addEventListener("submit", signIn);
$("tokenSubmit").onclick = useToken;
$("signout").onclick = signOut;
$("help").onclick = () => $("shortcuts").showModal();
$("menuToggle").onclick = () => { const open = document.body.classList.toggle("nav-open"); $("menuToggle").setAttribute("aria-expanded", String(open)); };
$("back").onclick = () => document.body.classList.remove("case-open");
$("more").onclick = () => loadCases(true);
for (const b of document.querySelectorAll("#views > .view, #supervisorViews .view")) b.onclick = () => { S.viewChosen = true; setView(b.dataset.view); };
$("presence").onchange = async () => {
  try { await api("/api/v1/agents/me/status", { method: "PUT", body: { status: $("presence").value } }); toast("You are " + $("presence").value, "ok"); }
  catch (e) { /* toast shown */ }
};
$("assignMe").onclick = () => command("assign", { assignee: "me" });
$("assignee").onchange = () => command("assign", { assignee: $("assignee").value || null });
$("transfer").onchange = () => command("transfer", { queue: $("transfer").value });
$("priority").onchange = () => command("priority", { priority: $("priority").value });
$("resolve").onclick = () => command(S.caseData && S.caseData.status === "resolved" ? "reopen" : "resolve");
$("snooze").onclick = () => {
  const t = new Date(Date.now() + 24 * 3600e3); t.setMinutes(t.getMinutes() - t.getTimezoneOffset());
  $("snoozeUntil").value = t.toISOString().slice(0, 16);
  $("snoozeDialog").showModal();
};
$("snoozeDialog").addEventListener("close", () => {
  if ($("snoozeDialog").returnValue !== "ok" || !$("snoozeUntil").value) return;
  command("snooze", { until: new Date($("snoozeUntil").value).toISOString() });
});
$("replyForm").addEventListener("submit", sendReply);
$("canned").onchange = pickCanned;
$("replyInput").addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Tab") && expandShortcut()) e.preventDefault(); });
$("noteMode").onclick = () => {
  S.noteMode = !S.noteMode;
  $("noteMode").setAttribute("aria-pressed", String(S.noteMode));
  $("replyForm").classList.toggle("note", S.noteMode);
  $("replySend").textContent = S.noteMode ? "Add note" : "Send";
};
$("searchInput").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); search(); } });
$("searchInput").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, 400); });
document.addEventListener("keydown", onKey);
setInterval(() => { if (S.rows.length && S.view !== "dashboard") renderList(); }, 30000); // waiting times and SLA countdowns

if (S.token) start(); else signedOut();
