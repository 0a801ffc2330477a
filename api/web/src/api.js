// Talking to the Sightline API: every number the page shows comes from POST /api/v1/sql with
// the viewer's token (kept in this browser's local storage, never in a URL).

const TOKEN_KEY = 'sightline.token';

export function token() {
  return localStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

/** An answer other than 2xx: `status` is the HTTP status, `message` the server's error text. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const current = token();
  if (current) headers.Authorization = 'Bearer ' + current;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (error) {
    throw new ApiError(0, 'the server did not answer: ' + error.message);
  }
  if (current) {
    // Tell the page whether the server took the token (the header button shows it).
    const state = response.status === 401 ? 'refused' : response.ok ? 'accepted' : null;
    if (state) document.dispatchEvent(new CustomEvent('sightline-token', { detail: state }));
  }
  if (!response.ok) {
    let message = response.statusText;
    try {
      const body = await response.json();
      message = body.error || JSON.stringify(body);
    } catch (_) {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

/**
 * Runs one SQL query. Answers `{columns: [name, ...], rows: [{name: value}, ...]}`; values are
 * as the JSON format gives them (timestamps as RFC 3339 text with nanoseconds).
 */
export async function sql(text) {
  const response = await request('/api/v1/sql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sql: text }),
  });
  const body = await response.json();
  const columns = body.columns.map((column) => column.name);
  const rows = body.rows.map((values) => {
    const row = {};
    columns.forEach((name, index) => { row[name] = values[index]; });
    return row;
  });
  return { columns, rows };
}

/** The SQL of the sessions, runs and monitoring views for these filters (GET /api/v1/queries). */
export async function pageQueries(filters) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    if (value) params.set(key, value);
  }
  const response = await request('/api/v1/queries?' + params.toString());
  return response.json();
}

/** The whole trace as OTLP/JSON (GET /api/v1/traces/{id}). */
export async function trace(traceId) {
  const response = await request('/api/v1/traces/' + encodeURIComponent(traceId));
  return response.json();
}
