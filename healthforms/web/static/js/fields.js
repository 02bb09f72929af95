// Patient-facing fields: render (builder preview), read answers, evaluate showWhen,
// client-side hints, the signature pad. Markup mirrors templates/_fields.html.
import { el } from "./api.js";
import { LAYOUT, visibleIds } from "./conditions.js";
import { _ } from "./i18n.js";

const INPUT_TYPES = { text: "text", email: "email", phone: "tel", number: "number", date: "date" };

function requiredMark(f) {
  return f.required
    ? [" ", el("span", { class: "req", "aria-hidden": "true", text: "*" }),
       el("span", { class: "visually-hidden", text: ` ${_("(required)")}` })]
    : [];
}

// Node.append(null) would insert the text "null".
const present = (...nodes) => nodes.filter(Boolean);

/** A file field's limits, as the page states them (defaults: docs/uploads.md). */
export function fileLimits(f) {
  const kinds = Array.isArray(f.accept) && f.accept.length ? f.accept : ["image", "pdf"];
  const maxFiles = f.maxFiles || 1;
  const maxSizeMb = f.maxSizeMb || 10;
  const what = kinds.length === 2 ? _("Photos or PDF documents") : kinds[0] === "image" ? _("Photos") : _("PDF documents");
  return {
    accept: kinds.map((k) => (k === "image" ? "image/*" : "application/pdf")).join(","),
    maxFiles, maxSizeMb,
    text: maxFiles === 1
      ? _("{kinds}, one file, at most {size} MB.", { kinds: what, size: maxSizeMb })
      : _("{kinds}, up to {count} files, at most {size} MB each.", { kinds: what, count: maxFiles, size: maxSizeMb }),
  };
}

/** A heading, paragraph or page title, as the server renders it on the patient page. */
function renderBlock(f, fid, headingLevel) {
  const showWhen = f.showWhen ? JSON.stringify(f.showWhen) : null;
  if (f.type === "pageBreak") {
    // The builder's preview is one column: a page break shows as its page's title.
    return el("div", { class: "form-page page-marker", id: `${fid}-wrap`, "data-field-id": f.id,
      "data-type": f.type, "data-show-when": showWhen },
    el("h3", { class: "page-title", text: f.label || "New page" }));
  }
  return el("div", { class: `block block-${f.type}`, id: `${fid}-wrap`, "data-field-id": f.id,
    "data-type": f.type, "data-show-when": showWhen },
  f.type === "heading"
    ? el(`h${headingLevel}`, { class: "block-heading", text: f.label })
    : el("p", { class: "block-text", text: f.label }));
}

/** Build one field's DOM, as the server renders it on the patient page. */
export function renderField(f, prefix = "q", headingLevel = 2) {
  // A score has no patient answer (docs/scores.md): the preview says what it is, and it is
  // no ".q" wrapper, so nothing reads an answer from it.
  if (f.type === "score") {
    return el("div", { class: "field score-preview", id: `${prefix}-${f.id}-wrap`, "data-field-id": f.id },
      el("p", { class: "muted small", text: `${f.label}: calculated when the form is sent; ${
        f.score && f.score.showPatient ? "the patient sees it after sending" : "staff only, the patient never sees it"}.` }));
  }
  const fid = `${prefix}-${f.id}`;
  if (LAYOUT.has(f.type)) return renderBlock(f, fid, headingLevel);
  const described = [...(f.helpText ? [`${fid}-help`] : []), `${fid}-error`].join(" ");
  const help = f.helpText ? el("p", { class: "help", id: `${fid}-help`, text: f.helpText }) : null;
  const error = el("p", { class: "field-error", id: `${fid}-error`, hidden: true });
  const wrap = el("div", {
    class: "field q", id: `${fid}-wrap`, "data-field-id": f.id, "data-type": f.type,
    "data-required": f.required ? "1" : null,
    "data-show-when": f.showWhen ? JSON.stringify(f.showWhen) : null,
    "data-min": f.min ?? null, "data-max": f.max ?? null,
  });
  const options = Array.isArray(f.options) ? f.options : [];
  if (f.type === "radio" || (f.type === "checkbox" && options.length)) {
    const choices = el("div", { class: "choices" }, options.map((opt, i) => el("div", { class: "choice" },
      el("input", { type: f.type, id: `${fid}-${i}`, name: f.id, value: opt }),
      el("label", { for: `${fid}-${i}`, text: opt }))));
    wrap.append(el("fieldset", { "aria-describedby": described },
      el("legend", {}, f.label, ...requiredMark(f)), help, choices, error));
  } else if (f.type === "checkbox") {
    wrap.append(el("div", { class: "choice consent" },
      el("input", { type: "checkbox", id: fid, name: f.id, value: "true", "aria-describedby": described }),
      el("label", { for: fid }, f.label, ...requiredMark(f))), ...present(help, error));
  } else if (f.type === "signature") {
    const pad = el("div", { class: "sigpad", "data-signature-for": f.id },
      el("canvas", { class: "sigpad-canvas", width: 600, height: 200, role: "img",
        "aria-label": "Signature area: draw your signature with a finger, pen or mouse" }),
      el("div", { class: "sigpad-row" },
        el("span", { class: "sigpad-hint muted small", "aria-hidden": "true", text: "Sign above" }),
        el("button", { type: "button", class: "btn btn-quiet btn-small sigpad-clear", text: "Clear signature" })),
      el("div", { class: "field sigpad-typed" },
        el("label", { for: `${fid}-typed`, text: "Or type your full name to sign" }),
        el("input", { type: "text", id: `${fid}-typed`, class: "sigpad-typed-input", autocomplete: "name" })),
      el("input", { type: "hidden", name: f.id, value: "" }));
    wrap.append(el("fieldset", { "aria-describedby": described },
      el("legend", {}, f.label, ...requiredMark(f)), help, pad, error));
  } else if (f.type === "file") {
    const limits = fileLimits(f);
    const fileDescribed = [...(f.helpText ? [`${fid}-help`] : []), `${fid}-limits`, `${fid}-error`].join(" ");
    wrap.append(el("label", { for: fid }, f.label, ...requiredMark(f)), ...present(help),
      el("p", { class: "help", id: `${fid}-limits`, text: limits.text }),
      el("input", { type: "file", id: fid, name: f.id, class: "file-input", accept: limits.accept,
        multiple: limits.maxFiles > 1 ? true : null, "aria-describedby": fileDescribed,
        "aria-required": f.required ? "true" : null,
        "data-max-files": limits.maxFiles, "data-max-size-mb": limits.maxSizeMb }),
      el("p", { class: "file-status muted small", id: `${fid}-status`, role: "status" }),
      el("ul", { class: "file-list", id: `${fid}-list`, "aria-label": _("Files added: {label}", { label: f.label }) }),
      error);
  } else {
    let control;
    const common = { id: fid, name: f.id, "aria-describedby": described, "aria-required": f.required ? "true" : null };
    if (f.type === "textarea") control = el("textarea", { ...common, rows: 4 });
    else if (f.type === "select") {
      control = el("select", common, el("option", { value: "", text: "Choose…" }),
        options.map((opt) => el("option", { value: opt, text: opt })));
    } else {
      control = el("input", {
        ...common, type: INPUT_TYPES[f.type] || "text",
        autocomplete: { email: "email", phone: "tel" }[f.type] || null,
        inputmode: f.type === "number" ? "decimal" : null,
        step: f.type === "number" ? "any" : null,
        min: f.type === "number" ? f.min ?? null : null,
        max: f.type === "number" ? f.max ?? null : null,
      });
    }
    wrap.append(el("label", { for: fid }, f.label, ...requiredMark(f)), ...present(help, control, error));
  }
  return wrap;
}

/** The current answer of one field wrapper, typed as the API expects; undefined if empty. */
export function fieldValue(wrap) {
  const type = wrap.dataset.type;
  if (type === "radio") {
    const checked = wrap.querySelector("input:checked");
    return checked ? checked.value : undefined;
  }
  if (type === "checkbox") {
    const boxes = wrap.querySelectorAll('input[type="checkbox"]');
    if (wrap.querySelector(".consent")) return boxes[0].checked;
    const chosen = [...boxes].filter((b) => b.checked).map((b) => b.value);
    return chosen;
  }
  if (type === "signature") {
    const hidden = wrap.querySelector('input[type="hidden"]');
    return hidden.value || undefined;
  }
  if (type === "file") {
    // The ids of the files already uploaded (static/js/uploads.js lists them).
    const ids = [...wrap.querySelectorAll("[data-upload-id]")].map((item) => item.dataset.uploadId);
    return ids.length ? ids : undefined;
  }
  const control = wrap.querySelector("input, textarea, select");
  const raw = control.value;
  if (type !== "textarea" && raw.trim() === "") return undefined;
  if (type === "textarea" && raw === "") return undefined;
  if (type === "number") {
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw;
  }
  return type === "textarea" ? raw : raw.trim();
}

function parseShowWhen(raw) {
  if (!raw) return undefined;
  try { return JSON.parse(raw); } catch { return undefined; }
}

/**
 * Show or hide fields, blocks and pages by their showWhen, through conditions.js (the
 * twin of the server's evaluation). Display only: the server decides again. A page
 * hidden by its condition is marked data-skipped; its fields are hidden one by one.
 */
export function applyShowWhen(root) {
  const nodes = [...root.querySelectorAll(".form-page[data-field-id], .q[data-field-id], .block[data-field-id]")];
  const items = nodes.map((node) => ({
    id: node.dataset.fieldId,
    type: node.dataset.type,
    showWhen: parseShowWhen(node.dataset.showWhen),
    value: node.classList.contains("q") ? fieldValue(node) : undefined,
  }));
  const shown = visibleIds(items);
  for (const node of nodes) {
    const on = shown.has(node.dataset.fieldId);
    if (node.classList.contains("form-page")) node.toggleAttribute("data-skipped", !on);
    else if (node.hidden === on) node.hidden = !on;
  }
}

/** Answers of every visible field, omitting empty optional ones. */
export function collectAnswers(root) {
  const answers = {};
  for (const wrap of root.querySelectorAll(".q[data-field-id]")) {
    if (wrap.hidden) continue;
    const value = fieldValue(wrap);
    if (value === undefined) continue;
    if (Array.isArray(value) && value.length === 0 && !wrap.dataset.required) continue;
    answers[wrap.dataset.fieldId] = value;
  }
  return answers;
}

/** The server's checks a field carries (data-rules: submissions/validation.py
 * `client_rules`), with the server's own messages. A field drawn without them (the
 * builder preview) is only checked for being required. */
function rulesOf(wrap) {
  if (wrap.dataset.rules) {
    try { return JSON.parse(wrap.dataset.rules) || {}; } catch { return {}; }
  }
  return wrap.dataset.required ? { required: "is required" } : {};
}

const compiled = new Map();
/** A rule's pattern (RE2 syntax, matched whole) as a RegExp, or null when JavaScript
 * would read it differently or not at all: then only the server's 422 decides. */
function patternOf(source) {
  if (compiled.has(source)) return compiled.get(source);
  let re = null;
  // RE2-only syntax JavaScript reads otherwise: [:alpha:], \A \z \Q \E \C, (?P<n>, (?i).
  if (!/\[:|\\[AzQEC]|\(\?[^:]/.test(source)) {
    try { re = new RegExp(`^(?:${source})$`, "u"); } catch { re = null; }
  }
  compiled.set(source, re);
  return re;
}

// Python counts characters (code points), not UTF-16 units.
const chars = (text) => [...text].length;

function isDate(text, rule) {
  if (!new RegExp(rule.re, "u").test(text)) return false;
  const [y, m, d] = text.split("-").map(Number);
  const day = new Date(0);
  day.setUTCFullYear(y, m - 1, d);
  return y >= 1 && day.getUTCFullYear() === y && day.getUTCMonth() === m - 1 && day.getUTCDate() === d;
}

/** The server's message for one field's current answer, or null: the same checks in
 * the same order as submissions/validation.py, so the page refuses what the server
 * refuses, in its words. */
export function fieldError(wrap) {
  // A file still uploading is not an answer yet (static/js/uploads.js).
  if (wrap.dataset.type === "file" && wrap.querySelector("[data-uploading]")) return "Wait until the file has finished uploading.";
  const rules = rulesOf(wrap);
  const control = wrap.querySelector("input:not([type=hidden]), textarea, select");
  // A number input holding text the browser cannot read reports "": say what it is.
  if (rules.number && control && control.validity && control.validity.badInput) return rules.number.message;
  const value = fieldValue(wrap);
  const blank = value === undefined || value === false || (Array.isArray(value) && value.length === 0) ||
    (typeof value === "string" && value.trim() === "");
  if (blank) return rules.required || null;
  if (rules.maxLength && chars(value) > rules.maxLength.value) return rules.maxLength.message;
  if (rules.minLength && chars(value.trim()) < rules.minLength.value) return rules.minLength.message;
  if (rules.email && (chars(value) > rules.email.maxLength || !new RegExp(rules.email.re, "u").test(value))) {
    return rules.email.message;
  }
  if (rules.phone) {
    const digits = (value.match(/[0-9]/g) || []).length;
    const [low, high] = rules.phone.digits;
    if (!new RegExp(rules.phone.re, "u").test(value) || digits < low || digits > high) return rules.phone.message;
  }
  if (rules.pattern) {
    const re = patternOf(rules.pattern.value);
    if (re && !re.test(value)) return rules.pattern.message;
  }
  if (rules.number) {
    if (typeof value !== "number") return rules.number.message;
    if (Math.abs(value) > rules.range.value) return rules.range.message;
    if (rules.min && value < rules.min.value) return rules.min.message;
    if (rules.max && value > rules.max.value) return rules.max.message;
  }
  if (rules.date && !isDate(value, rules.date)) return rules.date.message;
  if (rules.signature && value.length > rules.signature.maxChars) return rules.signature.message;
  return null;
}

/** The server's messages for every visible field the page can check: {fieldId: message}.
 * The server's 422 stays the truth (a pattern JavaScript cannot read, the total size). */
export function clientErrors(root) {
  const errors = {};
  for (const wrap of root.querySelectorAll(".q[data-field-id]")) {
    if (wrap.hidden) continue;
    const message = fieldError(wrap);
    if (message) errors[wrap.dataset.fieldId] = message;
  }
  return errors;
}

/** After the first attempt to send (`root.dataset.attempted`), check a field again
 * whenever its answer changes: a fixed answer's message goes at once, a new problem
 * shows. `onChange(fieldId, message)` hears each outcome (e.g. to update a summary). */
export function recheckOnInput(root, onChange = () => {}) {
  const recheck = (event) => {
    if (!root.dataset.attempted) return;
    const wrap = event.target.closest && event.target.closest(".q[data-field-id]");
    if (!wrap || wrap.hidden) return;
    const message = fieldError(wrap);
    showFieldError(wrap, message);
    onChange(wrap.dataset.fieldId, message);
  };
  root.addEventListener("input", recheck);
  root.addEventListener("change", recheck);
}

/** Put each message next to its field (aria-invalid + the described-by error text). */
export function showFieldErrors(root, errors) {
  for (const wrap of root.querySelectorAll(".q[data-field-id]")) showFieldError(wrap, errors[wrap.dataset.fieldId]);
}

/** The server's words as a sentence: "is required" -> "Is required" (as the no-JavaScript
 * page shows them, web/patient_page.py `_sentence`). */
export function sentence(raw) {
  return raw ? String(raw).charAt(0).toUpperCase() + String(raw).slice(1) : raw;
}

function showFieldError(wrap, raw) {
  const message = sentence(raw);
  const box = wrap.querySelector(".field-error");
  const controls = wrap.querySelectorAll("input:not([type=hidden]), textarea, select, canvas");
  if (box) { box.textContent = message || ""; box.hidden = !message; }
  for (const c of controls) {
    if (message) c.setAttribute("aria-invalid", "true"); else c.removeAttribute("aria-invalid");
  }
}

export function firstControl(wrap) {
  return wrap.querySelector("input:not([type=hidden]), textarea, select");
}

/** Signature pads: pointer events (mouse, pen, touch) with mouse/touch fallbacks. */
export function initSignaturePads(root, onChange = () => {}) {
  for (const pad of root.querySelectorAll(".sigpad")) {
    if (pad.dataset.ready) continue;
    pad.dataset.ready = "1";
    const canvas = pad.querySelector("canvas");
    const hidden = pad.querySelector('input[type="hidden"]');
    const typed = pad.querySelector(".sigpad-typed-input");
    const ctx = canvas.getContext("2d");
    let drawing = false;
    let inked = false;
    let last = null;
    const reset = () => {
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.strokeStyle = "#0b2530";
      ctx.lineWidth = 3;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
    };
    reset();
    const point = (clientX, clientY) => {
      const r = canvas.getBoundingClientRect();
      return { x: ((clientX - r.left) * canvas.width) / r.width, y: ((clientY - r.top) * canvas.height) / r.height };
    };
    const commit = () => {
      hidden.value = inked ? canvas.toDataURL("image/png") : "";
      // A script's change fires no event: announce it, so checks re-run (recheckOnInput).
      hidden.dispatchEvent(new Event("change", { bubbles: true }));
      onChange();
    };
    const start = (x, y) => {
      drawing = true;
      if (typed.value) { typed.value = ""; reset(); }
      last = point(x, y);
      ctx.beginPath();
      ctx.arc(last.x, last.y, 1.5, 0, Math.PI * 2);
      ctx.fillStyle = "#0b2530";
      ctx.fill();
      inked = true;
    };
    const move = (x, y) => {
      if (!drawing) return;
      const p = point(x, y);
      ctx.beginPath();
      ctx.moveTo(last.x, last.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
      last = p;
    };
    const end = () => { if (drawing) { drawing = false; commit(); } };
    if (window.PointerEvent) {
      canvas.addEventListener("pointerdown", (e) => { e.preventDefault(); canvas.setPointerCapture(e.pointerId); start(e.clientX, e.clientY); });
      canvas.addEventListener("pointermove", (e) => { if (drawing) { e.preventDefault(); move(e.clientX, e.clientY); } });
      canvas.addEventListener("pointerup", end);
      canvas.addEventListener("pointercancel", end);
    } else {
      canvas.addEventListener("mousedown", (e) => start(e.clientX, e.clientY));
      canvas.addEventListener("mousemove", (e) => move(e.clientX, e.clientY));
      window.addEventListener("mouseup", end);
      canvas.addEventListener("touchstart", (e) => { e.preventDefault(); const t = e.touches[0]; start(t.clientX, t.clientY); }, { passive: false });
      canvas.addEventListener("touchmove", (e) => { e.preventDefault(); const t = e.touches[0]; move(t.clientX, t.clientY); }, { passive: false });
      canvas.addEventListener("touchend", end);
    }
    pad.querySelector(".sigpad-clear").addEventListener("click", () => {
      reset(); inked = false; typed.value = ""; commit();
    });
    // Keyboard and assistive-technology users sign by typing their name: it is drawn into
    // the same canvas, so the answer is still the PNG data URL the contract asks for.
    typed.addEventListener("input", () => {
      reset();
      const name = typed.value.trim();
      if (name) {
        ctx.fillStyle = "#0b2530";
        let size = 56;
        ctx.font = `italic ${size}px "Brush Script MT", "Segoe Script", cursive, serif`;
        while (ctx.measureText(name).width > canvas.width - 40 && size > 16) {
          size -= 4;
          ctx.font = `italic ${size}px "Brush Script MT", "Segoe Script", cursive, serif`;
        }
        ctx.textBaseline = "middle";
        ctx.fillText(name, 20, canvas.height / 2);
        inked = true;
      } else {
        inked = false;
      }
      commit();
    });
  }
}
