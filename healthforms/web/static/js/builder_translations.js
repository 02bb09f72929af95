// The builder's "Spanish texts" panel: the form's title and description and, per field,
// its label, help text and option labels in Spanish (API.md Form `translations`,
// forms/translations.py). Options stay answered by their canonical value, so only the
// words a patient reads change. builder.js hands over its live fields and its
// "something changed" callback; this module owns the panel and the save's `translations`.
import { el } from "./api.js";

const LANGUAGE = "es";
const HAS_OPTIONS = new Set(["select", "radio", "checkbox"]);
const panel = document.getElementById("translations");
const body = document.getElementById("translations-body");
let texts = { fields: {} };
let currentFields = () => [];
let changed = () => {};

const nonEmpty = (value) => typeof value === "string" && value.trim() !== "";

function input(id, label, value, placeholder, onInput, { multiline = false, hint = null } = {}) {
  const control = el(multiline ? "textarea" : "input", {
    id, ...(multiline ? { rows: 2 } : { type: "text" }), lang: LANGUAGE,
    placeholder: placeholder || null, "aria-describedby": hint ? `${id}-hint` : null,
  });
  control.value = value || "";
  control.addEventListener("input", () => { onInput(control.value); changed(); });
  return el("div", { class: "field" }, el("label", { for: id, text: label }),
    hint ? el("p", { class: "help", id: `${id}-hint`, text: hint }) : null, control);
}

function fieldTexts(id) {
  if (!texts.fields[id]) texts.fields[id] = {};
  return texts.fields[id];
}

/** Draw the panel for the fields as they are now (texts typed so far are kept). */
export function renderTranslations() {
  if (!panel || !body) return;
  const rows = [
    input("tr-title", "Title in Spanish", texts.title, document.getElementById("form-title")?.value,
      (v) => { texts.title = v; }),
    input("tr-description", "Description in Spanish", texts.description, null,
      (v) => { texts.description = v; }, { multiline: true }),
  ];
  for (const f of currentFields()) {
    if (!f.id || !f.label) continue;
    const own = texts.fields[f.id] || {};
    const parts = [input(`tr-${f.id}-label`, "Question in Spanish", own.label, f.label,
      (v) => { fieldTexts(f.id).label = v; })];
    if (f.helpText) {
      parts.push(input(`tr-${f.id}-help`, "Help text in Spanish", own.helpText, f.helpText,
        (v) => { fieldTexts(f.id).helpText = v; }));
    }
    const options = HAS_OPTIONS.has(f.type) && Array.isArray(f.options) ? f.options : [];
    const shown = Array.isArray(own.options) && own.options.length === options.length ? own.options : [];
    options.forEach((option, i) => {
      parts.push(input(`tr-${f.id}-option-${i}`, `Option “${option}” in Spanish`, shown[i], option, (v) => {
        const mine = fieldTexts(f.id);
        if (!Array.isArray(mine.options) || mine.options.length !== options.length) mine.options = options.map(() => "");
        mine.options[i] = v;
      }, { hint: i === 0 ? "Patients still answer with the option itself: responses, exports and conditions do not change." : null }));
    });
    rows.push(el("fieldset", { class: "translation-field" }, el("legend", { text: f.label }), ...parts));
  }
  body.replaceChildren(...rows);
}

/** Take the form's saved Spanish texts (after a load or a save). */
export function adoptTranslations(form) {
  const saved = (form.translations || {})[LANGUAGE] || {};
  texts = JSON.parse(JSON.stringify(saved));
  if (!texts.fields || typeof texts.fields !== "object") texts.fields = {};
  if (panel && panel.open) renderTranslations();
}

/** The save's `translations`: empty texts left out, only fields that still exist, and
 * option labels only while their count still matches the field's options. */
export function translationsBody() {
  const out = {};
  if (nonEmpty(texts.title)) out.title = texts.title.trim();
  if (nonEmpty(texts.description)) out.description = texts.description;
  const byId = new Map(currentFields().map((f) => [f.id, f]));
  const fields = {};
  for (const [id, own] of Object.entries(texts.fields || {})) {
    const f = byId.get(id);
    if (!f) continue;
    const kept = {};
    if (nonEmpty(own.label)) kept.label = own.label;
    if (nonEmpty(own.helpText) && f.helpText) kept.helpText = own.helpText;
    const options = HAS_OPTIONS.has(f.type) && Array.isArray(f.options) ? f.options : [];
    if (Array.isArray(own.options) && options.length && own.options.length === options.length && own.options.some(nonEmpty)) {
      kept.options = own.options.map((o) => (typeof o === "string" ? o : ""));
    }
    if (Object.keys(kept).length) fields[id] = kept;
  }
  if (Object.keys(fields).length) out.fields = fields;
  return Object.keys(out).length ? { [LANGUAGE]: out } : {};
}

/** Wire the panel: `fields()` gives the builder's live fields, `onChange()` marks unsaved. */
export function initTranslations({ fields, onChange }) {
  currentFields = fields;
  changed = onChange;
  // Drawn when opened, so it always lists the fields as they are at that moment.
  panel?.addEventListener("toggle", () => { if (panel.open) renderTranslations(); });
}
