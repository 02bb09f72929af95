import { api, el, formatTime, initStaffPage, showError } from "./api.js";

initStaffPage();
const formId = document.body.dataset.formId;

(async () => {
  try {
    const { data } = await api(`/api/forms/${encodeURIComponent(formId)}/responses`);
    const rows = (data.responses || []).slice().sort((a, b) => (a.submittedAt < b.submittedAt ? 1 : -1));
    const body = document.querySelector("#responses-table tbody");
    body.replaceChildren(...rows.map((r) => el("tr", { "data-response-id": r.id },
      el("td", { "data-label": "Submitted" }, el("time", { datetime: r.submittedAt, text: formatTime(r.submittedAt) })),
      el("td", { "data-label": "Version", text: `v${r.formVersion}` }),
      el("td", { "data-label": "Response" }, el("a", { href: `/responses/${encodeURIComponent(r.id)}`, text: "Open response" })))));
    document.getElementById("responses-wrap").hidden = rows.length === 0;
    document.getElementById("responses-empty").hidden = rows.length !== 0;
  } catch (err) {
    showError(err);
  } finally {
    document.getElementById("loading").hidden = true;
  }
})();
