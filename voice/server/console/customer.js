// One customer across channels: GET /v1/customers/{id} lists their calls and text conversations
// (WhatsApp, WeChat, web chat) oldest first, each with its messages or transcripts, suggestions,
// alerts and handoffs, and the context (language, unresolved run, last topics) their next
// conversation starts from. Reloads every 5 s while any conversation is live.
"use strict";

VC.extend({
  zh: {
    customer_title: "客戶時間線", carried_context: "延續的對話背景", conversations_title: "各渠道的通話及訊息",
    message: "訊息", language: "語言", unresolved_run: "連續未解決", order: "訂單", last_topics: "最近話題",
    context_none: "沒有 {0} 小時內的對話背景。", updated: "更新", channel: "渠道", open_call: "開啟",
    channel_web: "網上對話", channel_whatsapp: "WhatsApp", channel_wechat: "微信", channel_call: "電話",
    no_conversations: "此客戶沒有通話或訊息記錄。", customer_timeline: "客戶時間線",
    lang_yue: "廣東話", lang_cmn: "普通話", lang_en: "英文", answered_by_context: "承接之前的問題",
  },
  en: {
    customer_title: "Customer timeline", carried_context: "Context carried over", conversations_title: "Calls and messages on every channel",
    message: "Message", language: "Language", unresolved_run: "Unresolved in a row", order: "Order", last_topics: "Last topics",
    context_none: "No context from the last {0} hours.", updated: "Updated", channel: "Channel", open_call: "Open",
    channel_web: "Web chat", channel_whatsapp: "WhatsApp", channel_wechat: "WeChat", channel_call: "Phone call",
    no_conversations: "No calls or messages for this customer.", customer_timeline: "Customer timeline",
    lang_yue: "Cantonese", lang_cmn: "Mandarin", lang_en: "English", answered_by_context: "continues an earlier question",
  },
});

(() => {
  const { t, el } = VC;
  const customerId = document.body.dataset.customerId;
  const TEXT_CHANNELS = ["web", "whatsapp", "wechat"];
  let data = null;
  let error = "";

  const channelName = (protocol) => t(TEXT_CHANNELS.includes(protocol) ? `channel_${protocol}` : "channel_call");
  const languageName = (tag) => ({ "yue-Hant-HK": t("lang_yue"), "cmn-Hant-HK": t("lang_cmn"), en: t("lang_en") }[tag] || tag);

  function describe(e) {
    switch (e.type) {
      case "message": return [t("message"), e.text];
      case "transcript": return [t("transcript"), e.text];
      case "suggestion": {
        const best = e.suggestions && e.suggestions[0];
        const tag = e.resolved ? t("resolved") : t("unresolved");
        return [t("suggestion"), best ? `[${best.id} · ${VC.categoryName(best.category)} · ${tag}] ${best.reply}` : tag];
      }
      case "alert": return [t("alert"), e.message || e.alert];
      case "handoff": return [t("handoff"), e.reason || t("handoff_needed")];
      case "referral": return [t("referral"), `${e.department} · ${VC.categoryName(e.category)}`];
      case "end": return [t("end"), ""];
      default: return null;
    }
  }

  function renderContext() {
    const box = document.getElementById("context");
    const c = data && data.context;
    if (!c) {
      box.replaceChildren(el("dd", { class: "muted" }, t("context_none", data ? data.window_hours : 24)));
      return;
    }
    const topics = el("ol", { class: "topics" }, ...c.topics.slice().reverse().map((topic) =>
      el("li", {}, el("strong", {}, `${topic.entry_id} · ${VC.categoryName(topic.category)}`), " ",
        el("span", { class: `badge ${topic.resolved ? "ok" : "warn"}` }, topic.resolved ? t("resolved") : t("unresolved")), " ",
        el("span", { class: "muted" }, `${channelName(topic.channel)} · ${VC.hkTime(topic.at, "full")}`), " ",
        el("q", {}, topic.question))));
    const rows = [[t("language"), languageName(c.language)], [t("unresolved_run"), String(c.unresolved)],
      [t("order"), c.order_id || "—"], [t("updated"), VC.hkTime(c.updated_at, "full")], [t("last_topics"), topics]];
    box.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function renderConversation(record) {
    const items = (record.events || []).map((e) => {
      const d = describe(e);
      return d && el("li", { class: e.type, "data-type": e.type },
        el("span", { class: "t" }, VC.hkTime(record.started_at + (e.start ?? e.duration ?? 0), "time")),
        el("strong", {}, d[0]), el("span", {}, d[1]));
    }).filter(Boolean);
    const live = record.status === "live";
    return el("section", { class: "conversation", "data-protocol": record.protocol, "data-id": record.id },
      el("h3", {},
        el("span", { class: `badge channel ${TEXT_CHANNELS.includes(record.protocol) ? record.protocol : "call"}` }, channelName(record.protocol)), " ",
        el("span", {}, VC.hkTime(record.started_at, "full")), " ",
        el("span", { class: `badge ${live ? "ok" : ""}` }, VC.statusName(record.status)), " ",
        el("a", { href: `/console/calls/${encodeURIComponent(record.id)}`, class: "open" }, `${t("open_call")} ${record.id}`)),
      el("ul", { class: "timeline" }, ...(items.length ? items : [el("li", { class: "muted" }, t("no_events"))])));
  }

  function render() {
    const name = data && data.customer ? `${data.customer.name} (${customerId})` : customerId;
    document.getElementById("customer-name").textContent = name;
    renderContext();
    const box = document.getElementById("conversations");
    if (error) { box.replaceChildren(el("p", { class: "error" }, `${t("load_failed")}: ${error}`)); return; }
    if (!data) return;
    box.replaceChildren(...(data.conversations.length ? data.conversations.map(renderConversation)
      : [el("p", { class: "muted" }, t("no_conversations"))]));
  }

  async function load() {
    try {
      data = await VC.getJSON(`/v1/customers/${encodeURIComponent(customerId)}`);
      error = "";
    } catch (err) {
      error = err.message;
    }
    render();
    if (data && data.conversations.some((c) => c.status === "live")) setTimeout(load, 5000);
  }

  VC.onLang(render);
  document.addEventListener("DOMContentLoaded", load);
})();
