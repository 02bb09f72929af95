import { api, el, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();
const meId = document.body.dataset.meId;
const tbody = document.querySelector("#users-table tbody");
const form = document.getElementById("add-user");
const ROLES = ["viewer", "editor", "admin"];

/** Fill a row's role select, status badge and enable/disable button from its data-*. */
function wire(row) {
  const id = row.dataset.userId;
  const name = row.dataset.name;
  const self = id === meId;
  const select = el("select", { "aria-label": `Role of ${name}`, disabled: self },
    ROLES.map((r) => el("option", { value: r, text: r[0].toUpperCase() + r.slice(1), selected: r === row.dataset.role })));
  select.addEventListener("change", async () => {
    try {
      await api(`/api/users/${encodeURIComponent(id)}`, { method: "PATCH", body: { role: select.value } });
      row.dataset.role = select.value;
      showInfo(`${name} is now ${select.value}.`);
    } catch (err) { showError(err); select.value = row.dataset.role; }
  });
  const disabled = row.dataset.disabled === "1";
  const status = el("span", { class: `badge ${disabled ? "badge-archived" : "badge-published"}`, text: disabled ? "Disabled" : "Active" });
  const action = self ? el("span", { class: "muted small", text: "You" }) : el("button", {
    type: "button", class: `btn btn-small ${disabled ? "" : "btn-danger"}`,
    text: disabled ? "Enable" : "Disable", "aria-label": `${disabled ? "Enable" : "Disable"} ${name}`,
    onclick: async () => {
      try {
        await api(`/api/users/${encodeURIComponent(id)}`, { method: "PATCH", body: { disabled: !disabled } });
        row.dataset.disabled = disabled ? "0" : "1";
        showInfo(disabled ? `${name} can sign in again.` : `${name} is disabled and signed out everywhere.`);
        wire(row);
      } catch (err) { showError(err); }
    } });
  const cells = row.querySelectorAll("td");
  cells[2].replaceChildren(select);
  cells[3].replaceChildren(status);
  cells[4].replaceChildren(action);
}

for (const row of tbody.querySelectorAll("tr[data-user-id]")) wire(row);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = (key) => document.getElementById(`nu-${key}`);
  const body = { name: input("name").value.trim(), email: input("email").value.trim(), password: input("password").value, role: input("role").value };
  const fieldError = (key, message) => {
    const box = document.getElementById(`nu-${key}-error`);
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
    input(key).setAttribute("aria-invalid", "true");
  };
  for (const key of ["name", "email", "password"]) {
    document.getElementById(`nu-${key}-error`).hidden = true;
    input(key).removeAttribute("aria-invalid");
  }
  let bad = false;
  for (const key of ["name", "email", "password"]) if (!body[key]) { fieldError(key, "Required."); bad = true; }
  if (bad) return;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const { status, data } = await api("/api/users", { method: "POST", body, expect: [409, 422] });
    if (status === 201 || status === 200) {
      const row = el("tr", { "data-user-id": data.id, "data-name": data.name, "data-role": data.role, "data-disabled": "0" },
        el("td", { "data-label": "Name", text: data.name }), el("td", { "data-label": "Email", text: data.email }),
        el("td", { "data-label": "Role" }), el("td", { "data-label": "Status" }), el("td", { class: "row-actions" }));
      tbody.append(row);
      wire(row);
      showInfo(`${data.name} was added.`);
      form.reset();
    } else {
      for (const [key, message] of Object.entries((data && data.fields) || {})) fieldError(key, message);
      showError((data && data.error) || "The user could not be added.");
    }
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
});
