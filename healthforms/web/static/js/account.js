import { api, csrfToken, describe, el, formatTime, goToLogin, initStaffPage, showError, showInfo } from "./api.js";

initStaffPage();
const list = document.getElementById("sessions");

async function loadSessions() {
  try {
    const { data } = await api("/api/auth/sessions");
    list.replaceChildren(...(data.sessions || []).map((s) => {
      const meta = el("div", { class: "session-meta" },
        el("strong", { text: s.userAgent ? s.userAgent.slice(0, 80) : "Unknown browser" }),
        s.current ? el("span", { class: "badge badge-published", text: "This browser" }) : null,
        el("div", { class: "muted small", text: `Signed in ${formatTime(s.createdAt)} · last active ${formatTime(s.lastSeenAt)}${s.ip ? ` · ${s.ip}` : ""}` }));
      const revoke = s.current ? null : el("button", {
        type: "button", class: "btn btn-danger btn-small", text: "Sign out",
        "aria-label": `Sign out the session from ${formatTime(s.createdAt)}`,
        onclick: async (event) => {
          event.currentTarget.disabled = true;
          try {
            await api(`/api/auth/sessions/${encodeURIComponent(s.id)}`, { method: "DELETE" });
            showInfo("Session signed out.");
            await loadSessions();
          } catch (err) { showError(err); event.currentTarget.disabled = false; }
        } });
      return el("li", { "data-session-id": s.id }, meta, revoke);
    }));
  } catch (err) {
    showError(err);
  } finally {
    document.getElementById("sessions-loading").hidden = true;
  }
}

document.getElementById("logout-all").addEventListener("click", async () => {
  try {
    await api("/api/auth/logout-all", { method: "POST", expect: [401] });
    location.assign("/login");
  } catch (err) { showError(err); }
});

// Change password: the current one, then the new one twice. The service ends every
// session and answers with this browser's new one (cookie + CSRF token).
const changeForm = document.getElementById("change-password");
const changeError = document.getElementById("cp-error");
changeForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  changeError.hidden = true;
  const current = changeForm.currentPassword.value;
  const next = changeForm.newPassword.value;
  const fail = (message, field) => {
    changeError.textContent = message;
    changeError.hidden = false;
    if (field) field.focus();
  };
  if (!current) return fail("Enter your current password.", changeForm.currentPassword);
  if (next.length < 8) return fail("The new password needs at least 8 characters.", changeForm.newPassword);
  if (next !== changeForm.repeatPassword.value) return fail("The new passwords do not match.", changeForm.repeatPassword);
  const button = changeForm.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const { status, data } = await api("/api/auth/password", {
      method: "POST", body: { currentPassword: current, newPassword: next }, expect: [401, 422, 429],
    });
    if (status === 200) {
      changeForm.reset();
      await csrfToken(true); // the old session (and its token) ended with the change
      showInfo("Your password was changed. Other browsers were signed out.");
      await loadSessions();
    } else if (status === 401 && data && data.code === "unauthenticated") {
      goToLogin();
    } else if (status === 401) {
      fail("The current password is not right.", changeForm.currentPassword);
    } else {
      fail((data && data.error) || "The password could not be changed.");
    }
  } catch (err) {
    fail(describe(err));
  } finally {
    button.disabled = false;
  }
});

/** POST with the current password; 401/429 shown as a sentence. Returns data or null. */
async function withPassword(path, input, extra = {}) {
  const currentPassword = input.value;
  if (!currentPassword) { showError("Enter your current password first."); input.focus(); return null; }
  const { status, data } = await api(path, { method: "POST", body: { currentPassword, ...extra }, expect: [401, 429] });
  if (status === 401 && data && data.code === "unauthenticated") { goToLogin(); return null; }
  if (status === 401) { showError("The current password is not right."); input.focus(); return null; }
  if (status === 429) { showError((data && data.error) || "Too many attempts. Please wait and try again."); return null; }
  input.value = "";
  return data;
}

function showRecoveryCodes(codes) {
  const box = document.getElementById("recovery-codes");
  document.getElementById("recovery-codes-list").replaceChildren(...codes.map((c) => el("li", { text: c })));
  box.hidden = false;
  document.getElementById("recovery-done").focus();
}

document.getElementById("recovery-done").addEventListener("click", () => location.reload());

const begin = document.getElementById("totp-begin");
if (begin) {
  begin.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const data = await withPassword("/api/auth/totp/enrol", document.getElementById("totp-password"));
      if (!data) return;
      document.getElementById("totp-qr").src = data.qrCode || "";
      document.getElementById("totp-secret").value = data.secret || "";
      document.getElementById("totp-uri").value = data.otpauthUri || "";
      document.getElementById("totp-setup").hidden = false;
      begin.hidden = true;
      document.getElementById("totp-code").focus();
    } catch (err) { showError(err); }
  });
  document.getElementById("totp-confirm").addEventListener("click", async () => {
    const code = document.getElementById("totp-code").value.trim();
    if (!code) { showError("Type the code your authenticator app shows."); return; }
    try {
      const { data } = await api("/api/auth/totp/confirm", { method: "POST", body: { code } });
      document.getElementById("totp-setup").hidden = true;
      showInfo("Two-step sign-in is on.");
      showRecoveryCodes(data.recoveryCodes || []);
    } catch (err) { showError(err); }
  });
}

const manage = document.getElementById("totp-manage");
if (manage) {
  const input = document.getElementById("totp-manage-password");
  manage.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("recovery-regenerate").addEventListener("click", async () => {
    try {
      const data = await withPassword("/api/auth/totp/recovery-codes", input);
      if (!data) return;
      showInfo("New recovery codes: the earlier ones no longer work.");
      showRecoveryCodes(data.recoveryCodes || []);
    } catch (err) { showError(err); }
  });
  document.getElementById("totp-disable").addEventListener("click", async () => {
    try {
      const data = await withPassword("/api/auth/totp/disable", input);
      if (!data) return;
      showInfo("Two-step sign-in is off.");
      setTimeout(() => location.reload(), 800);
    } catch (err) { showError(err); }
  });
}

loadSessions();
