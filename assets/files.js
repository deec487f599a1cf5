// The file manager: the view in the URL (folder, search, sort, page), the
// listing with folders and a breadcrumb, the grid of thumbnails, selection,
// and what can be done to files and folders (details, previews, rename and
// move, copy, delete, share, download).

import {
  $, API, ID_SHORT, announce, baseName, confirmDialog, copyText, el, encodeName, fileUrl, formatBytes, formatCount,
  formatTime, isFolder, notify, parentOf, plural, promptDialog,
} from './util.js';
import {
  ApiError, api, apiJson, countUnder, downloadZip, eachLimited, namesUnder, postJson,
} from './api.js';
import { health } from './health.js';
import { previewKind, renderPreview } from './preview.js';

// ---------------------------------------------------------------------------
// The view, kept in the URL hash so it can be bookmarked, shared, and
// walked with back and forward: #files?path=a/b/&q=x&sort=size&order=desc&after=…

const DEFAULTS = { path: '', q: '', sort: 'name', order: 'asc', after: '', offset: 0, limit: 50, layout: 'list' };

export function viewFromHash(hash = location.hash) {
  const [head, query = ''] = hash.replace(/^#/, '').split('?');
  const p = new URLSearchParams(query);
  const v = { ...DEFAULTS, page: head === 'cluster' ? 'cluster' : 'files' };
  if (p.has('path')) v.path = p.get('path');
  if (v.path && !v.path.endsWith('/')) v.path += '/';
  if (p.has('q')) v.q = p.get('q');
  if (['name', 'size', 'modified'].includes(p.get('sort'))) v.sort = p.get('sort');
  if (['asc', 'desc'].includes(p.get('order'))) v.order = p.get('order');
  if (p.has('after')) v.after = p.get('after');
  const offset = Number(p.get('offset'));
  if (Number.isInteger(offset) && offset > 0) v.offset = offset;
  const limit = Number(p.get('limit'));
  if ([25, 50, 100, 250].includes(limit)) v.limit = limit;
  if (p.get('layout') === 'grid') v.layout = 'grid';
  return v;
}

function hashOf(v) {
  const p = new URLSearchParams();
  for (const key of ['path', 'q', 'sort', 'order', 'after', 'offset', 'limit', 'layout']) {
    if (v[key] !== DEFAULTS[key] && v[key] !== undefined && v[key] !== null) p.set(key, String(v[key]));
  }
  const query = p.toString();
  return `#files${query ? `?${query}` : ''}`;
}

// Changes the view: a new history entry (back returns), or `replace` while typing.
export function go(changes, { replace = false } = {}) {
  const next = { ...list.view, ...changes };
  // Anything but a page move starts again at the first page.
  if (!('after' in changes) && !('offset' in changes)) {
    next.after = '';
    next.offset = 0;
  }
  const hash = hashOf(next);
  if (hash === location.hash) return;
  if (replace) {
    history.replaceState(null, '', hash);
    onRoute();
  } else {
    location.hash = hash; // hashchange calls onRoute
  }
}

// ---------------------------------------------------------------------------
// State of the listing

const list = {
  view: viewFromHash(),
  items: [], // rendered order: folders then files; {key, folder, file?}
  total: null,
  next: null,
  seq: 0, // guards against answers arriving out of order
  controller: null,
  rendered: false,
  selected: new Set(),
  lastChecked: null, // index of the last checkbox clicked (shift-click ranges)
  counts: new Map(), // folder -> names under it (cleared on any change)
  cursors: [], // `after` values of the pages before this one (Previous)
};
export const listState = list;

const usesCursor = (v) => v.sort === 'name' && v.order === 'asc';

// Folders made in this browser before any file is in them: the node has no
// empty folders (a folder is the names under it), so they live here until a
// file is uploaded into them, or this tab's session ends.
const PLACEHOLDERS = 'diststore.placeholder-folders';
function placeholders() {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(PLACEHOLDERS) || '[]');
    return Array.isArray(parsed) ? parsed.filter((p) => typeof p === 'string') : [];
  } catch (_) {
    return [];
  }
}
function setPlaceholders(list_) {
  sessionStorage.setItem(PLACEHOLDERS, JSON.stringify([...new Set(list_)]));
}

// ---------------------------------------------------------------------------
// Loading

function listQuery(v) {
  const q = new URLSearchParams({ limit: String(v.limit), sort: v.sort, order: v.order });
  if (v.q) {
    q.set('search', v.q); // the whole store, any case
  } else {
    if (v.path) q.set('prefix', v.path);
    q.set('delimiter', '/');
  }
  if (usesCursor(v)) {
    if (v.after) q.set('after', v.after);
  } else if (v.offset) {
    q.set('offset', String(v.offset));
  }
  return q;
}

let refreshTimer = 0;
let refreshPending = false;
// Coalesces bursts of changes (many uploads elsewhere) into few reloads: at
// most one waiting and one in flight. `counts`: folder counts may have changed
// anywhere, so every folder shown is counted again.
export function scheduleRefresh(delay = 300, { counts = true } = {}) {
  if (counts) list.counts.clear();
  if (list.controller) {
    refreshPending = true;
    return;
  }
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = 0;
    loadList();
  }, delay);
}

export async function loadList() {
  const v = list.view;
  const seq = ++list.seq;
  if (list.controller) list.controller.abort();
  list.controller = new AbortController();
  refreshPending = false;
  $('file-table').setAttribute('aria-busy', 'true');
  try {
    const body = await apiJson(`/files?${listQuery(v)}`, { signal: list.controller.signal });
    if (seq !== list.seq) return;
    const folders = body.folders || [];
    let items = [
      ...folders.map((f) => ({ key: f, folder: true })),
      ...body.files.map((f) => ({ key: f.name, folder: false, file: f })),
    ];
    // Placeholders of this folder not yet on the node, on the first page.
    if (!v.q && !v.after && !v.offset) {
      const known = new Set(folders);
      const mine = placeholders();
      const stale = mine.filter((p) => known.has(p));
      if (stale.length) setPlaceholders(mine.filter((p) => !known.has(p)));
      const extra = mine.filter((p) => !known.has(p) && parentOf(p) === v.path);
      items = [...extra.map((f) => ({ key: f, folder: true, placeholder: true })), ...items];
    }
    const same = JSON.stringify(items) === JSON.stringify(list.items) && body.total === list.total;
    list.items = items;
    list.total = typeof body.total === 'number' ? body.total : null;
    list.next = body.next ?? null;
    // Selection holds only what is shown.
    const shown = new Set(items.map((i) => i.key));
    for (const key of [...list.selected]) if (!shown.has(key)) list.selected.delete(key);
    $('list-error').hidden = true;
    if (!same || !list.rendered) render();
    list.rendered = true;
    renderPager();
    renderBulk();
    loadCounts(seq);
  } catch (err) {
    if (err.name === 'AbortError' || seq !== list.seq) return;
    showListError(err);
  } finally {
    if (seq === list.seq) {
      $('file-table').removeAttribute('aria-busy');
      list.controller = null;
      if (refreshPending) {
        refreshPending = false;
        scheduleRefresh();
      }
    }
  }
}

// Folder rows show how many files are under them: one counting listing per
// folder shown (it scans the names under that folder), three at a time.
async function loadCounts(seq) {
  const show = (key, n) => {
    for (const cell of document.querySelectorAll(`[data-count-for="${CSS.escape(key)}"]`)) cell.textContent = plural(n, 'file', 'files');
  };
  const folders = list.items.filter((i) => i.folder && !i.placeholder);
  for (const item of folders) if (list.counts.has(item.key)) show(item.key, list.counts.get(item.key));
  await eachLimited(folders.filter((i) => !list.counts.has(i.key)), 3, async (item) => {
    if (seq !== list.seq) return; // a newer listing counts what it shows
    const n = await countUnder(item.key);
    list.counts.set(item.key, n);
    show(item.key, n);
  });
}

export function showListError(err) {
  const box = $('list-error');
  box.replaceChildren(err.status === 401 ? 'An API token is needed to see the files.' : err.message);
  if (err.status === 401) {
    const button = el('button', { type: 'button', 'data-testid': 'enter-token' }, 'Enter API token');
    button.addEventListener('click', () => location.reload());
    box.append(' ', button);
  }
  box.hidden = false;
}

// ---------------------------------------------------------------------------
// Rendering

function renderBreadcrumb() {
  const v = list.view;
  const crumbs = [{ label: 'All files', path: '' }];
  let acc = '';
  for (const part of v.path.split('/').filter(Boolean)) {
    acc += `${part}/`;
    crumbs.push({ label: part, path: acc });
  }
  const items = crumbs.map((c, i) => {
    const last = i === crumbs.length - 1 && !v.q;
    const link = el('a', { href: hashOf({ ...v, path: c.path, q: '', after: '', offset: 0 }), 'data-testid': 'crumb',
      dataset: { path: c.path }, 'aria-current': last ? 'page' : null }, c.label);
    return el('li', {}, link);
  });
  if (v.q) items.push(el('li', {}, el('span', { 'aria-current': 'page', 'data-testid': 'crumb-search' }, `Search: “${v.q}”`)));
  $('breadcrumb').replaceChildren(...items);
}

// What render() built, by a key of everything a row shows.
let shownRows = new Map();

function render() {
  const v = list.view;
  renderBreadcrumb();
  const tbody = $('file-rows');
  // Rebuilding rows must not throw keyboard users back to the top: remember
  // which control of which row had focus and put focus back afterwards.
  const active = document.activeElement;
  const focusKey = active && tbody.contains(active) ? active.closest('tr')?.dataset.name : null;
  const focusAction = focusKey !== null && focusKey !== undefined ? active.dataset.action : null;

  // Rows and tiles whose item, place, selection and view are as before are kept
  // (with their focus and open menus): a live refresh rebuilds only what changed.
  const kept = new Map();
  const rows = [];
  const tiles = [];
  list.items.forEach((item, index) => {
    const key = JSON.stringify([item, list.selected.has(item.key), v.q, v.path, v.sort, v.order, v.limit]);
    const old = shownRows.get(key);
    const row = old?.row ?? (item.folder ? folderRow(item, index) : fileRow(item, index));
    const tile = old?.tile ?? gridTile(item, index);
    // A kept row may have moved: its checkbox says where it is now (shift-click ranges).
    for (const box of [row, tile].map((e) => e.querySelector('.row-check'))) if (box) box.dataset.index = String(index);
    kept.set(key, { row, tile });
    rows.push(row);
    tiles.push(tile);
  });
  shownRows = kept;
  tbody.replaceChildren(...rows);
  $('file-grid').replaceChildren(...tiles);
  $('list-wrap').hidden = v.layout === 'grid';
  $('file-grid').hidden = v.layout !== 'grid';
  $('layout-list').setAttribute('aria-pressed', String(v.layout !== 'grid'));
  $('layout-grid').setAttribute('aria-pressed', String(v.layout === 'grid'));

  if (focusKey !== null && focusKey !== undefined) {
    const row = [...tbody.rows].find((r) => r.dataset.name === focusKey);
    const target = row?.querySelector(`[data-action="${focusAction}"]`) || row?.querySelector('button');
    if (target) target.focus();
    else $('list-heading').focus();
  }

  const empty = $('list-empty');
  empty.hidden = list.items.length > 0;
  if (v.q) empty.textContent = `No file name contains “${v.q}”.`;
  else if (v.path && placeholders().includes(v.path)) empty.textContent = 'This folder is empty. Upload files into it to keep it: until then it exists only in this browser tab.';
  else if (v.path) empty.textContent = 'Nothing in this folder (any more).';
  else empty.textContent = 'No files stored yet. Upload some, or drop them here.';
  const total = list.total;
  $('list-count').textContent = total === null ? ''
    : v.q ? `${formatCount(total)} ${total === 1 ? 'file matches' : 'files match'}`
      : `${formatCount(total)} ${total === 1 ? 'item' : 'items'}`;
}

const checkbox = (item, index) => el('input', {
  type: 'checkbox', class: 'row-check', 'data-testid': 'row-check', 'data-index': String(index),
  'aria-label': `Select ${item.folder ? 'folder ' : ''}${item.key}`, checked: list.selected.has(item.key),
});

function folderRow(item, index) {
  const count = list.counts.get(item.key);
  return el('tr', { 'data-testid': 'folder-row', class: 'folder', dataset: { name: item.key }, 'aria-selected': String(list.selected.has(item.key)) },
    el('td', { class: 'check' }, checkbox(item, index)),
    el('th', { scope: 'row', class: 'name', 'data-label': 'Folder' },
      el('a', { href: hashOf({ ...list.view, path: item.key, q: '', after: '', offset: 0 }), class: 'folder-link',
        'data-action': 'open-folder', 'data-testid': 'folder-open' },
      el('span', { class: 'icon icon-folder', 'aria-hidden': 'true' }), ' ', list.view.q ? item.key : baseName(item.key)),
      item.placeholder ? el('span', { class: 'badge' }, 'new, empty') : null),
    el('td', { class: 'num muted', 'data-label': 'Contains', 'data-count-for': item.key, 'data-testid': 'folder-count' },
      item.placeholder ? 'empty' : count === undefined ? '…' : plural(count, 'file', 'files')),
    el('td', { 'data-label': 'Modified' }, '—'),
    el('td', { class: 'actions' }, item.placeholder ? null : actionsMenu(item)));
}

function fileRow(item, index) {
  const f = item.file;
  const shown = list.view.q ? f.name : baseName(f.name);
  return el('tr', { 'data-testid': 'file-row', dataset: { name: f.name }, 'aria-selected': String(list.selected.has(f.name)) },
    el('td', { class: 'check' }, checkbox(item, index)),
    el('th', { scope: 'row', class: 'name', 'data-label': 'Name' },
      el('button', { type: 'button', class: 'linklike', 'data-action': 'details', 'data-testid': 'file-details',
        title: `Details and preview of ${f.name}` }, shown)),
    el('td', { class: 'num', 'data-label': 'Size' }, el('span', { title: `${formatCount(f.size)} bytes` }, formatBytes(f.size))),
    el('td', { 'data-label': 'Modified' }, el('time', { datetime: f.modified, title: f.modified }, formatTime(f.modified))),
    el('td', { class: 'actions' },
      el('a', { class: 'button small', href: fileUrl(f.name, true), download: baseName(f.name), 'data-action': 'download',
        'data-testid': 'download', 'aria-label': `Download ${f.name}` }, 'Download'),
      actionsMenu(item),
      el('button', { type: 'button', class: 'small danger', 'data-action': 'delete', 'data-testid': 'delete',
        'aria-label': `Delete ${f.name}` }, 'Delete')));
}

// A file's or folder's menu: a disclosure (keyboard and screen readers know it natively).
function actionsMenu(item) {
  const name = item.key;
  const entries = item.folder
    ? [
      ['download', 'Download as zip'],
      ['move', 'Rename or move…'],
      ['copy', 'Copy to…'],
      ['delete', 'Delete folder…'],
    ]
    : [
      ['quicklook', 'Quick look'],
      ['details', 'Details'],
      ['share', 'Share link…'],
      ['move', 'Rename or move…'],
      ['copy', 'Copy to…'],
      ['copy-id', 'Copy content id'],
      ['curl', 'Copy curl command'],
    ];
  const buttons = entries.map(([action, label]) => el('button', { type: 'button', class: 'small', 'data-action': action,
    'data-testid': `menu-${action}`, 'aria-label': `${label.replace(/…$/, '')}: ${name}` }, label));
  if (!item.folder) {
    buttons.splice(1, 0, el('a', { class: 'button small', href: fileUrl(name, false), target: '_blank', rel: 'noopener',
      'data-action': 'open', 'data-testid': 'open', 'aria-label': `Open ${name} in a new tab` }, 'Open in new tab'));
  }
  return el('details', { class: 'menu', 'data-testid': 'row-menu' },
    el('summary', { class: 'button small', 'aria-label': `More actions for ${name}`, 'data-testid': 'menu-toggle' }, '⋯'),
    el('div', { class: 'menu-items', role: 'group', 'aria-label': `Actions for ${name}` }, buttons));
}

function gridTile(item, index) {
  const selected = list.selected.has(item.key);
  if (item.folder) {
    return el('li', { class: 'tile folder', 'data-testid': 'grid-tile', dataset: { name: item.key } },
      checkbox(item, index),
      el('a', { href: hashOf({ ...list.view, path: item.key, q: '', after: '', offset: 0 }), class: 'tile-body' },
        el('span', { class: 'tile-icon icon-folder', 'aria-hidden': 'true' }), el('span', { class: 'tile-name' }, baseName(item.key))));
  }
  const f = item.file;
  const image = previewKind(f.name, f.content_type) === 'image';
  return el('li', { class: `tile${selected ? ' selected' : ''}`, 'data-testid': 'grid-tile', dataset: { name: f.name } },
    checkbox(item, index),
    el('button', { type: 'button', class: 'tile-body', 'data-action': 'details', 'aria-label': `Details and preview of ${f.name}` },
      image
        ? el('img', { src: fileUrl(f.name, false), alt: '', loading: 'lazy', decoding: 'async', 'data-testid': 'thumbnail' })
        : el('span', { class: 'tile-icon icon-file', 'aria-hidden': 'true' }),
      el('span', { class: 'tile-name' }, list.view.q ? f.name : baseName(f.name))));
}

function renderPager() {
  const v = list.view;
  const page = usesCursor(v) ? list.cursors.length : Math.floor(v.offset / v.limit);
  const hasNext = usesCursor(v) ? list.next !== null : v.offset + v.limit < (list.total || 0);
  const first = page === 0 && !v.after && !v.offset;
  $('page-first').disabled = first;
  $('page-prev').disabled = first;
  $('page-next').disabled = !hasNext;
  const pages = list.total ? Math.max(1, Math.ceil(list.total / v.limit)) : 1;
  $('page-info').textContent = list.total ? `Page ${formatCount(page + 1)} of ${formatCount(pages)}` : '';
}

export function renderSortHeaders() {
  const v = list.view;
  for (const th of document.querySelectorAll('#file-table th[data-sort]')) {
    if (th.dataset.sort === v.sort) th.setAttribute('aria-sort', v.order === 'asc' ? 'ascending' : 'descending');
    else th.removeAttribute('aria-sort');
  }
  $('sort').value = v.sort;
  $('order').value = v.order;
  $('page-size').value = String(v.limit);
  if (document.activeElement !== $('search')) $('search').value = v.q;
}

function renderBulk() {
  const n = list.selected.size;
  $('bulk-bar').hidden = n === 0;
  $('bulk-count').textContent = `${plural(n, 'item', 'items')} selected`;
  const boxes = [...document.querySelectorAll('#file-rows .row-check')];
  const all = $('select-all');
  all.checked = boxes.length > 0 && boxes.every((b) => b.checked);
  all.indeterminate = !all.checked && boxes.some((b) => b.checked);
}

// ---------------------------------------------------------------------------
// Routing: the hash is the truth; this applies it.

export function onRoute() {
  const prev = list.view;
  const v = viewFromHash();
  list.view = v;
  if (v.page !== 'files') return;
  const sameList = prev.path === v.path && prev.q === v.q && prev.sort === v.sort && prev.order === v.order && prev.limit === v.limit;
  if (!sameList) {
    list.selected.clear();
    list.cursors = [];
  } else if (usesCursor(v)) {
    // Back from a later page: forget the cursors after this one.
    const at = list.cursors.indexOf(v.after);
    if (!v.after) list.cursors = [];
    else if (at >= 0) list.cursors = list.cursors.slice(0, at);
  }
  renderSortHeaders();
  list.rendered = false;
  loadList();
}

// ---------------------------------------------------------------------------
// Actions

const findItem = (key) => list.items.find((i) => i.key === key);
const fileOf = (key) => findItem(key)?.file;

async function deleteNames(names) {
  const errors = await eachLimited(names, 4, (name) => api(`/files/${encodeName(name)}`, { method: 'DELETE' }).catch((err) => {
    // Gone already is what was wanted.
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  }));
  return errors;
}

// Every file name behind a selection of keys (folders expanded).
async function expand(keys) {
  const names = [];
  for (const key of keys) {
    if (isFolder(key)) for await (const f of namesUnder(key)) names.push(f.name);
    else names.push(key);
  }
  return names;
}

async function countOf(keys) {
  let n = 0;
  for (const key of keys) n += isFolder(key) ? (list.counts.get(key) ?? await countUnder(key)) : 1;
  return n;
}

export async function deleteKeys(keys) {
  const folders = keys.filter(isFolder);
  let count;
  try {
    count = await countOf(keys);
  } catch (err) {
    notify(`Could not count the files: ${err.message}`, 'error');
    return;
  }
  const what = keys.length === 1
    ? (folders.length ? `The folder “${keys[0]}” and the ${plural(count, 'file', 'files')} in it` : `“${keys[0]}”`)
    : `${plural(keys.length, 'item', 'items')} (${plural(count, 'file', 'files')} in all)`;
  const title = keys.length === 1 && !folders.length ? 'Delete file?' : `Delete ${plural(count, 'file', 'files')}?`;
  if (!(await confirmDialog(title, `${what} will be deleted from the whole cluster. This cannot be undone.`))) return;
  try {
    const names = await expand(keys);
    const errors = await deleteNames(names);
    for (const key of keys) list.selected.delete(key);
    setPlaceholders(placeholders().filter((p) => !keys.some((k) => isFolder(k) && p.startsWith(k))));
    if (errors.length) notify(`${plural(errors.length, 'file', 'files')} could not be deleted: ${errors[0].err.message}`, 'error');
    else notify(`Deleted ${plural(names.length, 'file', 'files')}.`);
    announce(`Deleted ${plural(names.length - errors.length, 'file', 'files')}.`);
  } catch (err) {
    notify(`Could not delete: ${err.message}`, 'error');
  }
  // The rows are gone; give focus a stable place instead of <body>.
  if (document.activeElement === document.body || !document.activeElement) $('list-heading').focus();
  scheduleRefresh(0);
}

// Moves or copies keys (metadata only on the node). `dest` is a folder
// ("" = top) for several keys, or a full new name for one.
async function transfer(op, pairs) {
  const errors = [];
  for (const [from, to] of pairs) {
    try {
      await postJson(`/${op}`, { from, to, overwrite: false });
    } catch (err) {
      errors.push(err.status === 412 ? `“${to}” already exists` : err.message);
    }
  }
  const done = pairs.length - errors.length;
  if (errors.length) notify(`${op === 'move' ? 'Moved' : 'Copied'} ${done} of ${pairs.length}: ${errors[0]}.`, 'error');
  else notify(`${op === 'move' ? 'Moved' : 'Copied'} ${plural(done, 'item', 'items')}.`);
  if (op === 'move') for (const [from] of pairs) list.selected.delete(from);
  scheduleRefresh(0);
}

const normalizeFolder = (text) => {
  const t = text.replace(/^\/+/, '');
  return t && !t.endsWith('/') ? `${t}/` : t;
};

async function moveOrCopyOne(op, key) {
  const folder = isFolder(key);
  const verb = op === 'move' ? 'Rename or move' : 'Copy';
  const answer = await promptDialog({
    title: `${verb} ${folder ? 'folder' : 'file'}`,
    label: folder ? 'New folder path' : 'New name (with its folder path)',
    value: key,
    hint: op === 'move' ? 'Only names change: no bytes are copied. An existing name is never replaced.' : 'The copy shares the stored bytes: nothing is stored again.',
    ok: op === 'move' ? 'Move' : 'Copy',
  });
  if (answer === null) return;
  const to = folder ? normalizeFolder(answer) : answer.replace(/^\/+/, '');
  if (!to || to === key) return;
  await transfer(op, [[key, to]]);
}

export async function moveKeys(keys) {
  const answer = await promptDialog({
    title: `Move ${plural(keys.length, 'item', 'items')}`,
    label: 'To folder (empty for the top)',
    value: list.view.path,
    hint: 'Only names change: no bytes are copied. An existing name is never replaced.',
    ok: 'Move',
  });
  if (answer === null) return;
  const dest = normalizeFolder(answer);
  const pairs = keys.map((k) => [k, `${dest}${baseName(k)}${isFolder(k) ? '/' : ''}`]).filter(([a, b]) => a !== b);
  await transfer('move', pairs);
}

// One file downloads as itself; several, or any folder, as one zip the node
// streams (POST /api/v1/zip), with names as stored.
export function downloadKeys(keys) {
  if (keys.length === 1 && !isFolder(keys[0])) {
    const a = el('a', { href: fileUrl(keys[0], true), download: baseName(keys[0]), hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    return;
  }
  const names = keys.filter((k) => !isFolder(k));
  const prefixes = keys.filter(isFolder);
  downloadZip(names, prefixes, (message) => notify(`The zip download failed: ${message}`, 'error'));
  notify(`Downloading a zip of ${[
    names.length ? plural(names.length, 'file', 'files') : '',
    prefixes.length ? plural(prefixes.length, 'folder', 'folders') : '',
  ].filter(Boolean).join(' and ')}.`);
}

export async function newFolder() {
  const answer = await promptDialog({ title: 'New folder', label: 'Folder name', hint: `Inside “${list.view.path || 'All files'}”. It stays in this browser tab until a file is uploaded into it.`, ok: 'Create' });
  if (!answer) return;
  const name = answer.replace(/^\/+|\/+$/g, '');
  if (!name || name.split('/').some((s) => s === '.' || s === '..' || s === '')) {
    notify('A folder name cannot be empty or contain "." or ".." parts.', 'error');
    return;
  }
  const path = `${list.view.path}${name}/`;
  setPlaceholders([...placeholders(), path]);
  go({ path, q: '' });
  announce(`Folder ${name} created. Upload files into it to keep it.`);
}

function curlCommand(name) {
  const url = `${location.origin}${API}/files/${encodeName(name)}`;
  const quote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
  // The page never sees the token (the cookie is HttpOnly): the command reads it from the shell.
  const auth = health.status?.auth_required ? ' -H "Authorization: Bearer $DISTSTORE_API_TOKEN"' : '';
  return `curl -fL${auth} -o ${quote(baseName(name))} ${quote(url)}`;
}

// --- Sharing

let shareName = null;
function openShare(name) {
  shareName = name;
  $('share-title').textContent = `Share “${baseName(name)}”`;
  $('share-result').hidden = true;
  $('share-url').value = '';
  $('share-dialog').showModal();
}

async function createShare() {
  const name = shareName;
  try {
    const body = await postJson('/shares', { name, expires_in: Number($('share-expiry').value) });
    if (name !== shareName) return;
    $('share-url').value = body.url || `${location.origin}${body.path}`;
    $('share-expires').textContent = `Expires ${formatTime(body.expires)}.`;
    $('share-result').hidden = false;
    $('share-url').focus();
    $('share-url').select();
    announce('Share link created.');
  } catch (err) {
    notify(`Could not create a link: ${err.message}`, 'error');
  }
}

async function revokeShares() {
  if (!(await confirmDialog('Revoke every share link?', 'Every link made so far, to any file, stops working on every node. Links made after this work.', 'Revoke all'))) return;
  try {
    await api('/shares', { method: 'DELETE' });
    $('share-result').hidden = true;
    notify('Every share link made so far is revoked.');
  } catch (err) {
    notify(`Could not revoke: ${err.message}`, 'error');
  }
}

// --- Details and quick look

let openDetailsName = null;
export const detailsOpenFor = () => openDetailsName;

async function showDetails(name) {
  const dialog = $('details-dialog');
  const content = $('details-content');
  openDetailsName = name;
  $('details-title').textContent = name;
  content.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  $('details-preview').replaceChildren();
  const actions = [
    el('a', { class: 'button', href: fileUrl(name, true), download: baseName(name), 'data-testid': 'download' }, 'Download'),
    el('button', { type: 'button', 'data-action': 'quicklook', 'data-testid': 'details-quicklook' }, 'Quick look'),
    el('button', { type: 'button', 'data-action': 'share', 'data-testid': 'details-share' }, 'Share link…'),
    el('button', { type: 'button', 'data-action': 'move', 'data-testid': 'details-move' }, 'Rename or move…'),
    el('button', { type: 'button', 'data-action': 'curl', 'data-testid': 'copy-curl' }, 'Copy curl command'),
    el('button', { type: 'button', class: 'danger', 'data-action': 'delete', 'data-testid': 'details-delete' }, 'Delete…'),
  ];
  $('details-actions').replaceChildren(...actions);
  if (!dialog.open) dialog.showModal();
  const listed = fileOf(name);
  if (listed) renderPreview($('details-preview'), listed);
  try {
    const info = await apiJson(`/info/${encodeName(name)}`);
    if (openDetailsName !== name) return;
    if (!listed) renderPreview($('details-preview'), info);
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
      typeof h.chunks === 'number' ? el('span', { class: 'muted' }, ` · ${plural(h.chunks, 'chunk', 'chunks')}`) : null,
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

let quickIndex = -1;
const previewable = () => list.items.filter((i) => !i.folder);

function quickLook(name) {
  const files = previewable();
  quickIndex = files.findIndex((i) => i.key === name);
  if (quickIndex < 0) return;
  showQuick();
  if (!$('quicklook').open) $('quicklook').showModal();
}

function showQuick() {
  const files = previewable();
  const item = files[quickIndex];
  if (!item) return;
  $('quicklook-title').textContent = item.key;
  $('quicklook').dataset.name = item.key;
  renderPreview($('quicklook-body'), item.file, { large: true });
  $('quicklook-prev').disabled = quickIndex <= 0;
  $('quicklook-next').disabled = quickIndex >= files.length - 1;
}

function stepQuick(by) {
  const files = previewable();
  const next = quickIndex + by;
  if (next < 0 || next >= files.length) return;
  quickIndex = next;
  showQuick();
}

// One handler for every action, wherever its button is (row, menu, tile, details).
function runAction(action, key) {
  switch (action) {
    case 'details': showDetails(key); break;
    case 'quicklook': quickLook(key); break;
    case 'share': openShare(key); break;
    case 'move': moveOrCopyOne('move', key); break;
    case 'copy': moveOrCopyOne('copy', key); break;
    case 'delete': deleteKeys([key]); break;
    case 'download': downloadKeys([key]); break;
    case 'copy-id': {
      const f = fileOf(key);
      if (f) copyText(f.id, 'content id');
      break;
    }
    case 'curl': copyText(curlCommand(key), 'curl command'); break;
    default: break;
  }
}

// ---------------------------------------------------------------------------
// Wiring

function onListClick(event) {
  const box = event.target.closest('.row-check');
  if (box) {
    onCheck(box, event.shiftKey);
    return;
  }
  const target = event.target.closest('[data-action]');
  if (!target) return;
  const key = target.closest('[data-name]')?.dataset.name;
  if (key === undefined) return;
  const action = target.dataset.action;
  // Links do their own thing (download, open in a tab, open a folder).
  if (target.tagName === 'A' && action !== 'download') return;
  if (target.tagName === 'A' && action === 'download' && !isFolder(key)) return;
  event.preventDefault();
  target.closest('details')?.removeAttribute('open');
  runAction(action, key);
}

// A checkbox changed; with Shift, everything between it and the last one clicked follows it.
function onCheck(box, shift) {
  const index = Number(box.dataset.index);
  const on = box.checked;
  const range = shift && list.lastChecked !== null
    ? [Math.min(index, list.lastChecked), Math.max(index, list.lastChecked)]
    : [index, index];
  for (let i = range[0]; i <= range[1]; i += 1) {
    const item = list.items[i];
    if (!item || item.placeholder) continue;
    if (on) list.selected.add(item.key);
    else list.selected.delete(item.key);
  }
  list.lastChecked = index;
  syncChecks();
}

function syncChecks() {
  for (const b of document.querySelectorAll('.row-check')) {
    const item = list.items[Number(b.dataset.index)];
    const on = Boolean(item && list.selected.has(item.key));
    b.checked = on;
    b.closest('[data-name]')?.setAttribute('aria-selected', String(on));
    b.closest('.tile')?.classList.toggle('selected', on);
  }
  renderBulk();
}

function setupDetailsDialog() {
  $('details-dialog').addEventListener('click', (event) => {
    const copy = event.target.closest('[data-copy]');
    if (copy) {
      event.preventDefault();
      copyText(copy.dataset.copy, 'content id');
      return;
    }
    const target = event.target.closest('[data-action]');
    if (!target || !openDetailsName) return;
    event.preventDefault();
    const name = openDetailsName;
    if (target.dataset.action !== 'curl') $('details-dialog').close();
    runAction(target.dataset.action, name);
  });
  $('details-dialog').addEventListener('close', () => {
    openDetailsName = null;
    // Stop a playing video or audio.
    $('details-preview').replaceChildren();
  });
  $('quicklook-prev').addEventListener('click', () => stepQuick(-1));
  $('quicklook-next').addEventListener('click', () => stepQuick(1));
  $('quicklook').addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft') stepQuick(-1);
    if (e.key === 'ArrowRight') stepQuick(1);
  });
  $('quicklook').addEventListener('close', () => $('quicklook-body').replaceChildren());
  $('share-create').addEventListener('click', createShare);
  $('share-copy').addEventListener('click', () => copyText($('share-url').value, 'share link'));
  $('share-revoke').addEventListener('click', revokeShares);
}

export function wireFiles() {
  $('file-rows').addEventListener('click', onListClick);
  $('file-grid').addEventListener('click', onListClick);
  // Space on a focused file name opens the quick look, as in desktop file managers.
  $('file-rows').addEventListener('keydown', (e) => {
    if (e.key !== ' ' || !e.target.matches('[data-action=details]')) return;
    e.preventDefault();
    quickLook(e.target.closest('[data-name]').dataset.name);
  });
  $('select-all').addEventListener('change', () => {
    const on = $('select-all').checked;
    for (const item of list.items) {
      if (item.placeholder) continue;
      if (on) list.selected.add(item.key);
      else list.selected.delete(item.key);
    }
    syncChecks();
  });
  $('bulk-delete').addEventListener('click', () => deleteKeys([...list.selected]));
  $('bulk-move').addEventListener('click', () => moveKeys([...list.selected]));
  $('bulk-download').addEventListener('click', () => downloadKeys([...list.selected]));
  $('bulk-clear').addEventListener('click', () => {
    list.selected.clear();
    syncChecks();
  });
  $('new-folder').addEventListener('click', newFolder);
  // One menu open at a time; a click elsewhere or Escape closes it.
  document.addEventListener('click', (e) => {
    for (const menu of document.querySelectorAll('details.menu[open]')) if (!menu.contains(e.target)) menu.removeAttribute('open');
  });
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    const menu = document.querySelector('details.menu[open]');
    if (!menu) return;
    menu.removeAttribute('open');
    menu.querySelector('summary').focus();
  });

  let searchTimer = 0;
  $('search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      const q = $('search').value.trim();
      // The first keystroke makes a history entry; the rest refine it.
      go({ q }, { replace: Boolean(list.view.q) && Boolean(q) });
    }, 250);
  });
  $('list-controls').addEventListener('submit', (e) => e.preventDefault());
  $('sort').addEventListener('change', () => go({ sort: $('sort').value }));
  $('order').addEventListener('change', () => go({ order: $('order').value }));
  $('page-size').addEventListener('change', () => go({ limit: Number($('page-size').value) }));
  $('layout-list').addEventListener('click', () => go({ layout: 'list' }, { replace: true }));
  $('layout-grid').addEventListener('click', () => go({ layout: 'grid' }, { replace: true }));
  for (const button of document.querySelectorAll('.sort-button')) {
    button.addEventListener('click', () => {
      const sort = button.dataset.sort;
      const v = list.view;
      // Same column flips the order; a new column starts with the useful
      // end first (A→Z, biggest, newest).
      if (v.sort === sort) go({ order: v.order === 'asc' ? 'desc' : 'asc' });
      else go({ sort, order: sort === 'name' ? 'asc' : 'desc' });
    });
  }
  $('page-first').addEventListener('click', () => {
    list.cursors = [];
    go({});
  });
  $('page-prev').addEventListener('click', () => {
    const v = list.view;
    if (usesCursor(v)) {
      const before = list.cursors.pop() ?? '';
      go({ after: before, offset: 0 });
    } else {
      go({ offset: Math.max(0, v.offset - v.limit), after: '' });
    }
  });
  $('page-next').addEventListener('click', () => {
    const v = list.view;
    if (usesCursor(v)) {
      list.cursors.push(v.after);
      go({ after: list.next, offset: 0 });
    } else {
      go({ offset: v.offset + v.limit, after: '' });
    }
  });
  setupDetailsDialog();
}

// Live changes (the event stream's puts and deletes, each naming one file)
// touch only what they change, however many arrive: a name directly in the
// folder shown refreshes that folder's page, at most once per LIVE_MS (rows
// that did not change are kept); a name below one of its folders recounts only
// that folder's row, at most once per LIVE_MS; any other name is not on
// screen, and only forgets the count kept for its folders.
const LIVE_MS = 250;
const recount = new Set();
let recountTimer = 0;

function recountSoon(folder) {
  recount.add(folder);
  if (recountTimer) return;
  recountTimer = setTimeout(async () => {
    recountTimer = 0;
    const folders = [...recount];
    recount.clear();
    const seq = list.seq;
    await eachLimited(folders, 3, async (key) => {
      const n = await countUnder(key);
      if (seq !== list.seq) return; // a newer listing counts what it shows
      list.counts.set(key, n);
      // The folder's last file went: the folder goes from the page.
      if (n === 0) scheduleRefresh(LIVE_MS, { counts: false });
      for (const cell of document.querySelectorAll(`[data-count-for="${CSS.escape(key)}"]`)) cell.textContent = plural(n, 'file', 'files');
    });
  }, LIVE_MS);
}

export function onFileEvent(change) {
  const v = list.view;
  const name = change.name;
  for (const folder of list.counts.keys()) if (name.startsWith(folder)) list.counts.delete(folder);
  if (v.q) {
    if (name.toLowerCase().includes(v.q.toLowerCase())) scheduleRefresh(LIVE_MS, { counts: false });
  } else if (name.startsWith(v.path)) {
    const slash = name.indexOf('/', v.path.length);
    const folder = slash < 0 ? null : name.slice(0, slash + 1);
    if (folder === null) scheduleRefresh(LIVE_MS, { counts: false });
    // A folder new to this page (or gone from it) changes the page itself.
    else if (list.items.some((i) => i.folder && !i.placeholder && i.key === folder)) recountSoon(folder);
    else scheduleRefresh(LIVE_MS, { counts: false });
  }
  if (change.op === 'delete' && openDetailsName === change.name) {
    $('details-content').prepend(el('p', { class: 'error', role: 'alert' }, 'This file has just been deleted.'));
  }
}
