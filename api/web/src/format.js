// Formatting values and building DOM nodes (no HTML strings: nothing from the store is ever
// parsed as markup).

/** `el('td', {class: 'num', 'data-col': 'runs'}, '3')`: an element with attributes and children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'onclick') node.addEventListener('click', value);
    else if (name === 'onsubmit') node.addEventListener('submit', value);
    else if (name === 'onchange') node.addEventListener('change', value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Numbers with thousands separators (fractions as the server sent them, up to 6 digits). */
export function number(value) {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'number') return value.toLocaleString('en-US', { maximumFractionDigits: 6 });
  return String(value);
}

/** `plural(1, 'span')` is "1 span", `plural(3, 'span')` "3 spans". */
export function plural(count, noun) {
  return number(count) + ' ' + noun + (count === 1 ? '' : 's');
}

/** Nanoseconds as a short duration: 850 µs, 12.3 ms, 4.56 s, 2m 03s. */
export function duration(nanos) {
  if (nanos === null || nanos === undefined) return '–';
  const abs = Math.abs(nanos);
  if (abs < 1e6) return (nanos / 1e3).toFixed(0) + ' µs';
  if (abs < 1e9) return (nanos / 1e6).toFixed(1) + ' ms';
  if (abs < 60e9) return (nanos / 1e9).toFixed(2) + ' s';
  const seconds = Math.round(nanos / 1e9);
  return Math.floor(seconds / 60) + 'm ' + String(seconds % 60).padStart(2, '0') + 's';
}

/** An RFC 3339 time from the store as `2026-11-01 12:34:56 UTC`. */
export function time(text) {
  if (!text) return '–';
  return text.slice(0, 10) + ' ' + text.slice(11, 19) + ' UTC';
}

/**
 * An RFC 3339 time with up to nine fractional digits as `[epoch seconds, nanoseconds]`, exact
 * (a double cannot hold nanoseconds since the epoch).
 */
export function instant(text) {
  const seconds = Date.parse(text.slice(0, 19) + 'Z') / 1000;
  const match = /\.(\d+)/.exec(text.slice(19));
  const nanos = match ? Number(match[1].padEnd(9, '0').slice(0, 9)) : 0;
  return [seconds, nanos];
}

/** Nanoseconds from `a` to `b`, both from `instant`. */
export function between(a, b) {
  return (b[0] - a[0]) * 1e9 + (b[1] - a[1]);
}

/** A small colored label: `badge('deny', 'verdict')`. */
export function badge(text, kind = '') {
  return el('span', { class: ('badge ' + kind + ' ' + kind + '-' + String(text)).trim() }, text);
}

/** A message in place of data: an error, or an empty answer. */
export function notice(text, kind = 'note') {
  return el('p', { class: kind }, text);
}

/**
 * Marks the view as rendered: `data-ready` names it (tests wait for it) and `data-ready-ms`
 * holds the milliseconds since the view started loading (benchmarks read it).
 */
export function ready(view) {
  document.body.dataset.readyMs = String(Math.round(performance.now() - (window.sightlineViewStart || 0)));
  document.body.dataset.ready = view;
}
