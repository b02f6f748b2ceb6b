// Audit samples: each job drawn by `voice audit sample` with its calls and their review status
// (GET /v1/audit/jobs, /v1/audit/jobs/{id}), and the calibration figures (GET /v1/audit/agreement).
"use strict";

(() => {
  const { t, el } = VC;
  let jobs = [];
  const details = new Map(); // job id -> its calls
  let calibration = null;
  let rubric = null; // for the items' labels

  function pct(x) {
    return x === null || x === undefined ? "—" : `${Math.round(x * 100)}%`;
  }

  function renderCalibration() {
    const box = document.getElementById("calibration");
    if (!calibration) return;
    box.className = "";
    if (!calibration.calls) {
      box.replaceChildren(el("span", { class: "muted" }, t("no_review_yet")));
      return;
    }
    const kappa = (k) => (k === null || k === undefined ? "—" : k.toFixed(2));
    const items = Object.entries(calibration.items).map(([id, f]) => {
      const item = rubric && rubric.items.find((i) => i.id === id);
      return el("tr", { "data-item": id }, el("td", {}, item ? item.label[VC.lang()] || item.label.zh : id),
        el("td", {}, String(f.calls)), el("td", {}, pct(f.agreement)), el("td", {}, kappa(f.kappa)));
    });
    box.replaceChildren(el("dl", { class: "meta" },
      el("dt", {}, t("double_reviewed")), el("dd", {}, t("calls_n", calibration.calls)),
      el("dt", {}, t("agreement")), el("dd", { id: "calibration-agreement" }, pct(calibration.agreement)),
      el("dt", {}, t("kappa")), el("dd", { id: "calibration-kappa" }, kappa(calibration.kappa))),
    el("table", { class: "list calibration" },
      el("thead", {}, el("tr", {}, [t("item"), t("double_reviewed"), t("agreement"), t("kappa")].map((h) => el("th", {}, h)))),
      el("tbody", {}, items)),
    el("p", { class: "muted definition" }, `${t("agreement")}: ${t("agreement_def")} ${t("kappa")}: ${t("kappa_def")}`));
  }

  function jobPanel(job) {
    const p = job.params || {};
    const summary = [`${t("created_by")} ${job.created_by}`, VC.hkTime(job.created_at, "full"),
      `${p.from || "?"} – ${p.to || "?"}`, `${t("percent")} ${p.percent ?? "?"}%`,
      `${t("population")} ${job.population}`, `${t("sampled")} ${job.sampled}`,
      `${t("reviewed")} ${job.reviewed}`, `${t("double_reviewed")} ${job.double_reviewed}`];
    const calls = details.get(job.id);
    const head = el("tr", {}, [t("call"), t("stratum"), t("agent"), t("started"), t("status"),
      t("corrected_lines"), t("reviews")].map((h) => el("th", {}, h)));
    const rows = (calls || []).map((c) => el("tr", { "data-call-id": c.call_id },
      el("td", {}, c.status === "expired" ? c.call_id
        : el("a", { href: `/console/audit/calls/${encodeURIComponent(c.call_id)}` }, c.call_id)),
      el("td", {}, c.stratum),
      el("td", {}, c.agent || "—"),
      el("td", {}, VC.hkTime(c.started_at, "full")),
      el("td", {}, VC.statusName(c.status)),
      el("td", {}, String(c.corrected_lines || 0)),
      el("td", { class: "review-status" },
        c.reviews ? el("span", { class: `badge ${c.reviews >= 2 ? "ok" : "warn"}` },
          `${c.reviews} · ${c.reviewers.join(", ")}`) : el("span", { class: "badge" }, t("not_reviewed")),
        c.reviewed_by_me ? el("span", { class: "badge ok mine" }, t("reviewed_by_me")) : null)));
    return el("section", { class: "panel job", "data-job-id": job.id },
      el("h2", {}, `${t("job")} ${job.id}`),
      el("p", { class: "muted" }, summary.join(" · ")),
      calls ? el("table", { class: "list" }, el("thead", {}, head), el("tbody", {}, rows))
        : el("p", { class: "muted" }, t("loading")));
  }

  function render() {
    renderCalibration();
    const box = document.getElementById("jobs");
    box.replaceChildren(...(jobs.length ? jobs.map(jobPanel)
      : [el("div", { class: "panel empty" }, t("no_jobs"))]));
  }

  document.addEventListener("DOMContentLoaded", async () => {
    VC.onLang(render);
    Promise.all([VC.getJSON("/v1/audit/agreement"), VC.getJSON("/v1/audit/rubric")])
      .then(([c, r]) => { calibration = c; rubric = r; renderCalibration(); })
      .catch(() => { document.getElementById("calibration").textContent = t("load_failed"); });
    try {
      jobs = (await VC.getJSON("/v1/audit/jobs")).jobs;
    } catch (err) {
      document.getElementById("jobs").replaceChildren(el("div", { class: "panel error" },
        `${t("load_failed")}: ${err.message}`));
      return;
    }
    render();
    await Promise.all(jobs.map(async (job) => {
      try {
        details.set(job.id, (await VC.getJSON(`/v1/audit/jobs/${encodeURIComponent(job.id)}`)).calls);
      } catch { details.set(job.id, []); }
      render();
    }));
  });
})();
