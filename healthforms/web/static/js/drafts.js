// Save and continue later (docs/drafts.md), on a public form's page. "Save and continue
// later" stores the answers so far as a draft on the server and shows its link, its code
// and until when it lasts; the link (the form's page with #draft=<token>) or the code
// typed under "Continue a saved form" fills the answers in again, on any device. The
// draft's token is kept in this tab's sessionStorage, so saving again updates the same
// draft and sending the form deletes it (public_form.js sends `draft` with the answers).
// Signatures are never saved: the patient signs when they send.
import { api, ApiError } from "./api.js";
import { _, lang } from "./i18n.js";
import { applyShowWhen, collectAnswers, firstControl, showFieldErrors } from "./fields.js";
import { applyPrefill } from "./prefill.js";
import { clearFileFields, showKeptFiles, uploadsSettled } from "./uploads.js";

const $ = (id) => document.getElementById(id);
let publicId = "";
let key = "";
let form = null;
let currentNonce = async () => null;

function held() {
  try { return JSON.parse(sessionStorage.getItem(key)) || null; } catch { return null; }
}
function hold(draft) {
  try {
    if (draft) sessionStorage.setItem(key, JSON.stringify(draft));
    else sessionStorage.removeItem(key);
  } catch { /* private mode: the link and code still work */ }
}

/** The token of the draft this page continues, to send with the answers (or null). */
export function heldDraftToken() {
  const draft = key ? held() : null;
  return draft ? draft.token : null;
}

/** The form was sent (and its draft deleted with it): forget it here too. */
export function draftSent() {
  if (!key) return;
  hold(null);
  $("draft-saved").hidden = true;
  $("draft-resumed").hidden = true;
}

function formatExpiry(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? iso : at.toLocaleString(lang, { dateStyle: "medium", timeStyle: "short" });
}

function draftAnswers() {
  const answers = collectAnswers(form);
  for (const wrap of form.querySelectorAll('.q[data-type="signature"]')) delete answers[wrap.dataset.fieldId];
  return answers;
}

function showError(message) {
  const box = $("draft-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function showSaved(draft, canEmail) {
  $("draft-email-form").hidden = !canEmail;
  $("draft-link").value = draft.resumeUrl;
  $("draft-code").textContent = draft.code;
  const expiry = $("draft-expiry");
  expiry.textContent = formatExpiry(draft.expiresAt);
  $("draft-copy-status").textContent = "";
  const section = $("draft-saved");
  section.hidden = false;
  section.focus();
  section.scrollIntoView({ block: "start" });
}

async function save() {
  const button = $("save-draft");
  if (button.getAttribute("aria-busy") === "true") return;
  showError("");
  showFieldErrors(form, {});
  button.setAttribute("aria-busy", "true");
  button.disabled = true;
  button.textContent = _("Saving…");
  try {
    await uploadsSettled();  // a file still uploading belongs in the draft too
    const answers = draftAnswers();
    let draft = held();
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const body = draft ? { answers, draft: draft.token } : { answers, nonce: await currentNonce() };
      const { status, data, headers } = await api(`/api/public/forms/${encodeURIComponent(publicId)}/drafts`, {
        method: "POST", csrf: false, credentials: "omit", auth401: false, body,
        expect: [400, 404, 410, 422, 429], language: lang,
      });
      if (status === 200 || status === 201) {
        hold(data.draft);
        showSaved(data.draft, data.canEmail === true);
        return;
      }
      if (draft && (status === 404 || status === 410)) { hold(null); draft = null; continue; }  // expired: a new one
      if (status === 422) {
        const fields = (data && data.fields) || {};
        showFieldErrors(form, fields);
        showError(fields.answers || _("Some answers cannot be saved as they are. Check the fields marked above."));
      } else if (status === 429) {
        const wait = Number(headers.get("retry-after")) || 60;
        showError(wait === 1
          ? _("Too many attempts from this connection. Please wait 1 second and save again.")
          : _("Too many attempts from this connection. Please wait {wait} seconds and save again.", { wait }));
      } else if (status === 404) {
        showError(_("This form is no longer accepting responses. Please contact the clinic."));
      } else {
        showError((data && data.error) || _("Your answers could not be saved. Please try again."));
      }
      return;
    }
  } catch (err) {
    showError(err instanceof ApiError && err.status === 0
      ? _("Could not reach the clinic's server. Your answers are still on this page; try again.")
      : _("Your answers could not be saved. Please try again."));
  } finally {
    button.removeAttribute("aria-busy");
    button.disabled = false;
    button.textContent = _("Save and continue later");
  }
}

function fill(resumed) {
  form.reset();
  for (const clear of form.querySelectorAll(".sigpad-clear")) clear.click();
  clearFileFields(form);
  applyPrefill(form, resumed.answers);
  showKeptFiles(form, resumed.files || {});
  applyShowWhen(form);
  hold(resumed.draft);
  const dropped = resumed.dropped && resumed.dropped.length
    ? ` ${_("The form has changed since you saved it, so some answers could not be kept: please check them.")}`
    : "";
  $("draft-resumed-text").textContent =
    _("Your saved answers are filled in. Check them, finish the form and send it (saved until {expiry}).",
      { expiry: formatExpiry(resumed.draft.expiresAt) }) + dropped;
  $("draft-resumed").hidden = false;
  $("draft-resume-failed").hidden = true;
  $("draft-resume").open = false;
}

function resumeFailed(message) {
  const box = $("draft-resume-failed");
  box.textContent = message;
  box.hidden = false;
}

async function resumeFromLink(token) {
  // The token leaves the address bar (and the history entry) at once.
  history.replaceState(history.state, "", location.pathname + location.search);
  try {
    // The page's nonce goes along: the draft's files are bound to it, so this page's
    // submission can attach them.
    const nonce = await currentNonce().catch(() => null);
    const query = nonce ? `?nonce=${encodeURIComponent(nonce)}` : "";
    const { status, data } = await api(`/api/public/drafts/${encodeURIComponent(token)}${query}`, {
      credentials: "omit", auth401: false, expect: [404, 410], language: lang,
    });
    if (status !== 200 || data.form.publicId !== publicId) {
      resumeFailed((data && data.error) || _("This saved form cannot be opened here."));
      return;
    }
    fill(data);
    const first = firstControl(form);
    if (first) first.focus();
  } catch {
    resumeFailed(_("Your saved answers could not be loaded. Check your connection and open the link again."));
  }
}

function codeError(message) {
  const box = $("draft-code-error");
  box.textContent = message || "";
  box.hidden = !message;
  const input = $("draft-code-input");
  if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
}

async function resumeByCode(event) {
  event.preventDefault();
  const input = $("draft-code-input");
  const code = input.value.trim();
  if (!code) { codeError(_("Enter the code of your saved form.")); input.focus(); return; }
  codeError("");
  const button = $("draft-code-submit");
  button.disabled = true;
  try {
    const { status, data, headers } = await api(`/api/public/forms/${encodeURIComponent(publicId)}/drafts/resume`, {
      method: "POST", csrf: false, credentials: "omit", auth401: false,
      body: { code, nonce: await currentNonce().catch(() => null) },
      expect: [404, 410, 429], language: lang,
    });
    if (status === 200) {
      input.value = "";
      fill(data);
      const first = firstControl(form);
      if (first) first.focus();
      return;
    }
    if (status === 429) {
      const wait = Number(headers.get("retry-after")) || 60;
      codeError(wait === 1
        ? _("Too many tries. Please wait 1 second and try again.")
        : _("Too many tries. Please wait {wait} seconds and try again.", { wait }));
    } else {
      codeError((data && data.error) || _("No saved form matches this code."));
    }
    input.focus();
  } catch {
    codeError(_("Could not reach the clinic's server. Check your connection and try again."));
  } finally {
    button.disabled = false;
  }
}

function emailError(message) {
  const box = $("draft-email-error");
  box.textContent = message || "";
  box.hidden = !message;
  const input = $("draft-email");
  if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
}

async function emailLink(event) {
  event.preventDefault();
  const draft = held();
  const input = $("draft-email");
  const email = input.value.trim();
  if (!email) { emailError(_("Enter your email address.")); input.focus(); return; }
  if (!draft) return;
  emailError("");
  const button = $("draft-email-send");
  button.disabled = true;
  try {
    const { status, data } = await api(`/api/public/drafts/${encodeURIComponent(draft.token)}/email`, {
      method: "POST", csrf: false, credentials: "omit", auth401: false, body: { email },
      expect: [404, 410, 422, 429], language: lang,
    });
    if (status === 202) {
      $("draft-copy-status").textContent = _("The link is on its way to your inbox.");
      return;
    }
    const field = data && data.fields && data.fields.email;
    emailError(field === _("must be an email address")
      ? _("Enter an email address like name@example.org.")
      : (field || (data && data.error) || _("The email could not be sent.")));
    input.focus();
  } catch {
    emailError(_("Could not reach the clinic's server. Check your connection and try again."));
  } finally {
    button.disabled = false;
  }
}

async function copyLink() {
  const input = $("draft-link");
  const status = $("draft-copy-status");
  try {
    await navigator.clipboard.writeText(input.value);
    status.textContent = _("Link copied.");
  } catch {
    input.select();
    status.textContent = _("Press Ctrl+C (or ⌘C) to copy the selected link.");
  }
}

/** Wire the draft controls of a public form's page (absent on a request's page). */
export function initDrafts(options) {
  if (!$("save-draft")) return;
  ({ publicId, form, currentNonce } = options);
  key = `healthforms:draft:${publicId}`;
  $("save-draft").addEventListener("click", save);
  $("draft-code-form").addEventListener("submit", resumeByCode);
  $("draft-copy").addEventListener("click", copyLink);
  $("draft-email-form").addEventListener("submit", emailLink);
  $("draft-back").addEventListener("click", () => {
    $("draft-saved").hidden = true;
    $("save-draft").focus();
  });
  const fromLink = () => {
    const match = /^#draft=([A-Za-z0-9_-]+)$/.exec(location.hash);
    if (match) resumeFromLink(match[1]);
  };
  // A link opened on a page of the same form changes only the fragment: no reload.
  window.addEventListener("hashchange", fromLink);
  fromLink();
}
