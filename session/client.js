// Weaver client runtime: opens the visitor's session, fills suspense slots, applies
// patches, dispatches pushed messages, sends events. No framework, no build step.
// Served as /_weaver/client.js, with CONFIG (where the session listens) filled in by Weaver.
const CONFIG = __WEAVER_CONFIG__;
const doc = document;
const state = { seq: 0, connection: "connecting", transport: "websocket", session: "" };
const handlers = new Map(); // channel -> Set of functions
const channels = new Set();
const pending = new Map(); // event id -> element
const outgoing = []; // events waiting for a connection
let socket = null;
let source = null;
let attempt = 0;
let wsFailures = 0;
let writes = [];
let scheduled = false;

// DOM writes are batched per animation frame.
function write(fn) {
  writes.push(fn);
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const batch = writes;
      writes = [];
      for (const w of batch) w();
    });
  }
}

function status(connection) {
  if (connection) state.connection = connection;
  write(() => {
    for (const el of doc.querySelectorAll("[data-weaver-status]")) {
      el.textContent = String(state[el.dataset.weaverStatus] ?? "");
    }
  });
  doc.dispatchEvent(new CustomEvent("weaver:status", { detail: { ...state } }));
}

function fill(id, html, how) {
  write(() => {
    const el = doc.getElementById(id);
    if (!el) return;
    if (html !== null) el.innerHTML = html;
    el.dataset.state = how;
  });
}

// Streaming slots: each keeps its HTML so far; the DOM is rewritten once per animation
// frame however many chunks came (a chunk may end inside a tag, so the whole is parsed).
const streams = new Map(); // slot id -> { html, dirty, progress }

function announce(id, type, detail) {
  doc.dispatchEvent(
    new CustomEvent("weaver:slot", { detail: { id, type, at: performance.now(), ...detail } }),
  );
}

function streamOf(id) {
  let s = streams.get(id);
  if (!s) {
    s = { html: null, dirty: false, progress: null };
    streams.set(id, s);
  }
  return s;
}

function render(id) {
  const s = streams.get(id);
  if (!s || s.dirty) return;
  s.dirty = true;
  write(() => {
    s.dirty = false;
    const el = doc.getElementById(id);
    if (!el) return;
    let body = el.querySelector(":scope > [data-weaver-stream]");
    if (s.html !== null && !body) {
      body = doc.createElement("div");
      body.setAttribute("data-weaver-stream", "");
      el.replaceChildren(body); // the first chunk replaces the fallback
    }
    if (body) body.innerHTML = s.html;
    let bar = el.querySelector(":scope > [data-weaver-progress]");
    if (s.progress && !bar) {
      bar = doc.createElement("div");
      bar.setAttribute("data-weaver-progress", "");
      bar.innerHTML = '<progress max="100"></progress> <span></span>';
      el.prepend(bar);
    }
    if (bar && !s.progress) bar.remove();
    else if (bar) {
      const p = bar.querySelector("progress");
      if (s.progress.percent == null) p.removeAttribute("value");
      else p.value = s.progress.percent;
      bar.dataset.stage = s.progress.stage || "";
      bar.querySelector("span").textContent = s.progress.message || s.progress.stage || "";
    }
    if (el.dataset.state !== s.state) el.dataset.state = s.state;
  });
}

function slotMessage(msg) {
  const s = streamOf(msg.id);
  switch (msg.type) {
    case "slot-append":
      s.html = (s.html || "") + msg.html;
      s.state = "streaming";
      break;
    case "slot-progress":
      s.progress = { stage: msg.stage, percent: msg.percent, message: msg.message };
      s.state = s.state || "streaming";
      doc.dispatchEvent(new CustomEvent("weaver:progress", { detail: { ...msg } }));
      break;
    case "slot-done":
      s.progress = null;
      s.state = "done";
      if (s.html === null) s.html = "";
      break;
    default: // slot-error
      s.progress = null;
      s.state = msg.reason === "cancelled" ? "cancelled" : "error"; // what came stays
  }
  announce(msg.id, msg.type, { reason: msg.reason });
  render(msg.id);
}

function cancel(id) {
  const msg = { type: "cancel", id };
  if (socket && socket.readyState === 1) socket.send(JSON.stringify(msg));
  else if (source) post(msg);
  else outgoing.push(msg);
}

function deliver(channel, data) {
  doc.dispatchEvent(new CustomEvent("weaver:message", { detail: { channel, data } }));
  for (const fn of handlers.get(channel) || []) fn(data);
  write(() => {
    for (const el of doc.querySelectorAll("[data-weaver-channel]")) {
      if (el.dataset.weaverChannel !== channel) continue;
      const html = typeof data === "string" ? null : data && data.html;
      const node = doc.createElement(el.hasAttribute("data-weaver-append") ? "li" : "span");
      if (html != null) node.innerHTML = html;
      else node.textContent = typeof data === "string" ? data : JSON.stringify(data);
      if (el.hasAttribute("data-weaver-append")) el.append(node);
      else el.replaceChildren(...node.childNodes);
    }
  });
}

function handle(msg) {
  if (msg.type === "hello") {
    // Another session than the one this page had (a second tab rotated the cookie): the
    // server starts it from its log's beginning, so counting starts afresh.
    if (state.session && msg.session !== state.session) state.seq = 0;
    state.session = msg.session;
    attempt = 0;
    status("open");
    return;
  }
  if (msg.seq <= state.seq) return; // already seen (a resume never repeats, but be safe)
  state.seq = msg.seq;
  switch (msg.type) {
    case "slot":
    case "patch":
      if (streams.has(msg.id)) streams.get(msg.id).html = msg.html; // a reset's HTML so far
      fill(msg.id, msg.html, msg.type);
      announce(msg.id, msg.type);
      break;
    case "slot-error":
      if (streams.has(msg.id)) slotMessage(msg);
      else {
        fill(msg.id, null, msg.reason === "cancelled" ? "cancelled" : "error"); // fallback stays
        announce(msg.id, msg.type, { reason: msg.reason });
      }
      break;
    case "slot-append":
    case "slot-progress":
    case "slot-done":
      slotMessage(msg);
      break;
    case "message":
      deliver(msg.channel, msg.data);
      break;
    case "ack": {
      const el = pending.get(msg.event);
      pending.delete(msg.event);
      if (el) write(() => {
        el.removeAttribute("data-weaver-pending");
        el.dataset.weaverAck = msg.ok ? "ok" : "error";
        if (!msg.ok) el.title = msg.error || "failed";
      });
      break;
    }
    case "bye":
      status("closing");
      break;
    // "reset": the current state follows as ordinary messages.
  }
  status();
}

function connect() {
  if (!CONFIG.ws || wsFailures >= 2 || !("WebSocket" in window)) return connectSSE();
  state.transport = "websocket";
  const ws = new WebSocket(CONFIG.ws.replace("{host}", location.hostname));
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    wsFailures = 0;
    const hello = { type: "hello", last_seq: state.seq };
    if (state.session) hello.session = state.session; // the session last_seq counts in
    ws.send(JSON.stringify(hello));
    for (const channel of channels) ws.send(JSON.stringify({ type: "subscribe", channel }));
    while (outgoing.length) ws.send(JSON.stringify(outgoing.shift()));
  };
  ws.onmessage = (e) => handle(JSON.parse(e.data));
  ws.onclose = (e) => {
    socket = null;
    if (!opened) wsFailures += 1;
    if (e.code === 1008) return status("refused"); // a bad session: reconnecting won't help
    retry();
  };
}

function connectSSE() {
  state.transport = "sse";
  const session = state.session ? "&session=" + encodeURIComponent(state.session) : "";
  const es = new EventSource(CONFIG.sse + "?last_seq=" + state.seq + session);
  source = es;
  es.onmessage = (e) => handle(JSON.parse(e.data));
  es.onopen = () => {
    while (outgoing.length) post(outgoing.shift());
  };
  es.onerror = () => {
    es.close();
    source = null;
    retry();
  };
}

// Reconnect with exponential backoff and jitter; resume from the last seq seen.
function retry() {
  status("reconnecting");
  const delay = Math.min(10000, 250 * 2 ** attempt) * (0.5 + Math.random());
  attempt += 1;
  setTimeout(connect, delay);
}

function post(msg) {
  fetch(CONFIG.sse, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(msg),
    credentials: "same-origin",
  }).catch(() => outgoing.push(msg));
}

function send(name, data, el, target) {
  const id = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
  const msg = { type: "event", id, name, target: target || "", data: data ?? null };
  if (el) {
    pending.set(id, el);
    el.setAttribute("data-weaver-pending", "");
  }
  if (socket && socket.readyState === 1) socket.send(JSON.stringify(msg));
  else if (source) post(msg);
  else outgoing.push(msg);
  return id;
}

function subscribe(channel) {
  channels.add(channel);
  if (socket && socket.readyState === 1) {
    socket.send(JSON.stringify({ type: "subscribe", channel }));
  }
}

function on(channel, fn) {
  if (!handlers.has(channel)) handlers.set(channel, new Set());
  handlers.get(channel).add(fn);
  subscribe(channel);
  return () => handlers.get(channel).delete(fn);
}

// Elements with data-weaver-event="name" send events; data-weaver-target="/fragment"
// names the slot the origin's answer should patch.
function targetOf(el) {
  const src = el.dataset.weaverTarget;
  if (!src) return "";
  const slot = doc.querySelector(`weaver-slot[data-src="${CSS.escape(src)}"]`);
  return slot ? slot.id : src;
}

function fromElement(e) {
  const stop = e.type === "click" && e.target.closest && e.target.closest("[data-weaver-cancel]");
  if (stop) {
    e.preventDefault();
    const name = stop.dataset.weaverCancel || "";
    const slot = doc.getElementById(name) || doc.querySelector(`weaver-slot[data-src="${CSS.escape(name)}"]`);
    cancel(slot ? slot.id : name); // a slot id, or the src of its fragment
    return;
  }
  const el = e.target.closest && e.target.closest("[data-weaver-event]");
  if (!el) return;
  const isForm = el.tagName === "FORM";
  if ((e.type === "submit") !== isForm) return;
  if (e.type === "change" && !("value" in el)) return;
  if (e.type === "click" && "value" in el && el.tagName !== "BUTTON") return;
  e.preventDefault();
  const data = isForm ? Object.fromEntries(new FormData(el)) : { ...el.dataset };
  if (!isForm && "value" in el && el.tagName !== "BUTTON") data.value = el.value;
  delete data.weaverEvent;
  delete data.weaverTarget;
  send(el.dataset.weaverEvent, data, el, targetOf(el));
}

for (const type of ["click", "submit", "change"]) doc.addEventListener(type, fromElement);

window.weaver = {
  send: (name, data) => send(name, data),
  subscribe,
  on,
  cancel,
  get state() {
    return { ...state };
  },
  // For tests and debugging: drop the connection as a network failure would.
  drop() {
    if (socket) socket.close(4000, "dropped by the page");
    if (source) source.onerror();
  },
};
status("connecting");
connect();
