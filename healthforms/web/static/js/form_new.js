import { api, initStaffPage, showError } from "./api.js";

initStaffPage();
const form = document.getElementById("new-form");
const titleInput = document.getElementById("title");
const titleError = document.getElementById("title-error");
const createBtn = document.getElementById("create-btn");

// Choosing a template fills in its title, unless staff typed their own.
let autoTitle = "";
const chosen = () => form.querySelector('input[name="template"]:checked');
function onTemplate() {
  const radio = chosen();
  const template = radio ? radio.value : "";
  if (!titleInput.value.trim() || titleInput.value === autoTitle) {
    autoTitle = template ? radio.dataset.title : "";
    titleInput.value = autoTitle;
  }
  createBtn.textContent = template ? "Create from template" : "Create and add fields";
}
for (const radio of form.querySelectorAll('input[name="template"]')) radio.addEventListener("change", onTemplate);
onTemplate();

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = titleInput.value.trim();
  titleError.hidden = true;
  titleInput.removeAttribute("aria-invalid");
  if (!title) {
    titleError.textContent = "Give the form a title.";
    titleError.hidden = false;
    titleInput.setAttribute("aria-invalid", "true");
    titleInput.focus();
    return;
  }
  createBtn.disabled = true;
  const template = chosen() ? chosen().value : "";
  const description = document.getElementById("description").value.trim();
  const body = { title };
  if (template) {
    body.template = template;
    if (description) body.description = description;  // else the template's own
  } else {
    body.description = description;
  }
  try {
    const { data } = await api("/api/forms", { method: "POST", body });
    location.assign(`/forms/${encodeURIComponent(data.id)}`);
  } catch (err) {
    createBtn.disabled = false;
    if (err.body && err.body.fields && err.body.fields.title) {
      titleError.textContent = err.body.fields.title;
      titleError.hidden = false;
      titleInput.setAttribute("aria-invalid", "true");
    }
    showError(err);
  }
});
