import { api, el, formatTime, initStaffPage, showError } from "./api.js";

initStaffPage();
const form = document.getElementById("audit-filter");
const table = document.getElementById("audit-table");

// Staff names for actor ids (the audit API itself holds ids only).
let names = null;
async function staffNames() {
  if (names) return names;
  try {
    const { data } = await api("/api/users");
    names = new Map((data.users || []).map((u) => [u.id, u.name]));
  } catch {
    names = new Map();
  }
  return names;
}

async function load() {
  const params = new URLSearchParams();
  if (document.getElementById("f-action").value.trim()) params.set("action", document.getElementById("f-action").value.trim());
  if (document.getElementById("f-actor").value.trim()) params.set("actorId", document.getElementById("f-actor").value.trim());
  if (document.getElementById("f-since").value) params.set("since", new Date(document.getElementById("f-since").value).toISOString().replace(/\.\d{3}Z$/, "Z"));
  params.set("limit", document.getElementById("f-limit").value);
  document.getElementById("audit-loading").hidden = false;
  try {
    const [{ data }, who] = await Promise.all([api(`/api/audit?${params}`), staffNames()]);
    const events = data.events || [];
    table.querySelector("tbody").replaceChildren(...events.map((e) => el("tr", {},
      el("td", { "data-label": "When" }, el("time", { datetime: e.at, text: formatTime(e.at) })),
      el("td", { "data-label": "Action", class: "mono", text: e.action }),
      el("td", { "data-label": "Outcome" }, el("span", { class: `badge badge-${e.outcome}`, text: e.outcome })),
      el("td", { "data-label": "Actor", class: "small", title: e.actorId || null, text: (e.actorId && who.get(e.actorId)) || e.actorId || "—" }),
      el("td", { "data-label": "Resource", class: "mono small", text: e.resourceType ? `${e.resourceType} ${e.resourceId || ""}` : "—" }),
      el("td", { "data-label": "IP", text: e.ip || "—" }),
      el("td", { "data-label": "Request", class: "mono small", text: e.requestId || "—" }))));
    table.hidden = events.length === 0;
    document.getElementById("audit-empty").hidden = events.length !== 0;
  } catch (err) {
    showError(err);
  } finally {
    document.getElementById("audit-loading").hidden = true;
  }
}

form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
load();
