// The forms list: "Duplicate" makes a new draft copy of a form (POST /api/forms/{id}/duplicate)
// and opens it in the builder.
import { api, initStaffPage, showError } from "./api.js";

initStaffPage();
for (const button of document.querySelectorAll("button.duplicate-form")) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const { data } = await api(`/api/forms/${encodeURIComponent(button.dataset.formId)}/duplicate`, { method: "POST" });
      location.assign(`/forms/${encodeURIComponent(data.id)}`);
    } catch (err) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      showError(err);
    }
  });
}
