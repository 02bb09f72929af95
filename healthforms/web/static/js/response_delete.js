// Deleting a response (admins only; the page offers it to no one else and the API
// refuses anyone else). A real confirmation step: the dialog sends the DELETE only once
// the response's confirmation code has been typed (case, spaces and dashes do not
// matter, as when a patient reads it out), so a stray click deletes nothing. api() adds
// the CSRF token; on success the page returns to the form's responses.
import { api, showError } from "./api.js";

const section = document.getElementById("delete-section");
const dialog = document.getElementById("delete-dialog");

function normalise(code) {
  return (code || "").toUpperCase().replace(/[\s-]/g, "");
}

if (section && dialog) {
  const responseId = document.body.dataset.responseId;
  const formId = section.dataset.formId;
  const expected = normalise(section.dataset.confirmation);
  const input = document.getElementById("delete-code");
  const confirmBtn = document.getElementById("delete-confirm");
  const matches = () => expected !== "" && normalise(input.value) === expected;

  document.getElementById("delete-open").addEventListener("click", () => {
    input.value = "";
    confirmBtn.disabled = true;
    dialog.showModal();
    input.focus();
  });
  document.getElementById("delete-cancel").addEventListener("click", () => dialog.close());
  input.addEventListener("input", () => { confirmBtn.disabled = !matches(); });
  document.getElementById("delete-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (confirmBtn.disabled || !matches()) return;
    confirmBtn.disabled = true;
    try {
      await api(`/api/responses/${encodeURIComponent(responseId)}`, { method: "DELETE" });
      location.assign(`/forms/${encodeURIComponent(formId)}/responses`);
    } catch (err) {
      dialog.close();
      showError(err);
    }
  });
}
