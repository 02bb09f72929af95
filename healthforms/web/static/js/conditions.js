// When a field, block or page is shown: the browser's twin of forms/conditions.py.
// Pure (no DOM): the patient page and the builder's preview both evaluate showWhen here,
// and tests/forms/test_conditions.py runs one table of cases through this module and the
// Python one, so what a patient sees is what the server stores. Declarative only:
// nothing in a form is ever run as code.

/** True when the answer counts as missing (hidden fields are never passed in). */
export function blank(value) {
  if (typeof value === "string") return value.trim() === "";
  return value === undefined || value === null || (Array.isArray(value) && value.length === 0);
}

function same(answer, expected) {
  if (typeof answer === "boolean" || typeof expected === "boolean") return answer === expected;
  if (typeof answer === "number" && typeof expected === "number") return answer === expected;
  return typeof answer === typeof expected && answer === expected;
}

/** The one test a condition makes: "equals", "notEquals", "contains", or null. */
export function operatorOf(cond) {
  const given = ["equals", "notEquals", "contains"].filter((op) => cond[op] !== undefined && cond[op] !== null);
  return given.length === 1 ? given[0] : null;
}

/** One condition against the answers of the fields shown so far ({id: value}). */
export function conditionHolds(cond, answers) {
  let answer = Object.prototype.hasOwnProperty.call(answers, cond.field) ? answers[cond.field] : undefined;
  if (blank(answer)) answer = undefined;
  const op = operatorOf(cond);
  if (op === "equals") {
    if (Array.isArray(answer)) return answer.some((item) => same(item, cond.equals));
    return answer !== undefined && same(answer, cond.equals);
  }
  if (op === "notEquals") {
    if (Array.isArray(answer)) return !answer.some((item) => same(item, cond.notEquals));
    return answer === undefined || !same(answer, cond.notEquals);
  }
  if (op === "contains") {
    if (Array.isArray(answer)) return answer.includes(cond.contains);
    if (typeof answer === "string" && typeof cond.contains === "string") {
      return answer.toLowerCase().includes(cond.contains.toLowerCase());
    }
  }
  return false;
}

/** The conditions of a showWhen (the single form as a list of one) and how they join. */
export function partsOf(showWhen) {
  if (Array.isArray(showWhen.all)) return { mode: "all", conditions: showWhen.all };
  if (Array.isArray(showWhen.any)) return { mode: "any", conditions: showWhen.any };
  return { mode: "one", conditions: [showWhen] };
}

/** A whole showWhen: one condition, all of several, or any of several. */
export function showWhenHolds(showWhen, answers) {
  const { mode, conditions } = partsOf(showWhen);
  return mode === "any"
    ? conditions.some((c) => conditionHolds(c, answers))
    : conditions.every((c) => conditionHolds(c, answers));
}

/**
 * What is shown, in form order: `items` are {id, type, showWhen?, value?} (value: the
 * answer, for questions). A page break's condition shows or hides everything up to the
 * next one; a hidden question counts as unanswered for the conditions after it.
 * Returns the set of shown ids.
 */
export function visibleIds(items) {
  const seen = {};
  const shown = new Set();
  let pageShown = true;
  for (const item of items) {
    if (item.type === "pageBreak") {
      pageShown = !item.showWhen || showWhenHolds(item.showWhen, seen);
      if (pageShown) shown.add(item.id);
      continue;
    }
    if (!pageShown) continue;
    if (item.showWhen && !showWhenHolds(item.showWhen, seen)) continue;
    shown.add(item.id);
    if (!LAYOUT.has(item.type) && !blank(item.value)) seen[item.id] = item.value;
  }
  return shown;
}

export const LAYOUT = new Set(["heading", "paragraph", "pageBreak"]);
