// KPI tiles with daily trend lines (inline SVG), from /v1/analytics/kpis: the period, then each day.
"use strict";

(() => {
  const { t, el } = VC;
  // key, definition, how to show a value
  const pct = (v) => `${(v * 100).toFixed(1)}%`;
  const ms = (v) => `${Math.round(v).toLocaleString()} ms`;
  const KPIS = [
    ["calls", "def_calls", (v) => v.toLocaleString()],
    ["utterances", "def_utterances", (v) => v.toLocaleString()],
    ["first_response_ms_p50", "def_first_response", ms],
    ["first_response_ms_p95", "def_first_response", ms],
    ["resolution_rate", "def_resolution_rate", pct],
    ["handoff_rate", "def_handoff_rate", pct],
    ["night_response_rate", "def_night_response_rate", pct],
    ["resolution_depth", "def_resolution_depth", (v) => v.toFixed(2)],
    ["sentiment_improvement", "def_sentiment_improvement", (v) => (v > 0 ? "+" : "") + v.toFixed(2)],
  ];
  let total = null;
  let days = []; // [{start, kpis}]
  let generation = 0; // a newer load makes an older one's late answers stale
  let shown = null; // the period on screen, once loaded

  function spark(key) {
    const pts = days.map((d, i) => [i, d.kpis ? d.kpis[key] : null]).filter(([, v]) => v !== null && v !== undefined);
    if (days.length < 2) return el("div", { class: "trend-note" }, t("trend_needs_days"));
    const W = 240, H = 60, P = 4;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const vals = pts.map(([, v]) => v);
    const lo = Math.min(0, ...vals), hi = Math.max(...vals, lo + 1e-9);
    const x = (i) => P + (i * (W - 2 * P)) / (days.length - 1);
    const y = (v) => H - P - ((v - lo) * (H - 2 * P)) / (hi - lo || 1);
    const add = (tag, attrs) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      svg.append(n);
      return n;
    };
    if (pts.length) {
      const line = pts.map(([i, v], k) => `${k ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      add("path", { class: "area", d: `${line} L${x(pts.at(-1)[0])},${H - P} L${x(pts[0][0])},${H - P} Z` });
      add("path", { class: "line", d: line });
      for (const [i, v] of pts) {
        const dot = add("circle", { class: "dot", cx: x(i), cy: y(v), r: 2.2 });
        const title = document.createElementNS(ns, "title");
        title.textContent = `${VC.hkTime(days[i].start, "day")}: ${v}`;
        dot.append(title);
      }
    }
    const label = el("div", { class: "trend-note" }, t("trend_daily"));
    return el("div", {}, svg, label);
  }

  function render() {
    const tiles = KPIS.map(([key, def, show]) => {
      const v = total ? total[key] : undefined;
      return el("section", { class: "tile", id: `kpi-${key}`, "data-kpi": key, title: t(def) },
        el("div", { class: "label" }, t(`kpi_${key}`)),
        el("div", { class: "value", "data-value": v ?? "" }, v === null || v === undefined ? "—" : show(v)),
        spark(key));
    });
    document.getElementById("tiles").replaceChildren(...tiles);
    if (shown) {
      document.getElementById("status").textContent =
        `${VC.hkTime(shown.from, "day")} – ${VC.hkTime(shown.to - 1, "day")} (HKT)`;
    }
  }

  async function load() {
    const mine = ++generation;
    const range = VC.periodRange(document.getElementById("period").value);
    const q = (from, to) => `/v1/analytics/kpis?${new URLSearchParams({ from: VC.hkIso(from), to: VC.hkIso(to) })}`;
    const status = document.getElementById("status");
    shown = null;
    status.textContent = t("loading");
    days = Array.from({ length: range.days }, (_, i) => ({ start: range.from + i * VC.DAY_MS, kpis: null }));
    try {
      total = await VC.getJSON(q(range.from, range.to));
    } catch (err) {
      status.textContent = `${t("load_failed")}: ${err.message}`;
      total = null;
      render();
      return;
    }
    if (mine !== generation) return;
    render();
    if (days.length > 1) {
      // one request per day, four at a time: enough for 30 days without flooding the server
      let next = 0;
      const worker = async () => {
        while (next < days.length && mine === generation) {
          const d = days[next++];
          try {
            d.kpis = await VC.getJSON(q(d.start, d.start + VC.DAY_MS));
          } catch { d.kpis = null; }
        }
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
      if (mine !== generation) return;
    }
    shown = range;
    render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("period").addEventListener("change", load);
    VC.onLang(() => { render(); });
    render();
    load();
  });
})();
