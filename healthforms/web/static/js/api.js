// The one API helper every page uses: same-origin JSON, the CSRF token fetched once per
// page load and reused, one refetch-and-retry on 403 csrf_invalid, 401 -> sign-in page,
// and failures always shown to the person (never silently lost).

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const meta = () => document.querySelector('meta[name="csrf-token"]');

export class ApiError extends Error {
  constructor(status, body, headers) {
    super((body && body.error) || `Request failed (${status})`);
    this.status = status;
    this.code = (body && body.code) || "http_error";
    this.body = body || {};
    this.retryAfter = headers ? Number(headers.get("retry-after")) || null : null;
  }
}

let pending = null;

/** The cached token (kept in <meta name="csrf-token">), or "" when none was fetched yet. */
export function cachedToken() {
  const m = meta();
  return m ? m.getAttribute("content") || "" : "";
}

function storeToken(token) {
  const m = meta();
  if (m) m.setAttribute("content", token || "");
}

/** Fetch the CSRF token for this session (once per page load unless `force`). */
export async function csrfToken(force = false) {
  if (!force && cachedToken()) return cachedToken();
  if (!pending) {
    pending = (async () => {
      const resp = await fetch("/api/auth/csrf-token", {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (resp.status === 401) { goToLogin(); throw new ApiError(401, { code: "unauthenticated" }); }
      if (!resp.ok) throw new ApiError(resp.status, await readJson(resp));
      const body = await resp.json();
      storeToken(body.csrfToken);
      return body.csrfToken;
    })().finally(() => { pending = null; });
  }
  return pending;
}

async function readJson(resp) {
  const type = resp.headers.get("content-type") || "";
  if (!type.includes("application/json")) return null;
  try { return await resp.json(); } catch { return null; }
}

export function goToLogin() {
  const here = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(here));
}

let idleTimer = null;
/** Idle log-off: once the session's idle timeout has passed without a request, check it. */
function armIdleTimer() {
  const seconds = Number(document.body && document.body.dataset.idleTimeout);
  if (!seconds) return;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(async () => {
    try {
      const resp = await fetch("/api/auth/me", { credentials: "same-origin" });
      if (resp.status === 401) goToLogin(); else armIdleTimer();
    } catch { armIdleTimer(); }
  }, (seconds + 2) * 1000);
}

/**
 * Call the JSON API. Returns {status, data, headers}; throws ApiError for error statuses
 * other than those listed in `expect`. Options: method, body, keepalive, expect, raw,
 * csrf (default true for unsafe methods), auth401 (default: redirect to sign-in).
 */
export async function api(path, opts = {}) {
  const method = (opts.method || "GET").toUpperCase();
  const expect = opts.expect || [];
  const unsafe = UNSAFE.has(method);
  const wantsCsrf = unsafe && opts.csrf !== false;
  const send = async (token) => {
    const headers = { Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (wantsCsrf) headers["X-CSRF-Token"] = token;
    if (opts.language) headers["Accept-Language"] = opts.language; // the page's, for its messages
    return fetch(path, {
      method,
      headers,
      credentials: opts.credentials || "same-origin",
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      keepalive: Boolean(opts.keepalive),
    });
  };
  let resp;
  try {
    resp = await send(wantsCsrf ? await csrfToken() : "");
    if (resp.status === 403 && wantsCsrf) {
      const body = await readJson(resp.clone());
      if (body && body.code === "csrf_invalid") {
        // The token expired or was lost (another tab signed out, Redis restarted):
        // fetch a fresh one and retry exactly once.
        resp = await send(await csrfToken(true));
      }
    }
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError(0, { error: "Could not reach the server. Check your connection and try again.", code: "network" });
  }
  if (document.body && document.body.dataset.staff) armIdleTimer();
  if (resp.status === 401 && opts.auth401 !== false && !expect.includes(401)) {
    goToLogin();
    throw new ApiError(401, await readJson(resp));
  }
  if (opts.raw) return resp;
  const data = resp.status === 204 ? null : await readJson(resp);
  if (!resp.ok && !expect.includes(resp.status)) throw new ApiError(resp.status, data, resp.headers);
  return { status: resp.status, data, headers: resp.headers };
}

/** A sentence for a person, from any failure. */
export function describe(err) {
  if (err instanceof ApiError) {
    if (err.code === "csrf_invalid") return "Your security token could not be renewed. Nothing was saved; please try again.";
    if (err.code === "rate_limited") {
      return err.retryAfter
        ? `Too many requests. Please wait ${err.retryAfter} second${err.retryAfter === 1 ? "" : "s"} and try again.`
        : "Too many requests. Please wait a little and try again.";
    }
    if (err.status >= 500) return "The server could not complete that. Please try again.";
    return err.message;
  }
  return "Something went wrong. Please try again.";
}

function notice(id, message) {
  const el = document.getElementById(id);
  if (!el) { if (id === "notice-error") console.warn(message); return; }
  el.textContent = message;
  el.hidden = !message;
}

/** Show an error to the person (role=alert region of the layout). */
export function showError(errOrMessage) {
  notice("notice-info", "");
  notice("notice-error", typeof errOrMessage === "string" ? errOrMessage : describe(errOrMessage));
}

let infoTimer = null;
export function showInfo(message) {
  notice("notice-error", "");
  notice("notice-info", message);
  clearTimeout(infoTimer);
  infoTimer = setTimeout(() => notice("notice-info", ""), 5000);
}

export function clearNotices() { notice("notice-error", ""); notice("notice-info", ""); }

/** Element helper: el("td", {class: "x", text: "y"}, child...). Text only, never HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Wire the layout: sign-out control, local times, idle timer. Every staff page calls it. */
export function initStaffPage() {
  for (const button of document.querySelectorAll('[data-action="sign-out"]')) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("/api/auth/logout", { method: "POST", expect: [401] });
        location.assign("/login");
      } catch (err) {
        button.disabled = false;
        showError(err);
      }
    });
  }
  for (const t of document.querySelectorAll("time[data-local-time]")) {
    t.textContent = formatTime(t.getAttribute("datetime"));
  }
  armIdleTimer();
}
