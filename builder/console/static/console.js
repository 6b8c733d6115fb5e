// swcli console: the one script of every page. Text from runs, datasets and registries reaches the page only through
// textContent and attributes set one by one (never innerHTML); state-changing requests carry the page's CSRF token.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

async function postJSON(url, data) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(data),
  });
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

const fmt = (v, d = 4) => (v === null || v === undefined ? "-" : typeof v === "number" ? v.toFixed(d) : String(v));
const signed = (v) => (v === null || v === undefined ? "-" : (v >= 0 ? "+" : "") + v.toFixed(4));

function thumbFigure(row, caption) {
  const img = el("img", { src: row.thumb, alt: `record ${row.index}`, width: "64", height: "64" });
  img.addEventListener("error", () => img.replaceWith(el("div", { class: "nothumb", text: "no picture" })));
  return el("figure", { class: "thumb" + (row.right === false ? " wrong" : row.right ? " right" : ""), "data-index": String(row.index) },
    img, el("figcaption", {}, ...caption));
}

// ---------------------------------------------------------------- evaluations: sort, filter, select to compare
function initRuns() {
  const table = $("#runs");
  const filter = $("#run-filter");
  const compareBtn = $("#compare-selected");
  const rows = () => $$("tbody tr", table);
  filter.addEventListener("input", () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const tr of rows()) {
      const text = tr.textContent.toLowerCase();
      tr.hidden = !words.every((w) => text.includes(w));
      if (!tr.hidden) shown++;
    }
    $("#run-count").textContent = String(shown);
  });
  $$("th[data-sort]", table).forEach((th, i) => th.addEventListener("click", () => {
    const col = th.cellIndex, numeric = th.dataset.sort === "num";
    const dir = th.dataset.dir === "asc" ? -1 : 1;
    $$("th", table).forEach((h) => delete h.dataset.dir);
    th.dataset.dir = dir === 1 ? "asc" : "desc";
    const key = (tr) => {
      const cell = tr.cells[col];
      if (numeric) { const v = parseFloat(cell.dataset.value); return isNaN(v) ? -Infinity : v; }
      return cell.textContent.trim().toLowerCase();
    };
    const sorted = rows().sort((a, b) => (key(a) < key(b) ? -dir : key(a) > key(b) ? dir : 0));
    table.tBodies[0].append(...sorted);
  }));
  table.addEventListener("change", () => {
    compareBtn.disabled = $$("input.pick:checked", table).length < 2;
  });
  compareBtn.addEventListener("click", () => {
    const q = new URLSearchParams();
    $$("input.pick:checked", table).forEach((c) => q.append("runs", c.value));
    location.href = "/compare?" + q.toString();
  });
  $$("button.pull-attached").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      const got = await postJSON("/api/attached/pull", { ref: b.dataset.ref });
      location.href = "/runs/" + encodeURIComponent(got.run);
    } catch (e) { b.replaceWith(el("span", { class: "error", text: e.message })); }
  }));
}

// ---------------------------------------------------------------- one evaluation: confusion modes, records, attach
function initRun() {
  const section = $("#records");
  const runId = section.dataset.run;
  const form = $("#record-filters");
  let offset = 0;
  const limit = 200;
  $$(".cm-mode").forEach((b) => b.addEventListener("click", () => {
    $$(".cm-mode").forEach((x) => x.classList.toggle("on", x === b));
    $$(".cm").forEach((c) => { c.hidden = c.dataset.mode !== b.dataset.mode; });
  }));
  async function load() {
    const q = new URLSearchParams({ offset: String(offset), limit: String(limit) });
    for (const name of ["true", "pred", "correct", "sort"]) if (form.elements[name].value) q.set(name, form.elements[name].value);
    $("#records-status").textContent = "loading…";
    try {
      const page = await getJSON(`/api/runs/${encodeURIComponent(runId)}/records?${q}`);
      const grid = $("#record-grid");
      grid.replaceChildren(...page.rows.map((r) => thumbFigure(r, [
        el("span", { class: "idx", text: `#${r.index}` }),
        el("span", { text: `true ${r.label_title}` }),
        el("span", { class: r.right ? "ok" : "bad", text: `pred ${r.pred_title}` }),
        el("span", { class: "muted", text: r.confidence === null ? "" : `conf ${r.confidence.toFixed(3)}` }),
      ])));
      const last = Math.min(page.offset + page.rows.length, page.total);
      $("#records-status").textContent = `${page.total} records match`;
      $("#page-info").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "";
      $("#prev-page").disabled = page.offset === 0;
      $("#next-page").disabled = last >= page.total;
    } catch (e) { $("#records-status").textContent = e.message; }
  }
  form.addEventListener("change", () => { offset = 0; load(); });
  $("#clear-filters").addEventListener("click", () => { form.reset(); offset = 0; load(); });
  $("#prev-page").addEventListener("click", () => { offset = Math.max(0, offset - limit); load(); });
  $("#next-page").addEventListener("click", () => { offset += limit; load(); });
  $$(".cm").forEach((c) => c.addEventListener("click", (ev) => {
    const cell = ev.target.closest("[data-true]");
    if (!cell) return;
    form.elements.true.value = cell.dataset.true;
    form.elements.pred.value = cell.dataset.pred;
    form.elements.correct.value = "";
    offset = 0;
    load();
    section.scrollIntoView();
  }));
  const attach = $("#attach-form");
  attach.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("#attach-result");
    out.textContent = "attaching…";
    try {
      const done = await postJSON(`/api/runs/${encodeURIComponent(runId)}/attach`, { image: attach.elements.image.value });
      out.textContent = `attached ${done.repository}@${done.digest}`;
    } catch (e) { out.textContent = e.message; }
  });
  load();
}

// ---------------------------------------------------------------- compare: differences only, flipped records
function initCompare() {
  const only = $("#differences-only");
  only.addEventListener("change", () => $$("tr.same").forEach((tr) => { tr.hidden = only.checked; }));
  $$(".flips").forEach((box) => {
    let kind = "right_to_wrong", offset = 0;
    const grid = $(".flip-grid", box), more = $(".flip-more", box);
    async function load(reset) {
      if (reset) { offset = 0; grid.replaceChildren(); }
      const q = new URLSearchParams({ a: box.dataset.a, b: box.dataset.b, kind, offset: String(offset), limit: "100" });
      try {
        const page = await getJSON(`/api/compare/flipped?${q}`);
        grid.append(...page.rows.map((r) => thumbFigure(r, [
          el("span", { class: "idx", text: `#${r.index}` }),
          el("span", { text: `true ${r.label_title}` }),
          el("span", { class: kind === "right_to_wrong" ? "ok" : "bad", text: `base ${r.a_pred_title}` }),
          el("span", { class: kind === "right_to_wrong" ? "bad" : "ok", text: `this ${r.b_pred_title}` }),
        ])));
        offset += page.rows.length;
        $(".flip-status", box).textContent = `${page.total} records ${kind === "right_to_wrong" ? "right in the baseline, wrong here" : "wrong in the baseline, right here"}`;
        more.hidden = offset >= page.total;
      } catch (e) { $(".flip-status", box).textContent = e.message; }
    }
    $$(".flip-kind", box).forEach((b) => b.addEventListener("click", () => {
      $$(".flip-kind", box).forEach((x) => x.classList.toggle("on", x === b));
      kind = b.dataset.kind;
      load(true);
    }));
    more.addEventListener("click", () => load(false));
    load(true);
  });
}

// ---------------------------------------------------------------- create a job
function initJobNew() {
  const form = $("#job-form");
  const pick = (name) => form.elements[name].value.trim() || form.elements[name + "-pick"].value;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = $("#job-error");
    err.hidden = true;
    const body = { model: pick("model"), dataset: pick("dataset"), shards: parseInt(form.elements.shards.value || "1", 10) };
    const where = form.elements.where.value;
    try {
      if (where === "k8s") {
        const out = await postJSON("/api/k8s", body);
        $("#k8s-out").hidden = false;
        $("#k8s-yaml").textContent = out.yaml;
        $("#k8s-apply").textContent = out.apply;
        $("#k8s-warnings").replaceChildren(...out.warnings.map((w) => el("li", { text: w })));
        const link = $("#k8s-download");
        link.href = URL.createObjectURL(new Blob([out.yaml], { type: "application/yaml" }));
        link.download = out.file;
        return;
      }
      const job = await postJSON("/api/jobs", { ...body, where });
      location.href = "/jobs/" + encodeURIComponent(job.id);
    } catch (e) { err.textContent = e.message; err.hidden = false; }
  });
}

// ---------------------------------------------------------------- a job: live progress (Server-Sent Events), cancel
function showJob(job) {
  const p = job.progress;
  $("#job-status").textContent = job.status;
  $("#job-status").className = "status " + job.status;
  const bar = $("#job-progress");
  bar.max = p.total || Math.max(p.done, 1);
  bar.value = p.done;
  const parts = [`${p.done} / ${p.total ?? "?"} records`];
  if (p.rate) parts.push(`${p.rate.toFixed(1)} records/s`);
  if (p.eta !== null && p.eta !== undefined) parts.push(`ETA ${Math.ceil(p.eta)} s`);
  parts.push(`${p.elapsed.toFixed(1)} s elapsed`);
  $("#job-numbers").textContent = parts.join(" · ");
  $("#job-log").textContent = job.log.join("\n");
  const live = job.status === "queued" || job.status === "running";
  $("#job-cancel").disabled = !live;
  if (job.run) { const a = $("#job-run"); a.href = "/runs/" + encodeURIComponent(job.run); a.hidden = false; }
  if (job.error) { $("#job-error").textContent = job.error; $("#job-error").hidden = false; }
  document.body.dataset.jobStatus = job.status;
}

function initJob() {
  const id = $("#job").dataset.job;
  const source = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
  source.onmessage = (ev) => {
    const job = JSON.parse(ev.data);
    showJob(job);
    if (!["queued", "running"].includes(job.status)) source.close();
  };
  source.onerror = () => { source.close(); getJSON(`/api/jobs/${encodeURIComponent(id)}`).then(showJob).catch(() => {}); };
  $("#job-cancel").addEventListener("click", async () => {
    $("#job-cancel").disabled = true;
    try { showJob({ ...(await postJSON(`/api/jobs/${encodeURIComponent(id)}/cancel`, {})), log: [] }); } catch (e) { $("#job-error").textContent = e.message; $("#job-error").hidden = false; }
  });
}

// ---------------------------------------------------------------- gate
function rules(text) {
  const out = {};
  for (const part of text.split(/[,\s]+/).filter(Boolean)) {
    const [k, v] = part.split("=");
    out[k] = Number(v);
  }
  return out;
}

function initGate() {
  const form = $("#gate-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    const body = { candidate: f.candidate.value, baseline: f["baseline-ref"].value.trim() || f["baseline-pick"].value,
                   min: rules(f.min.value), max_drop: rules(f.max_drop.value) };
    const box = $("#gate-result");
    box.hidden = false;
    try {
      const r = await postJSON("/api/gate", body);
      $("#gate-verdict").textContent = r.passed ? "PASS" : "FAIL";
      $("#gate-verdict").className = r.passed ? "pass" : "fail";
      $("#gate-failure").textContent = r.failure || "";
      $("#gate-table tbody").replaceChildren(...r.rows.map((row) => el("tr", { class: row.ok ? "" : "failed" },
        el("td", { text: row.metric }), el("td", { class: "num", text: fmt(row.candidate) }), el("td", { class: "num", text: fmt(row.baseline) }),
        el("td", { class: "num", text: signed(row.delta) }), el("td", { text: row.rule }), el("td", { text: row.ok ? "ok" : "FAIL" }))));
      $("#gate-flipped").textContent = `records right → wrong: ${r.flipped.right_to_wrong}, wrong → right: ${r.flipped.wrong_to_right}`;
      $("#gate-markdown").textContent = r.markdown;
    } catch (e) {
      $("#gate-verdict").textContent = "error";
      $("#gate-verdict").className = "fail";
      $("#gate-failure").textContent = e.message;
      $("#gate-table tbody").replaceChildren();
    }
  });
}

const PAGES = { runs: initRuns, run: initRun, compare: initCompare, "job-new": initJobNew, job: initJob, gate: initGate };
document.addEventListener("DOMContentLoaded", () => {
  const init = PAGES[document.body.dataset.page];
  if (init) init();
});
