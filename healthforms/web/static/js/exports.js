// Exports on a form's responses page (docs/exports.md), for editors and admins: "Export
// CSV" and "Export Excel" download what the list shows (its status filter carried in the
// link), and "Download PDFs" downloads a ZIP of the PDFs of the ticked responses.
// Kept apart from responses.js: it only adds a tick box to each row that page draws.

import { api, ApiError, el, showError, showInfo } from "./api.js";

const formId = document.body.dataset.formId;
const filter = document.getElementById("status-filter");
const body = document.querySelector("#responses-table tbody");
const links = ["export-csv", "export-xlsx", "export-fhir"].map((id) => document.getElementById(id));
const pdfButton = document.getElementById("download-pdfs");
const MAX_PDFS = 100;  // the server's limit per ZIP
const selected = new Set();  // response ids, kept while rows are drawn again

/** The links carry the list's current filter, so a file holds what the page shows. */
function syncLinks() {
  for (const link of links) {
    if (!link) continue;
    const url = new URL(link.href, location.href);
    if (filter && filter.value) url.searchParams.set("status", filter.value);
    else url.searchParams.delete("status");
    // The patient search too (responses.js): a file of what the list shows.
    for (const [param, id] of [["name", "patient-name"], ["birthDate", "patient-dob"]]) {
      const input = document.getElementById(id);
      const value = input ? input.value.trim() : "";
      if (value) url.searchParams.set(param, value); else url.searchParams.delete(param);
    }
    link.href = url.pathname + url.search;
  }
}

function fileName(resp, fallback) {
  const header = resp.headers.get("content-disposition") || "";
  const exact = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (exact) {
    try { return decodeURIComponent(exact[1]); } catch { /* use the plain one */ }
  }
  const plain = /filename="([^"]+)"/i.exec(header);
  return plain ? plain[1] : fallback;
}

async function save(resp, fallback) {
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch { /* not JSON */ }
    throw new ApiError(resp.status, data, resp.headers);
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = el("a", { href: url, download: fileName(resp, fallback), hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function busy(control, label, work) {
  if (control.getAttribute("aria-busy") === "true") return;
  control.setAttribute("aria-busy", "true");
  const text = control.textContent;
  control.textContent = label;
  try {
    await work();
  } catch (err) {
    showError(err);
  } finally {
    control.textContent = text;
    control.removeAttribute("aria-busy");
  }
}

// A plain link works without this; with it, a refusal (too many exports, signed out)
// is said on the page instead of replacing it with the API's JSON.
for (const link of links) {
  if (!link) continue;
  link.addEventListener("click", (event) => {
    event.preventDefault();
    busy(link, "Preparing…", async () => {
      const resp = await api(link.getAttribute("href"), { raw: true });
      await save(resp, "responses");
      showInfo("Export downloaded.");
    });
  });
}

function updateButton() {
  if (!pdfButton) return;
  const count = selected.size;
  pdfButton.disabled = count === 0 || count > MAX_PDFS;
  pdfButton.textContent = count ? `Download PDFs (${count})` : "Download PDFs";
  pdfButton.title = count > MAX_PDFS ? `At most ${MAX_PDFS} at once` : "";
}

function addTickBox(row) {
  const id = row.dataset.responseId;
  const cell = row.lastElementChild;
  if (!id || !cell || cell.querySelector(".select-response")) return;
  const code = row.querySelector("code");
  const box = el("input", {
    type: "checkbox",
    class: "select-response",
    "aria-label": `Select response ${code ? code.textContent : ""}`.trim(),
    checked: selected.has(id),
  });
  box.addEventListener("change", () => {
    if (box.checked) selected.add(id); else selected.delete(id);
    updateButton();
  });
  cell.prepend(box);
}

if (pdfButton && body) {
  new MutationObserver(() => {
    body.querySelectorAll("tr[data-response-id]").forEach(addTickBox);
  }).observe(body, { childList: true });
  body.querySelectorAll("tr[data-response-id]").forEach(addTickBox);
  pdfButton.addEventListener("click", () => busy(pdfButton, "Preparing PDFs…", async () => {
    // Newest first as shown; only rows still on the page.
    const shown = [...body.querySelectorAll("tr[data-response-id]")].map((r) => r.dataset.responseId);
    const ids = shown.filter((id) => selected.has(id));
    const resp = await api(`/api/forms/${encodeURIComponent(formId)}/responses/export-pdfs`, {
      method: "POST", body: { responseIds: ids }, raw: true,
    });
    await save(resp, "responses.zip");
    showInfo(`Downloaded ${ids.length} PDF${ids.length === 1 ? "" : "s"}.`);
  }).finally(updateButton));
}

const search = document.getElementById("responses-filter");
for (const [target, event] of [[filter, "change"], [search, "submit"], [document.getElementById("search-clear"), "click"]]) {
  if (!target) continue;
  target.addEventListener(event, () => {
    selected.clear();  // a new list: nothing ticked in it yet
    updateButton();
    // After responses.js's own handler of the same event (it clears the search boxes).
    setTimeout(syncLinks, 0);
  });
}
syncLinks();
updateButton();
