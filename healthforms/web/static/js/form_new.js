import { api, initStaffPage, showError } from "./api.js";

initStaffPage();
const form = document.getElementById("new-form");
const titleInput = document.getElementById("title");
const titleError = document.getElementById("title-error");

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
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const { data } = await api("/api/forms", {
      method: "POST", body: { title, description: document.getElementById("description").value.trim() },
    });
    location.assign(`/forms/${encodeURIComponent(data.id)}`);
  } catch (err) {
    button.disabled = false;
    if (err.body && err.body.fields && err.body.fields.title) {
      titleError.textContent = err.body.fields.title;
      titleError.hidden = false;
      titleInput.setAttribute("aria-invalid", "true");
    }
    showError(err);
  }
});
