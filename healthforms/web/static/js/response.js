import { api, el, initStaffPage, showError } from "./api.js";

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

(async () => {
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
