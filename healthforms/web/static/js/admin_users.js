import { api, el, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();
const meId = document.body.dataset.meId;
const table = document.getElementById("users-table");
const form = document.getElementById("add-user");

function roleSelect(user) {
  const select = el("select", { "aria-label": `Role of ${user.name}`, disabled: user.id === meId },
    ["viewer", "editor", "admin"].map((r) => el("option", { value: r, text: r[0].toUpperCase() + r.slice(1), selected: r === user.role })));
  select.addEventListener("change", async () => {
    try {
      await api(`/api/users/${encodeURIComponent(user.id)}`, { method: "PATCH", body: { role: select.value } });
      showInfo(`${user.name} is now ${select.value}.`);
    } catch (err) { showError(err); select.value = user.role; }
  });
  return select;
}

async function load() {
  try {
    const { data } = await api("/api/users");
    table.querySelector("tbody").replaceChildren(...(data.users || []).map((u) => {
      const disabled = Boolean(u.disabled);
      const toggle = u.id === meId ? el("span", { class: "muted small", text: "You" }) : el("button", {
        type: "button", class: `btn btn-small ${disabled ? "" : "btn-danger"}`,
        text: disabled ? "Enable" : "Disable", "aria-label": `${disabled ? "Enable" : "Disable"} ${u.name}`,
        onclick: async () => {
          try {
            await api(`/api/users/${encodeURIComponent(u.id)}`, { method: "PATCH", body: { disabled: !disabled } });
            showInfo(disabled ? `${u.name} can sign in again.` : `${u.name} is disabled and signed out everywhere.`);
            load();
          } catch (err) { showError(err); }
        } });
      return el("tr", { "data-user-id": u.id },
        el("td", { "data-label": "Name", text: u.name }),
        el("td", { "data-label": "Email", text: u.email }),
        el("td", { "data-label": "Role" }, roleSelect(u)),
        el("td", { "data-label": "Status" }, el("span", { class: `badge ${disabled ? "badge-archived" : "badge-published"}`, text: disabled ? "Disabled" : "Active" })),
        el("td", { class: "row-actions" }, toggle));
    }));
    table.hidden = false;
  } catch (err) {
    showError(err);
  } finally {
    document.getElementById("users-loading").hidden = true;
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = (key) => document.getElementById(`nu-${key}`);
  const body = { name: input("name").value.trim(), email: input("email").value.trim(), password: input("password").value, role: input("role").value };
  for (const key of ["name", "email", "password"]) {
    const box = document.getElementById(`nu-${key}-error`);
    box.hidden = true;
    input(key).removeAttribute("aria-invalid");
  }
  const fieldError = (key, message) => {
    const box = document.getElementById(`nu-${key}-error`);
    if (!box) return;
    box.textContent = message; box.hidden = false;
    input(key).setAttribute("aria-invalid", "true");
  };
  let bad = false;
  for (const key of ["name", "email", "password"]) if (!body[key]) { fieldError(key, "Required."); bad = true; }
  if (bad) return;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const { status, data } = await api("/api/users", { method: "POST", body, expect: [409, 422] });
    if (status === 201 || status === 200) {
      showInfo(`${body.name} was added.`);
      form.reset();
      load();
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

load();
