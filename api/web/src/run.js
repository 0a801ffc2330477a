// One run: the trace's span tree as a waterfall with timing bars; under each span the decisions
// that gated it; its attributes one click away; prompts and completions only on demand, for a
// token with the content scope.

import { ApiError, sql, trace } from './api.js';
import { RUN_COUNTS, errorNotice, sqlBox, table } from './common.js';
import { badge, between, duration, el, instant, notice, number, plural, time } from './format.js';

const SPAN_COLUMNS = 'span_id, parent_span_id, span_name, service_name, operation, provider, ' +
  'request_model, response_model, agent_name, tool_name, tool_risk, start_time, end_time, ' +
  'duration_ns, status_code, status_message, error_type, input_tokens, output_tokens, ' +
  'retry_attempt, decision_verdict';

/** The SQL this view runs for one trace (the id is checked to be 32 hex digits first). */
export function runQueries(traceId) {
  const where = "WHERE trace_id = '" + traceId + "'";
  return {
    runs: 'SELECT span_id, session_id, user_id, agent_name, outcome, start_time, duration_ns, llm_calls, ' +
      'tool_calls, errors, retries, denials, escalations, input_tokens, output_tokens\nFROM agent_runs ' +
      where + '\nORDER BY start_time, span_id',
    spans: 'SELECT ' + SPAN_COLUMNS + '\nFROM spans ' + where + '\nORDER BY start_time, span_id',
    tools: 'SELECT span_id, attempt, is_retry, retry_source, risk, verdict\nFROM tool_calls ' + where,
    models: 'SELECT span_id, request_model, response_model, input_tokens, output_tokens, retry_attempt\nFROM llm_calls ' + where,
    decisions: 'SELECT span_id, time, kind, verdict, action, policy_id, risk, context_source, reasoning, ' +
      'decision_id, approval_status, approval_latency_ms, forms\nFROM decisions ' + where +
      '\nORDER BY time, span_id, kind, policy_id',
    content: 'SELECT span_id, key, value, status\nFROM content ' + where + '\nORDER BY span_id, key',
  };
}

/**
 * One row per stored span: copies of a re-sent export (same span id, start and end) are one
 * row marked with their count, as the agent tables count them once.
 */
function uniqueSpans(rows) {
  const byKey = new Map();
  for (const row of rows) {
    const key = row.span_id + ' ' + row.start_time + ' ' + row.end_time;
    const seen = byKey.get(key);
    if (seen) seen.copies += 1;
    else byKey.set(key, Object.assign({ copies: 1 }, row));
  }
  return [...byKey.values()];
}

/** Spans in tree order with their depth; a span whose parent is missing is a root. */
function treeOrder(spans) {
  const ids = new Set(spans.map((span) => span.span_id));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parent_span_id && ids.has(span.parent_span_id) && span.parent_span_id !== span.span_id) {
      if (!children.has(span.parent_span_id)) children.set(span.parent_span_id, []);
      children.get(span.parent_span_id).push(span);
    } else {
      roots.push(span);
    }
  }
  const ordered = [];
  const visit = (span, depth) => {
    if (ordered.length > spans.length) return; // a cycle of parents: stop
    ordered.push({ span, depth });
    for (const child of children.get(span.span_id) || []) visit(child, depth + 1);
  };
  for (const root of roots) visit(root, 0);
  return ordered;
}

function anyValue(value) {
  if (!value) return '';
  if ('stringValue' in value) return value.stringValue;
  if ('intValue' in value) return String(value.intValue);
  if ('doubleValue' in value) return String(value.doubleValue);
  if ('boolValue' in value) return String(value.boolValue);
  if ('bytesValue' in value) return value.bytesValue;
  if ('arrayValue' in value) return JSON.stringify((value.arrayValue.values || []).map(anyValue));
  if ('kvlistValue' in value) return JSON.stringify(Object.fromEntries((value.kvlistValue.values || []).map((kv) => [kv.key, anyValue(kv.value)])));
  return JSON.stringify(value);
}

function attributeTable(attributes, title) {
  const rows = (attributes || []).map((kv) => ({ key: kv.key, value: anyValue(kv.value) }));
  return el('div', { class: 'attributes' }, el('h4', {}, title),
    table([{ name: 'key', label: 'Key' }, { name: 'value', label: 'Value', render: (v) => el('code', {}, v) }], rows, { empty: 'none' }));
}

/** Text with each `[REDACTED:rule]` marked. */
function markedText(text, className = 'content-value') {
  const pre = el('pre', { class: className });
  for (const part of String(text).split(/(\[REDACTED:[^\]]*\])/)) {
    if (part.startsWith('[REDACTED:')) pre.append(el('mark', { class: 'redacted' }, part));
    else if (part) pre.append(part);
  }
  return pre;
}

/** The text of one message part: its text, else its JSON. */
function partText(part) {
  if (typeof part === 'string') return part;
  if (part && typeof part.content === 'string') return part.content;
  if (part && typeof part.text === 'string') return part.text;
  return JSON.stringify(part);
}

/**
 * A value holding GenAI messages (`[{"role": ..., "parts": [...]}]`, or `content` as text) as a
 * list of messages; anything else as its text. Redactions are marked either way.
 */
function contentValue(value) {
  let messages = null;
  try {
    const parsed = JSON.parse(value);
    if (Array.isArray(parsed) && parsed.length > 0 && parsed.every((m) => m && typeof m === 'object' && typeof m.role === 'string')) {
      messages = parsed;
    }
  } catch (_) {
    // not JSON: plain text
  }
  if (!messages) return markedText(value);
  return el('div', { class: 'messages' },
    messages.map((message) => {
      const parts = Array.isArray(message.parts) ? message.parts
        : message.content !== undefined ? [message.content] : [];
      return el('div', { class: 'message' }, badge(message.role, 'role'),
        parts.map((part) => markedText(partText(part), 'message-part')));
    }),
    el('details', { class: 'raw' }, el('summary', {}, 'as sent'), markedText(value)));
}

function contentBlock(rows) {
  return el('div', { class: 'content' }, rows.map((row) => {
    const marks = [];
    if (row.status === 'expired') marks.push(badge('expired', 'content'));
    if (row.status === 'not_captured') marks.push(badge('not captured', 'content'));
    if (row.value && row.value.includes('[REDACTED:')) marks.push(badge('redacted', 'content'));
    return el('div', { class: 'content-item', 'data-key': row.key, 'data-status': row.status },
      el('div', { class: 'content-key' }, el('code', {}, row.key), ' ', marks),
      row.status === 'present'
        ? contentValue(row.value ?? '')
        : notice(row.status === 'expired'
          ? 'Expired: this text passed its retention keep and was deleted.'
          : 'Not captured: content capture was off when this span arrived.', 'muted'));
  }));
}

function decisionRow(decision) {
  const field = (label, value) => value === null || value === undefined ? null
    : el('span', { class: 'kv' }, el('span', { class: 'k' }, label), ' ', String(value));
  return el('div', { class: 'decision', 'data-span': decision.span_id, 'data-verdict': decision.verdict ?? '' },
    el('span', { class: 'decision-mark decision-mark-' + (decision.verdict ?? 'unknown') }, '⚑'),
    badge(decision.verdict ?? 'unknown', 'verdict'),
    field('kind', decision.kind),
    field('policy', decision.policy_id),
    field('risk', decision.risk),
    field('context', decision.context_source),
    field('action', decision.action),
    decision.approval_status
      ? field('approval', decision.approval_status + (decision.approval_latency_ms !== null ? ' after ' + number(decision.approval_latency_ms) + ' ms' : ''))
      : null,
    field('id', decision.decision_id),
    field('recorded as', decision.forms),
    decision.reasoning ? el('div', { class: 'reasoning' }, '“' + decision.reasoning + '”') : null);
}

function spanChips(span, tool, model, orphan) {
  // Errors, retries and tokens first: a long model name must not push them out of sight.
  const chips = [];
  if (span.operation) chips.push(badge(span.operation, 'op'));
  if (orphan) {
    chips.push(el('span', { class: 'badge orphan', 'data-field': 'orphan', title: 'its parent span ' + span.parent_span_id + ' is not stored in this trace (not received, dropped by a sampler, or broken context propagation)' }, 'parent missing'));
  }
  if (span.status_code === 'error') {
    chips.push(el('span', { class: 'badge error', 'data-field': 'error' }, 'error' + (span.error_type ? ' ' + span.error_type : '')));
  }
  if (tool?.is_retry) {
    chips.push(el('span', { class: 'badge retry', 'data-field': 'retry' }, 'retry #' + tool.attempt + ' (' + tool.retry_source + ')'));
  } else if (model && model.retry_attempt > 0) {
    // A model call retried by its client library (counted in agent_runs.retries); an HTTP
    // span's resend count is not a retry of the agent's.
    chips.push(el('span', { class: 'badge retry', 'data-field': 'retry' }, 'retry #' + model.retry_attempt));
  }
  const input = model?.input_tokens ?? span.input_tokens;
  const output = model?.output_tokens ?? span.output_tokens;
  if (input !== null && input !== undefined || output !== null && output !== undefined) {
    chips.push(el('span', { class: 'chip tokens', 'data-field': 'tokens' }, number(input) + ' in / ' + number(output) + ' out'));
  }
  if (span.tool_name) {
    chips.push(el('span', { class: 'chip tool', 'data-field': 'tool' }, 'tool ' + span.tool_name));
  }
  const risk = tool?.risk ?? span.tool_risk;
  if (risk) chips.push(badge(risk, 'risk'));
  const request = model?.request_model ?? span.request_model;
  const response = model?.response_model ?? span.response_model;
  if (request || response) {
    chips.push(el('span', { class: 'chip model', 'data-field': 'model' },
      request && response && request !== response ? request + ' → ' + response : request || response));
  }
  if (span.copies > 1) chips.push(el('span', { class: 'chip muted', title: 'the same span was stored more than once (a re-sent export)' }, '×' + span.copies + ' copies'));
  return chips;
}

function runSummary(runs, session) {
  if (runs.length === 0) return notice('No agent run in this trace (no invoke_agent or workflow span at its top).', 'muted');
  return table([
    { name: 'agent_name', label: 'Agent' },
    { name: 'outcome', label: 'Outcome', render: (value) => badge(value, 'outcome') },
    { name: 'start_time', label: 'Started', render: time },
    { name: 'duration_ns', label: 'Duration', render: duration, numeric: true },
    { name: 'llm_calls', label: 'Model calls', numeric: true },
    { name: 'tool_calls', label: 'Tool calls', numeric: true },
    ...RUN_COUNTS,
  ], runs, { className: 'run-summary', rowAttributes: (row) => ({ 'data-span': row.span_id }) });
}

export async function render(main, traceId, params, navigate, done) {
  const id = traceId.toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(id)) {
    main.replaceChildren(el('h1', {}, 'Run'), notice('"' + traceId + '" is not a trace id (32 hex digits).', 'error'));
    done('run');
    return;
  }
  const queries = runQueries(id);
  main.replaceChildren(el('h1', {}, 'Run ', el('code', {}, id)), notice('Loading…'));
  let runs; let spans; let tools; let models; let decisions;
  try {
    [runs, spans, tools, models, decisions] = (await Promise.all(
      [queries.runs, queries.spans, queries.tools, queries.models, queries.decisions].map(sql)))
      .map((answer) => answer.rows);
  } catch (error) {
    main.replaceChildren(el('h1', {}, 'Run ', el('code', {}, id)), errorNotice(error));
    done('run');
    return;
  }
  if (spans.length === 0) {
    main.replaceChildren(el('h1', {}, 'Run ', el('code', {}, id)), notice('No span of this trace is stored (it may have expired, or not arrived yet).', 'error'));
    done('run');
    return;
  }
  const unique = uniqueSpans(spans);
  const toolBySpan = new Map(tools.map((row) => [row.span_id, row]));
  const modelBySpan = new Map(models.map((row) => [row.span_id, row]));
  const decisionsBySpan = new Map();
  for (const decision of decisions) {
    if (!decisionsBySpan.has(decision.span_id)) decisionsBySpan.set(decision.span_id, []);
    decisionsBySpan.get(decision.span_id).push(decision);
  }
  const starts = unique.map((span) => instant(span.start_time));
  const first = starts.reduce((a, b) => (between(a, b) < 0 ? b : a));
  let total = 1;
  unique.forEach((span, index) => {
    total = Math.max(total, between(first, starts[index]) + Math.max(0, span.duration_ns));
  });
  const offsets = new Map(unique.map((span, index) => [span.span_id, between(first, starts[index])]));

  const session = runs.find((run) => run.session_id)?.session_id;
  const header = el('div', { class: 'run-header' },
    session ? el('p', {}, 'Session ', el('a', { href: '/sessions?view=runs&range=all&session=' + encodeURIComponent(session), 'data-link': true }, session)) : null,
    runSummary(runs, session));

  // Attributes come from the exact OTLP record, fetched on the first click.
  let otlp = null;
  const otlpSpans = async () => {
    if (!otlp) {
      otlp = trace(id).then((body) => {
        const byId = new Map();
        for (const resourceSpans of body.resourceSpans || []) {
          for (const scopeSpans of resourceSpans.scopeSpans || []) {
            for (const span of scopeSpans.spans || []) {
              if (!byId.has(span.spanId)) byId.set(span.spanId, { span, resource: resourceSpans.resource, scope: scopeSpans.scope });
            }
          }
        }
        return byId;
      });
    }
    return otlp;
  };

  const waterfall = el('div', { class: 'waterfall', role: 'tree' });
  waterfall.append(el('div', { class: 'wf-head' }, el('span', {}, 'Span'), el('span', { class: 'wf-scale' }, el('span', {}, '0'), el('span', {}, duration(total)))));
  const detailsBySpan = new Map();
  const spanIds = new Set(unique.map((span) => span.span_id));
  const selected = params.get('span');
  let openSelected = null;
  for (const { span, depth } of treeOrder(unique)) {
    const tool = toolBySpan.get(span.span_id);
    const model = modelBySpan.get(span.span_id);
    const bar = el('div', { class: 'bar' + (span.status_code === 'error' ? ' bar-error' : '') });
    bar.style.left = (offsets.get(span.span_id) / total * 100).toFixed(3) + '%';
    bar.style.width = Math.max(0.3, Math.max(0, span.duration_ns) / total * 100).toFixed(3) + '%';
    const name = el('div', { class: 'wf-name' },
      el('span', { class: 'caret' }, '▸'), el('span', { class: 'span-name' }, span.span_name), ' ',
      spanChips(span, tool, model, span.parent_span_id && !spanIds.has(span.parent_span_id)));
    name.style.paddingLeft = (depth * 16 + 4) + 'px';
    const details = el('div', { class: 'span-details', hidden: true, 'data-span': span.span_id });
    const row = el('div', {
      class: 'wf-row' + (span.span_id === selected ? ' selected' : ''),
      role: 'treeitem',
      tabindex: 0,
      'data-span': span.span_id,
      'aria-expanded': 'false',
    }, name, el('div', { class: 'wf-bar' }, el('div', { class: 'track' }, bar), el('span', { class: 'wf-duration' }, duration(span.duration_ns))));
    const toggle = async () => {
      const open = details.hidden;
      details.hidden = !open;
      row.setAttribute('aria-expanded', String(open));
      row.querySelector('.caret').textContent = open ? '▾' : '▸';
      // The URL names the span last opened; closing it takes it out again.
      const url = new URL(window.location.href);
      if (open) url.searchParams.set('span', span.span_id);
      else if (url.searchParams.get('span') === span.span_id) {
        // Another span still open becomes the one the link names.
        const still = waterfall.querySelector('.wf-row[aria-expanded="true"]');
        if (still) url.searchParams.set('span', still.dataset.span);
        else url.searchParams.delete('span');
      }
      history.replaceState(null, '', url.pathname + url.search);
      if (open && !details.dataset.loaded) {
        details.dataset.loaded = 'loading';
        details.replaceChildren(notice('Loading attributes…'));
        try {
          const found = (await otlpSpans()).get(span.span_id);
          details.replaceChildren(...[
            el('p', { class: 'muted' }, 'span ', el('code', {}, span.span_id), ' · service ', span.service_name ?? '–',
              ' · ', time(span.start_time), ' · status ', span.status_code, span.status_message ? ': ' + span.status_message : ''),
            attributeTable(found?.span.attributes, 'Attributes'),
            (found?.span.events || []).length
              ? el('div', { class: 'attributes' }, el('h4', {}, 'Events'), (found.span.events).map((event) =>
                el('div', { class: 'event' }, el('strong', {}, event.name), attributeTable(event.attributes, ''))))
              : null,
            attributeTable(found?.resource?.attributes, 'Resource'),
          ].filter(Boolean));
          details.dataset.loaded = 'yes';
        } catch (error) {
          details.dataset.loaded = '';
          details.replaceChildren(errorNotice(error));
        }
      }
    };
    row.addEventListener('click', toggle);
    if (span.span_id === selected && !openSelected) openSelected = toggle;
    row.addEventListener('keydown', (event) => { if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); toggle(); } });
    waterfall.append(row);
    const gate = el('div', { class: 'decisions' });
    for (const decision of decisionsBySpan.get(span.span_id) || []) gate.append(decisionRow(decision));
    gate.style.marginLeft = (depth * 16 + 22) + 'px';
    if (gate.childNodes.length) waterfall.append(gate);
    const content = el('div', { class: 'span-content', hidden: true, 'data-span': span.span_id });
    content.style.marginLeft = (depth * 16 + 22) + 'px';
    detailsBySpan.set(span.span_id, content);
    waterfall.append(details, content);
  }

  // Decisions on a span id the tree has no row for (not expected: decisions come from the
  // trace's spans) are still shown, below the tree.
  const shownSpans = new Set(unique.map((span) => span.span_id));
  const unattached = decisions.filter((decision) => !shownSpans.has(decision.span_id));
  const elsewhere = el('div', { class: 'span-content', hidden: unattached.length === 0 },
    el('h4', {}, 'Decisions and content of spans not in the tree'), unattached.map(decisionRow));

  const contentStatus = el('span', { class: 'content-status', 'aria-live': 'polite' });
  let contentShown = false;
  let contentMessage = '';
  const contentButton = el('button', {
    type: 'button', id: 'show-content',
    onclick: async () => {
      if (contentButton.dataset.loaded) {
        // Loaded once: the button hides and shows it again without asking the server.
        contentShown = !contentShown;
        for (const block of waterfall.querySelectorAll('.span-content')) {
          block.hidden = !contentShown || block.childNodes.length === 0;
        }
        contentButton.textContent = contentShown ? 'Hide prompts and completions' : 'Show prompts and completions';
        contentStatus.textContent = contentShown ? contentMessage : '';
        return;
      }
      contentButton.disabled = true;
      contentStatus.textContent = 'Loading…';
      try {
        const { rows } = await sql(queries.content);
        const bySpan = new Map();
        for (const row of rows) {
          if (!bySpan.has(row.span_id)) bySpan.set(row.span_id, []);
          bySpan.get(row.span_id).push(row);
        }
        for (const [spanId, spanRows] of bySpan) {
          const target = detailsBySpan.get(spanId);
          if (target) {
            target.replaceChildren(contentBlock(spanRows));
            target.hidden = false;
          } else {
            elsewhere.append(el('p', {}, 'span ', el('code', {}, spanId)), contentBlock(spanRows));
            elsewhere.hidden = false;
          }
        }
        contentButton.dataset.loaded = 'yes';
        contentShown = true;
        contentButton.disabled = false;
        contentButton.textContent = 'Hide prompts and completions';
        const count = (status) => rows.filter((row) => row.status === status).length;
        const missing = [[count('expired'), 'expired'], [count('not_captured'), 'not captured']]
          .filter(([n]) => n > 0).map(([n, what]) => n + ' ' + what);
        contentMessage = rows.length === 0
          ? 'This run has no stored prompt or completion content.'
          : plural(count('present'), 'content value') + ' shown under ' + (count('present') === 1 ? 'its span' : 'their spans') + (missing.length ? '; ' + missing.join(', ') : '') + '.';
        contentStatus.textContent = contentMessage;
      } catch (error) {
        contentButton.disabled = false;
        contentStatus.textContent = error instanceof ApiError && error.status === 403
          ? 'Your token may not read prompts and completions (it needs the content scope).'
          : 'Could not load content: ' + error.message;
        contentStatus.classList.add('error');
      }
    },
  }, 'Show prompts and completions');

  main.replaceChildren(
    el('h1', {}, 'Run ', el('code', {}, id)),
    header,
    el('p', { class: 'toolbar' }, plural(unique.length, 'span') + ', ' + plural(decisions.length, 'decision') + '. Click a span for its attributes. ', contentButton, ' ', contentStatus),
    waterfall,
    elsewhere,
    sqlBox(Object.entries(queries).map(([name, text]) => '-- ' + name + '\n' + text + ';').join('\n\n'), 'SQL of this view'));
  // A shared link to a span opens it, as the click that made the link did.
  const target = selected && waterfall.querySelector('.wf-row.selected');
  if (target) {
    target.scrollIntoView({ block: 'center' });
    openSelected();
  }
  done('run');
}
