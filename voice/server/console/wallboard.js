// Live wallboard: every live call's transcript, suggestion, agitation and alerts from GET /events;
// open and breached referrals (GET /v1/referrals) with their countdowns, breached first.
"use strict";

(() => {
  const { t, el } = VC;
  const calls = new Map(); // call_id -> state
  const feed = []; // latest alerts and handoffs, newest first
  const ENDED_KEEP_MS = 120 * 1000; // an ended call stays on the board this long
  const TRANSCRIPT_LINES = 30;
  let conn = "reconnecting";
  let health = {};
  let referrals = null; // open and breached, from /v1/referrals; null until loaded

  function state(callId) {
    if (!calls.has(callId)) {
      calls.set(callId, { id: callId, agent: null, startedAt: Date.now(), lines: [], seqs: new Set(),
        suggestion: null, level: 0, alerts: [], handoff: null, ended: null });
    }
    return calls.get(callId);
  }

  // A call first seen on the stream: its record (agent, start time) and any events missed so far.
  async function fetchRecord(callId) {
    try {
      const r = await VC.getJSON(`/calls/${encodeURIComponent(callId)}`);
      const c = state(callId);
      c.agent = r.agent;
      c.startedAt = r.started_at * 1000;
      for (const e of r.events) apply(e);
      scheduleRender();
    } catch { /* the card still shows what streams in */ }
  }

  function apply(e) {
    if (!e || !e.call_id) return;
    if (e.type.startsWith("referral")) {
      referralEvent(e); // a finished call's breach must not bring its card back
      return;
    }
    if (!calls.has(e.call_id)) fetchRecord(e.call_id);
    const c = state(e.call_id);
    if (e.seq !== undefined) {
      if (c.seqs.has(e.seq)) return; // replayed from /calls/{id} and then seen live
      c.seqs.add(e.seq);
    }
    switch (e.type) {
      case "partial": // what the caller is saying now, greyed until the utterance's transcript
        c.partial = { start: e.start, text: e.text };
        break;
      case "message": // a text channel's customer message shows as a call's transcript line
      case "transcript":
        if (c.partial && c.partial.start === e.start) c.partial = null;
        c.lines.push({ start: e.start, text: e.text });
        c.lines.sort((a, b) => a.start - b.start);
        if (c.lines.length > TRANSCRIPT_LINES) c.lines.shift();
        break;
      case "suggestion":
        c.suggestion = e;
        if (e.sentiment && Number.isFinite(e.sentiment.level)) c.level = e.sentiment.level;
        break;
      case "alert": {
        const level = e.details && e.details.level;
        if (Number.isFinite(level)) c.level = Math.max(c.level, level);
        c.alerts.unshift({ at: Date.now(), message: e.message || e.alert });
        c.alerts.length = Math.min(c.alerts.length, 5);
        pushFeed(e.call_id, `${t("alert")}: ${e.message || e.alert}`);
        break;
      }
      case "handoff":
        c.handoff = e.reason || t("handoff_needed");
        pushFeed(e.call_id, `${t("handoff")}: ${c.handoff}`);
        break;
      case "end":
        c.ended = Date.now();
        break;

      case "segment": // a new call shows as soon as its first utterance closes
        break;
      default:
        return;
    }
    scheduleRender();
  }

  function referralEvent(e) {
    if (e.type === "referral") {
      pushFeed(e.call_id, `${t("referral")}: ${e.department} · ${VC.categoryName(e.category)}`);
    } else if (e.type === "referral_breached") {
      pushFeed(e.call_id, `${t("referral_breached")}: ${e.department}`);
    }
    loadReferrals();
    renderSide();
  }

  function pushFeed(callId, text) {
    feed.unshift({ at: Date.now(), callId, text });
    feed.length = Math.min(feed.length, 30);
  }

  let pending = false;
  function scheduleRender() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  }

  function agitation(level) {
    const bars = [1, 2, 3].map((i) => el("i", { class: level >= i ? `on${level}` : "" }));
    return el("span", { class: "agitation", title: `${t("agitation")} ${level}/3` },
      el("span", { class: "muted" }, `${t("agitation")} `), bars);
  }

  function card(c) {
    const cls = ["call-card", `level-${c.level}`, c.handoff ? "handoff" : "", c.ended ? "ended" : ""];
    const s = c.suggestion;
    const best = s && s.suggestions && s.suggestions[0];
    return el("article", { class: cls.join(" "), "data-call-id": c.id },
      el("div", { class: "head" },
        el("a", { href: `/console/calls/${encodeURIComponent(c.id)}` }, c.id),
        el("span", { class: `badge ${c.ended ? "" : "ok"}` }, c.ended ? t("ended") : t("live"))),
      el("div", { class: "muted" },
        `${t("started")} ${VC.hkTime(c.startedAt, "time")}${c.agent ? ` · ${t("agent")} ${c.agent}` : ""}`),
      c.handoff ? el("div", { class: "handoff-banner" }, `${t("handoff_needed")} · ${c.handoff}`) : null,
      agitation(c.level),
      best ? el("div", { class: "suggestion" },
        el("strong", {}, `${t("suggestion")} · ${VC.categoryName(best.category)} `),
        el("span", { class: `badge ${s.resolved ? "ok" : "warn"}` }, s.resolved ? t("resolved") : t("unresolved")),
        el("div", {}, best.reply))
        // the last turn matched no entry: say so rather than keep showing an older reply
        : s ? el("div", { class: "suggestion none" }, el("strong", {}, t("suggestion")), " ",
          el("span", { class: "badge warn" }, t("no_entry"))) : null,
      c.alerts.length ? el("ul", { class: "alerts-list" },
        c.alerts.map((a) => el("li", {}, `${VC.hkTime(a.at, "time")} ${a.message}`))) : null,
      el("div", { class: "transcript" }, c.lines.map((l) => el("p", { class: "line" },
        el("span", { class: "t" }, clock(l.start)), l.text)),
        c.partial && !c.ended ? el("p", { class: "line partial", title: t("partial_hint") },
          el("span", { class: "t" }, clock(c.partial.start)), c.partial.text, " …") : null));
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  function render() {
    const now = Date.now();
    for (const [id, c] of calls) if (c.ended && now - c.ended > ENDED_KEEP_MS) calls.delete(id);
    // What needs a supervisor first: handoffs, then agitation, then the newest call.
    const order = [...calls.values()].sort((a, b) => (!!b.handoff - !!a.handoff) || (!!a.ended - !!b.ended)
      || (b.level - a.level) || (b.startedAt - a.startedAt));
    const grid = document.getElementById("calls");
    const transcripts = new Map([...grid.querySelectorAll(".call-card")].map((n) =>
      [n.dataset.callId, n.querySelector(".transcript")]));
    grid.replaceChildren(...order.map((c) => {
      const node = card(c);
      const old = transcripts.get(c.id);
      const box = node.querySelector(".transcript");
      // keep following the newest line unless the supervisor scrolled up to read
      requestAnimationFrame(() => {
        const atBottom = !old || old.scrollTop + old.clientHeight >= old.scrollHeight - 8;
        box.scrollTop = atBottom ? box.scrollHeight : old.scrollTop;
      });
      return node;
    }));
    document.getElementById("no-calls").hidden = calls.size > 0;
    renderSide();
  }

  function renderSide() {
    const c = document.getElementById("conn");
    c.className = `conn ${conn}`;
    c.textContent = `● ${t(`conn_${conn}`)}`;
    const live = [...calls.values()].filter((x) => !x.ended).length;
    const rows = [
      [t("server"), health.server === "ok" ? t("ok") : health.server ? t("conn_down") : "…"],
      [t("live_calls"), String(live)],
      [t("queue_segments"), health.queue ?? "—"],
      [t("queue_seconds"), health.queueSeconds ?? "—"],
      [t("overloaded"), health.overloaded === undefined ? "—" : health.overloaded ? t("yes") : t("no")],
      [t("subscribers"), health.subscribers ?? "—"],
    ];
    document.getElementById("health").replaceChildren(...rows.flatMap(([k, v]) =>
      [el("dt", {}, k), el("dd", {}, v)]));
    const list = document.getElementById("feed");
    list.replaceChildren(...(feed.length ? feed.map((f) => el("li", {},
      el("span", { class: "muted" }, `${VC.hkTime(f.at, "time")} `),
      el("a", { href: `/console/calls/${encodeURIComponent(f.callId)}` }, f.callId), ` ${f.text}`))
      : [el("li", { class: "muted" }, t("no_alerts"))]));
  }

  async function loadReferrals() {
    try {
      const [open, breached] = await Promise.all(["open", "breached"].map((status) =>
        VC.getJSON(`/v1/referrals?status=${status}`)));
      referrals = [...breached.referrals, ...open.referrals]; // each by deadline, earliest first
    } catch { /* kept as it was; the next poll tries again */ }
    renderReferrals();
  }

  function renderReferrals() {
    const list = document.getElementById("referrals");
    if (referrals === null) return;
    const now = Date.now();
    list.replaceChildren(...(referrals.length ? referrals.map((r) => el("li", { class: `ref-${r.status}` },
      VC.referralBadge(r), " ", el("strong", {}, r.department), ` ${VC.categoryName(r.category)} `,
      el("a", { href: `/console/calls/${encodeURIComponent(r.call_id)}` }, r.call_id), el("br"),
      el("span", { class: "muted" }, `${t("deadline")} ${VC.hkTime(r.deadline, "time")} `),
      el("span", { class: `countdown${r.deadline * 1000 < now ? " overdue" : ""}`, "data-deadline": r.deadline },
        VC.countdown(r.deadline, now))))
      : [el("li", { class: "muted" }, t("no_referrals"))]));
  }

  function metric(text, name) {
    const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, "m"));
    return m ? Number(m[1]) : undefined;
  }

  async function pollHealth() {
    try {
      const r = await fetch("/healthz", { credentials: "same-origin" });
      health.server = r.ok ? "ok" : "down";
    } catch {
      health.server = "down";
    }
    try { // supervisors may read /metrics; others just see dashes
      const r = await fetch("/metrics", { credentials: "same-origin" });
      if (r.ok) {
        const text = await r.text();
        health.queue = metric(text, "voice_asr_queue_segments");
        const secs = metric(text, "voice_asr_queue_estimated_seconds");
        health.queueSeconds = secs === undefined ? undefined : secs.toFixed(1);
        health.overloaded = metric(text, "voice_overloaded") === 1;
        health.subscribers = metric(text, "voice_subscribers");
      }
    } catch { /* shown as dashes */ }
    renderSide();
  }

  async function loadLive() {
    // calls already running when the page opened: their events so far, then the live stream
    try {
      const { calls: records } = await VC.getJSON("/calls");
      for (const r of records.filter((x) => x.status === "live").slice(0, 50)) {
        if (!calls.has(r.id)) await fetchRecord(r.id);
      }
    } catch { /* the live stream still fills the board */ }
    scheduleRender();
  }

  function connect() {
    const source = new EventSource("/events");
    source.onopen = () => { conn = "live"; renderSide(); };
    source.onerror = () => {
      // EventSource retries by itself while CONNECTING; CLOSED means the server refused us
      conn = source.readyState === EventSource.CLOSED ? "down" : "reconnecting";
      renderSide();
      if (source.readyState === EventSource.CLOSED) {
        // refused (an expired session, say): /calls sends a signed-out browser to the sign-in page
        setTimeout(() => VC.getJSON("/calls").finally(connect), 5000);
      }
    };
    for (const type of ["partial", "message", "transcript", "suggestion", "alert", "handoff", "end", "segment",
      "referral", "referral_breached", "referral_acked"]) {
      source.addEventListener(type, (m) => apply(JSON.parse(m.data)));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    VC.onLang(() => { render(); renderReferrals(); });
    render();
    connect();
    loadReferrals();
    setInterval(loadReferrals, 10000); // breaches of finished calls, acks made elsewhere
    setInterval(VC.tickCountdowns, 1000);
    loadLive();
    pollHealth();
    setInterval(pollHealth, 5000);
    setInterval(scheduleRender, 10000); // drop calls that ended a while ago
  });
})();
