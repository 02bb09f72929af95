// Pages of the patient form (page breaks): one page at a time with a progress bar,
// per-page checks on Next, Back keeping answers, pages skipped while their condition
// does not hold. The phone's Back button walks back through the pages (each Next adds a
// history entry). Without JavaScript every page shows, one after another.
import { applyShowWhen, clientErrors, firstControl, showFieldErrors } from "./fields.js";
import { _ } from "./i18n.js";

/**
 * Paging for `form`, or null when it has a single page. `onErrors(errors)` shows (or,
 * with null, clears) the error summary for the current page.
 */
export function initPages(form, { onErrors }) {
  const pages = [...form.querySelectorAll(".form-page")];
  if (pages.length < 2) return null;
  const $ = (id) => document.getElementById(id);
  const progress = $("form-progress");
  const text = $("progress-text");
  const bar = $("progress-bar");
  const back = $("page-back");
  const next = $("page-next");
  const send = $("submit-btn");
  let current = 0;

  const open = () => pages.filter((page) => !page.hasAttribute("data-skipped"));
  const position = () => open().indexOf(pages[current]);

  function render(focus) {
    applyShowWhen(form);
    let live = open();
    if (!live.includes(pages[current])) {
      // The page's condition stopped holding: the nearest open page before it.
      const before = live.filter((page) => pages.indexOf(page) < current);
      current = pages.indexOf(before.length ? before[before.length - 1] : live[0]);
      live = open();
    }
    pages.forEach((page, index) => { page.hidden = index !== current; });
    const at = position();
    text.textContent = _("Page {page} of {pages}", { page: at + 1, pages: live.length });
    bar.max = live.length;
    bar.value = at + 1;
    back.hidden = at <= 0;
    next.hidden = at >= live.length - 1;
    send.hidden = at < live.length - 1;
    if (focus) {
      const title = pages[current].querySelector(".page-title");
      const target = title || firstControl(pages[current]);
      progress.scrollIntoView({ block: "start" });
      if (target) target.focus({ preventScroll: true });
    }
  }

  function show(index, focus) {
    current = Math.max(0, Math.min(index, pages.length - 1));
    render(focus);
  }

  function checkCurrent() {
    applyShowWhen(form);
    const errors = clientErrors(pages[current]);
    showFieldErrors(pages[current], errors);
    if (Object.keys(errors).length) { onErrors(errors); return false; }
    onErrors(null);
    return true;
  }

  function goNext() {
    if (!checkCurrent()) return;
    const live = open();
    const target = live[position() + 1];
    if (!target) return;
    show(pages.indexOf(target), true);
    history.pushState({ healthformsPage: current }, "", `${location.pathname}${location.search}#page-${current + 1}`);
  }

  function goBack() {
    if (history.state && Number.isInteger(history.state.healthformsPage)) { history.back(); return; }
    const live = open();
    const target = live[position() - 1];
    if (target) show(pages.indexOf(target), true);
  }

  next.addEventListener("click", goNext);
  back.addEventListener("click", goBack);
  form.addEventListener("change", () => render(false));
  form.addEventListener("input", () => render(false));
  progress.hidden = false;
  form.classList.add("paged");
  // A reload starts again on the first page (the form's state is not kept).
  if (location.hash.startsWith("#page-")) history.replaceState(null, "", `${location.pathname}${location.search}`);
  show(0, false);

  return {
    /** Enter in a field on an earlier page means Next, not Send. */
    onLastPage: () => position() === open().length - 1,
    next: goNext,
    /** Show the page holding field `id` (e.g. the first error the server named). */
    showField(id) {
      const wrap = form.querySelector(`[data-field-id="${CSS.escape(id)}"]`);
      const page = wrap && wrap.closest(".form-page");
      if (page) show(pages.indexOf(page), false);
    },
    /** The browser went back or forward through our page entries. */
    fromHistory(state) {
      show(state && Number.isInteger(state.healthformsPage) ? state.healthformsPage : 0, true);
    },
    reset: () => show(0, false),
  };
}
