// The form builder: edit fields of every type, live preview, save with revision,
// publish/unpublish, the public link, and the edit lock (acquired on open, renewed while
// open, released on close with a keepalive DELETE carrying the CSRF header).
import {
  api, cachedToken, clearNotices, el, initStaffPage, showError, showInfo,
} from "./api.js";
import { partsOf } from "./conditions.js";
import { applyShowWhen, initSignaturePads, renderField } from "./fields.js";
import { adoptTranslations, initTranslations, translationsBody } from "./builder_translations.js";

initStaffPage();
initTranslations({ fields: () => fields, onChange: () => markDirty() });

const formId = document.body.dataset.formId;
const meId = document.body.dataset.meId;
const canEdit = document.body.dataset.canEdit === "1";
const RENEW_MS = 40_000;
const RETRY_LOCK_MS = 20_000;

const TYPES = {
  text: "Short text", textarea: "Long text", email: "Email", phone: "Phone", number: "Number",
  date: "Date", select: "Dropdown", radio: "Single choice", checkbox: "Checkbox / multiple choice",
  signature: "Signature", heading: "Heading", paragraph: "Paragraph (text to read)", pageBreak: "Page break",
  file: "File upload (photo or PDF)",
  score: "Score (calculated)",
};
const HAS_OPTIONS = new Set(["select", "radio", "checkbox"]);
// Blocks take no answer: no key in exports, no required, no help, no condition target.
const LAYOUT = new Set(["heading", "paragraph", "pageBreak"]);
const LABEL_NAME = { heading: "Heading text", paragraph: "Text", pageBreak: "Page title" };
// Forms longer than this open with their cards collapsed to one line each.
const COLLAPSE_FROM = 8;
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
const thankYouInput = $("form-thank-you");
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
// Someone else held the lock while this page was open: their saves may be newer.
let lockedOut = false;

function cardKey(f) {
  if (!f._uid) Object.defineProperty(f, "_uid", { value: `c${(uid += 1)}`, enumerable: false });
  return f._uid;
}

/** A short key from a label: its first words, at most 24 characters, cut at a word. */
function slug(label) {
  const words = label.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
    .split(/[^a-z0-9]+/).filter(Boolean);
  let s = "";
  for (const word of words) {
    const next = s ? `${s}_${word}` : word;
    if (next.length > 24) { if (!s) s = word.slice(0, 24); break; }
    s = next;
  }
  return /^[a-z]/.test(s) ? s : `f_${s}`.replace(/_+$/, "");
}

function uniqueId(base, self) {
  let id = base || "field";
  let n = 2;
  while (fields.some((f) => f !== self && f.id === id)) { id = `${base}_${n}`; n += 1; }
  return id;
}

function cleanField(f) {
  if (LAYOUT.has(f.type)) {
    const block = { id: f.id, type: f.type, label: f.label };
    if (f.showWhen) block.showWhen = f.showWhen;
    return block;
  }
  const out = { id: f.id, type: f.type, label: f.label, required: Boolean(f.required) };
  if (HAS_OPTIONS.has(f.type) && Array.isArray(f.options) && (f.type !== "checkbox" || f.options.length)) {
    out.options = f.options;
  }
  if (f.type === "number") {
    if (f.min !== undefined && f.min !== null && f.min !== "") out.min = Number(f.min);
    if (f.max !== undefined && f.max !== null && f.max !== "") out.max = Number(f.max);
  }
  if (f.pattern && ["text", "phone"].includes(f.type)) out.pattern = f.pattern;
  if (f.type === "file") {
    if (Array.isArray(f.accept) && f.accept.length === 1) out.accept = f.accept;
    if (f.maxFiles) out.maxFiles = f.maxFiles;
    if (f.maxSizeMb) out.maxSizeMb = f.maxSizeMb;
  }
  if (f.helpText) out.helpText = f.helpText;
  if (f.identifies && IDENTIFIES[f.type] === f.identifies) out.identifies = f.identifies;
  if (f.showWhen) out.showWhen = f.showWhen;
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

// Conditions ("Show only when"): chosen from the earlier questions and, for choices,
// from their options; saved as API.md's single condition or as {all|any: [...]}.
const OPERATORS = {
  choice: [["equals", "is"], ["notEquals", "is not"]],
  multi: [["contains", "includes"], ["notEquals", "does not include"]],
  consent: [["equals", "is"]],
  text: [["equals", "is"], ["notEquals", "is not"], ["contains", "contains"]],
  exact: [["equals", "is"], ["notEquals", "is not"]],
};

function targetKind(t) {
  if (!t) return null;
  if (t.type === "select" || t.type === "radio") return "choice";
  if (t.type === "checkbox") return t.options && t.options.length ? "multi" : "consent";
  if (["text", "textarea", "email", "phone"].includes(t.type)) return "text";
  if (t.type === "number" || t.type === "date") return "exact";
  return null;  // signatures and blocks cannot be tested
}

const canBeTested = (t) => targetKind(t) !== null;

function conditionList(f) {
  return f.showWhen ? partsOf(f.showWhen).conditions.map((c) => ({ ...c })) : [];
}

function opOf(c) {
  return ["equals", "notEquals", "contains"].find((op) => c[op] !== undefined) || "equals";
}

/** Store the editor's conditions on the field: none, one, or all/any of several. */
function setConditions(f, mode, conditions) {
  const complete = conditions.filter((c) => c.field);
  if (!complete.length || mode === "always") delete f.showWhen;
  else if (complete.length === 1 && mode === "all") f.showWhen = complete[0];
  else f.showWhen = { [mode]: complete };
}

function typedValue(target, raw) {
  if (!target) return raw;
  if (target.type === "number") return raw.trim() !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  if (targetKind(target) === "consent") return raw === "true";
  return raw;
}

/** Problems the server would refuse: a condition without a value, or one that never holds. */
function conditionProblems(f) {
  if (!f.showWhen) return [];
  const { mode, conditions } = partsOf(f.showWhen);
  const problems = [];
  const wanted = new Map();
  for (const c of conditions) {
    const value = c[opOf(c)];
    if (value === "" || value === undefined || (typeof value === "number" && !Number.isFinite(value))) {
      problems.push("Choose or type the value the condition looks for.");
    }
    if (opOf(c) === "equals") {
      const target = fields.find((o) => o.id === c.field);
      if (mode !== "any" && targetKind(target) !== "multi" && wanted.has(c.field) && wanted.get(c.field) !== value) {
        problems.push("These conditions can never all hold: one answer cannot have two values.");
      }
      wanted.set(c.field, value);
    }
  }
  return [...new Set(problems)];
}

function conditionEditor(f, index, id) {
  const earlier = fields.slice(0, index).filter(canBeTested);
  if (!earlier.length) return null;
  let conditions = conditionList(f);
  const { mode: savedMode } = f.showWhen ? partsOf(f.showWhen) : { mode: "always" };
  const mode = el("select", { id: id("sw-mode"), "aria-describedby": `${id("sw-mode")}-error` },
    [["always", "Always"], ["all", "When all of these hold"], ["any", "When any of these holds"]].map(([value, text]) =>
      el("option", { value, text, selected: (savedMode === "one" ? "all" : savedMode) === value })));
  const rows = el("ol", { class: "conditions" });
  const add = el("button", { type: "button", class: "btn btn-quiet btn-small", id: id("sw-add"), text: "Add condition" });
  const sync = () => { setConditions(f, mode.value, conditions); markDirty(); };

  const valueControl = (c, n, target) => {
    const vid = id(`sw-value-${n}`);
    const op = opOf(c);
    const current = c[op];
    const kind = targetKind(target);
    let control;
    if (kind === "choice" || kind === "multi") {
      control = el("select", { id: vid }, el("option", { value: "", text: "Choose an option…" }),
        (target.options || []).map((o) => el("option", { value: o, text: o, selected: current === o })));
    } else if (kind === "consent") {
      control = el("select", { id: vid },
        el("option", { value: "true", text: "Ticked", selected: current !== false }),
        el("option", { value: "false", text: "Not ticked", selected: current === false }));
    } else {
      const type = target.type === "number" ? "number" : target.type === "date" ? "date" : "text";
      control = el("input", { type, id: vid, value: current ?? "", step: type === "number" ? "any" : null });
    }
    const update = () => { c[opOf(c)] = typedValue(target, control.value); sync(); };
    control.addEventListener(control.tagName === "SELECT" ? "change" : "input", update);
    if (kind === "consent" && current === undefined) c[op] = true;
    return labeled(vid, "Value", control);
  };

  const renderRows = (fromUser = true) => {
    rows.replaceChildren(...conditions.map((c, n) => {
      const target = earlier.find((o) => o.id === c.field) || null;
      const which = el("select", { id: id(`sw-field-${n}`) },
        el("option", { value: "", text: "Choose a question…" }),
        earlier.map((o) => el("option", { value: o.id, text: o.label || o.id, selected: c.field === o.id })));
      which.addEventListener("change", () => {
        const next = earlier.find((o) => o.id === which.value);
        conditions[n] = { field: which.value, [OPERATORS[targetKind(next) || "exact"][0][0]]: "" };
        if (targetKind(next) === "consent") conditions[n].equals = true;
        renderRows();
        sync();
        document.getElementById(id(`sw-field-${n}`)).focus();
      });
      const ops = OPERATORS[targetKind(target) || "exact"];
      const op = el("select", { id: id(`sw-op-${n}`), disabled: !target },
        ops.map(([value, text]) => el("option", { value, text, selected: opOf(c) === value })));
      op.addEventListener("change", () => {
        const value = c[opOf(c)];
        for (const key of ["equals", "notEquals", "contains"]) delete c[key];
        c[op.value] = value ?? "";
        sync();
      });
      const remove = el("button", { type: "button", class: "btn btn-quiet btn-small", id: id(`sw-remove-${n}`),
        text: "Remove condition", "aria-label": `Remove condition ${n + 1}` });
      remove.addEventListener("click", () => {
        conditions.splice(n, 1);
        if (!conditions.length) mode.value = "always";
        renderRows();
        sync();
        (document.getElementById(id("sw-add")) || mode).focus();
      });
      return el("li", { class: "show-when" },
        labeled(id(`sw-field-${n}`), "Answer to", which),
        labeled(id(`sw-op-${n}`), "Condition", op),
        target ? valueControl(c, n, target) : el("div"),
        el("div", { class: "condition-remove" }, remove));
    }));
    rows.hidden = mode.value === "always";
    add.hidden = mode.value === "always" || conditions.length >= 10;
    if (fromUser) applyEditable();
  };
  mode.addEventListener("change", () => {
    if (mode.value !== "always" && !conditions.length) conditions = [{ field: "" }];
    renderRows();
    sync();
  });
  add.addEventListener("click", () => {
    conditions.push({ field: "" });
    renderRows();
    document.getElementById(id(`sw-field-${conditions.length - 1}`)).focus();
  });
  renderRows(false);
  return el("fieldset", { class: "span2 conditions-box" },
    el("legend", { text: LAYOUT.has(f.type) ? (f.type === "pageBreak" ? "Show this page" : "Show this block") : "Show this question" }),
    labeled(id("sw-mode"), "Show", mode), rows, add);
}

// Which cards are collapsed to one line (by card key; survives re-renders).
const collapsed = new Set();
let dragFrom = null;

function summary(f) {
  const parts = [TYPES[f.type]];
  if (f.required) parts.push("required");
  if (f.showWhen) parts.push("conditional");
  return ` · ${parts.join(" · ")}`;
}

function fieldCard(f, index) {
  const key = cardKey(f);
  const id = (name) => `${key}-${name}`;
  const layout = LAYOUT.has(f.type);
  const title = () => (f.label ? f.label.split("\n")[0].slice(0, 120) : `Untitled ${TYPES[f.type].toLowerCase()}`);
  const isCollapsed = collapsed.has(key);
  const toggle = el("button", { type: "button", class: "btn btn-quiet btn-small card-toggle", id: id("toggle"),
    "aria-expanded": String(!isCollapsed), "aria-controls": id("body"),
    "aria-label": `${isCollapsed ? "Expand" : "Collapse"} ${title()}`, text: isCollapsed ? "▸" : "▾" });
  const heading = el("h3", { id: id("heading") }, toggle, `${index + 1}. `, el("span", { class: "card-title", text: title() }),
    el("span", { class: "muted small card-summary", text: summary(f) }));
  toggle.addEventListener("click", () => {
    if (collapsed.has(key)) collapsed.delete(key); else collapsed.add(key);
    renderEditor();
    document.getElementById(id("toggle")).focus();
  });

  const move = (delta) => {
    const to = index + delta;
    if (to < 0 || to >= fields.length) return;
    fields.splice(index, 1);
    fields.splice(to, 0, f);
    renderEditor();
    markDirty();
    const again = document.getElementById(`${key}-${delta < 0 ? "up" : "down"}`);
    (again && !again.disabled ? again : document.getElementById(`${key}-toggle`)).focus();
  };
  const actions = el("div", { class: "toolbar" },
    el("button", { type: "button", class: "btn btn-quiet btn-small", id: id("up"), disabled: index === 0,
      "aria-label": `Move ${title()} up`, text: "↑ Up", onclick: () => move(-1) }),
    el("button", { type: "button", class: "btn btn-quiet btn-small", id: id("down"), disabled: index === fields.length - 1,
      "aria-label": `Move ${title()} down`, text: "↓ Down", onclick: () => move(1) }),
    el("button", { type: "button", class: "btn btn-danger btn-small", id: id("remove"),
      "aria-label": `Remove ${title()}`, text: "Remove", onclick: () => {
        fields.splice(index, 1);
        // Conditions on the removed field go with it.
        for (const other of fields) {
          if (!other.showWhen) continue;
          const { mode, conditions } = partsOf(other.showWhen);
          setConditions(other, mode === "one" ? "all" : mode, conditions.filter((c) => c.field !== f.id));
        }
        renderEditor();
        markDirty();
        const next = list.querySelectorAll(".field-card")[Math.min(index, fields.length - 1)];
        (next ? next.querySelector("button") : $("new-field-type")).focus();
      } }));

  const labelName = LABEL_NAME[f.type] || "Question";
  const label = f.type === "paragraph"
    ? el("textarea", { id: id("label"), rows: 5, maxlength: 5000, required: true, "aria-describedby": id("label-error") })
    : el("input", { type: "text", id: id("label"), value: f.label, maxlength: 500, required: true, "aria-describedby": id("label-error") });
  if (f.type === "paragraph") label.value = f.label || "";
  label.addEventListener("input", () => {
    f.label = label.value;
    if (f._auto) { f.id = uniqueId(slug(f.label) || f.type, f); keyInput.value = f.id; }
    heading.querySelector(".card-title").textContent = title();
    for (const [name, verb] of [["up", "Move %s up"], ["down", "Move %s down"], ["remove", "Remove %s"], ["toggle", isCollapsed ? "Expand %s" : "Collapse %s"]]) {
      const button = document.getElementById(`${key}-${name}`);
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
  const keyInput = el("input", { type: "text", id: id("key"), value: f.id, class: "mono", spellcheck: "false", maxlength: 64, "aria-describedby": `${id("key")}-help ${id("key")}-error` });
  keyInput.addEventListener("input", () => { f.id = keyInput.value.trim(); f._auto = false; markDirty(); });

  const grid = el("div", { class: "field-card-grid", id: id("body"), hidden: isCollapsed },
    labeled(id("label"), labelName, label, { class: "span2" }),
    labeled(id("type"), "Type", typeSelect),
    labeled(id("key"), "Field key", keyInput, { help: "Short and stable: the id in exports and conditions; letters, digits, _ or -." }));
  if (!layout) {
    const required = el("input", { type: "checkbox", id: id("required"), checked: Boolean(f.required) });
    required.addEventListener("change", () => { f.required = required.checked; heading.querySelector(".card-summary").textContent = summary(f); markDirty(); });
    const help = el("input", { type: "text", id: id("help"), value: f.helpText || "", maxlength: 1000 });
    help.addEventListener("input", () => { f.helpText = help.value; markDirty(); });
    grid.append(labeled(id("help"), "Help text", help, { class: "span2" }),
      // A score is calculated, never answered: it cannot be required.
      f.type === "score" ? null : el("div", { class: "choice span2" }, required, el("label", { for: id("required"), text: "Required" })));
  }

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
  if (f.type === "file") {
    // What a file field takes (docs/uploads.md); the server checks the same ranges.
    const accept = el("select", { id: id("accept") },
      [["", "Photos or PDF documents"], ["image", "Photos only"], ["pdf", "PDF documents only"]].map(([value, text]) =>
        el("option", { value, text, selected: (Array.isArray(f.accept) && f.accept.length === 1 ? f.accept[0] : "") === value })));
    accept.addEventListener("change", () => { if (accept.value) f.accept = [accept.value]; else delete f.accept; markDirty(); });
    grid.append(labeled(id("accept"), "Accepts", accept));
    for (const [key, text, most] of [["maxFiles", "Most files", 10], ["maxSizeMb", "Largest file (MB)", 20]]) {
      const input = el("input", { type: "number", id: id(key), min: 1, max: most, step: 1,
        value: f[key] ?? (key === "maxFiles" ? 1 : 10) });
      input.addEventListener("input", () => { f[key] = input.value === "" ? undefined : Number(input.value); markDirty(); });
      grid.append(labeled(id(key), `${text}, 1 to ${most}`, input));
    }
  }
  // showWhen: only on questions that come earlier, so conditions never loop.
  const conditionBox = f.type === "score" ? null : conditionEditor(f, index, id);  // always calculated
  if (conditionBox) grid.append(conditionBox);
  grid.append(el("p", { class: "field-error span2", id: id("card-error"), role: "alert", hidden: true }));

  // Drag by the handle (mouse or touch); Up/Down do the same from the keyboard.
  const handle = el("span", { class: "drag-handle", draggable: "true", title: "Drag to reorder", "aria-hidden": "true", text: "⠿" });
  const card = el("li", { class: `field-card${layout ? " field-card-block" : ""}`, id: `card-${key}`, "data-index": index, "aria-labelledby": id("heading") },
    el("div", { class: "field-card-head" }, handle, heading, actions), grid);
  handle.addEventListener("dragstart", (e) => {
    dragFrom = index;
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", String(index));
    card.classList.add("dragging");
  });
  handle.addEventListener("dragend", () => { dragFrom = null; card.classList.remove("dragging"); });
  card.addEventListener("dragover", (e) => {
    if (dragFrom === null || !editable) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "move";
    card.classList.add("drop-target");
  });
  card.addEventListener("dragleave", () => card.classList.remove("drop-target"));
  card.addEventListener("drop", (e) => {
    e.preventDefault();
    card.classList.remove("drop-target");
    if (dragFrom === null || dragFrom === index) return;
    const [moved] = fields.splice(dragFrom, 1);
    fields.splice(index, 0, moved);
    dragFrom = null;
    renderEditor();
    markDirty();
    showInfo(`Moved ${moved.label || "the field"} to position ${index + 1}.`);
  });
  return card;
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
  // Collapsing is reading, not editing: those buttons always work.
  const controls = [...root.querySelectorAll(".builder-edit input, .builder-edit select, .builder-edit textarea, .builder-edit button")]
    .filter((c) => !c.classList.contains("card-toggle") && !c.classList.contains("collapse-all"));
  for (const c of controls) c.disabled = !editable;
  if (editable) {
    for (const card of list.querySelectorAll(".field-card")) {
      const i = Number(card.dataset.index);
      const up = card.querySelector('[id$="-up"]');
      const down = card.querySelector('[id$="-down"]');
      if (up) up.disabled = i === 0;
      if (down) down.disabled = i === fields.length - 1;
      // A condition's test waits for its question.
      for (const row of card.querySelectorAll(".conditions > li")) {
        const target = row.querySelector('select[id*="-sw-field-"]');
        const op = row.querySelector('select[id*="-sw-op-"]');
        if (op) op.disabled = !(target && target.value);
      }
    }
  }
  for (const handle of root.querySelectorAll(".drag-handle")) handle.setAttribute("draggable", String(editable));
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
  thankYouInput.value = form.thankYouMessage || "";
  retentionInput.value = form.retentionDays == null ? "" : String(form.retentionDays);
  $("heading-title").textContent = form.title;
  $("crumb-title").textContent = form.title;
  fields = (form.fields || []).map((f) => ({ ...f }));
  collapsed.clear();
  if (fields.length >= COLLAPSE_FROM) for (const f of fields) collapsed.add(cardKey(f));
  adoptTranslations(form);
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
    if (!f.label || !f.label.trim()) mark("label", LAYOUT.has(f.type) ? "Write the text." : "Write the question.");
    if (!ID_RE.test(f.id || "")) mark("key", "Use a letter first, then letters, digits, _ or -.");
    else if (seen.has(f.id)) mark("key", "Another field already uses this key.");
    seen.add(f.id);
    if ((f.type === "select" || f.type === "radio") && !(f.options && f.options.length)) mark("options", "Add at least one option.");
    for (const problem of conditionProblems(f)) mark("sw-mode", problem);
    if (f.type === "pageBreak" && (i === fields.length - 1 || fields[i + 1].type === "pageBreak")) {
      mark("label", "A page needs at least one question or block after its page break.");
    }
  });
  // Problems are shown on their cards: open the collapsed ones that have any.
  for (const card of list.querySelectorAll(".field-card")) {
    const body = card.querySelector(".field-card-grid");
    if (body.hidden && card.querySelector('.field-error:not([hidden])')) {
      body.hidden = false;
      const toggle = card.querySelector(".card-toggle");
      toggle.setAttribute("aria-expanded", "true");
      toggle.textContent = "▾";
    }
  }
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

/** The server's 422 per field, next to that field's card (opened if collapsed). */
function showServerProblems(problems) {
  for (const f of fields) {
    const message = problems[f.id];
    if (!message) continue;
    const key = cardKey(f);
    collapsed.delete(key);
    const box = document.getElementById(`${key}-card-error`);
    if (!box) continue;
    const body = document.getElementById(`${key}-body`);
    if (body) body.hidden = false;
    box.textContent = message.charAt(0).toUpperCase() + message.slice(1);
    box.hidden = false;
  }
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
    body.thankYouMessage = thankYouInput.value.trim() || null;
    if (canSetRetention) body.retentionDays = retentionDays();
    body.translations = translationsBody();
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
      showServerProblems(fieldsErr);
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
  lockedOut = true;
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
      // Only after being locked out: the first lock of a fresh page keeps what it loaded
      // (and what the user may already be typing).
      const wasLockedOut = lockedOut;
      lockedOut = false;
      lockHeld = true;
      editable = true;
      lockBanner.hidden = true;
      clearInterval(renewTimer);
      renewTimer = setInterval(renewLock, RENEW_MS);
      if (wasLockedOut && form) {
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
  const f = LAYOUT.has(type)
    ? { id: uniqueId(type === "pageBreak" ? "page" : type, null), type, label: "", _auto: true }
    : { id: uniqueId(type, null), type, label: "", required: false, _auto: true };
  if (type === "select" || type === "radio") f.options = ["Option 1", "Option 2"];
  fields.push(f);
  renderEditor();
  markDirty();
  document.getElementById(`${cardKey(f)}-label`).focus();
});
// The preview answers like the patient page: its conditions react to what is typed.
preview.addEventListener("input", () => applyShowWhen(preview));
preview.addEventListener("change", () => applyShowWhen(preview));
for (const [button, fold] of [["collapse-all", true], ["expand-all", false]]) {
  $(button).addEventListener("click", () => {
    for (const f of fields) { if (fold) collapsed.add(cardKey(f)); else collapsed.delete(cardKey(f)); }
    renderEditor();
    $(button).focus();
  });
}
titleInput.addEventListener("input", markDirty);
descInput.addEventListener("input", markDirty);
thankYouInput.addEventListener("input", markDirty);
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
