// Sessions & runs: sessions (or runs) with a run matching the filters, each with its errors,
// denials, escalations, retries and tokens. Filters live in the URL, so a view can be shared.

import { pageQueries, sql } from './api.js';
import { RUN_COUNTS, errorNotice, setTimeParams, sqlBox, table, timeFields, windowOf } from './common.js';
import { badge, duration, el, notice, plural, time } from './format.js';

const FILTERS = ['session', 'user', 'agent', 'outcome', 'tool', 'verdict', 'q'];
const OUTCOMES = ['success', 'error', 'refused'];
const VERDICTS = ['deny', 'escalate', 'modify', 'warn', 'allow'];

function link(path, text) {
  return el('a', { href: path, 'data-link': true }, text);
}

function filterForm(params, navigate) {
  const field = (name, label, input) =>
    el('label', { class: 'field' }, el('span', {}, label), input);
  const text = (name, placeholder, list) =>
    el('input', { name, value: params.get(name) || '', placeholder, list, autocomplete: 'off' });
  const choice = (name, values) => {
    const select = el('select', { name });
    select.append(el('option', { value: '' }, 'any'));
    // A value from the URL outside the list still shows (and filters) as given.
    const given = params.get(name);
    const all = given && !values.includes(given) ? [...values, given] : values;
    for (const value of all) select.append(el('option', { value, selected: given === value }, value));
    return select;
  };
  const view = params.get('view') === 'runs' ? 'runs' : 'sessions';
  const form = el('form', { class: 'filters', id: 'filters' },
    ...timeFields(params),
    field('session', 'Session', text('session', 'session id')),
    field('user', 'User', text('user', 'user id')),
    field('agent', 'Agent', text('agent', 'agent name', 'agent-names')),
    field('outcome', 'Outcome', choice('outcome', OUTCOMES)),
    field('tool', 'Tool', text('tool', 'tool name', 'tool-names')),
    field('verdict', 'Verdict', choice('verdict', VERDICTS)),
    field('q', 'Search', text('q', 'in session or user id')),
    el('input', { type: 'hidden', name: 'view', value: view }),
    el('button', { type: 'submit' }, 'Apply'),
    el('datalist', { id: 'agent-names' }),
    el('datalist', { id: 'tool-names' }));
  // A preset range applies at once, as on the monitoring view; typed fields wait for Apply.
  form.elements.range.addEventListener('change', () => form.requestSubmit());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    const data = new FormData(form);
    setTimeParams(data, next);
    for (const key of FILTERS) {
      const value = String(data.get(key) || '').trim();
      if (value) next.set(key, value);
    }
    if (view === 'runs') next.set('view', 'runs');
    navigate('/sessions?' + next.toString());
  });
  return form;
}

/** Fills the agent and tool suggestions after the data is on screen (not on its critical path). */
async function suggest(form, queries) {
  const fill = async (id, query, column) => {
    try {
      const { rows } = await sql(query);
      const list = form.querySelector('#' + id);
      for (const row of rows) if (row[column] !== null) list.append(el('option', { value: row[column] }));
    } catch (_) {
      // suggestions are a convenience; the view already says what went wrong, if anything
    }
  };
  await Promise.all([
    fill('agent-names', queries.agent_names, 'agent_name'),
    fill('tool-names', queries.tool_names, 'tool_name'),
  ]);
}

function withParams(params, changes) {
  const next = new URLSearchParams(params);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === '') next.delete(key);
    else next.set(key, value);
  }
  return '/sessions?' + next.toString();
}

function sessionsTable(rows, params) {
  return table([
    {
      name: 'session_id', label: 'Session',
      render: (value) => value === null
        ? el('span', { class: 'muted' }, '(no session)')
        : link(withParams(params, { session: value, view: 'runs' }), value),
    },
    { name: 'user_id', label: 'User' },
    { name: 'agents', label: 'Agents' },
    { name: 'first_start', label: 'First run', render: time },
    { name: 'last_start', label: 'Last run', render: time },
    { name: 'runs', label: 'Runs', numeric: true },
    ...RUN_COUNTS,
  ], rows, {
    className: 'sessions',
    rowAttributes: (row) => ({ 'data-session': row.session_id ?? '' }),
    empty: 'No session has a run matching these filters in this time range.',
  });
}

function runsTable(rows, params) {
  return table([
    {
      name: 'start_time', label: 'Started',
      render: (value, row) => link('/runs/' + row.trace_id, time(value)),
    },
    {
      name: 'session_id', label: 'Session',
      render: (value) => value === null ? '–' : link(withParams(params, { session: value }), value),
    },
    { name: 'agent_name', label: 'Agent' },
    { name: 'outcome', label: 'Outcome', render: (value) => badge(value, 'outcome') },
    { name: 'duration_ns', label: 'Duration', render: duration, numeric: true },
    { name: 'llm_calls', label: 'Model calls', numeric: true },
    { name: 'tool_calls', label: 'Tool calls', numeric: true },
    ...RUN_COUNTS,
  ], rows, {
    className: 'runs',
    rowAttributes: (row) => ({ 'data-trace': row.trace_id, 'data-span': row.span_id }),
    empty: 'No run matches these filters in this time range.',
  });
}

export async function render(main, params, navigate, done) {
  const view = params.get('view') === 'runs' ? 'runs' : 'sessions';
  const form = filterForm(params, navigate);
  const tabs = el('p', { class: 'tabs' },
    el('a', { href: withParams(params, { view: null }), 'data-link': true, class: view === 'sessions' ? 'active' : ''}, 'Sessions'),
    el('a', { href: withParams(params, { view: 'runs' }), 'data-link': true, class: view === 'runs' ? 'active' : ''}, 'Runs'));
  const result = el('section', { id: 'result', 'aria-busy': 'true' }, notice('Loading…'));
  main.replaceChildren(el('h1', {}, view === 'runs' ? 'Runs' : 'Sessions'), form, tabs, result);
  const filters = Object.assign(windowOf(params), Object.fromEntries(FILTERS.map((key) => [key, params.get(key) || ''])));
  let queries = null;
  try {
    queries = await pageQueries(filters);
    const query = view === 'runs' ? queries.runs : queries.sessions;
    const { rows } = await sql(query);
    const cut = rows.length > queries.max_rows;
    const shown = cut ? rows.slice(0, queries.max_rows) : rows;
    const range = params.get('range') || (params.get('since') || params.get('until') ? 'custom' : '7d');
    result.replaceChildren(
      el('p', { class: 'count' }, cut
        ? 'The ' + queries.max_rows + ' most recent ' + view + ' (more match: narrow the filters).'
        : plural(shown.length, view === 'runs' ? 'run' : 'session') + '.',
      shown.length === 0 && range !== 'all'
        ? el('span', {}, ' ', el('a', { href: withParams(params, { range: 'all', since: null, until: null }), 'data-link': true }, 'Show all time'))
        : null),
      view === 'runs' ? runsTable(shown, params) : sessionsTable(shown, params),
      sqlBox(query));
  } catch (error) {
    result.replaceChildren(errorNotice(error));
  }
  result.setAttribute('aria-busy', 'false');
  done('sessions');
  if (queries) suggest(form, queries);
}
