import { api, describe, el } from "./api.js";

// Two steps on one page: email and password first; only when the service answers
// `totp_required` (the password was right and the account has two-step sign-in) does
// the code field appear. The password stays in this page's own field and is sent again
// with the code: the server keeps no half-signed-in state and never echoes it.
const form = document.getElementById("login-form");
const errorBox = document.getElementById("login-error");
const totpStep = document.getElementById("totp-step");
const totpInput = document.getElementById("totp");
const orgStep = document.getElementById("org-step");
const orgSelect = document.getElementById("organization");
const submit = document.getElementById("login-submit");

function safeNext(value) {
  // Only a path on this site: never //host, /\host or an absolute URL (open redirect).
  if (!value || !value.startsWith("/") || value.startsWith("//") || value.includes("\\")) return "/forms";
  if (value.startsWith("/login")) return "/forms";
  return value;
}

function showTotp() {
  totpStep.hidden = false;
  totpInput.disabled = false;
  totpInput.focus();
}

function showOrganizations(organizations) {
  orgSelect.replaceChildren(...organizations.map((o) => el("option", { value: o.id, text: o.name || o.id })));
  orgStep.hidden = false;
  orgSelect.disabled = false;
  orgSelect.focus();
}

function reset() {
  // The email or password changed: the later steps belonged to the old pair.
  for (const [step, input] of [[totpStep, totpInput], [orgStep, orgSelect]]) {
    step.hidden = true;
    input.disabled = true;
  }
  totpInput.value = "";
}

function fail(message, focusEl) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  if (focusEl) focusEl.focus();
}

form.email.addEventListener("input", reset);
form.password.addEventListener("input", reset);

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
  if (!orgStep.hidden && orgSelect.value) body.organizationId = orgSelect.value;
  if (!totpStep.hidden) {
    const code = totpInput.value.trim();
    if (!code) { fail("Enter the code from your authenticator app, or a recovery code.", totpInput); return; }
    body.totp = code;
  }
  submit.disabled = true;
  submit.textContent = "Signing in…";
  try {
    const { status, data, headers } = await api("/api/auth/session-login", {
      method: "POST", body, csrf: false, expect: [401, 409, 429],
    });
    if (status === 200) {
      location.assign(safeNext(document.body.dataset.next));
      return;
    }
    const code = data && data.code;
    if (code === "account_locked") {
      // The service's message names the real wait (the lock's remaining time).
      fail(data.error);
    } else if (status === 429) {
      const wait = Number(headers.get("retry-after")) || 0;
      fail(wait
        ? `Too many sign-in attempts from this network. Please wait ${wait} second${wait === 1 ? "" : "s"} and try again.`
        : "Too many sign-in attempts from this network. Please wait a little and try again.");
    } else if (code === "organization_required") {
      showOrganizations((data && data.organizations) || []);
      fail("Choose the clinic to sign in to.");
    } else if (code === "totp_required") {
      showTotp();
      fail("Enter the code from your authenticator app, or one of your recovery codes.");
    } else if (!totpStep.hidden) {
      totpInput.value = "";
      fail("That code is not valid. Try the current code, or another recovery code.", totpInput);
    } else {
      fail("Email or password is incorrect.", form.password);
    }
  } catch (err) {
    fail(describe(err));
  } finally {
    submit.disabled = false;
    submit.textContent = "Sign in";
  }
});
