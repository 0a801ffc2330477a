// Monitoring: four questions of docs/monitoring.md over a chosen time range, each as a chart,
// the table of its numbers, and the SQL it ran (copyable). The SQL comes from the server's one
// catalog (GET /api/v1/queries), never written here.

import {
  BarController, BarElement, CategoryScale, Chart, Legend, LineController, LineElement,
  LinearScale, PointElement, Tooltip,
} from 'chart.js';
import { pageQueries, sql } from './api.js';
import { errorNotice, setTimeParams, sqlBox, table, timeFields, windowOf } from './common.js';
import { el, notice } from './format.js';

Chart.register(BarController, BarElement, CategoryScale, Legend, LineController, LineElement, LinearScale, PointElement, Tooltip);

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

function bars(labels, datasets, options = {}) {
  return {
    type: 'bar',
    data: {
      labels,
      datasets: datasets.map((dataset, index) => Object.assign({
        backgroundColor: PALETTE[index % PALETTE.length],
        borderColor: PALETTE[index % PALETTE.length],
      }, dataset)),
    },
    options: Object.assign({
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { display: datasets.length > 1, position: 'bottom' } },
    }, options),
  };
}

/** Chart configuration of each question the page draws, from its answer's rows. */
const CHARTS = {
  retry_rate_by_tool: (rows) => bars(rows.map((r) => r.tool_name ?? '(none)'), [
    { label: 'attempt retry rate', data: rows.map((r) => r.attempt_retry_rate) },
    { label: 'operation retry rate', data: rows.map((r) => r.operation_retry_rate) },
  ], { scales: { y: { beginAtZero: true, title: { display: true, text: 'share' } } } }),
  denials_by_policy_per_day: (rows) => {
    const days = [...new Set(rows.map((r) => String(r.day).slice(0, 10)))];
    const policies = [...new Set(rows.map((r) => (r.kind ?? '?') + ' / ' + (r.policy_id ?? '(no policy)')))];
    const config = bars(days, policies.map((policy) => ({
      label: policy,
      data: days.map((day) => rows
        .filter((r) => String(r.day).slice(0, 10) === day && (r.kind ?? '?') + ' / ' + (r.policy_id ?? '(no policy)') === policy)
        .reduce((sum, r) => sum + r.denials, 0)),
    })), { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: 'denials' } } } });
    // Many policies: the legend would crowd out the bars; the tooltip and the table name them.
    config.options.plugins.legend.display = policies.length > 1 && policies.length <= 8;
    return config;
  },
  error_rate_by_agent: (rows) => bars(rows.map((r) => r.agent_name ?? '(none)'), [
    { label: 'run error rate', data: rows.map((r) => r.error_rate) },
  ], { scales: { y: { beginAtZero: true, title: { display: true, text: 'share of runs' } } } }),
  tokens_and_latency_by_model: (rows) => bars(
    rows.map((r) => (r.provider ?? '?') + ' ' + (r.request_model ?? '(no model)')), [
      { label: 'input tokens', data: rows.map((r) => r.input_tokens), yAxisID: 'tokens', stack: 'tokens' },
      { label: 'output tokens', data: rows.map((r) => r.output_tokens), yAxisID: 'tokens', stack: 'tokens' },
      { label: 'p95 latency (ms)', data: rows.map((r) => r.p95_ms), yAxisID: 'latency', type: 'line', backgroundColor: PALETTE[2], borderColor: PALETTE[2] },
    ], {
      scales: {
        tokens: { type: 'linear', position: 'left', stacked: true, beginAtZero: true, title: { display: true, text: 'tokens' } },
        latency: { type: 'linear', position: 'right', beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: 'p95 ms' } },
      },
    }),
};

/** The questions drawn, in the page's order. */
export const CHARTED = Object.keys(CHARTS);

const live = [];

function card(question) {
  const canvasBox = el('div', { class: 'chart-box' }, el('canvas', { 'aria-label': question.title, role: 'img' }));
  const body = el('div', { class: 'card-body' }, notice('Loading…'));
  return {
    node: el('section', { class: 'card', 'data-question': question.name, 'aria-busy': 'true' },
      el('h2', {}, question.title), el('p', { class: 'muted' }, question.description),
      canvasBox, body, sqlBox(question.sql, 'SQL')),
    canvas: canvasBox.querySelector('canvas'),
    body,
  };
}

/** Frees the charts of the view being left. */
export function leave() {
  while (live.length) live.pop().destroy();
}

export async function render(main, params, navigate, done) {
  const form = el('form', { class: 'filters', id: 'filters' }, ...timeFields(params),
    el('button', { type: 'submit' }, 'Apply'));
  const apply = () => {
    const next = new URLSearchParams();
    setTimeParams(new FormData(form), next);
    navigate('/monitoring?' + next.toString());
  };
  form.addEventListener('submit', (event) => { event.preventDefault(); apply(); });
  // A preset applies at once; From/To wait for Apply.
  form.elements.range.addEventListener('change', apply);
  const grid = el('div', { class: 'cards' });
  main.replaceChildren(el('h1', {}, 'Monitoring'), form, grid);
  let queries;
  try {
    queries = await pageQueries(windowOf(params));
  } catch (error) {
    grid.replaceChildren(errorNotice(error));
    done('monitoring');
    return;
  }
  const questions = CHARTED.map((name) => queries.monitoring.find((q) => q.name === name)).filter(Boolean);
  await Promise.all(questions.map(async (question) => {
    const { node, canvas, body } = card(question);
    grid.append(node);
    try {
      const answer = await sql(question.sql);
      const chartRows = answer.rows;
      if (chartRows.length) {
        const chart = new Chart(canvas, CHARTS[question.name](chartRows));
        live.push(chart);
        // What was drawn, for tests and for anyone inspecting the page.
        canvas.dataset.labels = String(chart.data.labels.length);
        canvas.dataset.points = String(chart.data.datasets
          .reduce((count, dataset) => count + dataset.data.filter((value) => value !== null && value !== undefined).length, 0));
      }
      else {
        canvas.parentNode.replaceChildren(el('p', { class: 'muted' }, 'Nothing in this time range. ',
          el('a', { href: '/monitoring?range=all', 'data-link': true }, 'Show all time')));
      }
      body.replaceChildren(table(answer.columns.map((name) => ({
        name,
        numeric: chartRows.some((row) => typeof row[name] === 'number'),
        render: name === 'day' ? (value) => String(value).slice(0, 10) : undefined,
      })), chartRows, { className: 'answer' }));
    } catch (error) {
      body.replaceChildren(errorNotice(error));
    }
    node.setAttribute('aria-busy', 'false');
  }));
  done('monitoring');
}

