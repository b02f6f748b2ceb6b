// A list of calls: an agent's own, or every call for a supervisor (GET /calls filters by role).
"use strict";

(() => {
  const { t, el } = VC;
  let records = [];

  function render() {
    if (document.body.dataset.role === "agent") {
      document.getElementById("calls-title").textContent = t("my_calls");
    }
    document.getElementById("rows").replaceChildren(...records.map((c) => el("tr", { "data-call-id": c.id },
      el("td", {}, el("a", { href: `/console/calls/${encodeURIComponent(c.id)}` }, c.id)),
      el("td", {}, VC.hkTime(c.started_at, "full")),
      el("td", {}, VC.hkTime(c.ended_at, "full")),
      el("td", {}, el("span", { class: `badge ${c.status === "live" ? "ok" : ""}` },
        VC.statusName(c.status))),
      el("td", {}, c.agent || "—"),
      el("td", {}, c.protocol))));
    document.getElementById("calls-empty").hidden = records.length > 0;
  }

  document.addEventListener("DOMContentLoaded", async () => {
    VC.onLang(render);
    try {
      records = (await VC.getJSON("/calls")).calls;
    } catch (err) {
      document.getElementById("rows").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "error" },
        `${t("load_failed")}: ${err.message}`)));
      return;
    }
    render();
  });
})();
