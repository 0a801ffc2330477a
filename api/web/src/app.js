// Sightline's web page: a router over three views whose state lives in the URL, so every view
// can be shared as a link.
//   /sessions?range=7d&agent=...&view=runs   sessions and runs, filtered
//   /runs/<trace id>?span=<span id>          one run: waterfall, decisions, attributes, content
//   /monitoring?range=30d                    charts of docs/monitoring.md's questions

import { setToken, token } from './api.js';
import { render as renderMonitoring } from './monitoring.js';
import { render as renderRun } from './run.js';
import { render as renderSessions } from './sessions.js';
import { el, ready } from './format.js';

const main = document.getElementById('main');

function navigate(path) {
  history.pushState(null, '', path);
  route();
}

async function route() {
  const url = new URL(window.location.href);
  const path = url.pathname;
  delete document.body.dataset.ready;
  // A first load counts from navigation start (0), a view change from here.
  if (window.sightlineViewStart !== undefined || document.readyState === 'complete') {
    window.sightlineViewStart = performance.now();
  }
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', path.startsWith('/' + link.dataset.nav));
  }
  if (path === '/' || path === '') {
    history.replaceState(null, '', '/sessions' + url.search);
    return route();
  }
  if (path === '/sessions') {
    document.title = 'Sessions · Sightline';
    return renderSessions(main, url.searchParams, navigate);
  }
  if (path === '/monitoring') {
    document.title = 'Monitoring · Sightline';
    return renderMonitoring(main, url.searchParams, navigate);
  }
  const run = /^\/runs\/([^/]+)$/.exec(path);
  if (run) {
    document.title = 'Run ' + decodeURIComponent(run[1]).slice(0, 8) + ' · Sightline';
    return renderRun(main, decodeURIComponent(run[1]), url.searchParams, navigate);
  }
  main.replaceChildren(el('h1', {}, 'Not found'), el('p', {}, 'No view at ' + path + '.'));
  ready('none');
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
function showTokenState() {
  button.textContent = token() ? 'Token ✓' : 'Token';
}
window.sightlineAskToken = () => {
  input.value = token();
  dialog.showModal();
};
button.addEventListener('click', window.sightlineAskToken);
dialog.addEventListener('close', () => {
  if (dialog.returnValue === 'save') setToken(input.value.trim());
  if (dialog.returnValue === 'clear') setToken('');
  input.value = '';
  showTokenState();
  if (dialog.returnValue === 'save' || dialog.returnValue === 'clear') route();
});
showTokenState();
route();
