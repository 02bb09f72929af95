// Requests to a patient (/forms/{id}/requests): create one and show its link and QR code
// once (the server keeps only a hash of the link), print it, mark it handed over; the
// form's requests with their states, a new link for one, cancel one.
import { api, el, formatTime, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();
const formId = document.body.dataset.formId;
const canEdit = Boolean(document.body.dataset.canEdit);
const $ = (id) => document.getElementById(id);
const STATE_LABELS = {
  created: "Created", sent: "Handed over", opened: "Opened", completed: "Completed",
  expired: "Expired", cancelled: "Cancelled",
};
const STATE_BADGES = {
  created: "badge-new", sent: "badge-new", opened: "badge-reviewed", completed: "badge-success",
  expired: "badge-muted", cancelled: "badge-muted",
};
const LIVE = new Set(["created", "sent", "opened"]);
let issuedId = null;

function svgDataUri(svg) {
  return `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
}

function showIssued(data) {
  const r = data.request;
  issuedId = r.id;
  $("issued-name").textContent = r.patientName || "";
  $("issued-qr").src = svgDataUri(data.qrSvg);
  $("issued-link").value = data.link;
  $("issued-link-text").textContent = data.link;
  $("issued-expires").textContent = formatTime(r.expiresAt);
  $("handed-over").hidden = r.state !== "created";
  $("issued").hidden = false;
  $("issued").focus();
}

function badge(state) {
  return el("span", { class: `badge ${STATE_BADGES[state] || ""} request-state`, text: STATE_LABELS[state] || state });
}

function time(iso) {
  return iso ? el("time", { datetime: iso, text: formatTime(iso) }) : el("span", { class: "muted", text: "—" });
}

async function act(path, button, message, body) {
  button.disabled = true;
  try {
    const { data } = await api(path, { method: "POST", body, expect: [] });
    showInfo(message);
    await load();
    return data;
  } catch (err) {
    button.disabled = false;
    showError(err);
    return null;
  }
}

function render(r) {
  const patient = el("td", { "data-label": "Patient" },
    r.unreadable ? el("span", { class: "muted", text: "Cannot be decrypted" })
      : el("span", { class: "patient-name", text: r.patientName || "" }));
  const contact = el("td", { "data-label": "Contact" },
    [r.email, r.phone].filter(Boolean).join(" · ") || el("span", { class: "muted", text: "—" }));
  const response = el("td", { "data-label": "Response" },
    r.responseId ? el("a", { href: `/responses/${encodeURIComponent(r.responseId)}`, text: "Open response" })
      : el("span", { class: "muted", text: "—" }));
  const row = el("tr", { "data-request-id": r.id, "data-state": r.state },
    patient, contact, el("td", { "data-label": "State" }, badge(r.state)),
    el("td", { "data-label": "Created" }, time(r.createdAt)),
    el("td", { "data-label": "Expires" }, time(r.expiresAt)), response);
  if (canEdit) {
    const actions = el("td", { class: "row-actions", "data-label": "Actions" });
    const id = encodeURIComponent(r.id);
    if (r.state === "created") {
      const sent = el("button", { type: "button", class: "btn btn-small", text: "Mark handed over" });
      sent.addEventListener("click", () => act(`/api/requests/${id}/sent`, sent, "Marked as handed over."));
      actions.append(sent);
    }
    if (LIVE.has(r.state) || r.state === "expired") {
      const reissue = el("button", { type: "button", class: "btn btn-small", text: "New link" });
      reissue.addEventListener("click", async () => {
        if (!confirm("Make a new link? The current link stops working.")) return;
        const data = await act(`/api/requests/${id}/reissue`, reissue, "New link made; the old one no longer works.", {});
        if (data) showIssued(data);
      });
      const cancel = el("button", { type: "button", class: "btn btn-small btn-quiet", text: "Cancel" });
      cancel.addEventListener("click", () => {
        if (confirm("Cancel this request? Its link stops working.")) act(`/api/requests/${id}/cancel`, cancel, "Request cancelled.");
      });
      actions.append(reissue, cancel);
    }
    row.append(actions);
  }
  return row;
}

async function load() {
  const state = $("state-filter").value;
  const query = state ? `?state=${encodeURIComponent(state)}` : "";
  try {
    const { data } = await api(`/api/forms/${encodeURIComponent(formId)}/requests${query}`);
    const body = $("requests-table").querySelector("tbody");
    body.replaceChildren(...data.requests.map(render));
    $("requests-wrap").hidden = data.requests.length === 0;
    $("requests-empty").hidden = data.requests.length !== 0;
  } catch (err) {
    showError(err);
  } finally {
    $("requests-loading").hidden = true;
  }
}

function showErrors(fields) {
  const ids = { patientName: "rq-name", email: "rq-email", phone: "rq-phone", expiresInDays: "rq-days" };
  if ($("rq-send")) ids.sendEmail = "rq-send";
  for (const [key, id] of Object.entries(ids)) {
    const box = $(`${id}-error`);
    const message = fields[key];
    box.textContent = message ? message.charAt(0).toUpperCase() + message.slice(1) : "";
    box.hidden = !message;
    if (message) $(id).setAttribute("aria-invalid", "true"); else $(id).removeAttribute("aria-invalid");
  }
  const other = Object.entries(fields).filter(([key]) => !(key in ids)).map(([, m]) => m);
  $("rq-error").textContent = other.join(" ");
  $("rq-error").hidden = other.length === 0;
}

const createForm = $("new-request-form");
if (createForm) {
  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("rq-name").value.trim();
    if (!name) { showErrors({ patientName: "enter the patient's name" }); $("rq-name").focus(); return; }
    const body = { patientName: name, expiresInDays: Number($("rq-days").value) || 7 };
    if ($("rq-email").value.trim()) body.email = $("rq-email").value.trim();
    if ($("rq-phone").value.trim()) body.phone = $("rq-phone").value.trim();
    if ($("rq-send") && $("rq-send").checked) body.sendEmail = true;
    const button = $("rq-submit");
    button.disabled = true;
    try {
      const { status, data } = await api(`/api/forms/${encodeURIComponent(formId)}/requests`, {
        method: "POST", body, expect: [409, 422],
      });
      if (status === 422) { showErrors(data.fields || {}); return; }
      if (status === 409) { showErrors({ form: data.error }); return; }
      showErrors({});
      createForm.reset();
      showIssued(data);
      await load();
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  });
}

$("copy-issued").addEventListener("click", async () => {
  const input = $("issued-link");
  try {
    await navigator.clipboard.writeText(input.value);
    showInfo("Link copied.");
  } catch {
    input.select();
    showInfo("Press Ctrl+C (or ⌘C) to copy the selected link.");
  }
});
$("print-issued").addEventListener("click", () => window.print());
$("handed-over").addEventListener("click", async () => {
  if (!issuedId) return;
  const data = await act(`/api/requests/${encodeURIComponent(issuedId)}/sent`, $("handed-over"), "Marked as handed over.");
  if (data) $("handed-over").hidden = true;
});
$("close-issued").addEventListener("click", () => {
  // The link is not kept anywhere: closing the panel forgets it.
  $("issued").hidden = true;
  $("issued-link").value = "";
  $("issued-link-text").textContent = "";
  $("issued-qr").removeAttribute("src");
  issuedId = null;
});
$("state-filter").addEventListener("change", load);
$("requests-filter").addEventListener("submit", (e) => { e.preventDefault(); load(); });
load();
