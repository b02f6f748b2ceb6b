// Reviewing one sampled call: its transcript lines, each playable (GET /v1/calls/{id}/audio) and
// correctable (POST /v1/calls/{id}/corrections), and the rubric's scoring form (GET /v1/audit/rubric,
// POST /v1/calls/{id}/reviews). Blind double review: the others' scores show once yours is in.
"use strict";

(() => {
  const { t, el } = VC;
  const callId = document.body.dataset.callId;
  const enc = encodeURIComponent(callId);
  const PAD = 0.25; // seconds around an utterance: the VAD cuts close to the words
  let sheet = null;
  let rubric = null;
  let reviews = null;
  const drafts = new Map(); // seq -> text being edited (kept across re-renders)
  const lineErrors = new Map(); // seq -> message
  const answers = {}; // item id -> answer, while the form is filled in
  let comment = "";
  let formError = "";
  let playing = null;

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  const label = (l) => (l ? l[VC.lang()] || l.zh : "");

  function latest(line) {
    return line.corrections.length ? line.corrections[line.corrections.length - 1] : null;
  }

  function renderMeta() {
    if (!sheet) return;
    document.getElementById("call-id").textContent = sheet.id;
    const rec = sheet.recording;
    const meta = [[t("status"), VC.statusName(sheet.status)], [t("started"), VC.hkTime(sheet.started_at, "full")],
      [t("ended_at"), VC.hkTime(sheet.ended_at, "full")], [t("agent"), sheet.agent || "—"],
      [t("recording"), rec ? `${clock(rec.seconds)} · ${rec.encoding} ${rec.sample_rate} Hz` : t("no_recording")]];
    document.getElementById("meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function play(line) {
    const player = document.getElementById("player");
    const start = Math.max(0, line.start - PAD).toFixed(2);
    const end = (line.end + PAD).toFixed(2);
    playing = line.seq;
    player.src = `/v1/calls/${enc}/audio?start=${start}&end=${end}`;
    player.play().catch(() => { /* the controls still let the reviewer press play */ });
    renderLines();
  }

  async function save(line) {
    const text = drafts.get(line.seq) ?? "";
    lineErrors.delete(line.seq);
    try {
      const stored = await VC.postJSON(`/v1/calls/${enc}/corrections`, { seq: line.seq, text });
      line.corrections.push(stored);
      drafts.delete(line.seq);
    } catch (err) {
      lineErrors.set(line.seq, `${t("save_failed")}: ${err.message}`);
    }
    renderLines();
  }

  function lineItem(line) {
    const last = latest(line);
    const value = drafts.get(line.seq) ?? (last ? last.text : line.text);
    const box = el("textarea", { class: "fix", rows: 2, lang: "zh-Hant-HK",
      oninput: (e) => drafts.set(line.seq, e.target.value) });
    box.value = value;
    const s = line.suggestion;
    const classes = [last ? "corrected" : "", playing === line.seq ? "playing" : ""].filter(Boolean);
    return el("li", { "data-seq": line.seq, class: classes.join(" ") || undefined },
      el("div", { class: "line-head" },
        el("button", { type: "button", class: "play", title: t("play"), "aria-label": t("play"),
          disabled: !sheet.recording, onclick: () => play(line) }, "▶"),
        el("span", { class: "t" }, `${clock(line.start)}–${clock(line.end)}`),
        el("span", { class: "original" }, line.text || "—")),
      s ? el("div", { class: "used-suggestion muted" }, `${t("suggestion_used")}: `,
        s.reply ? `[${VC.categoryName(s.category)} · ${s.resolved ? t("resolved") : t("unresolved")}] ${s.reply}`
          : t("no_entry")) : null,
      el("div", { class: "fix-row" }, box,
        el("button", { type: "button", class: "save", onclick: () => save(line) }, t("save"))),
      last ? el("div", { class: "correction-info" }, el("span", { class: "badge ok" },
        t("corrected_by", last.reviewer, VC.hkTime(last.created_at, "full"))), " ", el("span", { class: "saved-text" }, last.text))
        : null,
      lineErrors.has(line.seq) ? el("div", { class: "error" }, lineErrors.get(line.seq)) : null);
  }

  function renderLines() {
    if (!sheet) return;
    const list = document.getElementById("lines");
    const focused = document.activeElement && document.activeElement.closest("li[data-seq]");
    const focusSeq = focused ? Number(focused.dataset.seq) : null;
    list.replaceChildren(...(sheet.lines.length ? sheet.lines.map(lineItem)
      : [el("li", { class: "muted" }, t("no_lines"))]));
    if (focusSeq !== null && document.activeElement === document.body) {
      const again = list.querySelector(`li[data-seq="${focusSeq}"] textarea`);
      if (again) again.focus();
    }
  }

  function answerText(item, value) {
    if (value === undefined || value === null) return "—";
    if (item.type === "yes_no") return value ? t("yes") : t("no");
    if (item.type === "choice") return label((item.options.find((o) => o.value === value) || {}).label) || value;
    return String(value);
  }

  function field(item) {
    const choices = item.type === "choice" ? item.options.map((o) => [o.value, label(o.label)])
      : item.type === "yes_no" ? [[true, t("yes")], [false, t("no")]] : item.values.map((v) => [v, String(v)]);
    if (!item.required) choices.push([null, t("not_applicable")]);
    const invalid = formError.includes(`scores.${item.id}:`);
    return el("fieldset", { class: `item ${item.type}${invalid ? " invalid" : ""}`, "data-item": item.id },
      el("legend", {}, label(item.label), item.required ? el("span", { class: "req" }, ` * ${t("required")}`) : null),
      item.help ? el("p", { class: "help muted" }, label(item.help)) : null,
      el("div", { class: "choices" }, choices.map(([value, text]) => {
        const input = el("input", { type: "radio", name: item.id, value: value === null ? "" : String(value),
          onchange: () => { answers[item.id] = value; } });
        input.checked = answers[item.id] === value;
        return el("label", {}, input, text);
      })));
  }

  async function submit(e) {
    e.preventDefault();
    formError = "";
    try {
      await VC.postJSON(`/v1/calls/${enc}/reviews`, { scores: answers, comment });
    } catch (err) {
      formError = `${t("submit_failed")}: ${err.message}`;
      renderReviews();
      return;
    }
    await loadReviews();
  }

  // Items down, reviewers across (a column each fits the panel however long the labels); items
  // on which the reviewers differ are marked, what calibration talks about.
  function reviewsTable(rows) {
    const head = el("tr", {}, el("th", {}, t("reviewer")), rows.map((r) => el("th", { "data-reviewer": r.reviewer },
      r.reviewer, el("div", { class: "muted when" }, VC.hkTime(r.created_at, "full")))));
    const body = rubric.items.map((i) => {
      const given = rows.map((r) => r.scores[i.id]).filter((v) => v !== undefined && v !== null);
      const differs = new Set(given.map((v) => JSON.stringify(v))).size > 1;
      return el("tr", { "data-item": i.id, class: differs ? "differs" : undefined }, el("th", {}, label(i.label)),
        rows.map((r) => el("td", { "data-reviewer": r.reviewer }, answerText(i, r.scores[i.id]))));
    });
    body.push(el("tr", { "data-item": "comment" }, el("th", {}, t("comment")),
      rows.map((r) => el("td", { "data-reviewer": r.reviewer }, r.comment || ""))));
    return el("div", { class: "table-wrap" }, el("table", { class: "list scores" }, el("thead", {}, head), el("tbody", {}, body)));
  }

  function renderReviews() {
    const form = document.getElementById("review-form");
    const box = document.getElementById("reviews");
    if (!rubric || !reviews) return;
    if (reviews.submitted) {
      form.replaceChildren();
      form.hidden = true;
    } else {
      form.hidden = false;
      const note = el("textarea", { name: "comment", rows: 3, oninput: (e) => { comment = e.target.value; } });
      note.value = comment;
      form.replaceChildren(el("p", { class: "muted" }, label(rubric.title), ` · v${rubric.version}`),
        ...rubric.items.map(field),
        el("label", { class: "comment" }, t("comment"), note),
        el("button", { type: "submit", class: "primary" }, t("submit_review")),
        formError ? el("p", { class: "error", id: "form-error" }, formError) : null);
    }
    const shown = reviews.reviews.filter((r) => !r.hidden);
    const hidden = reviews.submitted ? 0 : reviews.reviews.filter((r) => r.reviewer !== document.body.dataset.name).length;
    const parts = [];
    if (reviews.submitted && shown.length) parts.push(reviewsTable(shown));
    if (hidden) parts.push(el("p", { class: "muted", id: "others-hidden" }, t("others_hidden", hidden)));
    if (!reviews.reviews.length) parts.push(el("p", { class: "muted" }, t("no_review_yet")));
    const a = reviews.submitted ? reviews.agreement : null;
    if (a) {
      parts.push(el("p", { class: "agreement" }, `${t("agreement")}: `,
        el("strong", { id: "agreement" }, `${Math.round(a.agreement * 100)}%`)),
        el("p", { class: "muted definition" }, t("agreement_def")));
    }
    box.replaceChildren(...parts);
  }

  async function loadReviews() {
    try {
      reviews = await VC.getJSON(`/v1/calls/${enc}/reviews`);
    } catch (err) {
      document.getElementById("reviews").replaceChildren(el("p", { class: "error" }, `${t("load_failed")}: ${err.message}`));
      return;
    }
    renderReviews();
  }

  document.addEventListener("DOMContentLoaded", async () => {
    VC.onLang(() => { renderMeta(); renderLines(); renderReviews(); });
    document.getElementById("review-form").addEventListener("submit", submit);
    try {
      [sheet, rubric] = await Promise.all([VC.getJSON(`/v1/audit/calls/${enc}`), VC.getJSON("/v1/audit/rubric")]);
    } catch (err) {
      document.getElementById("lines").replaceChildren(el("li", { class: "error" },
        `${t("load_failed")}: ${err.status === 404 ? "404" : err.message}`));
      return;
    }
    renderMeta();
    renderLines();
    await loadReviews();
  });
})();
