// Heatmap of unresolved utterances: categories x hours or days, from /v1/analytics/heatmap.
"use strict";

(() => {
  const { t, el } = VC;
  let data = null;
  let range = null;
  let selected = null; // {category, bucket}

  function params(extra = {}) {
    const bucket = document.getElementById("bucket").value;
    return new URLSearchParams({ from: VC.hkIso(range.from), to: VC.hkIso(range.to), bucket, ...extra });
  }

  // white-ish for few, through amber to deep red for the most unresolved
  function colour(n, max) {
    if (!n) return null;
    const x = max > 1 ? Math.log1p(n) / Math.log1p(max) : 1;
    const hue = 48 - 46 * x;
    const light = 88 - 46 * x;
    return { bg: `hsl(${hue} 90% ${light}%)`, ink: light < 60 ? "#fff" : "#1d2733" };
  }

  function bucketLabel(iso) {
    const kind = document.getElementById("bucket").value === "day" ? "day"
      : range.days > 1 ? "hour" : "hourOnly";
    if (kind === "hourOnly") return VC.hkTime(iso, "time").slice(0, 5);
    return VC.hkTime(iso, kind);
  }

  function render() {
    const box = document.getElementById("heat");
    if (!data) return;
    if (!data.categories.length || !data.buckets.length) {
      box.replaceChildren(el("p", { class: "empty" }, t("no_data")));
      renderLegend(0);
      return;
    }
    const max = Math.max(0, ...data.unresolved.flat());
    const head = el("tr", {}, el("th", {}, t("category")),
      data.buckets.map((b) => el("th", { scope: "col" }, bucketLabel(b))));
    const rows = data.categories.map((cat, i) => el("tr", {},
      el("th", { class: "cat", scope: "row" }, VC.categoryName(cat)),
      data.buckets.map((b, j) => {
        const n = data.unresolved[i][j] || 0;
        const total = (data.total && data.total[i] && data.total[i][j]) || 0;
        const c = colour(n, max);
        const td = el("td", { class: n ? "" : "zero", "data-category": cat ?? "", "data-bucket": b,
          "data-count": n, title: `${VC.categoryName(cat)} · ${bucketLabel(b)}\n${t("unresolved_of", n, total)}`,
          onclick: n ? () => open(cat, b) : null }, n ? String(n) : "·");
        if (c) { td.style.background = c.bg; td.style.color = c.ink; }
        if (selected && selected.category === cat && selected.bucket === b) td.classList.add("selected");
        return td;
      })));
    box.replaceChildren(el("table", { class: "heat" }, el("thead", {}, head), el("tbody", {}, rows)));
    renderLegend(max);
  }

  function renderLegend(max) {
    const top = Math.max(max, 1);
    const steps = [...new Set([0, 0.25, 0.5, 0.75, 1].map((f) => Math.max(1, Math.round(1 + f * (top - 1)))))];
    document.getElementById("legend").replaceChildren(el("span", {}, t("fewer")),
      ...steps.map((n) => {
        const s = el("span", { class: "swatch" });
        const c = colour(n, Math.max(max, 1));
        if (c) s.style.background = c.bg;
        return s;
      }), el("span", {}, t("more")));
  }

  async function open(category, bucket) {
    selected = { category, bucket };
    render();
    const panel = document.getElementById("detail");
    panel.hidden = false;
    document.getElementById("detail-title").textContent =
      t("utterances_in", VC.categoryName(category), bucketLabel(bucket));
    const body = document.getElementById("detail-body");
    body.replaceChildren(el("p", { class: "muted" }, t("loading")));
    try {
      const q = params({ category: category ?? "", bucket_start: bucket });
      const answer = await VC.getJSON(`/v1/analytics/unresolved?${q}`);
      const items = Array.isArray(answer) ? answer : answer.turns || [];
      body.replaceChildren(items.length ? el("table", { class: "list", id: "utterances" },
        el("thead", {}, el("tr", {}, el("th", {}, t("time")), el("th", {}, t("text")),
          el("th", {}, t("category")), el("th", {}, t("call")))),
        el("tbody", {}, items.map((u) => el("tr", {},
          el("td", {}, VC.hkTime(u.ts, "full")), el("td", {}, u.text),
          el("td", {}, VC.categoryName(u.category)),
          el("td", {}, el("a", { href: `/console/calls/${encodeURIComponent(u.call_id)}` }, u.call_id))))))
        : el("p", { class: "muted" }, t("none_found")));
    } catch (err) {
      body.replaceChildren(el("p", { class: "error" }, `${t("load_failed")}: ${err.message}`));
    }
    panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  async function load() {
    const period = document.getElementById("period").value;
    localStorage.setItem("voice.heatmap", JSON.stringify({ period, bucket: document.getElementById("bucket").value }));
    range = VC.periodRange(period);
    selected = null;
    document.getElementById("detail").hidden = true;
    document.getElementById("csv").href = `/v1/analytics/heatmap.csv?${params()}`;
    const box = document.getElementById("heat");
    box.replaceChildren(el("p", { class: "muted" }, t("loading")));
    try {
      data = await VC.getJSON(`/v1/analytics/heatmap?${params()}`);
      render();
    } catch (err) {
      data = null;
      box.replaceChildren(el("p", { class: "error" }, `${t("load_failed")}: ${err.message}`));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const saved = JSON.parse(localStorage.getItem("voice.heatmap") || "{}");
    if (saved.period) document.getElementById("period").value = saved.period;
    if (saved.bucket) document.getElementById("bucket").value = saved.bucket;
    document.getElementById("period").addEventListener("change", (ev) => {
      // an hourly grid of 30 days is 720 columns: switch to days unless asked again
      document.getElementById("bucket").value = ev.target.value === "today" ? "hour" : "day";
      load();
    });
    document.getElementById("bucket").addEventListener("change", load);
    VC.onLang(() => {
      render();
      if (selected) open(selected.category, selected.bucket);
    });
    load();
  });
})();
