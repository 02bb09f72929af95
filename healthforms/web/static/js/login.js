import { api, describe } from "./api.js";

const form = document.getElementById("login-form");
const errorBox = document.getElementById("login-error");
const totpStep = document.getElementById("totp-step");
const totpInput = document.getElementById("totp");
const toggle = document.getElementById("totp-toggle");
const submit = document.getElementById("login-submit");

function safeNext(value) {
  // Only a path on this site: never //host, /\host or an absolute URL (open redirect).
  if (!value || !value.startsWith("/") || value.startsWith("//") || value.includes("\\")) return "/forms";
  if (value.startsWith("/login")) return "/forms";
  return value;
}

function showTotp(focus) {
  totpStep.hidden = false;
  totpInput.disabled = false;
  toggle.setAttribute("aria-expanded", "true");
  toggle.parentElement.hidden = true;
  if (focus) totpInput.focus();
}

function fail(message, focusEl) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  if (focusEl) focusEl.focus();
}

toggle.addEventListener("click", () => showTotp(true));

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  const email = form.email.value.trim();
  const password = form.password.value;
  if (!email || !password) {
    fail("Enter your email and password.", email ? form.password : form.email);
    return;
  }
  const body = { email, password };
  if (!totpStep.hidden && totpInput.value.trim()) body.totp = totpInput.value.trim();
  submit.disabled = true;
  submit.textContent = "Signing in…";
  try {
    const { status, data } = await api("/api/auth/session-login", {
      method: "POST", body, csrf: false, expect: [401, 429],
    });
    if (status === 200) {
      location.assign(safeNext(document.body.dataset.next));
      return;
    }
    const code = data && data.code;
    if (status === 429) {
      fail("Too many sign-in attempts. Please wait a minute and try again.");
    } else if (code === "totp_required" || code === "mfa_required" || (data && data.totpRequired)) {
      showTotp(true);
      fail("Enter the code from your authenticator app.");
    } else if (totpStep.hidden) {
      // The service answers every wrong part alike (no hint that a code is due), so offer
      // the code field: accounts with two-step sign-in need it.
      showTotp(false);
      fail("Email or password is incorrect. If your account uses an authenticator app, enter its code too.", form.password);
    } else {
      fail("Email, password or authenticator code is incorrect.", form.password);
    }
  } catch (err) {
    fail(describe(err));
  } finally {
    submit.disabled = false;
    submit.textContent = "Sign in";
  }
});
