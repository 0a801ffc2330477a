// Sightline's web page: a router over three views whose state lives in the URL, so every view
// can be shared as a link.
//   /sessions?range=7d&agent=...&view=runs   sessions and runs, filtered
//   /runs/<trace id>?span=<span id>          one run: waterfall, decisions, attributes, content
//   /monitoring?range=30d                    charts of docs/monitoring.md's questions

import { setToken, token } from './api.js';
import { errorNotice } from './common.js';
import { leave as leaveMonitoring, render as renderMonitoring } from './monitoring.js';
import { render as renderRun } from './run.js';
import { render as renderSessions } from './sessions.js';
import { el, ready } from './format.js';

const main = document.getElementById('main');

function navigate(path) {
  // The same view again (Apply with nothing changed) re-runs it without a new history entry.
  const here = window.location.pathname + window.location.search;
  if (path === here) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

// Each route() call is one view; an older view whose data arrives late must not draw over the
// current one or mark it ready.
let currentView = 0;

async function route() {
  const url = new URL(window.location.href);
  const path = url.pathname;
  const viewNumber = ++currentView;
  const done = (name) => { if (viewNumber === currentView) ready(name); };
  delete document.body.dataset.ready;
  // A first load counts from navigation start (0), a view change from here.
  if (window.sightlineViewStart !== undefined || document.readyState === 'complete') {
    window.sightlineViewStart = performance.now();
  }
  leaveMonitoring();
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', path.startsWith('/' + link.dataset.nav));
  }
  if (path === '/' || path === '') {
    history.replaceState(null, '', '/sessions' + url.search);
    return route();
  }
  // Each view draws into its own container: one replaced by a newer view is simply detached.
  const view = el('div', { class: 'view' });
  main.replaceChildren(view);
  try {
    if (path === '/sessions') {
      document.title = 'Sessions · Sightline';
      return await renderSessions(view, url.searchParams, navigate, done);
    }
    if (path === '/monitoring') {
      document.title = 'Monitoring · Sightline';
      return await renderMonitoring(view, url.searchParams, navigate, done);
    }
    const run = /^\/runs\/([^/]+)$/.exec(path);
    if (run) {
      const id = decodeURIComponent(run[1]);
      document.title = 'Run ' + id.slice(0, 8) + ' · Sightline';
      return await renderRun(view, id, url.searchParams, navigate, done);
    }
    view.replaceChildren(el('h1', {}, 'Not found'), el('p', {}, 'No view at ' + path + '.'));
  } catch (error) {
    // Whatever went wrong, say it instead of leaving "Loading…" on screen.
    view.replaceChildren(el('h1', {}, 'Something went wrong'), errorNotice(error));
  }
  done('none');
  return undefined;
}

// Links inside the page change the view without reloading it.
document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-link]');
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  navigate(link.getAttribute('href'));
});
window.addEventListener('popstate', route);

// The token dialog: opened by the header button or by a view that got 401.
const dialog = document.getElementById('token-dialog');
const input = document.getElementById('token-input');
const button = document.getElementById('token-button');
// The button says whether a token is set and whether the server took it (api.js reports it).
let tokenState = 'unknown';
function showTokenState() {
  if (!token()) button.textContent = 'Token';
  else button.textContent = tokenState === 'refused' ? 'Token ✗' : 'Token ✓';
}
document.addEventListener('sightline-token', (event) => {
  tokenState = event.detail;
  showTokenState();
});
window.sightlineAskToken = () => {
  // Escape closes without a button: it must not repeat the last button's action.
  dialog.returnValue = '';
  input.value = token();
  dialog.showModal();
};
button.addEventListener('click', window.sightlineAskToken);
dialog.addEventListener('close', () => {
  if (dialog.returnValue === 'save' || dialog.returnValue === 'clear') tokenState = 'unknown';
  if (dialog.returnValue === 'save') setToken(input.value.trim());
  if (dialog.returnValue === 'clear') setToken('');
  input.value = '';
  showTokenState();
  if (dialog.returnValue === 'save' || dialog.returnValue === 'clear') route();
});
showTokenState();
route();
