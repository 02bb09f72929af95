import { api, el, formatTime, initStaffPage, showError, showInfo } from "./api.js";

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

const start = document.getElementById("totp-start");
if (start) {
  start.addEventListener("click", async () => {
    try {
      const { data } = await api("/api/auth/totp/enrol", { method: "POST" });
      document.getElementById("totp-secret").value = data.secret || "";
      document.getElementById("totp-uri").value = data.otpauthUri || "";
      document.getElementById("totp-setup").hidden = false;
      start.hidden = true;
      document.getElementById("totp-code").focus();
    } catch (err) { showError(err); }
  });
  document.getElementById("totp-confirm").addEventListener("click", async () => {
    const code = document.getElementById("totp-code").value.trim();
    if (!code) { showError("Type the code your authenticator app shows."); return; }
    try {
      await api("/api/auth/totp/confirm", { method: "POST", body: { code } });
      showInfo("Two-step sign-in is on.");
      setTimeout(() => location.reload(), 800);
    } catch (err) { showError(err); }
  });
}

loadSessions();
