// DistStore browser UI. Plain JavaScript, no build step, no dependencies.
//
// The page talks only to the public REST API under /api/v1 and to its event
// stream. Lists are paged by the server so that 100,000 names stay fast: the
// page never asks for more than one page of names at a time.
'use strict';

(() => {
  const API = '/api/v1';
  // Parallel uploads: browsers allow ~6 connections per host over HTTP/1.1;
  // the event stream holds one and list/info requests need a few more.
  const MAX_PARALLEL_UPLOADS = 3;
  const ID_SHORT = 12;

  // Knobs for tests and operators. `skipSizeCheck` sends files even when they
  // exceed the node's advertised limit, so the server's own check can be seen.
  const knobs = { skipSizeCheck: false };
  window.diststore = knobs;

  const state = {
    status: null, // last /status answer
    list: {
      prefix: '',
      sort: 'name',
      order: 'asc',
      limit: 50,
      page: 0,
      // cursors[i] is the `after` value that fetches page i (name/asc only).
      cursors: [null],
      total: 0,
      files: [],
      seq: 0, // guards against answers arriving out of order
      controller: null,
    },
    uploads: [],
  };

  // ---------------------------------------------------------------------------
  // Small helpers

  const $ = (id) => document.getElementById(id);

  // Builds an element: el('a', {href: '/x', class: 'c'}, 'text', child).
  // Attributes with null/undefined/false values are left out.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function formatBytes(n) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
    let i = 0;
    let v = n;
    while (v >= 1024 && i < UNITS.length - 1) {
      v /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${UNITS[i]}`;
  }

  const numberFormat = new Intl.NumberFormat();
  const formatCount = (n) => (typeof n === 'number' ? numberFormat.format(n) : '—');

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  function formatTime(iso) {
    const d = iso ? new Date(iso) : null;
    return d && !Number.isNaN(d.getTime()) ? dateFormat.format(d) : '—';
  }

  function relativeTime(iso) {
    if (!iso) return 'never';
    const t = new Date(iso).getTime();
    if (Number.isNaN(t)) return '—';
    const s = Math.round((Date.now() - t) / 1000);
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function formatDuration(secs) {
    if (typeof secs !== 'number') return '—';
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min`;
    return `${secs} s`;
  }

  // Names are path-like: encode each segment, keep the slashes between them, so
  // URLs stay readable. A browser resolves "." and ".." segments (also written
  // %2e) and turns "\\" into "/" before sending, which would act on another
  // name; such a name (the node refuses new ones, an older node may hold them)
  // goes as one segment with its slashes encoded, which no browser rewrites.
  const encodeName = (name) => {
    const segments = name.split('/');
    const rewritten = name.includes('\\') || segments.some((s) => s === '.' || s === '..');
    return rewritten ? encodeURIComponent(name) : segments.map(encodeURIComponent).join('/');
  };
  const baseName = (name) => name.slice(name.lastIndexOf('/') + 1) || name;

  // Plain links (download, open) and the event stream carry the session
  // cookie set at sign-in; the token itself never appears in a URL.
  function fileUrl(name, download) {
    return `${API}/files/${encodeName(name)}${download ? '?download=1' : ''}`;
  }

  const shellQuote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

  function curlCommand(name) {
    const url = `${location.origin}${API}/files/${encodeName(name)}`;
    // The page never sees the token (the cookie is HttpOnly): the command reads it from the shell.
    const auth = state.status && state.status.auth_required ? ' -H "Authorization: Bearer $DISTSTORE_API_TOKEN"' : '';
    return `curl -fL${auth} -o ${shellQuote(baseName(name))} ${shellQuote(url)}`;
  }

  // ---------------------------------------------------------------------------
  // Announcements: a toast for everyone, a polite live region for screen readers.

  let toastTimer = 0;
  function notify(message, kind = 'info') {
    const toast = $('toast');
    toast.textContent = message;
    toast.dataset.kind = kind;
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; }, kind === 'error' ? 8000 : 3500);
  }

  function announce(message) {
    // Clearing first makes screen readers repeat an identical message.
    const region = $('announce');
    region.textContent = '';
    setTimeout(() => { region.textContent = message; }, 50);
  }

  // ---------------------------------------------------------------------------
  // API access and the token dialog

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The API words its errors in {"error": "..."}; show them as they are.
  function errorText(status, bodyText, statusText) {
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

  let tokenPrompt = null; // one dialog at a time, shared by every caller
  let tokenDeclined = false;
  // Bumped at each sign-in: a request refused before it need not ask again.
  let signIns = 0;

  // Called when a request answered 401 (sent after `seenSignIns` sign-ins).
  // Resolves to true when the user signed in (retry), false when they declined.
  function obtainToken(seenSignIns, serverMessage) {
    if (signIns !== seenSignIns) return Promise.resolve(true);
    if (tokenDeclined) return Promise.resolve(false);
    if (!tokenPrompt) {
      tokenPrompt = askToken(seenSignIns > 0 ? serverMessage : '').finally(() => { tokenPrompt = null; });
    }
    return tokenPrompt;
  }

  // Asks for the token until the node accepts it (or the user cancels), and
  // signs in with it: the node answers with an HttpOnly, SameSite=Strict
  // session cookie, so the token is sent once and kept nowhere in the page.
  async function askToken(rejection) {
    const dialog = $('token-dialog');
    const input = $('token-input');
    const error = $('token-error');
    for (;;) {
      // A refused token gets the server's own words; a first question doesn't
      // need an error at all.
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
        tokenDeclined = true;
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
        signIns += 1;
        state.list.rendered = false;
        return true;
      }
      const text = await response.text().catch(() => '');
      rejection = errorText(response.status, text, response.statusText);
    }
  }

  async function signOut() {
    await fetch(`${API}/session`, { method: 'DELETE' }).catch(() => {});
    location.reload();
  }

  // fetch() wrapper: turns error answers into ApiError with the server's
  // wording, and asks for the token (once) on 401.
  async function api(path, options = {}) {
    for (;;) {
      const seen = signIns;
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

  const apiJson = async (path, options) => (await api(path, options)).json();

  // ---------------------------------------------------------------------------
  // Node status and live updates (server-sent events)

  function setConnection(kind, text) {
    const conn = $('conn');
    if (conn.dataset.state === kind) return;
    conn.dataset.state = kind;
    $('conn-text').textContent = text;
    if (kind === 'live' || kind === 'offline') announce(text);
  }

  function applyStatus(status) {
    // Merge: an event may carry fewer fields than /status does.
    state.status = { ...state.status, ...status };
    status = state.status;
    $('sign-out').hidden = !status.auth_required;
    const limit = status.max_upload_bytes;
    $('upload-limit').textContent = limit
      ? `Up to ${formatBytes(limit)} per file on this node.`
      : 'No size limit per file on this node.';
    renderCluster();
  }

  async function loadStatus() {
    try {
      applyStatus(await apiJson('/status'));
      return true;
    } catch (err) {
      setConnection('offline', 'Offline');
      showListError(err);
      return false;
    }
  }

  let events = null;
  let reconnectDelay = 1000;

  function connectEvents() {
    if (events) events.close();
    const source = new EventSource(`${API}/events`);
    events = source;
    source.addEventListener('open', () => {
      reconnectDelay = 1000;
      setConnection('live', 'Live');
      // Whatever changed while we were away shows up now.
      scheduleRefresh();
    });
    source.addEventListener('status', (e) => {
      const status = parseEvent(e);
      if (status) applyStatus(status);
    });
    source.addEventListener('file', (e) => {
      const change = parseEvent(e);
      if (!change) return;
      if (change.name.startsWith(state.list.prefix)) scheduleRefresh();
      if (change.op === 'delete' && openDetailsName === change.name) {
        $('details-content').prepend(el('p', { class: 'error', role: 'alert' }, 'This file has just been deleted.'));
      }
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CONNECTING) {
        // The browser retries on its own.
        setConnection('reconnecting', 'Reconnecting…');
        return;
      }
      // CLOSED: the server answered with an error (e.g. 401) and the browser
      // gave up. Check the node ourselves (this asks for a token if needed),
      // then open a new stream, backing off while it keeps failing.
      setConnection('offline', 'Offline');
      source.close();
      if (events === source) events = null;
      const delay = reconnectDelay;
      reconnectDelay = Math.min(reconnectDelay * 2, 30000);
      setTimeout(async () => {
        await loadStatus();
        if (!events) connectEvents();
      }, delay);
    });
  }

  function parseEvent(e) {
    try {
      return JSON.parse(e.data);
    } catch (_) {
      return null;
    }
  }

  // ---------------------------------------------------------------------------
  // File list

  // Cursor paging (`after`) is cheap on the server but only exists for the
  // name order; every other order pages by offset.
  const usesCursor = () => state.list.sort === 'name' && state.list.order === 'asc';

  function listQuery() {
    const L = state.list;
    const q = new URLSearchParams({ limit: String(L.limit), sort: L.sort, order: L.order });
    if (L.prefix) q.set('prefix', L.prefix);
    if (usesCursor()) {
      const after = L.cursors[L.page];
      if (after !== null && after !== undefined) q.set('after', after);
    } else if (L.page > 0) {
      q.set('offset', String(L.page * L.limit));
    }
    return q;
  }

  let refreshTimer = 0;
  let refreshPending = false;
  // Coalesces bursts of changes (many uploads elsewhere) into few reloads:
  // at most one is waiting and one in flight, so a steady stream of events
  // can neither starve the list nor flood the node.
  function scheduleRefresh(delay = 300) {
    if (state.list.controller) {
      refreshPending = true; // reload once the one in flight lands
      return;
    }
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = 0;
      loadList();
    }, delay);
  }

  async function loadList() {
    const L = state.list;
    const seq = ++L.seq;
    // A newer question (search, sort, page) makes the old answer useless.
    if (L.controller) L.controller.abort();
    L.controller = new AbortController();
    refreshPending = false;
    $('file-table').setAttribute('aria-busy', 'true');
    try {
      const body = await apiJson(`/files?${listQuery()}`, { signal: L.controller.signal });
      if (seq !== L.seq) return;
      // A page emptied by deletes: step back rather than show nothing.
      if (body.files.length === 0 && L.page > 0) {
        L.page -= 1;
        return loadList();
      }
      // Unchanged pages are not rebuilt: no flicker, no screen reader churn.
      const same = JSON.stringify(body.files) === JSON.stringify(L.files) && body.total === L.total;
      L.files = body.files;
      L.total = typeof body.total === 'number' ? body.total : null;
      L.next = body.next;
      if (usesCursor()) L.cursors[L.page + 1] = body.next;
      hideListError();
      if (!same || !L.rendered) renderRows();
      L.rendered = true;
      renderPager();
    } catch (err) {
      if (err.name === 'AbortError' || seq !== L.seq) return;
      showListError(err);
    } finally {
      if (seq === L.seq) {
        $('file-table').removeAttribute('aria-busy');
        L.controller = null;
        if (refreshPending) {
          refreshPending = false;
          scheduleRefresh();
        }
      }
    }
  }

  function showListError(err) {
    const box = $('list-error');
    box.replaceChildren(err.status === 401 ? 'An API token is needed to see the files.' : err.message);
    if (err.status === 401) {
      box.append(' ', el('button', { type: 'button', 'data-testid': 'enter-token' }, 'Enter API token'));
      box.querySelector('button').addEventListener('click', () => {
        tokenDeclined = false;
        start();
      });
    }
    box.hidden = false;
  }

  function hideListError() {
    $('list-error').hidden = true;
  }

  function resetPaging() {
    state.list.page = 0;
    state.list.cursors = [null];
  }

  function renderRows() {
    const L = state.list;
    const tbody = $('file-rows');
    // Rebuilding rows must not throw keyboard users back to the top: remember
    // which control of which row had focus and put focus back afterwards.
    const active = document.activeElement;
    const focusRow = active && tbody.contains(active) ? active.closest('tr')?.dataset.name : null;
    const focusAction = focusRow ? active.dataset.action : null;

    tbody.replaceChildren(...L.files.map(fileRow));

    if (focusRow !== null && focusRow !== undefined) {
      const row = [...tbody.rows].find((r) => r.dataset.name === focusRow);
      const target = row?.querySelector(`[data-action="${focusAction}"]`) || row?.querySelector('button');
      if (target) target.focus();
      else $('list-heading').focus();
    }

    const empty = $('list-empty');
    empty.hidden = L.files.length > 0;
    empty.textContent = L.prefix ? `No file name starts with “${L.prefix}”.` : 'No files stored yet. Upload some above.';
    $('list-count').textContent = L.total === null
      ? ''
      : L.prefix
        ? `${formatCount(L.total)} ${L.total === 1 ? 'file matches' : 'files match'}`
        : `${formatCount(L.total)} ${L.total === 1 ? 'file' : 'files'}`;
  }

  function fileRow(f) {
    const short = f.id.slice(0, ID_SHORT);
    return el('tr', { 'data-testid': 'file-row', dataset: { name: f.name } },
      el('th', { scope: 'row', class: 'name', 'data-label': 'Name' },
        el('button', { type: 'button', class: 'linklike', 'data-action': 'details', 'data-testid': 'file-details',
          title: 'Show details' }, f.name)),
      el('td', { class: 'num', 'data-label': 'Size' },
        el('span', { title: `${formatCount(f.size)} bytes` }, formatBytes(f.size))),
      el('td', { 'data-label': 'Modified' }, el('time', { datetime: f.modified, title: f.modified }, formatTime(f.modified))),
      el('td', { class: 'id', 'data-label': 'Id' },
        el('code', { title: f.id }, short),
        el('button', { type: 'button', class: 'small', 'data-action': 'copy-id', 'data-testid': 'copy-id',
          'aria-label': `Copy content id of ${f.name}` }, 'Copy')),
      el('td', { class: 'actions' }, rowActions(f.name)));
  }

  function rowActions(name) {
    return [
      el('a', { class: 'button small', href: fileUrl(name, true), download: baseName(name), 'data-action': 'download',
        'data-testid': 'download', 'aria-label': `Download ${name}` }, 'Download'),
      el('a', { class: 'button small', href: fileUrl(name, false), target: '_blank', rel: 'noopener', 'data-action': 'open',
        'data-testid': 'open', 'aria-label': `Open ${name} in a new tab` }, 'Open'),
      el('button', { type: 'button', class: 'small', 'data-action': 'curl', 'data-testid': 'copy-curl',
        'aria-label': `Copy a curl command that fetches ${name}` }, 'curl'),
      el('button', { type: 'button', class: 'small danger', 'data-action': 'delete', 'data-testid': 'delete',
        'aria-label': `Delete ${name}` }, 'Delete'),
    ];
  }

  function renderPager() {
    const L = state.list;
    const pages = L.total ? Math.max(1, Math.ceil(L.total / L.limit)) : 1;
    const hasNext = usesCursor() ? L.next !== null && L.next !== undefined : (L.page + 1) * L.limit < (L.total || 0);
    $('page-first').disabled = L.page === 0;
    $('page-prev').disabled = L.page === 0;
    $('page-next').disabled = !hasNext;
    const from = L.files.length ? L.page * L.limit + 1 : 0;
    const to = L.page * L.limit + L.files.length;
    $('page-info').textContent = L.total
      ? `Page ${formatCount(L.page + 1)} of ${formatCount(pages)} (${formatCount(from)}–${formatCount(to)})`
      : '';
  }

  function renderSortHeaders() {
    const L = state.list;
    for (const th of document.querySelectorAll('#file-table th[data-sort]')) {
      if (th.dataset.sort === L.sort) th.setAttribute('aria-sort', L.order === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    $('sort').value = L.sort;
    $('order').value = L.order;
  }

  function setSort(sort, order) {
    state.list.sort = sort;
    state.list.order = order;
    resetPaging();
    renderSortHeaders();
    loadList();
  }

  // ---------------------------------------------------------------------------
  // Row actions: copy, delete, details

  async function copyText(text, what) {
    try {
      await navigator.clipboard.writeText(text);
      notify(`Copied ${what}.`);
      return;
    } catch (_) {
      // The async clipboard needs a secure context and permission; try the
      // older path before asking the user to copy by hand.
    }
    const area = el('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true' });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch (_) {
      ok = false;
    }
    area.remove();
    if (ok) {
      notify(`Copied ${what}.`);
      return;
    }
    $('copy-text').value = text;
    $('copy-dialog').showModal();
    $('copy-text').select();
  }

  function confirmDialog(text) {
    const dialog = $('confirm-dialog');
    $('confirm-text').textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.returnValue = '';
      dialog.showModal();
    });
  }

  async function deleteFile(name) {
    if (!(await confirmDialog(`“${name}” will be deleted from the whole cluster. This cannot be undone.`))) return;
    try {
      await api(`/files/${encodeName(name)}`, { method: 'DELETE' });
      notify(`Deleted ${name}.`);
      // The row is gone; give focus a stable place instead of <body>.
      if (document.activeElement === document.body || !document.activeElement) $('list-heading').focus();
      scheduleRefresh(0);
    } catch (err) {
      notify(`Could not delete ${name}: ${err.message}`, 'error');
    }
  }

  let openDetailsName = null;

  async function showDetails(name) {
    const dialog = $('details-dialog');
    const content = $('details-content');
    openDetailsName = name;
    $('details-title').textContent = name;
    content.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
    $('details-actions').replaceChildren(...rowActions(name).map((a) => {
      a.classList.remove('small');
      return a;
    }));
    if (!dialog.open) dialog.showModal();
    try {
      const info = await apiJson(`/info/${encodeName(name)}`);
      if (openDetailsName !== name) return;
      content.replaceChildren(detailsList(info));
    } catch (err) {
      content.replaceChildren(el('p', { class: 'error', role: 'alert' }, err.message));
    }
  }

  function detailsList(info) {
    const savings = info.size ? Math.round((100 * info.shared_bytes) / info.size) : 0;
    const holders = el('ul', { class: 'holders', 'data-testid': 'details-holders' },
      (info.holders || []).map((h) => el('li', {},
        el('code', { title: h.node_id }, h.node_id.slice(0, ID_SHORT)), ' ',
        el('span', { class: 'muted' }, h.url || ''),
        typeof h.chunks === 'number' ? el('span', { class: 'muted' }, ` · ${formatCount(h.chunks)} ${h.chunks === 1 ? 'chunk' : 'chunks'}`) : null,
        h.self ? el('span', { class: 'badge' }, 'this node') : null)));
    const rows = [
      ['Size', `${formatBytes(info.size)} (${formatCount(info.size)} bytes)`],
      ['Content type', info.content_type || '—'],
      ['Modified', formatTime(info.modified)],
      ['Content id', el('span', { class: 'id-full' }, el('code', { 'data-testid': 'details-id' }, info.id), ' ',
        el('button', { type: 'button', class: 'small', 'data-copy': info.id, 'aria-label': 'Copy content id' }, 'Copy'))],
      ['Chunks', `${formatCount(info.chunks)} (${formatCount(info.distinct_chunks)} distinct)`],
      ['Unique to this file', formatBytes(info.unique_bytes)],
      ['Dedup savings', `${formatBytes(info.shared_bytes)} shared with other files (${savings} %)`],
      [`Held by ${formatCount((info.holders || []).length)} node(s)`, holders],
    ];
    return el('dl', { class: 'details' }, rows.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  }

  function onRowAction(event) {
    const target = event.target.closest('[data-action]');
    if (!target) return;
    const name = target.closest('tr')?.dataset.name;
    if (name === undefined) return;
    switch (target.dataset.action) {
      case 'details': showDetails(name); break;
      case 'copy-id': {
        const file = state.list.files.find((f) => f.name === name);
        if (file) copyText(file.id, 'content id');
        break;
      }
      case 'curl': copyText(curlCommand(name), 'curl command'); break;
      case 'delete': deleteFile(name); break;
      default: break; // links (download/open) do their own thing
    }
  }

  function onDetailsAction(event) {
    const copy = event.target.closest('[data-copy]');
    if (copy) {
      event.preventDefault();
      copyText(copy.dataset.copy, 'content id');
      return;
    }
    const target = event.target.closest('[data-action]');
    if (!target || !openDetailsName) return;
    const name = openDetailsName;
    if (target.dataset.action === 'curl') {
      event.preventDefault();
      copyText(curlCommand(name), 'curl command');
    } else if (target.dataset.action === 'delete') {
      event.preventDefault();
      $('details-dialog').close();
      deleteFile(name);
    }
  }

  // ---------------------------------------------------------------------------
  // Uploads

  // One upload: a File sent as the raw body of a PUT. XMLHttpRequest streams
  // the File from disk (never read into memory) and, unlike fetch(), reports
  // upload progress.
  class Upload {
    constructor(file) {
      this.file = file;
      this.name = file.name;
      this.xhr = null;
      this.view = uploadView(this);
      this.setState('queued', 'Waiting…');
    }

    setState(kind, message) {
      this.state = kind;
      this.view.item.dataset.state = kind;
      this.view.stateLabel.textContent = {
        queued: 'Queued', uploading: 'Uploading', processing: 'Storing', done: 'Stored', error: 'Failed', cancelled: 'Cancelled',
      }[kind];
      this.view.message.textContent = message || '';
      const finished = kind === 'done' || kind === 'error' || kind === 'cancelled';
      this.view.cancel.hidden = finished;
      this.view.retry.hidden = !(kind === 'error' || kind === 'cancelled');
      this.view.item.classList.toggle('failed', kind === 'error');
      $('upload-tools').hidden = !state.uploads.some((u) => u.finished());
    }

    finished() {
      return this.state === 'done' || this.state === 'error' || this.state === 'cancelled';
    }

    setProgress(sent) {
      const total = this.file.size;
      const percent = total ? Math.floor((100 * sent) / total) : 100;
      this.view.progress.value = percent;
      this.view.progress.dataset.percent = String(percent);
      this.view.progress.setAttribute('aria-valuetext', `${percent} percent`);
      this.view.bytes.textContent = `${formatBytes(sent)} of ${formatBytes(total)} (${percent} %)`;
    }

    tooLarge() {
      const limit = state.status && state.status.max_upload_bytes;
      return Boolean(limit) && this.file.size > limit;
    }

    start() {
      this.attempts = (this.attempts || 0) + 1;
      this.view.item.dataset.attempts = String(this.attempts);
      if (this.tooLarge() && !knobs.skipSizeCheck) {
        this.fail(`Too large: ${formatBytes(this.file.size)} is over this node's limit of ${formatBytes(state.status.max_upload_bytes)} per file.`);
        return;
      }
      const xhr = new XMLHttpRequest();
      const used = signIns;
      this.xhr = xhr;
      xhr.open('PUT', `${API}/files/${encodeName(this.name)}`);
      xhr.setRequestHeader('Content-Type', this.file.type || 'application/octet-stream');
      xhr.upload.onprogress = (e) => this.setProgress(e.loaded);
      // All bytes are sent; the node now chunks, encrypts and replicates them.
      xhr.upload.onload = () => {
        this.setProgress(this.file.size);
        if (this.state === 'uploading') this.setState('processing', 'Sent; waiting for the node to store it…');
      };
      xhr.onload = () => this.onAnswer(xhr, used);
      xhr.onerror = () => this.fail(this.networkMessage());
      xhr.onabort = () => {
        if (this.state !== 'cancelled') this.setState('cancelled', 'Cancelled.');
        pumpUploads(); // a slot is free
      };
      this.setState('uploading', '');
      this.setProgress(0);
      xhr.send(this.file);
    }

    async onAnswer(xhr, used) {
      if (xhr.status === 401) {
        this.setState('queued', 'Waiting for an API token…');
        if (await obtainToken(used, errorText(401, xhr.responseText, xhr.statusText))) {
          this.start();
          return;
        }
        this.fail(errorText(401, xhr.responseText, xhr.statusText));
        return;
      }
      if (xhr.status !== 200 && xhr.status !== 201) {
        this.fail(errorText(xhr.status, xhr.responseText, xhr.statusText), xhr.status);
        return;
      }
      let body = {};
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        // The file is stored even if the answer is odd; say so plainly.
      }
      this.setProgress(this.file.size);
      const parts = [];
      if (typeof body.new_bytes === 'number') parts.push(`${formatBytes(body.new_bytes)} newly stored`);
      if (typeof body.chunks === 'number') parts.push(`${formatCount(body.chunks)} ${body.chunks === 1 ? 'chunk' : 'chunks'}`);
      if (body.id) parts.push(`id ${body.id.slice(0, ID_SHORT)}`);
      this.setState('done', parts.join(' · '));
      announce(`Uploaded ${this.name}.`);
      pumpUploads(); // a slot is free
      scheduleRefresh();
    }

    // XHR gives no detail on network errors; say what most likely happened.
    networkMessage() {
      if (!navigator.onLine) return 'Network error: this device is offline. Retry when it is back online.';
      if (this.tooLarge()) {
        return `The node refused the file: it is over the node's limit of ${formatBytes(state.status.max_upload_bytes)} per file.`;
      }
      return 'Network error: the connection to the node was lost before it answered. Retry when it is reachable.';
    }

    fail(message, status) {
      this.setState('error', message);
      if (status) this.view.message.dataset.status = String(status);
      announce(`Upload of ${this.name} failed: ${message}`);
      pumpUploads(); // a slot is free
    }

    cancel() {
      if (this.xhr && !this.finished()) {
        // Once every byte is sent the node may finish storing the file even
        // though we stop waiting; say so rather than promise it is gone.
        const late = this.state === 'processing';
        this.setState('cancelled', late ? 'Cancelled after sending; the node may still have stored it.' : 'Cancelled.');
        this.xhr.abort(); // fires onabort, which frees the slot
        if (late) scheduleRefresh(1000);
      } else if (this.state === 'queued') {
        this.setState('cancelled', 'Cancelled.');
        pumpUploads(); // a slot is free
      }
      announce(`Upload of ${this.name} cancelled.`);
    }

    retry() {
      this.xhr = null;
      this.view.progress.value = 0;
      delete this.view.message.dataset.status;
      this.setState('queued', 'Waiting…');
      pumpUploads();
    }
  }

  function uploadView(upload) {
    const id = `upload-${Math.random().toString(36).slice(2, 10)}`;
    const stateLabel = el('span', { class: 'upload-state', 'data-testid': 'upload-state' });
    const progress = el('progress', { max: '100', value: '0', 'data-testid': 'upload-progress', 'aria-labelledby': `${id}-name` });
    const bytes = el('span', { class: 'muted', 'data-testid': 'upload-bytes' }, `0 B of ${formatBytes(upload.file.size)}`);
    const message = el('span', { class: 'upload-message', 'data-testid': 'upload-message' });
    const cancel = el('button', { type: 'button', class: 'small', 'data-testid': 'upload-cancel',
      'aria-label': `Cancel upload of ${upload.name}` }, 'Cancel');
    const retry = el('button', { type: 'button', class: 'small', 'data-testid': 'upload-retry', hidden: true,
      'aria-label': `Retry upload of ${upload.name}` }, 'Retry');
    cancel.addEventListener('click', () => upload.cancel());
    retry.addEventListener('click', () => upload.retry());
    const item = el('li', { class: 'upload-item', 'data-testid': 'upload-item', dataset: { name: upload.name } },
      el('div', { class: 'upload-line' },
        el('span', { class: 'upload-name', id: `${id}-name` }, upload.name), stateLabel, cancel, retry),
      progress,
      el('div', { class: 'upload-line' }, bytes, message));
    return { item, stateLabel, progress, bytes, message, cancel, retry };
  }

  function addFiles(files) {
    const list = [...files];
    if (!list.length) return;
    // Newest batch on top, each batch in the order the files were chosen.
    const batch = list.map((file) => new Upload(file));
    state.uploads.push(...batch);
    $('uploads').prepend(...batch.map((u) => u.view.item));
    announce(`${list.length} ${list.length === 1 ? 'file' : 'files'} added to the upload queue.`);
    pumpUploads();
  }

  // Starts queued uploads while fewer than MAX_PARALLEL_UPLOADS are running.
  function pumpUploads() {
    const running = state.uploads.filter((u) => u.state === 'uploading' || u.state === 'processing').length;
    let free = MAX_PARALLEL_UPLOADS - running;
    for (const upload of state.uploads) {
      if (free <= 0) break;
      if (upload.state === 'queued' && !upload.xhr) {
        free -= 1;
        upload.start();
      }
    }
  }

  function clearFinishedUploads() {
    state.uploads = state.uploads.filter((u) => {
      if (u.finished()) u.view.item.remove();
      return !u.finished();
    });
    $('upload-tools').hidden = true;
    $('choose-files').focus();
  }

  // Drops anywhere on the page count; folders are refused with a message
  // because the browser would hand us an unreadable zero-byte "file".
  function setupDragAndDrop() {
    const zone = $('dropzone');
    let depth = 0;
    const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
    window.addEventListener('dragenter', (e) => {
      if (!hasFiles(e)) return;
      depth += 1;
      zone.classList.add('dragging');
    });
    window.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove('dragging');
    });
    window.addEventListener('dragover', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    window.addEventListener('drop', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0;
      zone.classList.remove('dragging');
      const items = [...(e.dataTransfer.items || [])];
      const folders = items.filter((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()?.isDirectory).length;
      const files = [...e.dataTransfer.files].filter((_, idx) => !(items[idx]?.webkitGetAsEntry?.()?.isDirectory));
      if (folders) notify('Folders cannot be uploaded; drop the files inside them instead.', 'error');
      if (location.hash === '#cluster') location.hash = '#files';
      addFiles(files);
    });
  }

  // ---------------------------------------------------------------------------
  // Cluster view

  function renderCluster() {
    const s = state.status;
    if (!s) return;
    const peers = s.peers || [];
    const nodes = [
      { node_id: s.node_id, url: s.url || location.origin, state: 'up', last_seen: null, stored_bytes: s.stored_bytes, self: true },
      ...peers,
    ];
    const up = nodes.filter((n) => n.state === 'up').length;
    const storedAll = nodes.reduce((sum, n) => sum + (n.stored_bytes || 0), 0);
    const saved = (s.logical_bytes || 0) - (s.unique_bytes || 0);
    const ratio = typeof s.dedup_ratio === 'number' ? `${s.dedup_ratio.toFixed(2)}×` : '—';
    const totals = [
      ['Files', formatCount(s.files), 'files'],
      ['Logical size', formatBytes(s.logical_bytes), 'logical'],
      ['Unique content', formatBytes(s.unique_bytes), 'unique'],
      ['Dedup ratio', saved > 0 ? `${ratio} (saves ${formatBytes(saved)})` : ratio, 'dedup'],
      ['Stored on all nodes', formatBytes(storedAll), 'stored'],
      ['Replication', s.replication ? `${s.replication} ${s.replication === 1 ? 'copy' : 'copies'}` : '—', 'replication'],
      ['Nodes up', `${up} of ${nodes.length}`, 'nodes-up'],
      ['Chunks', formatCount(s.chunks), 'chunks'],
      ['Upload limit', s.max_upload_bytes ? formatBytes(s.max_upload_bytes) : 'none', 'limit'],
      ['Repair', repairSummary(s.repair), 'repair'],
      ['Scrub', scrubSummary(s.scrub), 'scrub'],
      ['This node', `${s.node_id.slice(0, ID_SHORT)} · v${s.version} · up ${formatDuration(s.uptime_secs)}`, 'self'],
    ];
    $('totals').replaceChildren(...totals.map(([k, v, t]) => el('div', { class: 'stat', 'data-testid': `total-${t}` },
      el('dt', {}, k), el('dd', {}, v))));
    $('node-rows').replaceChildren(...nodes.map(nodeRow));
  }

  // This node's repair loop: chunks it should hold but lacks, and what it has moved so far.
  function repairSummary(r) {
    if (!r || !r.passes) return 'not run yet';
    const pending = r.missing > 0 ? `${formatCount(r.missing)} chunks to fetch` : 'in sync';
    return `${pending} · ${formatCount(r.fetched)} fetched, ${formatCount(r.dropped)} handed off`;
  }

  // This node's scrub: stored chunks re-verified since start, and damaged copies it dropped.
  function scrubSummary(r) {
    if (!r) return '—';
    if (!r.rate) return 'off';
    const passes = r.passes ? `${formatCount(r.passes)} ${r.passes === 1 ? 'pass' : 'passes'}` : 'first pass running';
    const checked = `${passes}, ${formatCount(r.checked)} chunks checked`;
    if (r.corrupt > 0) return `${checked} · ${formatCount(r.corrupt)} damaged, dropped for repair`;
    return r.passes ? `${checked} · none damaged` : checked;
  }

  function nodeRow(n) {
    const seen = n.self ? 'this node' : relativeTime(n.last_seen);
    return el('tr', { 'data-testid': 'node-row', dataset: { nodeId: n.node_id, state: n.state } },
      el('th', { scope: 'row', 'data-label': 'Node' }, el('code', { title: n.node_id }, n.node_id.slice(0, ID_SHORT)),
        n.self ? el('span', { class: 'badge' }, 'this node') : null),
      el('td', { 'data-label': 'Address' }, n.url || '—'),
      el('td', { 'data-label': 'State' }, el('span', { class: `state state-${n.state}` }, n.state === 'up' ? 'Up' : 'Down')),
      el('td', { 'data-label': 'Last seen' }, n.last_seen
        ? el('time', { datetime: n.last_seen, title: formatTime(n.last_seen) }, seen)
        : seen),
      el('td', { class: 'num', 'data-label': 'Stored' }, formatBytes(n.stored_bytes)));
  }

  // ---------------------------------------------------------------------------
  // Views and wiring

  function showView(fromUser) {
    const cluster = location.hash === '#cluster';
    $('view-files').hidden = cluster;
    $('view-cluster').hidden = !cluster;
    $('nav-files').removeAttribute('aria-current');
    $('nav-cluster').removeAttribute('aria-current');
    $(cluster ? 'nav-cluster' : 'nav-files').setAttribute('aria-current', 'page');
    document.title = cluster ? 'Cluster · DistStore' : 'DistStore';
    // Moving focus to the new view's heading tells screen readers the page changed.
    if (fromUser) $(cluster ? 'cluster-heading' : 'files-heading').focus();
  }

  function wire() {
    const input = $('file-input');
    $('choose-files').addEventListener('click', () => input.click());
    input.addEventListener('change', () => {
      addFiles(input.files);
      input.value = ''; // choosing the same file again must fire `change`
    });
    $('clear-uploads').addEventListener('click', clearFinishedUploads);
    setupDragAndDrop();

    let searchTimer = 0;
    $('search').addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        state.list.prefix = $('search').value;
        resetPaging();
        loadList();
      }, 200);
    });
    $('list-controls').addEventListener('submit', (e) => e.preventDefault());
    $('sort').addEventListener('change', () => setSort($('sort').value, state.list.order));
    $('order').addEventListener('change', () => setSort(state.list.sort, $('order').value));
    $('page-size').addEventListener('change', () => {
      state.list.limit = Number($('page-size').value);
      resetPaging();
      loadList();
    });
    for (const button of document.querySelectorAll('.sort-button')) {
      button.addEventListener('click', () => {
        const sort = button.dataset.sort;
        const L = state.list;
        // Same column flips the order; a new column starts with the useful
        // end first (A→Z, biggest, newest).
        if (L.sort === sort) setSort(sort, L.order === 'asc' ? 'desc' : 'asc');
        else setSort(sort, sort === 'name' ? 'asc' : 'desc');
      });
    }

    $('page-first').addEventListener('click', () => { resetPaging(); loadList(); });
    $('page-prev').addEventListener('click', () => {
      state.list.page = Math.max(0, state.list.page - 1);
      loadList();
    });
    $('page-next').addEventListener('click', () => {
      state.list.page += 1;
      loadList();
    });

    $('file-rows').addEventListener('click', onRowAction);
    $('details-dialog').addEventListener('click', onDetailsAction);
    $('details-dialog').addEventListener('close', () => { openDetailsName = null; });

    window.addEventListener('hashchange', () => showView(true));
    // Relative times ("12 s ago") go stale; refresh them while visible.
    setInterval(() => { if (location.hash === '#cluster') renderCluster(); }, 5000);
    window.addEventListener('online', () => notify('Back online.'));
    window.addEventListener('offline', () => notify('This device is offline.', 'error'));
  }

  async function start() {
    if (await loadStatus()) {
      connectEvents();
      await loadList();
    }
  }

  wire();
  $('sign-out').addEventListener('click', signOut);
  renderSortHeaders();
  showView(false);
  start();
})();
