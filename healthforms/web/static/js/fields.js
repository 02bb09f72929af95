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

const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** Client-side hints only (the server's 422 is the truth): {fieldId: message}. */
export function clientErrors(root) {
  const errors = {};
  for (const wrap of root.querySelectorAll(".q[data-field-id]")) {
    if (wrap.hidden) continue;
    const id = wrap.dataset.fieldId;
    const type = wrap.dataset.type;
    const value = fieldValue(wrap);
    const required = Boolean(wrap.dataset.required);
    const empty = value === undefined || value === false || (Array.isArray(value) && value.length === 0);
    if (required && empty) {
      errors[id] = type === "signature" ? _("Please sign here.") :
        type === "checkbox" && wrap.querySelector(".consent") ? _("Please tick this box to continue.") :
        _("This field is required.");
      continue;
    }
    if (empty) continue;
    if (type === "email" && !EMAIL_RE.test(value)) errors[id] = _("Enter an email address like name@example.com.");
    if (type === "number") {
      if (typeof value !== "number") errors[id] = _("Enter a number.");
      else if (hasBound(wrap.dataset.min) && value < Number(wrap.dataset.min)) errors[id] = _("Enter a number of at least {min}.", { min: wrap.dataset.min });
      else if (hasBound(wrap.dataset.max) && value > Number(wrap.dataset.max)) errors[id] = _("Enter a number of at most {max}.", { max: wrap.dataset.max });
    }
  }
  return errors;
}

/** Put each message next to its field (aria-invalid + the described-by error text). */
export function showFieldErrors(root, errors) {
  for (const wrap of root.querySelectorAll(".q[data-field-id]")) {
    const raw = errors[wrap.dataset.fieldId];
    // Server messages may start lower-case ("does not have the expected format").
    const message = raw ? String(raw).charAt(0).toUpperCase() + String(raw).slice(1) : raw;
    const box = wrap.querySelector(".field-error");
    const controls = wrap.querySelectorAll("input:not([type=hidden]), textarea, select, canvas");
    if (box) { box.textContent = message || ""; box.hidden = !message; }
    for (const c of controls) {
      if (message) c.setAttribute("aria-invalid", "true"); else c.removeAttribute("aria-invalid");
    }
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

/** A min or max the page carries: absent or empty means the field has none. */
function hasBound(raw) {
  return raw !== undefined && raw !== null && raw.trim() !== "" && Number.isFinite(Number(raw));
}
