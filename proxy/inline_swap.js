// The swap function of inline suspense delivery (proxy/inline.py), sent once per page
// after the paint. It fills a slot as session/client.js does: data-state "slot" for a
// whole slot; a [data-weaver-stream] body, "streaming" then "done" for a streaming one;
// a progress bar; "error" with the fallback (or what streamed) kept. Each step is
// announced as a `weaver:slot` event with `inline: true`. A template holds the slot's
// HTML as text; each template and call script removes itself.
window.__weaverSwap || (() => {
  const d = document, streams = new Map();
  const say = (id, type, reason) => d.dispatchEvent(new CustomEvent("weaver:slot",
    { detail: { id, type, reason, at: performance.now(), inline: true } }));
  window.__weaverSwap = (id, kind, value) => {
    const me = d.currentScript, el = d.getElementById(id);
    let html = "";
    if (kind < 2) {
      const t = me.previousElementSibling;
      html = t.content.textContent;
      t.remove();
    }
    me.remove();
    if (!el) return;
    const bar = el.querySelector(":scope > [data-weaver-progress]");
    if (kind === 0) {
      el.innerHTML = html;
      el.dataset.state = "slot";
      return say(id, "slot");
    }
    if (kind === 1) {
      const s = streams.get(id) || { html: "" };
      streams.set(id, s);
      s.html += html; // a chunk may end inside a tag: the whole is parsed
      let body = el.querySelector(":scope > [data-weaver-stream]");
      if (!body) {
        body = d.createElement("div");
        body.setAttribute("data-weaver-stream", "");
        el.replaceChildren(body);
        if (bar) el.prepend(bar);
      }
      body.innerHTML = s.html;
      el.dataset.state = "streaming";
      return say(id, "slot-append");
    }
    if (kind === 2) {
      let p = bar;
      if (!p) {
        p = d.createElement("div");
        p.setAttribute("data-weaver-progress", "");
        p.innerHTML = '<progress max="100"></progress> <span></span>';
        el.prepend(p);
      }
      const g = p.querySelector("progress");
      if (value.percent == null) g.removeAttribute("value");
      else g.value = value.percent;
      p.dataset.stage = value.stage || "";
      p.querySelector("span").textContent = value.message || value.stage || "";
      el.dataset.state = "streaming";
      d.dispatchEvent(new CustomEvent("weaver:progress", { detail: { id, ...value } }));
      return;
    }
    if (bar) bar.remove();
    if (kind === 3) {
      el.dataset.state = "done";
      return say(id, "slot-done");
    }
    el.dataset.state = "error";
    say(id, "slot-error", value);
  };
})();
