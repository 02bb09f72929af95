// Prefilled answers of a patient's request (/r/<token>): put into the fields before the
// patient starts, who may change them. Only empty fields are filled, so nothing the
// patient already typed (or the browser restored) is overwritten. Signatures are never
// prefilled: a patient signs for themselves.
import { fieldValue } from "./fields.js";

function isEmpty(value) {
  return value === undefined || value === false || (Array.isArray(value) && value.length === 0);
}

function setValue(wrap, value) {
  const type = wrap.dataset.type;
  if (type === "signature" || type === "file") return;  // files: uploads.js lists them
  if (type === "radio") {
    for (const input of wrap.querySelectorAll('input[type="radio"]')) input.checked = input.value === String(value);
    return;
  }
  if (type === "checkbox") {
    const boxes = [...wrap.querySelectorAll('input[type="checkbox"]')];
    if (wrap.querySelector(".consent")) { boxes[0].checked = value === true; return; }
    const chosen = new Set(Array.isArray(value) ? value.map(String) : []);
    for (const box of boxes) box.checked = chosen.has(box.value);
    return;
  }
  const control = wrap.querySelector("input, textarea, select");
  if (control) control.value = String(value);
}

/** Fill the empty fields of `root` from `prefill` ({fieldId: answer}); returns how many. */
export function applyPrefill(root, prefill) {
  let filled = 0;
  for (const wrap of root.querySelectorAll(".q[data-field-id]")) {
    const id = wrap.dataset.fieldId;
    if (!Object.prototype.hasOwnProperty.call(prefill, id)) continue;
    if (!isEmpty(fieldValue(wrap))) continue;
    setValue(wrap, prefill[id]);
    filled += 1;
  }
  return filled;
}
