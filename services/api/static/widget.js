/* Switchboard chat widget: the website's chat launcher and conversation.
 *
 * Embed: <script src="https://HOST/widget.js" data-switchboard-url="https://HOST" async></script>
 * optional data-user-id, data-email, data-phone, data-identity-hash (see the README: verified identities).
 *
 * Hand-written, no dependencies, served as is (no build step). It talks only to data-switchboard-url:
 * POST /channels/chat/sessions (CORS, no cookies) and the WebSocket /channels/chat/ws. The session
 * (token, the conversation, the last agent reply's stream sequence) lives in localStorage, so it
 * survives page loads; a reconnect asks for the replies after that sequence (`after=`), so what was
 * sent while away shows up once, in order. The visitor's messages carry a client_id; one not yet
 * acknowledged is sent again (same client_id, stored once by the gateway) when the socket reopens.
 *
 * Safe inside any page: everything lives in an open shadow root (page CSS does not reach in), text
 * goes in with textContent only, and the style is a constructed stylesheet (CSSOM, not subject to a
 * page's style-src) with a fallback <style> carrying this script's nonce.
 */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector("script[data-switchboard-url]");
  if (!script || window.__switchboardChat) return;
  window.__switchboardChat = true;
  var data = script.dataset;
  var base = (data.switchboardUrl || new URL(script.src).origin).replace(/\/+$/, "");
  var identity = {};
  [["userId", "user_id"], ["email", "email"], ["phone", "phone"], ["identityHash", "identity_hash"]].forEach(function (p) {
    if (data[p[0]]) identity[p[1]] = data[p[0]];
  });
  var KEY = "switchboard-chat:" + base;
  var MAX_KEPT = 200;

  // -- state, kept in localStorage ---------------------------------------------------------------
  var state = load();
  function fresh() { return { uid: identity.user_id || "", token: null, session: null, after: 0, messages: [] }; }
  function load() {
    try {
      var s = JSON.parse(localStorage.getItem(KEY) || "null");
      // Another visitor signed in (or out) on this browser: their conversation is not this one's.
      if (s && s.uid === (identity.user_id || "") && Array.isArray(s.messages)) return s;
    } catch (e) { /* unreadable or no storage: start afresh */ }
    return fresh();
  }
  function save() {
    if (state.messages.length > MAX_KEPT) state.messages = state.messages.slice(-MAX_KEPT);
    try { localStorage.setItem(KEY, JSON.stringify(state)); } catch (e) { /* storage full or denied */ }
  }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16); crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
  }

  // -- DOM ---------------------------------------------------------------------------------------
  var CSS = ":host{all:initial}" +
    ".sb{position:fixed;right:20px;bottom:20px;z-index:2147483000;font:14px/1.4 system-ui,sans-serif;color:#1d2330}" +
    ".launcher{display:flex;align-items:center;justify-content:center;width:56px;height:56px;border-radius:50%;border:0;background:#2456d6;color:#fff;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);float:right}" +
    ".launcher:focus-visible,button:focus-visible,textarea:focus-visible{outline:3px solid #f5a623;outline-offset:2px}" +
    ".panel{display:flex;flex-direction:column;width:340px;max-width:calc(100vw - 40px);height:440px;max-height:calc(100vh - 110px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);margin-bottom:12px;overflow:hidden}" +
    ".panel[hidden]{display:none}" +
    "header{display:flex;align-items:center;justify-content:space-between;padding:10px 14px;background:#2456d6;color:#fff;font-weight:600}" +
    ".close{background:none;border:0;color:#fff;font-size:20px;cursor:pointer;line-height:1}" +
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f5f7fb}" +
    ".msg{max-width:80%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere}" +
    ".visitor{align-self:flex-end;background:#2456d6;color:#fff;border-bottom-right-radius:3px}" +
    ".agent{align-self:flex-start;background:#fff;border:1px solid #dde3ee;border-bottom-left-radius:3px}" +
    ".visitor[data-state=pending]{opacity:.6}" +
    ".status{margin:0;padding:4px 12px;font-size:12px;color:#5b6475;min-height:16px}" +
    "form{display:flex;gap:8px;padding:10px;border-top:1px solid #dde3ee}" +
    "textarea{flex:1;resize:none;font:inherit;padding:7px 9px;border:1px solid #c5cddb;border-radius:8px}" +
    ".send{border:0;border-radius:8px;background:#2456d6;color:#fff;padding:0 14px;font:inherit;cursor:pointer}" +
    ".vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text) node.textContent = text;
    return node;
  }
  var host = document.createElement("switchboard-chat");
  var root = host.attachShadow({ mode: "open" });
  try {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } catch (e) {
    var style = el("style", script.nonce ? { nonce: script.nonce } : {});
    style.textContent = CSS;
    root.appendChild(style);
  }
  var wrap = el("div", { "class": "sb" });
  var panel = el("section", { "class": "panel", id: "sb-panel", role: "dialog", "aria-label": "Chat with us", hidden: "" });
  var header = el("header", {});
  var title = el("span", { id: "sb-title" }, "Chat with us");
  var close = el("button", { "class": "close", type: "button", "aria-label": "Close chat" }, "\u00d7");
  var log = el("div", { "class": "log", role: "log", "aria-live": "polite", "aria-relevant": "additions", "aria-labelledby": "sb-title", tabindex: "0" });
  var status = el("p", { "class": "status", role: "status", "data-testid": "widget-status" });
  var form = el("form", {});
  var label = el("label", { "class": "vh", "for": "sb-input" }, "Your message");
  var input = el("textarea", { id: "sb-input", rows: "2", maxlength: "4000", placeholder: "Write a message\u2026", "data-testid": "widget-input" });
  var send = el("button", { "class": "send", type: "submit", "data-testid": "widget-send" }, "Send");
  var launcher = el("button", { "class": "launcher", type: "button", "aria-label": "Open chat", "aria-expanded": "false", "aria-controls": "sb-panel", "data-testid": "widget-launcher" });
  // A speech bubble drawn with SVG (no icon font, no emoji font needed, nothing fetched).
  var SVG = "http://www.w3.org/2000/svg";
  var icon = document.createElementNS(SVG, "svg");
  icon.setAttribute("viewBox", "0 0 24 24"); icon.setAttribute("width", "26"); icon.setAttribute("height", "26");
  icon.setAttribute("aria-hidden", "true"); icon.setAttribute("focusable", "false");
  var bubble = document.createElementNS(SVG, "path");
  bubble.setAttribute("fill", "currentColor");
  bubble.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
  icon.appendChild(bubble);
  launcher.appendChild(icon);
  header.append(title, close);
  form.append(label, input, send);
  panel.append(header, log, status, form);
  wrap.append(panel, launcher);
  root.appendChild(wrap);

  var shown = {};  // message key -> element
  var unread = 0;
  function render(m, before) {
    var node = shown[m.k];
    if (!node) {
      node = el("div", { "class": "msg " + m.from, "data-testid": "widget-message", "data-from": m.from });
      node.textContent = m.text;
      shown[m.k] = node;
      log.insertBefore(node, before && shown[before.k] || null);
      log.scrollTop = log.scrollHeight;
    }
    node.setAttribute("data-state", m.pending ? "pending" : "sent");
    if (m.pending) node.setAttribute("aria-label", "Sending: " + m.text); else node.removeAttribute("aria-label");
  }
  state.messages.forEach(render);

  function setStatus(text, connection) {
    status.textContent = text;
    if (connection) status.setAttribute("data-connection", connection);  // for scripts and tests
  }
  function isOpen() { return !panel.hidden; }
  function updateLauncher() {
    launcher.setAttribute("aria-expanded", String(isOpen()));
    launcher.setAttribute("aria-label", isOpen() ? "Close chat" : unread ? "Open chat (" + unread + " new)" : "Open chat");
  }
  function open() {
    panel.hidden = false; unread = 0; updateLauncher();
    log.scrollTop = log.scrollHeight;
    input.focus();
    ensureSession();
  }
  function hide() { panel.hidden = true; updateLauncher(); launcher.focus(); }
  launcher.addEventListener("click", function () { if (isOpen()) hide(); else open(); });
  close.addEventListener("click", hide);
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") hide(); });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });

  // -- session -----------------------------------------------------------------------------------
  var creating = null, refused = false;
  function ensureSession() {
    if (state.token) { connect(); return Promise.resolve(); }
    if (creating || refused) return creating || Promise.resolve();
    setStatus("Connecting\u2026");
    creating = fetch(base + "/channels/chat/sessions", {
      method: "POST", mode: "cors", credentials: "omit", headers: { "content-type": "application/json" },
      body: JSON.stringify(identity)
    }).then(function (r) {
      if (r.status >= 400 && r.status < 500 && r.status !== 429) {
        // The page's data-* attributes are refused (a wrong identity_hash, say): retrying cannot help.
        refused = true;
        if (window.console) console.warn("switchboard chat: session refused (" + r.status + ")");
        throw new Error(String(r.status));
      }
      if (!r.ok) throw new Error(String(r.status));
      return r.json();
    }).then(function (s) {
      state.token = s.token; state.session = s.session_id; save();
      connect();
    }).catch(function () {
      if (refused) { setStatus("Chat is unavailable.", "refused"); return; }
      setStatus("Chat is unavailable right now. Your message will be sent when it is back.");
      retryLater();
    }).then(function () { creating = null; });
    return creating;
  }

  // -- socket: live replies, acks, reconnect with backoff ----------------------------------------
  var ws = null, attempts = 0, timer = null, sentHere = {}, failures = 0;
  function connect() {
    if (ws || !state.token) return;
    clearTimeout(timer); timer = null;
    var url = base.replace(/^http/, "ws") + "/channels/chat/ws?token=" + encodeURIComponent(state.token) + "&after=" + state.after;
    var sock;
    try { sock = new WebSocket(url); } catch (e) { retryLater(); return; }
    ws = sock;
    setStatus(status.textContent, "connecting");
    var opened = false;
    sock.onopen = function () {
      opened = true; attempts = 0; failures = 0; sentHere = {};
      setStatus("", "open");
      flush();
    };
    sock.onmessage = function (e) {
      var f;
      try { f = JSON.parse(e.data); } catch (err) { return; }
      onFrame(f);
    };
    sock.onclose = function (e) {
      if (ws !== sock) return;
      ws = null;
      if (e.code === 1008) {  // the session was erased: so is the conversation kept here
        state = fresh(); save();
        log.replaceChildren(); shown = {};
        setStatus("This conversation has ended.", "ended");
        return;
      }
      setStatus("Reconnecting\u2026", "closed");
      // A browser is not told why a handshake failed: after a few, ask whether the session still exists.
      if (!opened && ++failures >= 3 && navigator.onLine !== false) checkSession(); else retryLater();
    };
  }
  function checkSession() {
    var token = state.token;
    fetch(base + "/channels/chat/session", {
      mode: "cors", credentials: "omit", cache: "no-store", headers: { authorization: "Bearer " + token }
    }).then(function (r) {
      if (r.status === 401 && state.token === token) {
        // Expired: a new session carries on; what is not yet sent goes with it, what was shown stays.
        state.token = null; state.session = null; state.after = 0; failures = 0; save();
        ensureSession();
      } else retryLater();
    }).catch(retryLater);
  }
  function retryLater() {
    if (timer) return;
    var delay = Math.min(15000, 500 * Math.pow(2, attempts++));
    timer = setTimeout(function () { timer = null; if (state.token) connect(); else if (pending().length) ensureSession(); },
      delay / 2 + Math.random() * delay / 2);
  }
  window.addEventListener("online", function () {
    if (ws) return;
    clearTimeout(timer); timer = null; attempts = 0;
    if (state.token) connect(); else if (pending().length) ensureSession();
  });

  function onFrame(f) {
    if (f.type === "message") {
      if (typeof f.seq === "number" && f.seq <= state.after) return;  // had it already
      if (typeof f.seq === "number") state.after = f.seq;
      var k = "a:" + (f.id || f.seq);
      if (!state.messages.some(function (m) { return m.k === k; })) {
        var m = { k: k, from: "agent", text: String(f.text || "") };
        // Shown in the order the service has them: before what the visitor wrote that it has not yet taken.
        var first = pending()[0];
        var at = first ? state.messages.indexOf(first) : state.messages.length;
        state.messages.splice(at, 0, m);
        render(m, first);
        if (!isOpen()) { unread++; updateLauncher(); }
      }
      save();
    } else if (f.type === "ack") {
      state.messages.forEach(function (m) {
        if (m.k === "c:" + f.client_id && m.pending) { m.pending = false; render(m); }
      });
      save();
    } else if (f.type === "error" && f.error === "rate_limited" && f.client_id) {
      delete sentHere[f.client_id];
      setTimeout(flush, Math.max(1, f.retry_after || 1) * 1000);
    }
  }
  function pending() { return state.messages.filter(function (m) { return m.pending; }); }
  function flush() {
    if (!ws || ws.readyState !== 1) return;
    pending().forEach(function (m) {
      if (sentHere[m.client_id]) return;
      sentHere[m.client_id] = true;
      ws.send(JSON.stringify({ type: "message", text: m.text, client_id: m.client_id }));
    });
  }
  function submit() {
    var text = input.value.trim();
    if (!text) return;
    var id = newId();
    var m = { k: "c:" + id, client_id: id, from: "visitor", text: text, pending: true };
    state.messages.push(m);
    save();
    render(m);
    input.value = "";
    input.focus();
    if (state.token) { connect(); flush(); } else ensureSession();
  }

  // -- other tabs of the same site share the session: keep their copies of the conversation merged --
  window.addEventListener("storage", function (e) {
    if (e.key !== KEY || !e.newValue) return;
    var other;
    try { other = JSON.parse(e.newValue); } catch (err) { return; }
    if (!other || other.uid !== state.uid || !Array.isArray(other.messages)) return;
    if (state.token && other.token !== state.token) return;  // not ours (or erased there: our socket hears it too)
    var known = {}, extra = false;
    other.messages.forEach(function (m) { known[m.k] = m; });
    state.messages.forEach(function (m) {
      var o = known[m.k];
      if (!o) { other.messages.push(m); extra = true; } else if (o.pending && !m.pending) { o.pending = false; extra = true; }
    });
    if (state.after > other.after) { other.after = state.after; extra = true; }
    var had = state.token;
    state = other;
    state.messages.forEach(function (m) { render(m); });
    if (extra) save();  // only what the other tab lacked: the copies converge, no write ping-pong
    if (!had && state.token) connect();
  });

  (document.body || document.documentElement).appendChild(host);
  if (state.token) connect();  // replies arrive (and count as unread) while the panel is closed
})();
