import { api, ApiError, csrfToken, el, goToLogin, initStaffPage, showError } from "./api.js";

initStaffPage();
const responseId = document.body.dataset.responseId;

function show(dd, type, value) {
  dd.replaceChildren();
  if (value === undefined || value === null || value === "" || (Array.isArray(value) && !value.length)) {
    dd.append(el("span", { class: "muted", text: "Not answered" }));
  } else if (type === "signature" && typeof value === "string" && value.startsWith("data:image/png;base64,")) {
    dd.append(el("img", { src: value, alt: "Patient's signature" }));
  } else if (typeof value === "boolean") {
    dd.textContent = value ? "Yes" : "No";
  } else if (Array.isArray(value)) {
    dd.append(el("ul", {}, value.map((v) => el("li", { text: String(v) }))));
  } else {
    dd.textContent = String(value);
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

if (document.getElementById("answers")) (async () => {
  try {
    const { data } = await api(`/api/responses/${encodeURIComponent(responseId)}`);
    const answers = data.answers || {};
    for (const row of document.querySelectorAll(".answer[data-field-id]")) {
      show(row.querySelector("dd"), row.dataset.type, answers[row.dataset.fieldId]);
    }
    document.getElementById("answers").hidden = false;
  } catch (err) {
    showError(err);
  } finally {
    document.getElementById("answers-loading").hidden = true;
  }
})();
