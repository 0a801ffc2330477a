// Pieces every view uses: the time range, result tables, the SQL a view ran (with a copy
// button), and error display.

import { token } from './api.js';
import { el, notice, number } from './format.js';

/** Time ranges offered; the value is `since` as the API takes it (an age), '' is all time. */
export const RANGES = [
  ['1h', 'Last hour'],
  ['6h', 'Last 6 hours'],
  ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
  ['all', 'All time'],
];

export const DEFAULT_RANGE = '7d';

/** The `since`/`until` filters of a URL's query: `range` (an age, or `all`), or `since`/`until`. */
export function windowOf(params) {
  const since = params.get('since');
  const until = params.get('until');
  if (since || until) return { since: since || '', until: until || '' };
  const range = params.get('range') || DEFAULT_RANGE;
  return { since: range === 'all' ? '' : range, until: '' };
}

/** A <select> of RANGES plus, when the URL has them, the custom since/until. */
export function rangeSelect(params) {
  const current = params.get('since') || params.get('until') ? 'custom' : params.get('range') || DEFAULT_RANGE;
  const select = el('select', { name: 'range', 'aria-label': 'time range' });
  for (const [value, label] of RANGES) {
    select.append(el('option', { value, selected: value === current }, label));
  }
  // A range typed into the URL (`range=2w`) is shown as it is, not as the first option.
  if (current !== 'custom' && !RANGES.some(([value]) => value === current)) {
    select.append(el('option', { value: current, selected: true }, 'Last ' + current));
  }
  if (current === 'custom') {
    select.append(el('option', { value: 'custom', selected: true },
      (params.get('since') || '…') + ' to ' + (params.get('until') || 'now')));
  }
  return select;
}

/** The SQL a view ran: shown folded, with a button that copies it. */
export function sqlBox(sqlText, label = 'SQL') {
  const pre = el('pre', { class: 'sql' }, sqlText);
  const status = el('span', { class: 'copy-status', 'aria-live': 'polite' });
  const copy = el('button', {
    type: 'button',
    class: 'quiet copy-sql',
    onclick: async () => {
      try {
        // A browser that neither writes nor refuses (a pending permission) falls back too.
        await Promise.race([
          navigator.clipboard.writeText(sqlText),
          new Promise((_, reject) => { setTimeout(() => reject(new Error('no answer')), 1000); }),
        ]);
        status.textContent = 'copied';
      } catch (_) {
        // No clipboard permission (an insecure origin): select it for Ctrl-C instead.
        const range = document.createRange();
        range.selectNodeContents(pre);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        status.textContent = 'selected: press Ctrl-C';
      }
    },
  }, 'Copy SQL');
  return el('details', { class: 'sql-box' }, el('summary', {}, label), el('div', { class: 'sql-actions' }, copy, status), pre);
}

/**
 * A result table. `columns` is a list of `{name, label, render?, numeric?}`; each cell carries
 * `data-col` so tests (and people with dev tools) can find a column.
 */
export function table(columns, rows, options = {}) {
  const head = el('tr', {}, columns.map((column) =>
    el('th', { class: column.numeric ? 'num' : '', scope: 'col' }, column.label || column.name)));
  const body = el('tbody', {});
  for (const row of rows) {
    const tr = el('tr', options.rowAttributes ? options.rowAttributes(row) : {});
    for (const column of columns) {
      const value = row[column.name];
      const content = column.render ? column.render(value, row) : column.numeric ? number(value) : value ?? '–';
      tr.append(el('td', { class: column.numeric ? 'num' : '', 'data-col': column.name }, content));
    }
    body.append(tr);
  }
  if (rows.length === 0) {
    body.append(el('tr', {}, el('td', { colspan: columns.length, class: 'empty' }, options.empty || 'No rows.')));
  }
  return el('table', { class: 'data ' + (options.className || '') }, el('thead', {}, head), body);
}

/**
 * The time fields of a filter form: a preset range, and From/To for a custom one (RFC 3339 or
 * an age such as `3d`); a filled From or To wins over the preset, and picking a preset clears
 * them.
 */
export function timeFields(params) {
  const select = rangeSelect(params);
  const input = (name, placeholder) => el('input', {
    name, value: params.get(name) || '', placeholder, autocomplete: 'off', class: 'time',
  });
  const since = input('since', '2026-11-01T00:00:00Z or 3d');
  const until = input('until', 'now');
  select.addEventListener('change', () => { since.value = ''; until.value = ''; });
  return [
    el('label', { class: 'field' }, el('span', {}, 'Time'), select),
    el('label', { class: 'field' }, el('span', {}, 'From'), since),
    el('label', { class: 'field' }, el('span', {}, 'To'), until),
  ];
}

/** Sets the time parameters of a submitted form (see `timeFields`) on `next`. */
export function setTimeParams(data, next) {
  const since = String(data.get('since') || '').trim();
  const until = String(data.get('until') || '').trim();
  if (since || until) {
    if (since) next.set('since', since);
    if (until) next.set('until', until);
  } else {
    const range = data.get('range');
    next.set('range', range === 'custom' ? 'all' : range);
  }
}

/** The counts every run row shows (runs list, sessions list, one run's summary), in one order. */
export const RUN_COUNTS = [
  { name: 'errors', label: 'Errors', numeric: true },
  { name: 'denials', label: 'Denials', numeric: true },
  { name: 'escalations', label: 'Escalations', numeric: true },
  { name: 'retries', label: 'Retries', numeric: true },
  { name: 'input_tokens', label: 'Tokens in', numeric: true },
  { name: 'output_tokens', label: 'Tokens out', numeric: true },
];

/** An error from the API as a message the viewer can act on. */
export function errorNotice(error) {
  if (error.status === 401) {
    return el('div', { class: 'error' },
      token() ? 'The server refused your token (' + error.message + '). ' : 'This server needs a token. ',
      el('button', { type: 'button', onclick: () => window.sightlineAskToken() }, 'Enter token'));
  }
  if (error.status === 403) return notice('Your token may not read this: ' + error.message, 'error');
  return notice((error.status ? 'Error ' + error.status + ': ' : '') + error.message, 'error');
}
