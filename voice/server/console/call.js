// One call: its record and events from GET /calls/{id}; a live call keeps following its SSE stream.
"use strict";

(() => {
  const { t, el } = VC;
  const callId = document.body.dataset.callId;
  let record = null;
  const events = new Map(); // seq -> event

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  function describe(e) {
    switch (e.type) {
      case "transcript": return [t("transcript"), e.text];
      case "suggestion": {
        const best = e.suggestions && e.suggestions[0];
        const tag = e.resolved ? t("resolved") : t("unresolved");
        return [t("suggestion"), best ? `[${VC.categoryName(best.category)} · ${tag}] ${best.reply}` : tag];
      }
      case "alert": return [t("alert"), e.message || e.alert];
      case "handoff": return [t("handoff"), e.reason || t("handoff_needed")];
      case "end": return [t("end"), `${t("duration")} ${clock(e.duration)}`];
      case "warning": return [t("warning"), e.message];
      case "error": return [t("error_ev"), e.message];
      default: return null;
    }
  }

  function render() {
    if (!record) return;
    document.getElementById("call-id").textContent = record.id;
    const meta = [[t("status"), VC.statusName(record.status)], [t("started"), VC.hkTime(record.started_at, "full")],
      [t("ended_at"), VC.hkTime(record.ended_at, "full")], [t("agent"), record.agent || "—"],
      [t("protocol"), record.protocol]];
    document.getElementById("meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const items = [...events.values()].sort((a, b) => a.seq - b.seq).map((e) => {
      const d = describe(e);
      return d && el("li", { class: e.type, "data-type": e.type },
        el("span", { class: "t" }, clock(e.start ?? e.duration)), el("strong", {}, d[0]), el("span", {}, d[1]));
    }).filter(Boolean);
    document.getElementById("timeline").replaceChildren(...(items.length ? items
      : [el("li", { class: "muted" }, t("no_events"))]));
  }

  function follow() {
    const source = new EventSource(`/calls/${encodeURIComponent(callId)}/events`);
    const take = (m) => {
      const e = JSON.parse(m.data);
      events.set(e.seq, e);
      if (e.type === "end") {
        source.close(); // the stream is over; EventSource would otherwise reconnect and replay
        record.status = "ended";
      }
      render();
    };
    for (const type of ["transcript", "suggestion", "alert", "handoff", "end", "warning", "error"]) {
      source.addEventListener(type, take);
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    VC.onLang(render);
    try {
      record = await VC.getJSON(`/calls/${encodeURIComponent(callId)}`);
    } catch (err) {
      document.getElementById("timeline").replaceChildren(el("li", { class: "error" },
        `${t("load_failed")}: ${err.status === 404 ? "404" : err.message}`));
      return;
    }
    for (const e of record.events) events.set(e.seq, e);
    render();
    if (record.status === "live") follow();
  });
})();
