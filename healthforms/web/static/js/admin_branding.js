// The branding page (admins): name and accent colour through PUT /api/organization/branding,
// the logo through PUT/DELETE /api/organization/branding/logo. The server decides what is
// valid (the contrast rule included); its words are shown next to the field they name.
import { ApiError, api, csrfToken, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();

const form = document.getElementById("branding-form");
const nameInput = document.getElementById("display-name");
const accentInput = document.getElementById("accent-color");
const picker = document.getElementById("accent-picker");
const logoForm = document.getElementById("logo-form");
const fileInput = document.getElementById("logo-file");
const removeButton = document.getElementById("logo-remove");

function fieldError(input, errorId, message) {
  const node = document.getElementById(errorId);
  node.textContent = message || "";
  node.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
}

const HEX = /^#?([0-9a-f]{6}|[0-9a-f]{3})$/i;
picker.addEventListener("input", () => { accentInput.value = picker.value; });
accentInput.addEventListener("input", () => {
  const match = HEX.exec(accentInput.value.trim());
  if (match && match[1].length === 6) picker.value = `#${match[1].toLowerCase()}`;
});

function showLogo(branding) {
  const logo = branding.logo;
  document.getElementById("logo-current").hidden = !logo;
  document.getElementById("logo-none").hidden = Boolean(logo);
  removeButton.hidden = !logo;
  if (logo) document.getElementById("logo-preview").src = logo.url;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  fieldError(nameInput, "display-name-error", "");
  fieldError(accentInput, "accent-error", "");
  const button = document.getElementById("branding-save");
  button.disabled = true;
  try {
    const { data } = await api("/api/organization/branding", {
      method: "PUT",
      body: { displayName: nameInput.value.trim() || null, accentColor: accentInput.value.trim() || null },
    });
    accentInput.value = data.accentColor || "";
    showInfo("Saved. Patients see the new name and colour on their next page.");
  } catch (err) {
    const fields = (err instanceof ApiError && err.body.fields) || {};
    if (fields.displayName) fieldError(nameInput, "display-name-error", fields.displayName);
    if (fields.accentColor) fieldError(accentInput, "accent-error", fields.accentColor);
    if (fields.displayName) nameInput.focus();
    else if (fields.accentColor) accentInput.focus();
    else showError(err);
  } finally {
    button.disabled = false;
  }
});

async function sendLogo(method, body, type) {
  const send = async (token) => fetch("/api/organization/branding/logo", {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRF-Token": token, ...(type ? { "Content-Type": type } : {}) },
    body,
  });
  let resp = await send(await csrfToken());
  if (resp.status === 403) resp = await send(await csrfToken(true));
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (!resp.ok) throw new ApiError(resp.status, data, resp.headers);
  return data;
}

logoForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  fieldError(fileInput, "logo-error", "");
  const file = fileInput.files && fileInput.files[0];
  if (!file) {
    fieldError(fileInput, "logo-error", "Choose a PNG or JPEG file first.");
    fileInput.focus();
    return;
  }
  if (file.size > 1024 * 1024) {
    fieldError(fileInput, "logo-error", "The logo is larger than 1 MB.");
    fileInput.focus();
    return;
  }
  const button = document.getElementById("logo-upload");
  button.disabled = true;
  try {
    showLogo(await sendLogo("PUT", file, file.type || "application/octet-stream"));
    fileInput.value = "";
    showInfo("Logo saved.");
  } catch (err) {
    const fields = (err instanceof ApiError && err.body.fields) || {};
    fieldError(fileInput, "logo-error", fields.logo || (err instanceof ApiError ? err.message : "The logo could not be sent."));
    fileInput.focus();
  } finally {
    button.disabled = false;
  }
});

removeButton.addEventListener("click", async () => {
  removeButton.disabled = true;
  try {
    showLogo(await sendLogo("DELETE"));
    showInfo("Logo removed.");
    fileInput.focus();
  } catch (err) {
    showError(err);
  } finally {
    removeButton.disabled = false;
  }
});
