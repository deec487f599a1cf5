// Requests to the node's REST API, and the sign-in they may need: on a 401
// the token dialog opens once, the token is exchanged for an HttpOnly session
// cookie, and the request is sent again.

import { $, API } from './util.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The API words its errors in {"error": "..."}; show them as they are.
export function errorText(status, bodyText, statusText) {
  try {
    const parsed = JSON.parse(bodyText);
    if (parsed && typeof parsed.error === 'string') return parsed.error;
  } catch (_) {
    // Not JSON: fall through to the raw text.
  }
  const text = (bodyText || '').trim();
  if (text && text.length < 300) return text;
  return `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
}

export const auth = {
  prompt: null, // one dialog at a time, shared by every caller
  declined: false,
  // Bumped at each sign-in: a request refused before it need not ask again.
  signIns: 0,
};

// Called when a request answered 401 (sent after `seenSignIns` sign-ins).
// Resolves to true when the user signed in (retry), false when they declined.
export function obtainToken(seenSignIns, serverMessage) {
  if (auth.signIns !== seenSignIns) return Promise.resolve(true);
  if (auth.declined) return Promise.resolve(false);
  if (!auth.prompt) {
    auth.prompt = askToken(seenSignIns > 0 ? serverMessage : '').finally(() => { auth.prompt = null; });
  }
  return auth.prompt;
}

// Asks for the token until the node accepts it (or the user cancels), and
// signs in with it: the node answers with an HttpOnly, SameSite=Strict
// session cookie, so the token is sent once and kept nowhere in the page.
async function askToken(rejection) {
  const dialog = $('token-dialog');
  const input = $('token-input');
  const error = $('token-error');
  for (;;) {
    error.hidden = !rejection;
    error.textContent = rejection ? `That token was not accepted: ${rejection}` : '';
    input.value = '';
    const answer = await new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' ? input.value.trim() : null), { once: true });
      dialog.returnValue = '';
      dialog.showModal();
      input.focus();
    });
    input.value = '';
    if (!answer) {
      auth.declined = true;
      return false;
    }
    let response;
    try {
      response = await fetch(`${API}/session`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: answer }),
      });
    } catch (_) {
      rejection = 'Cannot reach the node (network error).';
      continue;
    }
    if (response.ok) {
      auth.signIns += 1;
      return true;
    }
    const text = await response.text().catch(() => '');
    rejection = errorText(response.status, text, response.statusText);
  }
}

export async function signOut() {
  await fetch(`${API}/session`, { method: 'DELETE' }).catch(() => {});
  location.reload();
}

// fetch() wrapper: turns error answers into ApiError with the server's
// wording, and asks for the token (once) on 401.
export async function api(path, options = {}) {
  for (;;) {
    const seen = auth.signIns;
    let response;
    try {
      response = await fetch(`${API}${path}`, options);
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'Cannot reach the node (network error).');
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      const message = errorText(response.status, text, response.statusText);
      if (response.status === 401 && (await obtainToken(seen, message))) continue;
      throw new ApiError(response.status, message);
    }
    return response;
  }
}

export const apiJson = async (path, options) => (await api(path, options)).json();

export const postJson = (path, body) => apiJson(path, {
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify(body),
});

// Downloads one zip of `names` and whole folders (`prefixes`), streamed by the
// node. A form submit, not fetch(): the browser's own download UI shows it and
// nothing is buffered in the page. The answer lands in a hidden frame; a
// download never loads it, so a load means an error page, which is reported.
export function downloadZip(names, prefixes, onError) {
  let frame = document.getElementById('zip-frame');
  if (!frame) {
    frame = document.createElement('iframe');
    Object.assign(frame, { id: 'zip-frame', name: 'zip-frame', hidden: true, title: 'zip download' });
    document.body.append(frame);
  }
  frame.onload = () => {
    const text = frame.contentDocument?.body?.textContent ?? '';
    if (text) onError(errorText(0, text, ''));
  };
  const form = document.createElement('form');
  Object.assign(form, { method: 'POST', action: `${API}/zip`, target: 'zip-frame', hidden: true });
  const field = document.createElement('input');
  Object.assign(field, { type: 'hidden', name: 'selection', value: JSON.stringify({ names, prefixes }) });
  form.append(field);
  document.body.append(form);
  form.submit();
  form.remove();
}

// Every name under `prefix`, page by page (cursor paging costs each name once).
export async function* namesUnder(prefix) {
  let after = null;
  for (;;) {
    const q = new URLSearchParams({ prefix, limit: '1000' });
    if (after) q.set('after', after);
    const page = await apiJson(`/files?${q}`);
    for (const f of page.files) yield f;
    if (!page.next) return;
    after = page.next;
  }
}

// How many names are under `prefix` (the listing's total; one scan of them).
export async function countUnder(prefix) {
  const page = await apiJson(`/files?${new URLSearchParams({ prefix, limit: '1' })}`);
  return page.total;
}

// Runs `work` over `items`, at most `limit` at a time; resolves to the errors.
export async function eachLimited(items, limit, work) {
  const errors = [];
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      try {
        await work(item);
      } catch (err) {
        errors.push({ item, err });
      }
    }
  });
  await Promise.all(runners);
  return errors;
}
