// forkwell's status page, made live.  The page is whole without this script
// (read-only); with it, the page follows the supervisor's event stream and
// swaps in the cells the server rendered, so nothing is formatted twice.
// No framework, no other file, no inline script (the page's CSP forbids it).
"use strict";

(() => {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const live = document.getElementById("live");

  function setLive(text, cls) {
    if (live) {
      live.textContent = text;
      live.className = cls;
    }
  }

  function notice(text) {
    let p = document.getElementById("notice");
    if (!p) {
      p = document.createElement("p");
      p.id = "notice";
      p.setAttribute("role", "status");
      document.querySelector("header").after(p);
    }
    p.textContent = text;
  }

  // -- the fleet page --------------------------------------------------------
  const fleet = document.getElementById("fleet");
  if (fleet) {
    let rows = index();
    let refreshing = false;

    function index() {
      const found = new Map();
      for (const tr of document.querySelectorAll("tr[data-name]")) found.set(tr.dataset.name, tr);
      return found;
    }

    // The fleet changed shape (a reload, a scale): take the server's whole new main.
    async function refresh() {
      if (refreshing) return;
      refreshing = true;
      try {
        const answer = await fetch("/", { headers: { Accept: "text/html" }, credentials: "same-origin" });
        const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
        const main = doc.getElementById("fleet");
        if (main) {
          document.getElementById("fleet").replaceWith(main);
          rows = index();
        }
      } finally {
        refreshing = false;
      }
    }

    function apply(name, cells) {
      const tr = rows.get(name);
      if (!tr) {
        refresh();
        return;
      }
      let changed = false;
      for (const [field, html] of Object.entries(cells)) {
        const td = tr.querySelector(`td[data-f="${field}"]`);
        if (td && td.innerHTML !== html) {
          td.innerHTML = html; // rendered and escaped by the server
          if (field === "state" || field === "restarts" || field === "pid") changed = true;
        }
      }
      if (changed) {
        tr.classList.remove("changed");
        void tr.offsetWidth; // restart the animation
        tr.classList.add("changed");
      }
    }

    function addEvent(d) {
      const list = document.getElementById("events");
      if (!list) return;
      const li = document.createElement("li");
      const t = document.createElement("time");
      t.textContent = new Date(d.time * 1000).toLocaleTimeString([], { hour12: false });
      const who = document.createElement("b");
      who.textContent = d.instance;
      const state = document.createElement("span");
      state.className = `st st-${d.new}`;
      state.textContent = d.new;
      li.append(t, " ", who, ` ${d.old} \u2192 `, state);
      if (d.why) {
        const why = document.createElement("span");
        why.className = "why";
        why.textContent = ` ${d.why}`;
        li.append(why);
      }
      list.prepend(li);
      while (list.children.length > 50) list.lastElementChild.remove();
    }

    function health(ok, text) {
      const h = document.getElementById("health");
      if (h) {
        h.className = ok ? "ok" : "bad";
        if (text) h.textContent = text;
      }
    }

    const since = body.dataset.since || "0";
    const events = new EventSource(`/api/v1/events?cells=1&stats=1&since=${since}`);
    events.onopen = () => setLive("live", "ok");
    events.onerror = () => setLive("reconnecting\u2026", "bad");
    events.addEventListener("transition", (ev) => {
      const d = JSON.parse(ev.data);
      if (d.cells) apply(d.instance, d.cells);
      else if (!d.row) refresh();
      addEvent(d);
    });
    events.addEventListener("stats", (ev) => {
      const d = JSON.parse(ev.data);
      for (const [name, cells] of Object.entries(d.cells || {})) apply(name, cells);
      health(d.healthy, d.healthy ? "all up" : "not all up");
    });
    events.addEventListener("fleet", () => refresh());

    // Actions: the same forms, sent without leaving the page; the stream shows the outcome.
    document.addEventListener("submit", async (ev) => {
      const form = ev.target;
      if (!form.matches("form.act")) return;
      ev.preventDefault();
      const button = ev.submitter;
      if (!button || !button.formAction) return;
      const what = button.title || button.textContent;
      notice(`${what}\u2026`);
      try {
        const answer = await fetch(`${button.formAction}?wait=false`, {
          method: "POST",
          headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
          credentials: "same-origin",
        });
        const d = await answer.json();
        if (!answer.ok) notice(`${what}: refused: ${d.error ? d.error.message : answer.status}`);
        else if (d.ok) notice(`${what}: requested`);
        else notice(`${what}: ${d.results.filter((r) => !r.ok).map((r) => r.message).join("; ")}`);
      } catch (err) {
        notice(`${what}: ${err}`);
      }
    });
  }

  // -- the log view ------------------------------------------------------------
  const log = document.getElementById("log");
  if (log) {
    const q = document.getElementById("q");
    const follow = document.getElementById("follow");
    let partial = "";

    function matches(text) {
      const want = q ? q.value.toLowerCase() : "";
      return !want || text.toLowerCase().includes(want);
    }

    function filter() {
      for (const span of log.children) span.classList.toggle("hidden", !matches(span.textContent));
    }

    function scroll() {
      if (!follow || follow.checked) log.scrollTop = log.scrollHeight;
    }

    function append(text) {
      const lines = (partial + text).split("\n");
      partial = lines.pop();
      for (const line of lines) {
        const span = document.createElement("span");
        span.textContent = `${line}\n`;
        if (!matches(line)) span.classList.add("hidden");
        log.append(span);
      }
      while (log.children.length > 10000) log.firstElementChild.remove();
      scroll();
    }

    if (q) q.addEventListener("input", filter);
    scroll();
    const stream = new EventSource(log.dataset.follow);
    stream.onopen = () => setLive("following", "ok");
    stream.onerror = () => setLive("reconnecting\u2026", "bad");
    stream.addEventListener("output", (ev) => append(JSON.parse(ev.data).text));
  }
})();
