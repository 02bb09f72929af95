() => {
  const problems = [];
  if (!document.documentElement.getAttribute('lang')) problems.push('html has no lang');
  if (!document.title.trim()) problems.push('page has no title');
  if (!document.querySelector('meta[name="viewport"]')) problems.push('no viewport meta');
  for (const c of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const labelled = (c.labels && c.labels.length > 0) || c.getAttribute('aria-label')
      || c.getAttribute('aria-labelledby');
    if (!labelled) problems.push('unlabelled control ' + (c.id || c.name || c.outerHTML.slice(0, 80)));
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push('img without alt ' + img.getAttribute('src'));
  }
  for (const s of document.querySelectorAll('script')) {
    if (!s.src) problems.push('inline script');
    else if (new URL(s.src).origin !== location.origin) problems.push('third-party script ' + s.src);
  }
  for (const l of document.querySelectorAll('link[rel=stylesheet]')) {
    if (new URL(l.href).origin !== location.origin) problems.push('third-party style ' + l.href);
  }
  if (document.querySelector('style')) problems.push('inline <style>');
  for (const e of document.querySelectorAll('[style]')) if (e.getAttribute('style').trim()) problems.push('style attribute on ' + e.outerHTML.slice(0, 120));
  for (const id of [...document.querySelectorAll('[id]')].map((e) => e.id)) {
    if (document.querySelectorAll('[id="' + CSS.escape(id) + '"]').length > 1) problems.push('duplicate id ' + id);
  }
  const overflow = document.documentElement.scrollWidth - document.documentElement.clientWidth;
  if (overflow > 0) problems.push('sideways scroll of ' + overflow + 'px');
  return [...new Set(problems)];
}
