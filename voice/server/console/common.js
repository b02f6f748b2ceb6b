// Shared by every console page: translations, the header, Hong Kong time, JSON fetches.
"use strict";

const VC = (() => {
  const TZ = "Asia/Hong_Kong";
  const HK_OFFSET_MS = 8 * 3600 * 1000; // Hong Kong keeps UTC+8 all year (no daylight saving)
  const DAY_MS = 24 * 3600 * 1000;
  const STRINGS = {
    zh: {
      brand: "客服語音控制台", wallboard: "即時監控", heatmap: "未解決熱圖", kpis: "服務指標",
      calls: "通話記錄", logout: "登出", lang_other: "English", signed_in_as: "登入身分",
      role_agent: "客服員", role_supervisor: "主管", role_admin: "管理員",
      login_title: "登入控制台", login_intro: "請輸入主管或客服員的存取權杖。",
      token: "存取權杖", sign_in: "登入", bad_token: "權杖無效，請重試。",
      expired: "表單已過期，請重新提交。", forbidden_title: "無權存取",
      forbidden_text: "你的角色不能查看此頁。", back: "返回",
      live_calls: "進行中通話", no_calls: "目前沒有進行中的通話。", conn_live: "即時連線",
      conn_reconnecting: "重新連線中…", conn_down: "連線中斷", health: "系統狀態",
      server: "伺服器", queue_segments: "待轉錄片段", queue_seconds: "預計積壓（秒）",
      overloaded: "過載", subscribers: "訂閱者", yes: "是", no: "否", ok: "正常",
      alerts_feed: "最新警報", no_alerts: "暫無警報", agitation: "激動程度",
      handoff_needed: "需要轉接真人", ended: "已結束", live: "進行中", suggestion: "建議回覆", no_entry: "知識庫沒有相關答案",
      resolved: "已解決", unresolved: "未解決", agent: "客服員", started: "開始",
      period: "期間", today: "今日", last7: "最近 7 日", last30: "最近 30 日", bucket: "時段",
      by_hour: "按小時", by_day: "按日", export_csv: "匯出 CSV", category: "類別",
      uncategorised: "未分類", cell_hint: "點擊格子查看未解決的句子。", time: "時間",
      text: "內容", call: "通話", no_data: "此期間沒有資料。", loading: "載入中…",
      load_failed: "載入失敗", unresolved_of: "未解決 {0} / 共 {1}", fewer: "少", more: "多",
      utterances_in: "{0} · {1} 的未解決句子", none_found: "沒有句子。",
      kpi_calls: "通話數", kpi_utterances: "轉錄句數", kpi_first_response_ms_p50: "首次回應（中位數）",
      kpi_first_response_ms_p95: "首次回應（P95）", kpi_resolution_rate: "解決率",
      kpi_handoff_rate: "轉接率", kpi_night_response_rate: "夜間回應率",
      kpi_resolution_depth: "解決深度", kpi_sentiment_improvement: "情緒改善",
      def_calls: "期間內開始的通話數目。", def_utterances: "期間內的轉錄句數。",
      def_first_response: "由來電者第一句說完至第一個建議回覆的時間（毫秒），取中位數／P95。",
      def_resolution_rate: "以已解決建議回覆的句子比例。", def_handoff_rate: "轉交真人處理的通話比例。",
      def_night_response_rate: "夜間（香港時間 20:00–08:00）得到建議回覆的句子比例。",
      def_resolution_depth: "每個通話在轉接或結束前已解決的對話輪數。",
      def_sentiment_improvement: "通話最後四分之一的情緒分數減去最初四分之一。",
      trend_daily: "每日趨勢", trend_needs_days: "趨勢需要多於一日", my_calls: "我的通話",
      status: "狀態", protocol: "協定", ended_at: "結束", events: "事件", duration: "長度",
      call_detail: "通話詳情", transcript: "轉錄", alert: "警報", handoff: "轉接", end: "結束",
      warning: "警告", error_ev: "錯誤", segment: "語音段", no_events: "沒有事件。",
      message: "訊息", customer: "客戶",
      partial: "講緊", partial_hint: "來電者仲講緊：未完成嘅轉錄，講完會換成正式轉錄",
      status_live: "進行中", status_ended: "已結束", status_completed: "已完成",
      status_disconnected: "連線中斷", status_interrupted: "伺服器中斷", status_server_shutdown: "伺服器關閉",
      status_idle_timeout: "閒置逾時", status_max_call_length: "超過長度", status_error: "錯誤",
      status_store_failed: "儲存失敗",
      not_allowed_live: "你的角色不能查看即時通話。",
      referrals: "轉介", referral: "轉介", department: "部門", deadline: "期限（香港時間）",
      ref_open: "待處理", ref_breached: "已逾時", ref_acked: "已確認", acked_by: "{0} 於 {1} 確認",
      acknowledge: "確認接手", ack_failed: "確認失敗", time_left: "尚餘 {0}", overdue: "逾時 {0}",
      no_referrals: "沒有待處理或逾時的轉介。", referral_breached: "轉介逾時", referral_acked: "轉介已確認",
      outcome: "原因", outcome_unresolved: "未解決", outcome_handoff: "轉接真人",
      audit: "質素審核", role_auditor: "審核員", review_title: "審核通話", audit_jobs: "審核抽樣",
      no_jobs: "未有審核抽樣（以 voice audit sample 抽取）。", job: "抽樣", created_by: "抽樣人",
      population: "母體", sampled: "抽中", reviewed: "已審核", double_reviewed: "雙人審核",
      stratum: "分層", reviews: "評分", reviewed_by_me: "我已評分", corrected_lines: "已更正",
      percent: "比例", back_to_audit: "← 審核抽樣", lines: "轉錄句子", play: "播放這一句",
      save: "儲存", corrected_by: "{0} 於 {1} 更正", original: "原文", no_recording: "此通話沒有錄音。",
      no_lines: "沒有轉錄句子。", save_failed: "儲存失敗", scoring: "評分表", submit_review: "提交評分",
      submitted_by: "{0} 於 {1} 提交", others_hidden: "另有 {0} 份評分，提交你的評分後才會顯示。",
      agreement: "評分一致度", comment: "備註", required: "必填", submit_failed: "提交失敗",
      calibration: "校準：所有雙人審核通話", kappa: "Cohen's kappa", calls_n: "{0} 個通話",
      agreement_def: "每對審核人都有作答的項目中，答案相同的比例（各對平均）。",
      kappa_def: "每個項目中首兩位審核人的 Cohen's kappa（已扣除偶然一致），各項目平均。",
      suggestion_used: "建議", reviewer: "審核人", not_reviewed: "未審核", recording: "錄音",
      no_review_yet: "尚未有評分。", not_applicable: "不適用", item: "項目",
    },
    en: {
      brand: "Voice console", wallboard: "Wallboard", heatmap: "Unresolved heatmap", kpis: "KPIs",
      calls: "Calls", logout: "Sign out", lang_other: "中文", signed_in_as: "Signed in as",
      role_agent: "agent", role_supervisor: "supervisor", role_admin: "admin",
      login_title: "Sign in to the console", login_intro: "Enter your supervisor or agent access token.",
      token: "Access token", sign_in: "Sign in", bad_token: "That token is not valid. Try again.",
      expired: "The form expired; please submit it again.", forbidden_title: "Not allowed",
      forbidden_text: "Your role may not open this page.", back: "Back",
      live_calls: "Live calls", no_calls: "No calls in progress.", conn_live: "Live",
      conn_reconnecting: "Reconnecting…", conn_down: "Disconnected", health: "System health",
      server: "Server", queue_segments: "Segments queued", queue_seconds: "Backlog (s)",
      overloaded: "Overloaded", subscribers: "Subscribers", yes: "yes", no: "no", ok: "OK",
      alerts_feed: "Latest alerts", no_alerts: "No alerts yet", agitation: "Agitation",
      handoff_needed: "Hand to a human", ended: "Ended", live: "Live", suggestion: "Suggested reply", no_entry: "nothing in the knowledge base",
      resolved: "resolved", unresolved: "unresolved", agent: "Agent", started: "Started",
      period: "Period", today: "Today", last7: "Last 7 days", last30: "Last 30 days", bucket: "Bucket",
      by_hour: "By hour", by_day: "By day", export_csv: "Export CSV", category: "Category",
      uncategorised: "Uncategorised", cell_hint: "Click a cell to list its unresolved utterances.",
      time: "Time", text: "Text", call: "Call", no_data: "No data for this period.",
      loading: "Loading…", load_failed: "Could not load", unresolved_of: "{0} unresolved of {1}",
      fewer: "fewer", more: "more", utterances_in: "Unresolved in {0} · {1}", none_found: "None.",
      kpi_calls: "Calls", kpi_utterances: "Utterances", kpi_first_response_ms_p50: "First response (p50)",
      kpi_first_response_ms_p95: "First response (p95)", kpi_resolution_rate: "Resolution rate",
      kpi_handoff_rate: "Handoff rate", kpi_night_response_rate: "Night response rate",
      kpi_resolution_depth: "Resolution depth", kpi_sentiment_improvement: "Sentiment improvement",
      def_calls: "Calls started in the period.", def_utterances: "Transcripts in the period.",
      def_first_response: "End of the caller's first utterance to the first suggestion, in ms (p50 / p95).",
      def_resolution_rate: "Utterances answered with a resolved suggestion.",
      def_handoff_rate: "Calls handed to a human.",
      def_night_response_rate: "Night-time (20:00–08:00 Hong Kong) utterances given a suggestion.",
      def_resolution_depth: "Resolved turns per call before handoff or end.",
      def_sentiment_improvement: "Sentiment in the last quarter of the call minus the first.",
      trend_daily: "Daily trend", trend_needs_days: "A trend needs more than one day", my_calls: "My calls",
      status: "Status", protocol: "Protocol", ended_at: "Ended", events: "Events", duration: "Duration",
      call_detail: "Call", transcript: "Transcript", alert: "Alert", handoff: "Handoff", end: "End",
      warning: "Warning", error_ev: "Error", segment: "Segment", no_events: "No events.",
      message: "Message", customer: "Customer",
      partial: "Speaking", partial_hint: "The caller is still speaking: a provisional transcript, replaced when the utterance ends",
      status_live: "live", status_ended: "ended", status_completed: "completed",
      status_disconnected: "disconnected", status_interrupted: "interrupted",
      status_server_shutdown: "server shut down", status_idle_timeout: "idle timeout",
      status_max_call_length: "too long", status_error: "error", status_store_failed: "not stored",
      not_allowed_live: "Your role may not view live calls.",
      referrals: "Referrals", referral: "Referral", department: "Department", deadline: "Deadline (HKT)",
      ref_open: "open", ref_breached: "breached", ref_acked: "acknowledged", acked_by: "acknowledged by {0} at {1}",
      acknowledge: "Acknowledge", ack_failed: "Could not acknowledge", time_left: "{0} left", overdue: "{0} overdue",
      no_referrals: "No open or breached referrals.", referral_breached: "Referral breached",
      referral_acked: "Referral acknowledged", outcome: "Outcome", outcome_unresolved: "unresolved",
      outcome_handoff: "handed off",
      audit: "Audit", role_auditor: "auditor", review_title: "Review call", audit_jobs: "Audit samples",
      no_jobs: "No audit samples yet (draw one with voice audit sample).", job: "Sample", created_by: "Drawn by",
      population: "Population", sampled: "Sampled", reviewed: "Reviewed", double_reviewed: "Double-reviewed",
      stratum: "Stratum", reviews: "Reviews", reviewed_by_me: "reviewed by me", corrected_lines: "Corrected",
      percent: "Share", back_to_audit: "← Audit samples", lines: "Transcript lines", play: "Play this line",
      save: "Save", corrected_by: "corrected by {0} at {1}", original: "Original", no_recording: "This call has no recording.",
      no_lines: "No transcript lines.", save_failed: "Could not save", scoring: "Scoring form", submit_review: "Submit review",
      submitted_by: "submitted by {0} at {1}", others_hidden: "{0} other review(s), shown once you submit yours.",
      agreement: "Agreement", comment: "Comment", required: "required", submit_failed: "Could not submit",
      calibration: "Calibration: all double-reviewed calls", kappa: "Cohen's kappa", calls_n: "{0} calls",
      agreement_def: "Share of the items both reviewers answered on which they gave the same answer, averaged over pairs.",
      kappa_def: "Cohen's kappa (chance-corrected) between each call's first two reviewers, per item, averaged over items.",
      suggestion_used: "Suggestion", reviewer: "Reviewer", not_reviewed: "not reviewed", recording: "Recording",
      no_review_yet: "No reviews yet.", not_applicable: "n/a", item: "Item",
    },
  };
  const listeners = [];
  let current = localStorage.getItem("voice.lang") === "en" ? "en" : "zh";

  function t(key, ...args) {
    const s = STRINGS[current][key] ?? STRINGS.zh[key] ?? key;
    return s.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)] ?? ""));
  }

  function applyStatic() {
    document.documentElement.lang = current === "zh" ? "zh-Hant-HK" : "en";
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    }
    const title = document.body.dataset.title;
    if (title) document.title = `${t(title)} · ${t("brand")}`;
  }

  function setLang(lang) {
    current = lang;
    localStorage.setItem("voice.lang", lang);
    applyStatic();
    for (const fn of listeners) fn();
  }

  function onLang(fn) { listeners.push(fn); }

  // A page's own strings beside the shared ones: extend({ zh: {...}, en: {...} }) before load.
  function extend(strings) {
    for (const lang of Object.keys(STRINGS)) Object.assign(STRINGS[lang], strings[lang] || {});
  }

  // A DOM element: el("a", {href: "/x", class: "y"}, "text", child...)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  const formatters = {};
  function fmt(date, kind) {
    const locale = current === "zh" ? "zh-HK" : "en-GB";
    const key = `${locale}:${kind}`;
    if (!formatters[key]) {
      const opts = {
        time: { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false },
        datetime: { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false },
        hour: { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false },
        day: { month: "short", day: "numeric", weekday: "short" },
        full: { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
          second: "2-digit", hour12: false },
      }[kind];
      formatters[key] = new Intl.DateTimeFormat(locale, { ...opts, timeZone: TZ });
    }
    return formatters[key].format(date);
  }

  // A Date from epoch seconds, epoch ms or an ISO string (a string without an offset is HK time).
  function toDate(value) {
    if (value instanceof Date) return value;
    if (typeof value === "number") return new Date(value < 1e12 ? value * 1000 : value);
    const s = String(value);
    const hasZone = /([zZ]|[+-]\d\d:?\d\d)$/.test(s);
    return new Date(hasZone || !s.includes("T") ? s : `${s}+08:00`);
  }

  function hkTime(value, kind = "datetime") {
    if (value === null || value === undefined || value === "") return "—";
    return fmt(toDate(value), kind);
  }

  // ISO 8601 in Hong Kong time with its offset, as the analytics API takes it.
  function hkIso(ms) {
    const d = new Date(ms + HK_OFFSET_MS);
    return `${d.toISOString().slice(0, 19)}+08:00`;
  }

  // The start (epoch ms) of the Hong Kong day `daysAgo` days before today's.
  function hkDayStart(daysAgo = 0, now = Date.now()) {
    return Math.floor((now + HK_OFFSET_MS) / DAY_MS) * DAY_MS - HK_OFFSET_MS - daysAgo * DAY_MS;
  }

  // Whole Hong Kong days up to the end of today: a fixed grid, and turns stamped by their audio
  // time (a call streamed or uploaded faster than real time) are counted at once.
  function periodRange(period) {
    const now = Date.now();
    const days = { today: 1, "7d": 7, "30d": 30 }[period] || 1;
    return { from: hkDayStart(days - 1, now), to: hkDayStart(-1, now), days };
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) {
      location.href = "/console/login";
      throw new Error("signed out");
    }
    if (!r.ok) {
      let detail = url.split("?")[0];
      try { detail = (await r.json()).error || detail; } catch { /* not JSON */ }
      throw Object.assign(new Error(`${r.status} ${detail}`), { status: r.status });
    }
    return r.json();
  }

  // A console POST: the session cookie plus the session's CSRF token (the sign-out form's) in a
  // header, which the server requires of cookie-authenticated POSTs; `body`, if given, as JSON.
  async function postJSON(url, body) {
    const csrf = document.querySelector('input[name="csrf"]');
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf ? csrf.value : "" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(url, { method: "POST", credentials: "same-origin", headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401) {
      location.href = "/console/login";
      throw new Error("signed out");
    }
    if (!r.ok) {
      let detail = url;
      try { detail = (await r.json()).error || detail; } catch { /* not JSON */ }
      throw Object.assign(new Error(`${r.status} ${detail}`), { status: r.status });
    }
    return r.json();
  }

  // Time to a deadline (epoch seconds): "12:34 left", or "03:21 overdue" once it has passed.
  function countdown(deadline, now = Date.now()) {
    const ms = deadline * 1000 - now;
    const s = Math.floor(Math.abs(ms) / 1000);
    const h = Math.floor(s / 3600);
    const mmss = `${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
    const text = h ? `${h}:${mmss}` : mmss;
    return ms >= 0 ? t("time_left", text) : t("overdue", text);
  }

  // Every countdown on the page, updated in place (elements with data-deadline).
  function tickCountdowns() {
    const now = Date.now();
    for (const node of document.querySelectorAll(".countdown[data-deadline]")) {
      node.textContent = countdown(Number(node.dataset.deadline), now);
      node.classList.toggle("overdue", Number(node.dataset.deadline) * 1000 < now);
    }
  }

  // A referral's status as a badge: open (amber), breached (red), acknowledged by whom (green).
  function referralBadge(r) {
    if (r.status === "acked") {
      return el("span", { class: "badge ok" }, t("acked_by", r.acked_by || "—", hkTime(r.acked_at, "datetime")));
    }
    return el("span", { class: `badge ${r.status === "breached" ? "bad" : "warn"}` }, t(`ref_${r.status}`));
  }

  function statusName(s) {
    const key = `status_${s}`;
    return key in STRINGS[current] ? t(key) : String(s);
  }

  function categoryName(c) {
    return !c || c === "未分類" || c === "uncategorised" || c === "uncategorized" ? t("uncategorised") : c;
  }

  function buildHeader() {
    const body = document.body;
    const nav = document.getElementById("nav");
    if (nav) {
      const hrefs = { wallboard: "/console", heatmap: "/console/heatmap", kpis: "/console/kpis",
        calls: "/console/my-calls", audit: "/console/audit" };
      for (const p of (body.dataset.pages || "").split(" ").filter(Boolean)) {
        const key = p === "calls" && body.dataset.role === "agent" ? "my_calls" : p;
        nav.append(el("a", { href: hrefs[p], "data-i18n": key,
          class: body.dataset.page === p ? "current" : "" }, t(key)));
      }
    }
    const who = document.getElementById("who");
    const render = () => {
      if (who) who.textContent = `${body.dataset.name} · ${t(`role_${body.dataset.role}`)}`;
    };
    render();
    onLang(render);
    const toggle = document.getElementById("lang-toggle");
    if (toggle) {
      toggle.setAttribute("data-i18n", "lang_other");
      toggle.addEventListener("click", () => setLang(current === "zh" ? "en" : "zh"));
    }
    const clock = document.getElementById("clock");
    if (clock) {
      const tick = () => { clock.textContent = `${hkTime(Date.now(), "full")} HKT`; };
      tick();
      setInterval(tick, 1000);
      onLang(tick);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    buildHeader();
    applyStatic();
  });

  return { t, el, onLang, setLang, extend, lang: () => current, hkTime, hkIso, hkDayStart, periodRange,
    getJSON, postJSON, countdown, tickCountdowns, referralBadge, toDate, categoryName, statusName, DAY_MS };
})();
