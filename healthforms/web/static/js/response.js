import { api, ApiError, csrfToken, el, formatTime, goToLogin, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();
const responseId = document.body.dataset.responseId;

function show(dd, type, value) {
  dd.replaceChildren();
  if (value === undefined || value === null || value === "" || (Array.isArray(value) && !value.length)) {
    dd.append(el("span", { class: "muted", text: "Not answered" }));
  } else if (type === "signature" && typeof value === "string" && value.startsWith("data:image/png;base64,")) {
    dd.append(el("img", { src: value, alt: "Patient's signature" }));
  } else if (type === "file" && Array.isArray(value)) {
    dd.append(el("span", { class: "muted", text: "Loading files…" }));  // showFiles fills it
  } else if (typeof value === "boolean") {
    dd.textContent = value ? "Yes" : "No";
  } else if (Array.isArray(value)) {
    dd.append(el("ul", {}, value.map((v) => el("li", { text: String(v) }))));
  } else {
    dd.textContent = String(value);
  }
}

// Attached files (docs/uploads.md): photos shown, PDFs offered as downloads. Each file
// is served by an audited read that is never cached.
async function showFiles(answers) {
  const rows = [...document.querySelectorAll('.answer[data-type="file"]')]
    .filter((row) => Array.isArray(answers[row.dataset.fieldId]) && answers[row.dataset.fieldId].length);
  if (!rows.length) return;
  const base = `/api/responses/${encodeURIComponent(responseId)}/files`;
  const { data } = await api(base);
  const byId = new Map(((data && data.files) || []).map((f) => [f.id, f]));
  for (const row of rows) {
    const label = row.querySelector("dt").textContent.trim();
    const ids = answers[row.dataset.fieldId];
    const items = ids.map((id, i) => {
      const file = byId.get(id);
      if (!file) return el("li", { class: "muted", text: "This file is no longer available." });
      const url = `${base}/${encodeURIComponent(id)}`;
      if (file.mediaType.startsWith("image/")) {
        return el("li", {}, el("a", { href: url, target: "_blank", rel: "noopener" },
          el("img", { class: "file-photo", src: url, alt: `${label}: photo ${i + 1} of ${ids.length} (opens full size)` })));
      }
      const pages = `${file.pages} page${file.pages === 1 ? "" : "s"}`;
      return el("li", {}, el("a", { href: url, download: "", text: `${label}: PDF document ${i + 1} of ${ids.length}, ${pages} (download)` }));
    });
    row.querySelector("dd").replaceChildren(el("ul", { class: "file-answers" }, items));
  }
}

// A calculated score (docs/scores.md): the value and its band, or why there is none.
function showScore(dd, score) {
  dd.replaceChildren();
  if (!score || typeof score !== "object") {
    dd.append(el("span", { class: "muted", text: "Not calculated" }));
  } else if (score.value === null || score.value === undefined) {
    dd.append(el("span", { class: "score-incomplete", text:
      `Incomplete: ${score.answered ?? "?"} of ${score.items ?? "?"} items answered, so no score (the instrument needs every item).` }));
  } else {
    dd.append(el("strong", { class: "score-value", text: String(score.value) }));
    if (score.band) dd.append(" ", el("span", { class: "badge score-band", text: score.band }));
  }
}

// "Generate PDF": the plain form's own post (its CSRF token in `csrf_token`), sent by
// fetch. A navigation would do, but the browser sends it with `Origin: null` (our pages'
// Referrer-Policy is no-referrer), which the origin check refuses; a same-origin fetch
// carries the real Origin. The server answers with a redirect to the page, which then
// offers the download. Never sent twice; failures are shown and the button comes back.
const pdfForm = document.getElementById("pdf-form");
if (pdfForm) {
  const button = document.getElementById("pdf-generate");
  const field = pdfForm.querySelector('input[name="csrf_token"]');
  const busy = (on) => {
    button.disabled = on;
    if (on) button.setAttribute("aria-busy", "true"); else button.removeAttribute("aria-busy");
    button.textContent = on ? "Generating PDF…" : "Generate PDF";
  };
  const send = () => fetch(pdfForm.action, {
    method: "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json" },
    body: new URLSearchParams(new FormData(pdfForm)),
  });
  const body = async (resp) => {
    try { return await resp.json(); } catch { return null; }
  };
  pdfForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    busy(true);
    try {
      if (!field.value) field.value = await csrfToken();
      let resp = await send();
      if (resp.status === 403 && ((await body(resp.clone())) || {}).code === "csrf_invalid") {
        field.value = await csrfToken(true);  // expired or lost: one fresh token, one retry
        resp = await send();
      }
      if (resp.ok) { location.assign(resp.url); return; }
      if (resp.status === 401) { goToLogin(); return; }
      throw new ApiError(resp.status, await body(resp), resp.headers);
    } catch (err) {
      busy(false);
      showError(err instanceof ApiError ? err : new ApiError(0, {
        error: "Could not reach the server. Check your connection and try again.", code: "network",
      }));
    }
  });
}

// The one audited read of the response gives the answers and the review status.
let resolveReview;
const reviewReady = new Promise((resolve) => { resolveReview = resolve; });

if (document.getElementById("answers")) (async () => {
  try {
    const { data } = await api(`/api/responses/${encodeURIComponent(responseId)}`);
    resolveReview(data);
    const answers = data.answers || {};
    for (const row of document.querySelectorAll(".answer[data-field-id]")) {
      if (row.dataset.type === "score") showScore(row.querySelector("dd"), (data.scores || {})[row.dataset.fieldId]);
      else show(row.querySelector("dd"), row.dataset.type, answers[row.dataset.fieldId]);
    }
    document.getElementById("answers").hidden = false;
    await showFiles(answers);
  } catch (err) {
    resolveReview(null);
    showError(err);
  } finally {
    document.getElementById("answers-loading").hidden = true;
  }
})();

// The review: status (who, when), the buttons that move it, and the staff notes.
const canReview = Boolean(document.body.dataset.canReview);
const LABELS = { new: "New", reviewed: "Reviewed", filed: "Filed" };

function showReview(r) {
  const line = document.getElementById("review-status");
  const parts = [el("span", { class: `badge badge-${r.status}`, text: LABELS[r.status] || r.status })];
  const said = (what, who, at) => {
    if (!at) return;
    parts.push(" ", el("span", { text: `${what}${who && who.name ? ` by ${who.name}` : ""} ` }),
      el("time", { datetime: at, text: formatTime(at) }));
  };
  said("Reviewed", r.reviewedBy, r.reviewedAt);
  if (r.filedAt) parts.push(" ·");
  said("Filed", r.filedBy, r.filedAt);
  line.replaceChildren(...parts);
  const actions = document.getElementById("review-actions");
  if (!actions || !canReview) return;
  const allowed = { new: ["reviewed", "filed"], reviewed: ["filed", "new"], filed: ["reviewed"] }[r.status] || [];
  for (const button of actions.querySelectorAll("button[data-status]")) {
    button.hidden = !allowed.includes(button.dataset.status);
    button.disabled = false;
  }
  // From filed, "reviewed" is the way back.
  const toReviewed = document.getElementById("mark-reviewed");
  if (toReviewed) toReviewed.textContent = r.status === "filed" ? "Take out of filed" : "Mark reviewed";
  actions.hidden = false;
}

function showNotes(notes) {
  const list = document.getElementById("notes");
  list.replaceChildren(...notes.map((n) => el("li", { "data-note-id": n.id },
    el("span", { class: "muted", text: `${(n.author && n.author.name) || "Staff"} · ` }),
    el("time", { datetime: n.createdAt, text: formatTime(n.createdAt) }),
    n.unreadable
      ? el("p", { class: "muted", text: "This note cannot be decrypted." })
      : el("p", { text: n.text }))));
  if (!notes.length) list.replaceChildren(el("li", { class: "muted", text: "No notes yet." }));
}

async function loadNotes() {
  try {
    const { data } = await api(`/api/responses/${encodeURIComponent(responseId)}/notes`);
    showNotes(data.notes || []);
  } catch (err) {
    showError(err);
  } finally {
    document.getElementById("notes-loading").hidden = true;
  }
}

if (document.getElementById("review")) {
  reviewReady.then((r) => { if (r) showReview(r); });
  loadNotes();
  const actions = document.getElementById("review-actions");
  if (actions) actions.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-status]");
    if (!button) return;
    for (const b of actions.querySelectorAll("button")) b.disabled = true;
    try {
      const { data } = await api(`/api/responses/${encodeURIComponent(responseId)}/status`, {
        method: "POST", body: { status: button.dataset.status },
      });
      showReview(data);
      showInfo(`Status: ${LABELS[data.status] || data.status}.`);
    } catch (err) {
      for (const b of actions.querySelectorAll("button")) b.disabled = false;
      showError(err);
    }
  });
  const form = document.getElementById("note-form");
  if (form) form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const area = document.getElementById("note-text");
    const button = document.getElementById("note-add");
    if (!area.value.trim()) { showError("Write the note first."); area.focus(); return; }
    button.disabled = true;
    try {
      await api(`/api/responses/${encodeURIComponent(responseId)}/notes`, {
        method: "POST", body: { text: area.value },
      });
      area.value = "";
      showInfo("Note added.");
      await loadNotes();
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  });
}
