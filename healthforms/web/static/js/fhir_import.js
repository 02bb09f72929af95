// Import a FHIR Questionnaire on the new-form page (docs/fhir.md): the file is read in
// the browser, sent to POST /api/forms/import-fhir, and the answer's lists of what was not
// imported (and what changed) are shown before staff open the new draft.

import { api, el, showError, clearNotices } from "./api.js";

const form = document.getElementById("fhir-import");
const input = document.getElementById("fhir-file");
const button = document.getElementById("fhir-import-btn");
const result = document.getElementById("fhir-import-result");

function findings(title, entries) {
  if (!entries.length) return null;
  return el("div", {},
    el("h3", { text: `${title} (${entries.length})` }),
    el("ul", {}, entries.map((f) => el("li", {},
      el("code", { text: f.linkId || "Questionnaire" }), ` ${f.what}: ${f.why}`))));
}

if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearNotices();
    result.hidden = true;
    result.replaceChildren();
    const file = input.files && input.files[0];
    if (!file) {
      showError("Choose a Questionnaire file first.");
      input.focus();
      return;
    }
    let body;
    try {
      body = JSON.parse(await file.text());
    } catch {
      showError("That file is not JSON: choose a FHIR Questionnaire in JSON.");
      return;
    }
    button.disabled = true;
    try {
      const { data } = await api("/api/forms/import-fhir", { method: "POST", body });
      const id = encodeURIComponent(data.form.id);
      result.replaceChildren(
        el("p", { text: `Imported “${data.form.title}” as a draft with ${data.form.fields.length} fields.` }),
        findings("Not imported", data.unsupported || []),
        findings("Imported with a change", data.notes || []),
        el("p", {}, el("a", { class: "btn btn-primary", href: `/forms/${id}`, text: "Open the imported form" })),
      );
      result.hidden = false;
    } catch (err) {
      const field = err.body && err.body.fields && err.body.fields.questionnaire;
      showError(field ? `Not a valid Questionnaire: ${field}` : err);
    } finally {
      button.disabled = false;
    }
  });
}
