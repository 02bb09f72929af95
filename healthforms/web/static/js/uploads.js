// File fields on the patient page (docs/uploads.md): each chosen file is uploaded at once,
// bound to the page's nonce and the field; the field's answer is the list of upload ids
// (fields.js fieldValue reads them from this list). The file's name stays in this page:
// the server never stores it. Progress and results are announced in the field's status
// line (role=status); refusals appear next to the field in the server's own words.
import { el } from "./api.js";
import { _, lang } from "./i18n.js";

const KINDS = { "image/jpeg": "photo", "image/png": "photo", "image/webp": "photo", "application/pdf": "pdf" };
const kindText = (kind) => (kind === "photo" ? _("photo") : kind === "pdf" ? _("PDF") : _("file"));

function capitalised(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
}

function sizeText(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`;
}

function setError(wrap, message) {
  const box = wrap.querySelector(".field-error");
  const input = wrap.querySelector(".file-input");
  box.textContent = message ? capitalised(message) : "";
  box.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
}

function setStatus(wrap, text) {
  wrap.querySelector(".file-status").textContent = text;
}

/** POST one file (multipart) with upload progress; resolves {status, data}. */
function send(url, nonce, fieldId, file, onProgress) {
  return new Promise((resolve) => {
    const body = new FormData();
    body.append("nonce", nonce);
    body.append("field", fieldId);
    body.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Accept-Language", lang);  // refusals in the page's language
    xhr.withCredentials = false;
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    xhr.addEventListener("load", () => resolve({ status: xhr.status, data: xhr.response }));
    xhr.addEventListener("error", () => resolve({ status: 0, data: null }));
    xhr.send(body);
  });
}

function refusal(status, data, fieldId, maxSizeMb) {
  const fields = (data && data.fields) || {};
  if (status === 422) return fields[fieldId] || fields.field || (data && data.error) || _("This file cannot be used.");
  if (status === 413) return _("is too large (at most {size} MB per file)", { size: maxSizeMb });
  if (status === 429) return _("Too many uploads from this connection. Please wait a minute and try again.");
  if (status === 400 && data && data.code === "nonce_invalid") return _("This page has expired. Reload the page and add the file again.");
  if (status === 0) return _("Could not reach the clinic's server. Check your connection and add the file again.");
  return (data && data.error) || _("The file could not be uploaded. Please try again.");
}

function listItem(wrap, file, stored, onRemove) {
  const kind = KINDS[stored.mediaType] || "file";
  // A file kept by a saved draft has no name here: the server never stores it.
  const name = (file && file.name) || kindText(kind);
  const remove = el("button", { type: "button", class: "btn btn-quiet btn-small file-remove" },
    _("Remove"), el("span", { class: "visually-hidden", text: ` ${name}` }));
  let preview = null;
  if (file && kind === "photo" && window.URL && URL.createObjectURL) {
    preview = el("img", { class: "file-thumb", src: URL.createObjectURL(file), alt: "", width: 48, height: 48 });
  }
  const item = el("li", { class: "file-item", "data-upload-id": stored.id },
    preview, el("span", { class: "file-name", text: _("{name} ({kind}, {size})", { name, kind: kindText(kind), size: sizeText(stored.sizeBytes) }) }), remove);
  remove.addEventListener("click", () => {
    if (preview) URL.revokeObjectURL(preview.src);
    item.remove();
    setStatus(wrap, _("Removed {name}.", { name }));
    wrap.querySelector(".file-input").focus();
    onRemove();
  });
  return item;
}

let changed = () => {};
// Uploads under way: a draft saved meanwhile waits for them, so the file is in it.
const inflight = new Set();

/** Resolves once every upload started so far has finished (or failed). */
export async function uploadsSettled() {
  while (inflight.size) await Promise.allSettled([...inflight]);
}

/**
 * Wire every file field under `root`. `endpoint` is the page's public API base
 * (/api/public/forms/<id> or /api/public/requests/<token>); `nonce()` resolves the page's
 * nonce (the one its submission will use); `onChange()` runs after a file is added or removed.
 */
export function initFileFields(root, { endpoint, nonce, onChange = () => {} }) {
  changed = onChange;
  for (const wrap of root.querySelectorAll('.q[data-type="file"]')) {
    const input = wrap.querySelector(".file-input");
    if (!input || input.dataset.ready) continue;
    input.dataset.ready = "1";
    const list = wrap.querySelector(".file-list");
    const fieldId = wrap.dataset.fieldId;
    const maxFiles = Number(input.dataset.maxFiles) || 1;
    const maxSizeMb = Number(input.dataset.maxSizeMb) || 10;
    input.addEventListener("change", () => {
      const work = addChosen();
      inflight.add(work);
      work.finally(() => inflight.delete(work));
    });
    async function addChosen() {
      const chosen = [...input.files];
      input.value = "";  // the same file can be chosen again after a removal
      if (!chosen.length) return;
      setError(wrap, "");
      const room = maxFiles - list.querySelectorAll(".file-item").length;
      if (chosen.length > room) {
        setError(wrap, maxFiles === 1
          ? _("takes at most 1 file; remove it to add another")
          : _("takes at most {max} files; remove one to add another", { max: maxFiles }));
        return;
      }
      for (const file of chosen) {
        if (file.size > maxSizeMb * 1024 * 1024) {
          setError(wrap, _("is too large (at most {size} MB per file)", { size: maxSizeMb }));
          continue;
        }
        const name = file.name || _("file");
        const pending = el("li", { class: "file-item", "data-uploading": "1" },
          el("span", { class: "file-name", text: name }),
          el("progress", { max: 100, value: 0, "aria-label": _("Uploading {name}", { name }) }));
        list.append(pending);
        setStatus(wrap, _("Uploading {name}…", { name }));
        const bar = pending.querySelector("progress");
        let result;
        try {
          result = await send(`${endpoint}/files`, await nonce(), fieldId, file, (part) => { bar.value = Math.round(part * 100); });
        } catch {
          result = { status: 0, data: null };
        }
        pending.remove();
        if (result.status === 201 && result.data && result.data.id) {
          list.append(listItem(wrap, file, result.data, onChange));
          setStatus(wrap, _("{name} uploaded.", { name }));
          onChange();
        } else {
          setStatus(wrap, _("{name} was not uploaded.", { name }));
          setError(wrap, refusal(result.status, result.data, fieldId, maxSizeMb));
        }
      }
    }
  }
}

/**
 * List the files a resumed draft kept (`files`: {fieldId: [{id, mediaType, sizeBytes}]}),
 * replacing what the fields listed; each can be removed like a file added here.
 */
export function showKeptFiles(root, files) {
  clearFileFields(root);
  for (const wrap of root.querySelectorAll('.q[data-type="file"]')) {
    const kept = (files && files[wrap.dataset.fieldId]) || [];
    const list = wrap.querySelector(".file-list");
    for (const stored of kept) list.append(listItem(wrap, null, stored, changed));
  }
}

/** Forget every file listed (a new response on the same page). */
export function clearFileFields(root) {
  for (const item of root.querySelectorAll(".file-list .file-item")) {
    const thumb = item.querySelector("img");
    if (thumb) URL.revokeObjectURL(thumb.src);
    item.remove();
  }
  for (const status of root.querySelectorAll(".file-status")) status.textContent = "";
}
