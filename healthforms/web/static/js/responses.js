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

function render(r) {
  const actions = el("td", { "data-label": "Response" },
    el("a", { href: `/responses/${encodeURIComponent(r.id)}`, text: "Open response" }));
  if (canReview && r.status === "new") {
    const button = el("button", { type: "button", class: "btn btn-small mark-reviewed", text: "Mark reviewed" });
    button.addEventListener("click", () => markReviewed(r, button));
    actions.append(" ", button);
  }
  return el("tr", { "data-response-id": r.id, "data-status": r.status },
    el("td", { "data-label": "Submitted" }, el("time", { datetime: r.submittedAt, text: formatTime(r.submittedAt) })),
    el("td", { "data-label": "Confirmation" }, el("code", { text: r.confirmation || "" })),
    statusCell(r),
    el("td", { "data-label": "Version", text: `v${r.formVersion}` }),
    actions);
}

async function load() {
  document.getElementById("loading").hidden = false;
  try {
    const status = filter ? filter.value : "";
    const query = status ? `?status=${encodeURIComponent(status)}` : "";
    const { data } = await api(`/api/forms/${encodeURIComponent(formId)}/responses${query}`);
    const rows = (data.responses || []).slice().sort((a, b) => (a.submittedAt < b.submittedAt ? 1 : -1));
    const body = document.querySelector("#responses-table tbody");
    body.replaceChildren(...rows.map(render));
    document.getElementById("responses-wrap").hidden = rows.length === 0;
    document.getElementById("responses-empty").hidden = rows.length !== 0;
  } catch (err) {
    showError(err);
  } finally {
    document.getElementById("loading").hidden = true;
  }
}

if (filter) filter.addEventListener("change", load);
load();
