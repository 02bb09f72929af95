// Webhooks admin pages: create an endpoint (its secret shown once), change one, enable
// or disable it, rotate its secret, send a test event, redeliver dead letters. Every
// change goes through the JSON API with the CSRF token (api.js).
import { ApiError, api, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();

const FIELD_ERRORS = { url: "wh-url-error", events: "wh-events-error", fhirBody: "wh-fhir-error", confirmPhi: "wh-fhir-error" };

function clearFieldErrors() {
  for (const id of new Set(Object.values(FIELD_ERRORS))) {
    const node = document.getElementById(id);
    if (node) { node.textContent = ""; node.hidden = true; }
  }
}

/** A 422's field messages beside their fields; anything else in the page's notice. */
function showFailure(err) {
  if (err instanceof ApiError && err.code === "validation_error" && err.body.fields) {
    let shown = false;
    for (const [field, message] of Object.entries(err.body.fields)) {
      const node = document.getElementById(FIELD_ERRORS[field] || "");
      if (node) { node.textContent = message; node.hidden = false; shown = true; }
    }
    if (shown) { showError("Please correct the marked fields."); return; }
  }
  showError(err);
}

function chosenEvents(form) {
  return [...form.querySelectorAll('input[name="events"]:checked')].map((i) => i.value);
}

function showSecret(secret) {
  const panel = document.getElementById("secret-panel");
  const input = document.getElementById("wh-secret");
  input.value = secret;
  panel.hidden = false;
  input.focus();
  input.select();
}

const addForm = document.getElementById("add-endpoint");
if (addForm) {
  addForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors();
    const body = {
      url: addForm.elements.url.value.trim(),
      description: addForm.elements.description.value,
      events: chosenEvents(addForm),
    };
    try {
      const { data } = await api("/api/webhooks", { method: "POST", body });
      addForm.hidden = true;
      showSecret(data.secret);
      showInfo("Endpoint added. Copy its secret now: it is not shown again.");
    } catch (err) { showFailure(err); }
  });
}

const section = document.getElementById("endpoint");
if (section) {
  const id = section.dataset.endpointId;
  const base = `/api/webhooks/${encodeURIComponent(id)}`;
  const editForm = document.getElementById("edit-endpoint");

  editForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors();
    const body = {
      url: editForm.elements.url.value.trim(),
      description: editForm.elements.description.value,
      events: chosenEvents(editForm),
      fhirBody: document.getElementById("wh-fhir").checked,
    };
    if (document.getElementById("wh-confirm").checked) body.confirmPhi = true;
    try {
      await api(base, { method: "PATCH", body });
      showInfo("Saved.");
      location.reload();
    } catch (err) { showFailure(err); }
  });

  document.getElementById("toggle-enabled").addEventListener("click", async () => {
    const enabled = section.dataset.enabled !== "1";
    try {
      await api(base, { method: "PATCH", body: { enabled } });
      location.reload();
    } catch (err) { showFailure(err); }
  });

  document.getElementById("send-test").addEventListener("click", async () => {
    try {
      const { data } = await api(`${base}/test`, { method: "POST" });
      showInfo(`Test event queued (webhook id ${data.webhookId}). Reload to see it in the log.`);
    } catch (err) { showFailure(err); }
  });

  document.getElementById("rotate-secret").addEventListener("click", async () => {
    if (!window.confirm("Make a new secret? The current one keeps signing beside it for 24 hours.")) return;
    try {
      const { data } = await api(`${base}/rotate-secret`, { method: "POST" });
      showSecret(data.secret);
      showInfo("New secret made. Copy it now: it is not shown again.");
    } catch (err) { showFailure(err); }
  });

  document.getElementById("delete-endpoint").addEventListener("click", async () => {
    if (!window.confirm("Delete this endpoint? Events still waiting for it are dropped.")) return;
    try {
      await api(base, { method: "DELETE" });
      location.assign("/admin/webhooks");
    } catch (err) { showFailure(err); }
  });

  for (const button of document.querySelectorAll('[data-action="redeliver"]')) {
    button.addEventListener("click", async () => {
      const row = button.closest("tr");
      button.disabled = true;
      try {
        await api(`${base}/deliveries/${encodeURIComponent(row.dataset.deliveryId)}/redeliver`, { method: "POST" });
        row.remove();
        showInfo("Sent again: it is back in the queue.");
      } catch (err) { button.disabled = false; showFailure(err); }
    });
  }
}
