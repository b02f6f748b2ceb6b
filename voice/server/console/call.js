// One call: its record and events from GET /calls/{id}; a live call keeps following its SSE stream.
// Supervisors also see its referrals (GET /v1/referrals?call_id=) with a deadline countdown and
// an Acknowledge button.
"use strict";

(() => {
  const { t, el } = VC;
  const callId = document.body.dataset.callId;
  let record = null;
  const events = new Map(); // seq -> event
  let partial = null; // the utterance in progress (a `partial` event: not stored, no seq)
  const role = document.body.dataset.role;
  const mayReferrals = role === "supervisor" || role === "admin"; // the `referrals` permission
  let referrals = [];
  let ackError = "";

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  function describe(e) {
    switch (e.type) {
      case "transcript": return [t("transcript"), e.text];
      case "message": return [t("message"), e.text];
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
      case "referral": return [t("referral"), `${e.department} · ${VC.categoryName(e.category)} · ${t(`outcome_${e.outcome}`)} · ${t("deadline")} ${VC.hkTime(e.deadline, "full")}`];
      case "referral_breached": return [t("referral_breached"), `${e.department} · ${t("deadline")} ${VC.hkTime(e.deadline, "full")}`];
      case "referral_acked": return [t("referral_acked"), `${e.department} · ${e.acked_by}`];
      default: return null;
    }
  }

  function render() {
    if (!record) return;
    document.getElementById("call-id").textContent = record.id;
    const meta = [[t("status"), VC.statusName(record.status)], [t("started"), VC.hkTime(record.started_at, "full")],
      [t("ended_at"), VC.hkTime(record.ended_at, "full")], [t("agent"), record.agent || "—"],
      [t("protocol"), record.protocol]];
    const customer = record.meta && record.meta.customer_id;
    if (customer) {  // the customer's calls and messages on every channel
      meta.push([t("customer"), el("a", { id: "customer-link", href: `/console/customers/${encodeURIComponent(customer)}` },
        record.meta.customer && record.meta.customer.name ? `${record.meta.customer.name} (${customer})` : customer)]);
    }
    document.getElementById("meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const items = [...events.values()].sort((a, b) => a.seq - b.seq).map((e) => {
      const d = describe(e);
      return d && el("li", { class: e.type, "data-type": e.type },
        el("span", { class: "t" }, clock(e.start ?? e.duration)), el("strong", {}, d[0]), el("span", {}, d[1]));
    }).filter(Boolean);
    if (partial && record.status === "live") {
      items.push(el("li", { class: "partial", "data-type": "partial", title: t("partial_hint") },
        el("span", { class: "t" }, clock(partial.start)), el("strong", {}, t("partial")),
        el("span", {}, `${partial.text} …`)));
    }
    document.getElementById("timeline").replaceChildren(...(items.length ? items
      : [el("li", { class: "muted" }, t("no_events"))]));
  }

  async function loadReferrals() {
    if (!mayReferrals) return;
    try {
      referrals = (await VC.getJSON(`/v1/referrals?call_id=${encodeURIComponent(callId)}`)).referrals;
    } catch { return; /* the call itself still shows */ }
    renderReferrals();
  }

  async function acknowledge(id) {
    ackError = "";
    try {
      await VC.postJSON(`/v1/referrals/${encodeURIComponent(id)}/ack`);
    } catch (err) {
      ackError = `${t("ack_failed")}: ${err.message}`;
    }
    await loadReferrals();
    renderReferrals();
  }

  function renderReferrals() {
    const panel = document.getElementById("referrals-panel");
    panel.hidden = referrals.length === 0;
    if (panel.hidden) return;
    const now = Date.now();
    const head = el("tr", {}, [t("department"), t("category"), t("outcome"), t("deadline"), t("status"), ""]
      .map((h) => el("th", {}, h)));
    const rows = referrals.map((r) => el("tr", { "data-referral-id": r.id, class: `ref-${r.status}` },
      el("td", {}, el("strong", {}, r.department)),
      el("td", {}, VC.categoryName(r.category)),
      el("td", {}, t(`outcome_${r.outcome}`)),
      el("td", {}, `${VC.hkTime(r.deadline, "full")} `,
        r.status === "acked" ? null : el("span", { class: `countdown${r.deadline * 1000 < now ? " overdue" : ""}`, "data-deadline": r.deadline }, VC.countdown(r.deadline, now))),
      el("td", {}, VC.referralBadge(r)),
      el("td", {}, r.status === "acked" || role !== "supervisor" ? null
        : el("button", { type: "button", class: "ack", onclick: () => acknowledge(r.id) }, t("acknowledge")))));
    const table = document.getElementById("referrals");
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
    if (ackError) table.append(el("caption", { class: "error" }, ackError));
  }

  function follow() {
    const source = new EventSource(`/calls/${encodeURIComponent(callId)}/events`);
    const take = (m) => {
      const e = JSON.parse(m.data);
      if (e.type === "partial") {
        partial = e;
        render();
        return;
      }
      if (e.type === "transcript" && partial && partial.start === e.start) partial = null;
      events.set(e.seq, e);
      if (e.type === "end") {
        source.close(); // the stream is over; EventSource would otherwise reconnect and replay
        record.status = "ended";
      }
      if (e.type.startsWith("referral")) loadReferrals();
      render();
    };
    for (const type of ["partial", "message", "transcript", "suggestion", "alert", "handoff", "end", "warning", "error",
      "referral", "referral_breached", "referral_acked"]) {
      source.addEventListener(type, take);
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    VC.onLang(() => { render(); renderReferrals(); });
    loadReferrals();
    setInterval(VC.tickCountdowns, 1000); // in place: re-rendering would swallow a click on Acknowledge
    // a finished call has no stream: its breaches and others' acks show on the next look
    setInterval(() => { if (referrals.some((r) => r.status !== "acked")) loadReferrals(); }, 15000);
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
