// The form builder: edit fields of every type, live preview, save with revision,
// publish/unpublish, the public link, and the edit lock (acquired on open, renewed while
// open, released on close with a keepalive DELETE carrying the CSRF header).
import {
  api, cachedToken, clearNotices, el, initStaffPage, showError, showInfo,
} from "./api.js";
import { applyShowWhen, initSignaturePads, renderField } from "./fields.js";

initStaffPage();

const formId = document.body.dataset.formId;
const meId = document.body.dataset.meId;
const canEdit = document.body.dataset.canEdit === "1";
const RENEW_MS = 40_000;
const RETRY_LOCK_MS = 20_000;

const TYPES = {
  text: "Short text", textarea: "Long text", email: "Email", phone: "Phone", number: "Number",
  date: "Date", select: "Dropdown", radio: "Single choice", checkbox: "Checkbox / multiple choice",
  signature: "Signature", score: "Score (calculated)",
};
const HAS_OPTIONS = new Set(["select", "radio", "checkbox"]);
const ID_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

const $ = (id) => document.getElementById(id);
const list = $("field-list");
const preview = $("preview");
const saveBtn = $("save-btn");
const publishBtn = $("publish-btn");
const unpublishBtn = $("unpublish-btn");
const saveState = $("save-state");
const lockBanner = $("lock-banner");
const titleInput = $("form-title");
const descInput = $("form-description");
// The retention period: only an admin may change it (the API refuses an editor's change).
const retentionInput = $("form-retention");
const canSetRetention = document.body.dataset.role === "admin";

let form = null;
let fields = [];
let dirty = false;
let editable = false;
let lockHeld = false;
let renewTimer = null;
let retryTimer = null;
let uid = 0;
let busy = false;

function cardKey(f) {
  if (!f._uid) Object.defineProperty(f, "_uid", { value: `c${(uid += 1)}`, enumerable: false });
  return f._uid;
}

function slug(label) {
  const s = label.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 40);
  return /^[a-z]/.test(s) ? s : `field_${s}`.replace(/_+$/, "");
}

function uniqueId(base, self) {
  let id = base || "field";
  let n = 2;
  while (fields.some((f) => f !== self && f.id === id)) { id = `${base}_${n}`; n += 1; }
  return id;
}

function cleanField(f) {
  const out = { id: f.id, type: f.type, label: f.label, required: Boolean(f.required) };
  if (HAS_OPTIONS.has(f.type) && Array.isArray(f.options) && (f.type !== "checkbox" || f.options.length)) {
    out.options = f.options;
  }
  if (f.type === "number") {
    if (f.min !== undefined && f.min !== null && f.min !== "") out.min = Number(f.min);
    if (f.max !== undefined && f.max !== null && f.max !== "") out.max = Number(f.max);
  }
  if (f.pattern && ["text", "phone"].includes(f.type)) out.pattern = f.pattern;
  if (f.helpText) out.helpText = f.helpText;
  if (f.identifies && IDENTIFIES[f.type] === f.identifies) out.identifies = f.identifies;
  if (f.showWhen && f.showWhen.field) out.showWhen = f.showWhen;
  // Scores (docs/scores.md): kept as they came (templates, the API), edited as numbers.
  if (HAS_OPTIONS.has(f.type) && Array.isArray(f.optionScores)) out.optionScores = f.optionScores;
  if (f.type === "score" && f.score) out.score = f.score;
  return out;
}

// Fields that say who the patient is: shown in the responses list and searchable.
const IDENTIFIES = { text: "name", date: "birthDate" };
const IDENTIFIES_LABEL = {
  name: "Identifies the patient: their name (or part of it)",
  birthDate: "Identifies the patient: their date of birth",
};

function markDirty() {
  dirty = true;
  if (editable) saveBtn.disabled = false;
  saveState.textContent = "Unsaved changes";
  renderPreview();
}

function renderPreview() {
  preview.replaceChildren(...fields.map((f) => renderField(cleanField(f), "p")));
  if (!fields.length) preview.append(el("p", { class: "muted", text: "The form is empty. Fields you add appear here as patients will see them." }));
  initSignaturePads(preview, () => applyShowWhen(preview));
  applyShowWhen(preview);
}

function labeled(id, text, control, extra = {}) {
  return el("div", { class: `field ${extra.class || ""}`.trim() },
    el("label", { for: id, text }), extra.help ? el("p", { class: "help", id: `${id}-help`, text: extra.help }) : null,
    control, el("p", { class: "field-error", id: `${id}-error`, hidden: true }));
}

function conditionValue(sw) {
  if (!sw) return "";
  const v = sw.equals ?? sw.notEquals ?? sw.contains;
  return v === undefined || v === null ? "" : String(v);
}

function conditionOp(sw) {
  if (!sw) return "equals";
  if (sw.notEquals !== undefined) return "notEquals";
  if (sw.contains !== undefined) return "contains";
  return "equals";
}

function typedConditionValue(target, raw) {
  if (!target) return raw;
  if (target.type === "number" && raw.trim() !== "" && Number.isFinite(Number(raw))) return Number(raw);
  if (target.type === "checkbox" && !(target.options && target.options.length)) {
    if (raw === "true") return true;
    if (raw === "false") return false;
  }
  return raw;
}

function fieldCard(f, index) {
  const key = cardKey(f);
  const id = (name) => `${key}-${name}`;
  const title = () => f.label || `Untitled ${TYPES[f.type].toLowerCase()}`;
  const heading = el("h3", { id: id("heading") }, `${index + 1}. `, el("span", { class: "card-title", text: title() }),
    el("span", { class: "muted small", text: ` · ${TYPES[f.type]}` }));

  const move = (delta) => {
    const to = index + delta;
    if (to < 0 || to >= fields.length) return;
    fields.splice(index, 1);
    fields.splice(to, 0, f);
    renderEditor();
    markDirty();
    const again = document.getElementById(`${key}-${delta < 0 ? "up" : "down"}`);
    (again && !again.disabled ? again : document.getElementById(`${key}-label`)).focus();
  };
  const actions = el("div", { class: "toolbar" },
    el("button", { type: "button", class: "btn btn-quiet btn-small", id: id("up"), disabled: index === 0,
      "aria-label": `Move ${title()} up`, text: "↑ Up", onclick: () => move(-1) }),
    el("button", { type: "button", class: "btn btn-quiet btn-small", id: id("down"), disabled: index === fields.length - 1,
      "aria-label": `Move ${title()} down`, text: "↓ Down", onclick: () => move(1) }),
    el("button", { type: "button", class: "btn btn-danger btn-small", id: id("remove"),
      "aria-label": `Remove ${title()}`, text: "Remove", onclick: () => {
        fields.splice(index, 1);
        for (const other of fields) if (other.showWhen && other.showWhen.field === f.id) delete other.showWhen;
        renderEditor();
        markDirty();
        const next = list.querySelectorAll(".field-card")[Math.min(index, fields.length - 1)];
        (next ? next.querySelector("input") : $("new-field-type")).focus();
      } }));

  const label = el("input", { type: "text", id: id("label"), value: f.label, maxlength: 500, required: true, "aria-describedby": id("label-error") });
  label.addEventListener("input", () => {
    f.label = label.value;
    if (f._auto) { f.id = uniqueId(slug(f.label) || f.type, f); keyInput.value = f.id; }
    heading.querySelector(".card-title").textContent = title();
    for (const [name, verb] of [["up", "Move %s up"], ["down", "Move %s down"], ["remove", "Remove %s"]]) {
      const button = actions.querySelector(`#${key}-${name}`);
      if (button) button.setAttribute("aria-label", verb.replace("%s", title()));
    }
    markDirty();
  });
  // A score is made from a template or the API (its sum and bands), never by a type change.
  const typeSelect = el("select", { id: id("type") }, Object.entries(TYPES)
    .filter(([value]) => value !== "score" || f.type === "score")
    .map(([value, text]) => el("option", { value, text, selected: value === f.type })));
  typeSelect.addEventListener("change", () => {
    f.type = typeSelect.value;
    if (HAS_OPTIONS.has(f.type) && f.type !== "checkbox" && !(f.options && f.options.length)) f.options = ["Option 1", "Option 2"];
    renderEditor();
    markDirty();
    document.getElementById(id("type")).focus();
  });
  const keyInput = el("input", { type: "text", id: id("key"), value: f.id, class: "mono", spellcheck: "false", "aria-describedby": `${id("key")}-help ${id("key")}-error` });
  keyInput.addEventListener("input", () => { f.id = keyInput.value.trim(); f._auto = false; markDirty(); });
  const required = el("input", { type: "checkbox", id: id("required"), checked: Boolean(f.required) });
  required.addEventListener("change", () => { f.required = required.checked; markDirty(); });
  const help = el("input", { type: "text", id: id("help"), value: f.helpText || "", maxlength: 1000 });
  help.addEventListener("input", () => { f.helpText = help.value; markDirty(); });

  const grid = el("div", { class: "field-card-grid" },
    labeled(id("label"), "Question", label, { class: "span2" }),
    labeled(id("type"), "Type", typeSelect),
    labeled(id("key"), "Field key", keyInput, { help: "Stable id in exports; letters, digits, _ or -." }),
    labeled(id("help"), "Help text", help, { class: "span2" }),
    // A score is calculated, never answered: it cannot be required.
    f.type === "score" ? null : el("div", { class: "choice span2" }, required, el("label", { for: id("required"), text: "Required" })));

  if (f.type === "score" && f.score) {
    const bands = (f.score.bands || []).map((b) => `${b.min}–${b.max} ${b.label}`).join(", ");
    const sources = (f.score.sum || []).map((t) => (t.weight === 1 || t.weight === undefined ? t.field : `${t.weight}×${t.field}`));
    grid.append(el("p", { class: "help span2 score-summary", id: id("score") },
      `Sum of ${sources.join(" + ")}.${bands ? ` Bands: ${bands}.` : ""} `,
      f.score.showPatient ? "Shown to the patient after sending." : "Shown to staff only."));
  }
  if (HAS_OPTIONS.has(f.type)) {
    const opts = el("textarea", { id: id("options"), rows: 3, "aria-describedby": `${id("options")}-help ${id("options")}-error` });
    opts.value = (f.options || []).join("\n");
    opts.addEventListener("input", () => {
      f.options = opts.value.split("\n").map((s) => s.trim()).filter(Boolean);
      markDirty();
    });
    const helpText = f.type === "checkbox"
      ? "One per line. Leave empty for a single yes/no consent box."
      : "One option per line.";
    grid.append(labeled(id("options"), "Options", opts, { class: "span2", help: helpText }));
  }
  if (HAS_OPTIONS.has(f.type)) {
    const scoresInput = el("input", { type: "text", id: id("option-scores"), inputmode: "decimal",
      value: Array.isArray(f.optionScores) ? f.optionScores.join(", ") : "",
      "aria-describedby": `${id("option-scores")}-help ${id("option-scores")}-error` });
    scoresInput.addEventListener("input", () => {
      const raw = scoresInput.value.trim();
      if (!raw) delete f.optionScores;
      else f.optionScores = raw.split(",").map((v) => (v.trim() !== "" && Number.isFinite(Number(v)) ? Number(v) : v.trim()));
      markDirty();
    });
    grid.append(labeled(id("option-scores"), "Option scores (optional)", scoresInput, { class: "span2",
      help: "One number per option, in order, separated by commas (e.g. 0, 1, 2, 3): what a score field adds for each." }));
  }
  const kind = IDENTIFIES[f.type];
  if (kind) {
    const marks = el("input", { type: "checkbox", id: id("identifies"), checked: f.identifies === kind,
      "aria-describedby": `${id("identifies")}-help` });
    marks.addEventListener("change", () => {
      if (marks.checked) f.identifies = kind; else delete f.identifies;
      markDirty();
    });
    grid.append(el("div", { class: "span2" },
      el("div", { class: "choice" }, marks, el("label", { for: id("identifies"), text: IDENTIFIES_LABEL[kind] })),
      el("p", { class: "help", id: `${id("identifies")}-help`,
        text: "Shown in the responses list and searchable by staff; stored encrypted, searched through keyed hashes." })));
  }
  if (f.type === "number") {
    for (const bound of ["min", "max"]) {
      const input = el("input", { type: "number", id: id(bound), step: "any", value: f[bound] ?? "" });
      input.addEventListener("input", () => { f[bound] = input.value === "" ? undefined : Number(input.value); markDirty(); });
      grid.append(labeled(id(bound), bound === "min" ? "Smallest allowed" : "Largest allowed", input));
    }
  }

  // showWhen: only on fields that come earlier, so conditions never loop.
  const earlier = fields.slice(0, index);
  if (earlier.length && f.type !== "score") {  // a score is always calculated
    const sw = f.showWhen || null;
    const target = el("select", { id: id("sw-field") },
      el("option", { value: "", text: "Always show" }),
      earlier.filter((o) => o.type !== "score").map((o) => el("option", { value: o.id, text: o.label || o.id, selected: sw && sw.field === o.id })));
    const op = el("select", { id: id("sw-op") },
      [["equals", "is"], ["notEquals", "is not"], ["contains", "contains"]].map(([value, text]) =>
        el("option", { value, text, selected: conditionOp(sw) === value })));
    const value = el("input", { type: "text", id: id("sw-value"), value: conditionValue(sw) });
    const sync = () => {
      op.disabled = value.disabled = !target.value || !editable;
      if (!target.value) { delete f.showWhen; markDirty(); return; }
      const t = fields.find((o) => o.id === target.value);
      f.showWhen = { field: target.value, [op.value]: typedConditionValue(t, value.value) };
      markDirty();
    };
    target.addEventListener("change", sync);
    op.addEventListener("change", sync);
    value.addEventListener("input", sync);
    op.disabled = value.disabled = !target.value;
    grid.append(el("fieldset", { class: "span2" },
      el("legend", { text: "Show only when" }),
      el("div", { class: "show-when" },
        labeled(id("sw-field"), "Answer to", target),
        labeled(id("sw-op"), "Condition", op),
        labeled(id("sw-value"), "Value", value))));
  }

  return el("li", { class: "field-card", id: `card-${key}`, "data-index": index, "aria-labelledby": id("heading") },
    el("div", { class: "field-card-head" }, heading, actions), grid);
}

function renderEditor() {
  list.replaceChildren(...fields.map(fieldCard));
  $("fields-empty").hidden = fields.length > 0;
  $("fields-empty").querySelector("p").textContent = editable
    ? "No fields yet. Add the first question below."
    : "This form has no fields yet.";
  applyEditable();
}

function applyEditable() {
  const root = $("builder");
  root.classList.toggle("readonly", !editable);
  for (const c of root.querySelectorAll(".builder-edit input, .builder-edit select, .builder-edit textarea, .builder-edit button")) {
    if (!editable) c.disabled = true;
  }
  if (editable) {
    for (const c of root.querySelectorAll(".builder-edit input, .builder-edit select, .builder-edit textarea, .builder-edit button")) {
      if (!c.id.endsWith("-up") && !c.id.endsWith("-down") && !c.id.endsWith("sw-op") && !c.id.endsWith("sw-value")) c.disabled = false;
    }
    for (const card of list.querySelectorAll(".field-card")) {
      const i = Number(card.dataset.index);
      const up = card.querySelector('[id$="-up"]');
      const down = card.querySelector('[id$="-down"]');
      if (up) up.disabled = i === 0;
      if (down) down.disabled = i === fields.length - 1;
      const target = card.querySelector('[id$="sw-field"]');
      if (target) for (const c of card.querySelectorAll('[id$="sw-op"], [id$="sw-value"]')) c.disabled = !target.value;
    }
  }
  retentionInput.disabled = !editable || !canSetRetention;
  $("add-field-box").hidden = !editable;
  saveBtn.hidden = !editable;
  saveBtn.disabled = !dirty;
  updateStatus();
}

function updateStatus() {
  if (!form) return;
  const badge = $("status-badge");
  badge.className = `badge badge-${form.status}`;
  badge.textContent = form.status === "published" ? `Published v${form.version}` : form.status === "archived" ? "Archived" : "Draft";
  publishBtn.hidden = !editable;
  publishBtn.textContent = form.status === "published" ? (form.hasUnpublishedChanges ? "Publish changes" : "Published") : "Publish";
  publishBtn.disabled = form.status === "published" && !form.hasUnpublishedChanges && !dirty;
  unpublishBtn.hidden = !editable || form.status !== "published";
  const box = $("public-link-box");
  if (form.status === "published" && form.publicId) {
    box.hidden = false;
    $("public-link").value = `${location.origin}/f/${form.publicId}`;
    $("version-note").textContent = form.hasUnpublishedChanges
      ? `Patients see version ${form.version}. Your later changes are a draft until you publish them.`
      : `Patients see version ${form.version}.`;
  } else {
    box.hidden = true;
  }
}

function adopt(data) {
  form = data;
  titleInput.value = form.title;
  descInput.value = form.description || "";
  retentionInput.value = form.retentionDays == null ? "" : String(form.retentionDays);
  $("heading-title").textContent = form.title;
  $("crumb-title").textContent = form.title;
  fields = (form.fields || []).map((f) => ({ ...f }));
  dirty = false;
  saveState.textContent = `Revision ${form.revision} saved`;
  renderEditor();
  renderPreview();
}

function validateLocally() {
  const problems = [];
  const seen = new Set();
  list.querySelectorAll(".field-error").forEach((p) => { p.hidden = true; });
  list.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
  fields.forEach((f, i) => {
    const key = cardKey(f);
    const mark = (name, message) => {
      const input = document.getElementById(`${key}-${name}`);
      const box = document.getElementById(`${key}-${name}-error`);
      if (input) input.setAttribute("aria-invalid", "true");
      if (box) { box.textContent = message; box.hidden = false; }
      problems.push(`Field ${i + 1}: ${message}`);
    };
    if (!f.label || !f.label.trim()) mark("label", "Write the question.");
    if (!ID_RE.test(f.id || "")) mark("key", "Use a letter first, then letters, digits, _ or -.");
    else if (seen.has(f.id)) mark("key", "Another field already uses this key.");
    seen.add(f.id);
    if ((f.type === "select" || f.type === "radio") && !(f.options && f.options.length)) mark("options", "Add at least one option.");
  });
  if (!titleInput.value.trim()) problems.unshift("Give the form a title.");
  retentionInput.removeAttribute("aria-invalid");
  if (canSetRetention && retentionDays() === undefined) {
    retentionInput.setAttribute("aria-invalid", "true");
    problems.push("Keep responses for: a whole number of days from 1 to 36500, or empty to keep them for ever.");
  }
  return problems;
}

/** The retention period typed: null when empty (keep for ever), undefined when not valid. */
function retentionDays() {
  const raw = retentionInput.value.trim();
  if (raw === "") return retentionInput.validity.badInput ? undefined : null;
  const days = Number(raw);
  return Number.isInteger(days) && days >= 1 && days <= 36500 ? days : undefined;
}

async function save() {
  if (!editable || busy) return false;
  const problems = validateLocally();
  if (problems.length) { showError(`Please fix before saving: ${problems.join(" ")}`); return false; }
  busy = true;
  saveBtn.disabled = true;
  saveState.textContent = "Saving…";
  try {
    const body = { title: titleInput.value.trim(), description: descInput.value, fields: fields.map(cleanField), revision: form.revision };
    if (canSetRetention) body.retentionDays = retentionDays();
    const { status, data } = await api(`/api/forms/${encodeURIComponent(formId)}`, {
      method: "PUT", body, expect: [409, 422],
    });
    if (status === 200) {
      for (const f of fields) f._auto = false;
      const keep = fields;
      form = data;
      dirty = false;
      fields = keep;
      saveState.textContent = `Revision ${form.revision} saved`;
      $("heading-title").textContent = form.title;
      $("crumb-title").textContent = form.title;
      document.title = `Edit ${form.title} · healthforms`;
      applyEditable();
      clearNotices();
      showInfo("Saved.");
      return true;
    }
    if (status === 409 && data.code === "locked") {
      onLockedBy(data.lockedBy);
      showError(`Not saved: ${data.lockedBy ? data.lockedBy.name : "someone else"} is editing this form. Copy your changes before reloading.`);
    } else if (status === 409) {
      showError("Not saved: this form was changed elsewhere since you opened it. Reload the page to get the latest version.");
    } else {
      const fieldsErr = (data && data.fields) || {};
      const detail = Object.entries(fieldsErr).map(([k, v]) => `${k}: ${v}`).join("; ");
      showError(`Not saved: ${detail || (data && data.error) || "some fields are not valid."}`);
    }
    saveBtn.disabled = false;
    saveState.textContent = "Unsaved changes";
    return false;
  } catch (err) {
    saveBtn.disabled = false;
    saveState.textContent = "Unsaved changes";
    showError(err);
    return false;
  } finally {
    busy = false;
  }
}

async function setPublished(publish) {
  if (!editable) return;
  if (dirty && !(await save())) return;
  busy = true;
  publishBtn.disabled = unpublishBtn.disabled = true;
  try {
    const { status, data } = await api(`/api/forms/${encodeURIComponent(formId)}/${publish ? "publish" : "unpublish"}`, { method: "POST", expect: [409, 422] });
    if (status === 200) {
      const keep = fields;
      form = data;
      fields = keep;
      updateStatus();
      showInfo(publish ? `Published version ${form.version}. The public link is ready to share.` : "Unpublished. The public link now shows “not found”.");
    } else if (data && data.code === "locked") {
      onLockedBy(data.lockedBy);
    } else {
      showError((data && data.error) || "That did not work.");
    }
  } catch (err) {
    showError(err);
  } finally {
    busy = false;
    unpublishBtn.disabled = false;
    updateStatus();
  }
}

function onLockedBy(holder) {
  lockHeld = false;
  editable = false;
  clearInterval(renewTimer);
  lockBanner.textContent = `Being edited by ${holder && holder.name ? holder.name : "another user"}. You can look, but not save, until they close the form.`;
  lockBanner.hidden = false;
  applyEditable();
  clearTimeout(retryTimer);
  retryTimer = setTimeout(tryLock, RETRY_LOCK_MS);
}

async function tryLock() {
  try {
    const { status, data } = await api(`/api/forms/${encodeURIComponent(formId)}/lock`, { method: "POST", expect: [409] });
    if (status === 200 && data.lockedBy && data.lockedBy.id === meId) {
      const wasReadOnly = !editable;
      lockHeld = true;
      editable = true;
      lockBanner.hidden = true;
      clearInterval(renewTimer);
      renewTimer = setInterval(renewLock, RENEW_MS);
      if (wasReadOnly && form) {
        // Someone else may have saved while this page was read-only: start from theirs.
        const fresh = await api(`/api/forms/${encodeURIComponent(formId)}`);
        adopt(fresh.data);
      }
      applyEditable();
      return;
    }
    onLockedBy(data && data.lockedBy);
  } catch (err) {
    showError(err);
  }
}

async function renewLock() {
  try {
    const { status, data } = await api(`/api/forms/${encodeURIComponent(formId)}/lock`, { method: "POST", expect: [409] });
    if (status === 409) {
      onLockedBy(data && data.lockedBy);
      showError("Your edit lock was taken over while this page was idle. Copy unsaved changes before reloading.");
    }
  } catch (err) {
    showError(err);
  }
}

function releaseLock() {
  if (!lockHeld) return;
  lockHeld = false;
  clearInterval(renewTimer);
  // keepalive lets the request outlive the page; it carries the cached CSRF token.
  fetch(`/api/forms/${encodeURIComponent(formId)}/lock`, {
    method: "DELETE", keepalive: true, credentials: "same-origin",
    headers: { "X-CSRF-Token": cachedToken(), Accept: "application/json" },
  }).catch(() => {});
}

$("add-field-btn").addEventListener("click", () => {
  const type = $("new-field-type").value;
  const f = { id: uniqueId(type, null), type, label: "", required: false, _auto: true };
  if (type === "select" || type === "radio") f.options = ["Option 1", "Option 2"];
  fields.push(f);
  renderEditor();
  markDirty();
  document.getElementById(`${cardKey(f)}-label`).focus();
});
titleInput.addEventListener("input", markDirty);
descInput.addEventListener("input", markDirty);
retentionInput.addEventListener("input", markDirty);
saveBtn.addEventListener("click", save);
publishBtn.addEventListener("click", () => setPublished(true));
unpublishBtn.addEventListener("click", () => setPublished(false));
$("copy-link").addEventListener("click", async () => {
  const input = $("public-link");
  try {
    await navigator.clipboard.writeText(input.value);
    showInfo("Link copied.");
  } catch {
    input.select();
    showInfo("Press Ctrl+C (or ⌘C) to copy the selected link.");
  }
});
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
});
window.addEventListener("pagehide", releaseLock);
// Back to a page restored from the back/forward cache: its lock was released on the way out.
window.addEventListener("pageshow", (e) => { if (e.persisted && canEdit && form) tryLock(); });
window.addEventListener("beforeunload", (e) => { if (dirty && editable) { e.preventDefault(); e.returnValue = ""; } });

(async () => {
  try {
    const { data } = await api(`/api/forms/${encodeURIComponent(formId)}`);
    adopt(data);
    if (canEdit) await tryLock();
    else { editable = false; applyEditable(); }
  } catch (err) {
    showError(err);
  } finally {
    $("builder").setAttribute("aria-busy", "false");
  }
})();
