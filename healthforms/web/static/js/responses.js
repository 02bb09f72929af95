import { api, el, formatTime, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();
const formId = document.body.dataset.formId;
const canReview = Boolean(document.body.dataset.canReview);
const filter = document.getElementById("status-filter");
const STATUS_LABELS = { new: "New", reviewed: "Reviewed", filed: "Filed" };

function statusCell(r) {
  const who = r.status === "filed" ? r.filedBy : r.reviewedBy;
  const label = STATUS_LABELS[r.status] || r.status;
  const cell = el("td", { "data-label": "Status" },
    el("span", { class: `badge badge-${r.status}`, text: label }));
  if (who && who.name) cell.append(el("span", { class: "muted", text: ` by ${who.name}` }));
  return cell;
}

async function markReviewed(r, button) {
  button.disabled = true;
  try {
    const { data } = await api(`/api/responses/${encodeURIComponent(r.id)}/status`, {
      method: "POST", body: { status: "reviewed" },
    });
    showInfo("Marked as reviewed.");
    const row = document.querySelector(`tr[data-response-id="${CSS.escape(r.id)}"]`);
    if (row) row.replaceWith(render(data));
  } catch (err) {
    button.disabled = false;
    showError(err);
  }
}

function patientCell(r) {
  const cell = el("td", { "data-label": "Patient" });
  const p = r.patient;
  if (!p) cell.append(el("span", { class: "muted", text: "—" }));
  else if (p.unreadable) cell.append(el("span", { class: "muted", text: "Cannot be decrypted" }));
  else {
    cell.append(el("span", { class: "patient-name", text: p.name || "(no name given)" }));
    if (p.birthDate) cell.append(el("span", { class: "muted small patient-dob", text: ` born ${p.birthDate}` }));
  }
  return cell;
}

// Calculated scores (docs/scores.md), sealed apart for this list: value and band, staff only.
const hasScores = Boolean(document.body.dataset.hasScores);

function scoreCell(r) {
  const cell = el("td", { "data-label": "Score", class: "scores" });
  const scores = r.scores || {};
  if (scores.unreadable) {
    cell.append(el("span", { class: "muted", text: "Cannot be decrypted" }));
    return cell;
  }
  const entries = Object.values(scores);
  if (!entries.length) cell.append(el("span", { class: "muted", text: "—" }));
  entries.forEach((s, i) => {
    if (i) cell.append(el("br"));
    const value = s.value === null || s.value === undefined ? "incomplete" : String(s.value);
    cell.append(el("span", { class: "score", text: `${s.label}: ${value}` }));
    if (s.band) cell.append(" ", el("span", { class: "badge score-band", text: s.band }));
  });
  return cell;
}

function render(r) {
  const actions = el("td", { "data-label": "Response" },
    el("a", { href: `/responses/${encodeURIComponent(r.id)}`, text: "Open response" }));
  if (canReview && r.status === "new") {
    const button = el("button", { type: "button", class: "btn btn-small mark-reviewed", text: "Mark reviewed" });
    button.addEventListener("click", () => markReviewed(r, button));
    actions.append(" ", button);
  }
  return el("tr", { "data-response-id": r.id, "data-status": r.status },
    patientCell(r),
    el("td", { "data-label": "Submitted" }, el("time", { datetime: r.submittedAt, text: formatTime(r.submittedAt) })),
    el("td", { "data-label": "Confirmation" }, el("code", { text: r.confirmation || "" })),
    statusCell(r),
    ...(hasScores ? [scoreCell(r)] : []),
    el("td", { "data-label": "Version", text: `v${r.formVersion}` }),
    actions);
}

const PAGE = 50;
let cursor = null;
const more = document.getElementById("load-more");
const nameInput = document.getElementById("patient-name");
const dobInput = document.getElementById("patient-dob");
const clear = document.getElementById("search-clear");
let searching = false;

// Each load is numbered: a reply that arrives after a newer load was started (the filter
// changed twice quickly) is dropped, so the table never shows an older filter's rows.
let loads = 0;

async function load(append = false) {
  const mine = ++loads;
  document.getElementById("loading").hidden = false;
  if (more) more.disabled = true;
  try {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (filter && filter.value) params.set("status", filter.value);
    const name = nameInput.value.trim();
    const dob = dobInput.value;
    if (name) params.set("name", name);
    if (dob) params.set("birthDate", dob);
    searching = Boolean(name || dob);
    if (append && cursor) params.set("after", cursor);
    const { data } = await api(`/api/forms/${encodeURIComponent(formId)}/responses?${params}`);
    if (mine !== loads) return;  // superseded
    const rows = data.responses || [];  // newest first, as the server pages them
    const body = document.querySelector("#responses-table tbody");
    if (append) body.append(...rows.map(render)); else body.replaceChildren(...rows.map(render));
    cursor = data.next || null;
    const shown = body.children.length;
    document.getElementById("responses-wrap").hidden = shown === 0;
    document.getElementById("responses-empty").hidden = shown !== 0 || searching;
    document.getElementById("search-empty").hidden = shown !== 0 || !searching;
    clear.hidden = !searching;
    if (more) more.hidden = !cursor;
  } catch (err) {
    if (mine === loads) showError(err);
  } finally {
    if (mine === loads) {
      document.getElementById("loading").hidden = true;
      if (more) more.disabled = false;
    }
  }
}

const toggle = document.getElementById("alerts-toggle");
const alertsUrl = `/api/forms/${encodeURIComponent(formId)}/alerts`;
api(alertsUrl).then(({ data }) => {
  toggle.checked = Boolean(data.subscribed);
  toggle.disabled = false;
  toggle.title = data.email ? "By email and in Alerts" : "In Alerts (email is not set up)";
}).catch(showError);
toggle.addEventListener("change", async () => {
  toggle.disabled = true;
  try {
    const { data } = await api(alertsUrl, { method: toggle.checked ? "PUT" : "DELETE" });
    toggle.checked = Boolean(data.subscribed);
    showInfo(data.subscribed ? "You will be alerted about new responses." : "Alerts turned off for this form.");
  } catch (err) {
    toggle.checked = !toggle.checked;
    showError(err);
  } finally {
    toggle.disabled = false;
  }
});

if (filter) filter.addEventListener("change", () => load());
document.getElementById("responses-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
clear.addEventListener("click", () => {
  nameInput.value = "";
  dobInput.value = "";
  load();
  nameInput.focus();
});
if (more) more.addEventListener("click", () => load(true));
load();
