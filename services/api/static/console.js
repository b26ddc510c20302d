"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("sb-token") || "";
let currentCase = null, currentCustomer = null, events = null;
$("token").value = token;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) { if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v); }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { "authorization": "Bearer " + token, "content-type": "application/json", ...(options.headers || {}) } });
  if (!response.ok) { const body = await response.json().catch(() => ({})); throw new Error(body.detail || response.statusText); }
  return response.json();
}
const when = (t) => t ? new Date(t).toLocaleString() : "—";

async function loadCases() {
  const params = new URLSearchParams();
  if ($("queue").value) params.set("queue", $("queue").value);
  if ($("caseStatus").value) params.set("status", $("caseStatus").value);
  const { items } = await api("/api/v1/cases?" + params);
  const list = $("cases"); list.replaceChildren();
  if (!items.length) list.append(el("div", { class: "empty" }, "No cases."));
  for (const c of items) {
    list.append(el("div", { class: "row" + (c.id === currentCase ? " active" : ""), onclick: () => openCase(c.id) },
      el("span", { class: "pill " + c.status }, c.status), el("span", { class: "pill" }, c.channel), el("span", { class: "pill" }, c.priority),
      el("div", { class: "meta" }, "updated " + when(c.updated_at) + (c.assignee ? " · " + c.assignee : ""))));
  }
}
async function openCase(id) {
  currentCase = id;
  const c = await api("/api/v1/cases/" + id);
  await openCustomer(c.customer_id);
  const detail = $("caseDetail"); detail.replaceChildren(
    el("div", { class: "row" }, el("b", {}, "Case "), el("span", { class: "pill " + c.status }, c.status), el("span", { class: "pill" }, c.priority),
      el("div", { class: "meta" }, `queue ${c.queue} · SLA due ${when(c.sla_due_at)} · first response ${when(c.first_response_at)}`)),
    el("div", { class: "toolbar" },
      el("button", { class: "secondary", onclick: () => caseAction("assign", { assignee: "me" }) }, "Assign to me"),
      el("button", { class: "secondary", onclick: () => caseAction(c.status === "resolved" ? "reopen" : "resolve") }, c.status === "resolved" ? "Reopen" : "Resolve"),
      el("button", { class: "secondary", onclick: () => { const text = prompt("Internal note"); if (text) caseAction("notes", { text }); } }, "Note"),
      el("button", { class: "secondary", onclick: () => { const tag = prompt("Tag"); if (tag) caseAction("tags", { tags: [tag] }); } }, "Tag")),
    ...(c.notes || []).map((n) => el("div", { class: "row" }, el("div", { class: "meta" }, "note by " + n.author + " · " + when(n.created_at)), n.text)));
  $("reply").hidden = false;
  loadCases();
}
async function caseAction(action, body = {}) {
  await api(`/api/v1/cases/${currentCase}/${action}`, { method: "POST", body: JSON.stringify(body) });
  setTimeout(() => openCase(currentCase), 300);
}
async function openCustomer(id) {
  currentCustomer = id;
  const [p, t] = await Promise.all([api("/api/v1/customers/" + id), api(`/api/v1/customers/${id}/timeline?limit=100`)]);
  $("timelineTitle").textContent = "Timeline — " + (p.name || "unnamed customer");
  $("profile").className = "";
  $("profile").replaceChildren(el("div", { class: "row" }, el("b", {}, p.name || "unnamed"),
    el("div", { class: "meta" }, `${p.interaction_count} touchpoints · ${p.open_cases} open cases · first seen ${when(p.first_seen)} · last seen ${when(p.last_seen)}`),
    el("div", {}, ...p.identities.map((i) => el("span", { class: "pill" }, `${i.kind}: ${i.value}`))),
    el("div", {}, ...(p.claims || []).map((i) => el("span", { class: "pill", title: "unverified claim" }, `${i.kind}?: ${i.value}`)))));
  const box = $("timeline"); box.replaceChildren();
  for (const item of [...t.items].reverse()) {
    box.append(el("div", { class: "item " + item.direction }, el("div", { class: "meta" }, `${item.channel} · ${item.kind} · ${when(item.occurred_at)}`), item.text));
  }
  box.scrollTop = box.scrollHeight;
}
async function find() {
  const { items } = await api("/api/v1/customers?q=" + encodeURIComponent($("search").value));
  const box = $("found"); box.replaceChildren(...items.slice(0, 8).map((c) => el("div", { class: "row", onclick: () => { box.replaceChildren(); openCustomer(c.id); } }, c.name || c.id, el("div", { class: "meta" }, "last seen " + when(c.last_seen)))));
}
// EventSource cannot send an Authorization header, and a token in a URL leaks into logs: the stream
// is opened with a single-use ticket, asked for by POST with the token, and a new one on every reconnect.
let retryDelay = 1000;
async function listen() {
  if (events) { events.close(); events = null; }
  let ticket;
  try { ({ ticket } = await api("/api/v1/events/ticket", { method: "POST" })); }
  catch (e) { $("status").textContent = "signed out: " + e.message; return; }
  events = new EventSource("/api/v1/events?ticket=" + encodeURIComponent(ticket));
  events.addEventListener("ready", () => { $("status").textContent = "live"; retryDelay = 1000; });
  const refresh = () => { loadCases(); if (currentCustomer) openCustomer(currentCustomer); };
  events.addEventListener("timeline", refresh);
  events.addEventListener("case", refresh);
  events.addEventListener("revoked", () => { events.close(); $("status").textContent = "token revoked"; });
  events.onerror = () => {
    // The ticket was used: reconnecting with it would be refused, so ask for a new one.
    if (events) events.close();
    $("status").textContent = "reconnecting…";
    setTimeout(listen, retryDelay); retryDelay = Math.min(retryDelay * 2, 30000);
  };
}
async function connect() {
  token = $("token").value.trim(); sessionStorage.setItem("sb-token", token);
  try { await loadCases(); listen(); } catch (e) { $("status").textContent = "error: " + e.message; }
}
$("connect").onclick = connect;
$("queue").onchange = loadCases; $("caseStatus").onchange = loadCases;
$("find").onclick = find; $("search").onkeydown = (e) => { if (e.key === "Enter") find(); };
$("send").onclick = async () => {
  const text = $("replyText").value.trim(); if (!text || !currentCase) return;
  await api(`/api/v1/cases/${currentCase}/reply`, { method: "POST", body: JSON.stringify({ text }) });
  $("replyText").value = ""; setTimeout(() => openCustomer(currentCustomer), 500);
};
if (token) connect();
