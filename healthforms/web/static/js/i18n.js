// The page's texts in its language. The server hands the scripts' messages of the page's
// language to them as <html data-i18n> (templates/base.html, languages.script_messages);
// an English page carries none: the msgids are the English texts. `_` is the gettext
// marker `pybabel extract` reads (babel.cfg), so every text here is in the catalogue.
const catalogue = (() => {
  try { return JSON.parse(document.documentElement.dataset.i18n || "{}"); } catch { return {}; }
})();

/** The page's language (its <html lang>), sent to the API so its messages match. */
export const lang = document.documentElement.lang || "en";

/** `msgid` in the page's language, with {name} placeholders filled from `params`. */
export function _(msgid, params = {}) {
  const text = Object.hasOwn(catalogue, msgid) ? catalogue[msgid] : msgid;
  return text.replace(/\{(\w+)\}/g, (whole, key) => (Object.hasOwn(params, key) ? String(params[key]) : whole));
}
