// The patient form: client-side hints, server-side truth. The nonce (an idempotency key)
// is kept in sessionStorage until the submission is confirmed and afterwards with its
// confirmation, so a double click, a retry or going back and sending again never stores a
// second response: the server answers the same nonce with the same confirmation.
// The same page serves a patient's personal request link (/r/<token>, data-request): its
// own endpoints, its prefilled answers, and no "new response" (the link works once).
import { api, ApiError, el } from "./api.js";
import {
  applyShowWhen, clientErrors, collectAnswers, firstControl, initSignaturePads, recheckOnInput,
  showFieldErrors,
} from "./fields.js";
import { initPages } from "./form_pages.js";
import { applyPrefill } from "./prefill.js";
import { _, lang } from "./i18n.js";
import { draftSent, heldDraftToken, initDrafts } from "./drafts.js";
import { clearFileFields, initFileFields, uploadsSettled } from "./uploads.js";

const publicId = document.body.dataset.publicId;
const requestToken = document.body.dataset.request ? location.pathname.split("/").pop() : null;
const formApi = requestToken
  ? `/api/public/requests/${encodeURIComponent(requestToken)}`
  : `/api/public/forms/${encodeURIComponent(publicId)}`;
const KEY = requestToken ? `healthforms:request:${requestToken}` : `healthforms:submission:${publicId}`;
const form = document.getElementById("patient-form");
const submitBtn = document.getElementById("submit-btn");
const summary = document.getElementById("error-summary");
const formSection = document.getElementById("form-section");
const confirmation = document.getElementById("confirmation");
const alreadySent = document.getElementById("already-sent");
// The page also sends without JavaScript; with it, the signature pad can draw (app.css).
document.body.classList.add("js");

function load() {
  try { return JSON.parse(sessionStorage.getItem(KEY)) || {}; } catch { return {}; }
}
function save(state) {
  try { sessionStorage.setItem(KEY, JSON.stringify(state)); } catch { /* private mode: memory only */ }
  memory = state;
}
let memory = load();
const state = () => memory;

async function fetchNonce() {
  const { data } = await api(formApi, { credentials: "omit", auth401: false, language: lang });
  save({ ...state(), nonce: data.nonce, expiresAt: data.nonceExpiresAt });
  return data.nonce;
}

function heldNonce() {
  const s = state();
  const expires = s.expiresAt ? Date.parse(s.expiresAt) : 0;
  return s.nonce && (s.confirmation || expires - Date.now() > 30_000) ? s.nonce : null;
}

// The nonce the page was served with (the no-JavaScript form's hidden field): the first
// one this page uses, so sending needs no extra request. Taken once: a new response
// after "Fill in a new response" fetches its own.
let pageNonceTaken = false;
function pageNonce() {
  const input = document.getElementById("form-nonce");
  if (pageNonceTaken || !input || !input.value) return null;
  pageNonceTaken = true;
  const expires = Date.parse(input.dataset.expiresAt || "");
  if (!(expires - Date.now() > 30_000)) return null;
  save({ ...state(), nonce: input.value, expiresAt: input.dataset.expiresAt });
  return input.value;
}

async function currentNonce() {
  return heldNonce() || pageNonce() || fetchNonce();
}

// A request link: its answers come prefilled (once per page load, into empty fields), and
// a nonce still held from before a reload is kept (it may already carry a submission).
async function loadRequest() {
  const { status, data } = await api(formApi, { credentials: "omit", auth401: false, expect: [404, 410], language: lang });
  if (status !== 200) {
    showSummary({}, (data && data.error) || _("This link cannot be used. Please contact your clinic."));
    return;
  }
  if (!state().confirmation && data.prefill) applyPrefill(form, data.prefill);
  applyShowWhen(form);
  if (!heldNonce()) save({ ...state(), nonce: data.nonce, expiresAt: data.nonceExpiresAt });
}

// What the summary lists now, so a fixed answer's line goes as soon as it is fixed.
let listed = { errors: {}, message: null };

function showSummary(errors, message) {
  fillSummary(errors, message);
  summary.hidden = false;
  summary.focus();
}

function fillSummary(errors, message) {
  listed = { errors: { ...errors }, message };
  const list = summary.querySelector("ul");
  list.replaceChildren();
  const labels = new Map();
  for (const wrap of form.querySelectorAll(".q[data-field-id]")) {
    const label = wrap.querySelector("legend, label");
    labels.set(wrap.dataset.fieldId, { wrap, text: label ? label.textContent.replace(/\s*\*.*$/, "").trim() : wrap.dataset.fieldId });
  }
  for (const [id, msg] of Object.entries(errors)) {
    const known = labels.get(id);
    if (known) {
      const link = el("a", { href: `#${known.wrap.id}`, text: `${known.text}: ${msg}` });
      link.addEventListener("click", (e) => {
        e.preventDefault();
        const c = firstControl(known.wrap);
        known.wrap.scrollIntoView({ block: "center" });
        if (c) c.focus();
      });
      list.append(el("li", {}, link));
    } else {
      list.append(el("li", { text: msg }));
    }
  }
  if (message) list.append(el("li", { text: message }));
}

function clearSummary() {
  listed = { errors: {}, message: null };
  summary.hidden = true;
  summary.querySelector("ul").replaceChildren();
}

const pages = initPages(form, {
  onErrors: (errors) => { if (errors) showSummary(errors); else clearSummary(); },
});

/** Empty every answer: after a confirmation nobody may page back to them. */
function clearAnswers() {
  form.reset();
  clearFileFields(form);
  for (const pad of form.querySelectorAll(".sigpad-clear")) pad.click();
  showFieldErrors(form, {});
  clearSummary();
  applyShowWhen(form);
  if (pages) pages.reset();
}

function showConfirmation(code, push) {
  document.getElementById("confirmation-code").textContent = code;
  formSection.hidden = true;
  confirmation.hidden = false;
  confirmation.focus();
  window.scrollTo(0, 0);
  if (push && location.hash !== "#confirmation") {
    history.pushState({ confirmed: true }, "", `${location.pathname}#confirmation`);
  }
}

// Scores the form shows the patient (showPatient; docs/scores.md): only right after
// sending, never kept in sessionStorage (a shared tablet must not show them again).
function showScores(scores) {
  const box = document.getElementById("confirmation-scores");
  const list = document.getElementById("score-list");
  list.replaceChildren(...(scores || []).map((s) => el("div", { class: "answer" },
    el("dt", { text: s.label }),
    el("dd", { text: s.value === null || s.value === undefined
      ? _("Not calculated: some questions were not answered.")
      : `${s.value}${s.band ? ` (${s.band})` : ""}` }))));
  box.hidden = !list.children.length;
}

function showForm() {
  confirmation.hidden = true;
  formSection.hidden = false;
  const s = state();
  if (s.confirmation) {
    document.getElementById("already-code").textContent = s.confirmation;
    alreadySent.hidden = false;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function post(answers) {
  let nonce = await currentNonce();
  let refreshed = false;
  // A saved draft being sent (drafts.js): the server deletes it with the response.
  const draft = requestToken ? null : heldDraftToken();
  for (let attempt = 0; attempt < 8; attempt += 1) {
    const { status, data, headers } = await api(`${formApi}/responses`, {
      method: "POST", csrf: false, credentials: "omit", auth401: false,
      body: draft ? { nonce, answers, draft, language: lang } : { nonce, answers, language: lang },
      expect: [400, 404, 409, 410, 422, 429], language: lang,
    });
    const code = data && data.code;
    if (status === 200 || status === 201) return { ok: true, confirmation: data.confirmation, scores: data.scores || [] };
    if (status === 409 && code === "submission_in_progress") { await sleep(500 + attempt * 250); continue; }
    if (status === 400 && code === "nonce_invalid" && !state().confirmation && !refreshed) {
      refreshed = true;
      nonce = await fetchNonce();
      continue;
    }
    return { ok: false, status, code, data, retryAfter: headers.get("retry-after") };
  }
  return { ok: false, status: 409, code: "submission_in_progress" };
}

let sending = false;
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (sending) return;
  if (pages && !pages.onLastPage()) { pages.next(); return; }
  await uploadsSettled();  // a file still uploading is part of the answers
  applyShowWhen(form);
  form.dataset.attempted = "1";
  const hints = clientErrors(form);
  showFieldErrors(form, hints);
  if (Object.keys(hints).length) {
    if (pages) pages.showField(Object.keys(hints)[0]);
    showSummary(hints);
    return;
  }
  clearSummary();
  sending = true;
  submitBtn.disabled = true;
  submitBtn.setAttribute("aria-busy", "true");
  submitBtn.textContent = _("Sending…");
  try {
    const result = await post(collectAnswers(form));
    if (result.ok) {
      save({ ...state(), confirmation: result.confirmation });
      draftSent();
      clearAnswers();
      alreadySent.hidden = true;
      showConfirmation(result.confirmation, true);
      showScores(result.scores);
      return;
    }
    if (result.status === 422) {
      const fields = (result.data && result.data.fields) || {};
      showFieldErrors(form, fields);
      if (pages && Object.keys(fields).length) pages.showField(Object.keys(fields)[0]);
      showSummary(fields, Object.keys(fields).length ? null : (result.data && result.data.error) || _("Some answers are not valid."));
    } else if (result.code === "nonce_used" || (result.code === "nonce_invalid" && state().confirmation)) {
      if (state().confirmation) showConfirmation(state().confirmation, true);
      else showSummary({}, _("This form was already sent from this page. Reload the page to send a new response."));
    } else if (result.status === 429) {
      const wait = Number(result.retryAfter) || 60;
      showSummary({}, wait === 1
        ? _("Too many attempts from this connection. Please wait 1 second and send again; your answers are kept.")
        : _("Too many attempts from this connection. Please wait {seconds} seconds and send again; your answers are kept.", { seconds: wait }));
    } else if (result.status === 410) {
      showSummary({}, (result.data && result.data.error) || _("This link was already used or has expired. Contact your clinic."));
    } else if (result.status === 404) {
      showSummary({}, _("This form is no longer accepting responses. Please contact the clinic."));
    } else {
      showSummary({}, (result.data && result.data.error) || _("The form could not be sent. Please try again."));
    }
  } catch (err) {
    const message = err instanceof ApiError && err.status === 0
      ? _("Could not reach the clinic's server. Your answers are kept; check your connection and press Send again.")
      : _("The form could not be sent. Your answers are kept; please press Send again.");
    showSummary({}, message);
  } finally {
    sending = false;
    submitBtn.disabled = false;
    submitBtn.removeAttribute("aria-busy");
    submitBtn.textContent = _("Send");
  }
});

form.addEventListener("input", () => applyShowWhen(form));
form.addEventListener("change", () => applyShowWhen(form));
document.getElementById("start-over")?.addEventListener("click", async () => {
  save({});
  alreadySent.hidden = true;
  clearAnswers();
  try { await fetchNonce(); } catch { /* fetched again on send */ }
  firstControl(form) && firstControl(form).focus();
});
window.addEventListener("popstate", (event) => {
  if (location.hash === "#confirmation" && state().confirmation) { showConfirmation(state().confirmation, false); return; }
  showForm();
  // Back from the confirmation: an empty form under "already sent", never the answers.
  if (state().confirmation) clearAnswers();
  else if (pages) pages.fromHistory(event.state);
});
// Restored from the back/forward cache or refilled by the browser's form restoration
// after a confirmation (a shared waiting-room tablet): empty it again.
window.addEventListener("pageshow", () => { if (state().confirmation) clearAnswers(); });

recheckOnInput(form, (fieldId, message) => {
  if (summary.hidden) return;
  if ((listed.errors[fieldId] || null) === message) return; // the alert region is not re-announced
  const errors = { ...listed.errors };
  if (message) errors[fieldId] = message; else delete errors[fieldId];
  if (!Object.keys(errors).length && !listed.message) { clearSummary(); return; }
  fillSummary(errors, listed.message);
});
initSignaturePads(form, () => applyShowWhen(form));
initFileFields(form, { endpoint: formApi, nonce: currentNonce, onChange: () => applyShowWhen(form) });
if (state().confirmation) clearAnswers();
applyShowWhen(form);
if (location.hash === "#confirmation" && state().confirmation) showConfirmation(state().confirmation, false);
else showForm();
// Fetch the nonce early so sending is one request; failures are retried on send.
if (requestToken) loadRequest().catch(() => {});
else currentNonce().catch(() => {});
if (!requestToken) initDrafts({ publicId, form, currentNonce });
