// Uploads with the node's resumable protocol (tus 1.0.0 at /api/v1/uploads):
// a file goes in PATCHes of a few MiB; when the connection drops or the node
// restarts, the upload asks the node how much it holds (HEAD) and goes on
// from there. Speed and ETA per file and in total, in a compact panel.

import { $, API, announce, el, encodeName, formatBytes, formatDuration, notify, overwriteDialog, plural } from './util.js';
import { errorText, obtainToken, auth } from './api.js';
import { health } from './health.js';

const MAX_PARALLEL_UPLOADS = 3;
// One PATCH: large enough that per-request costs vanish, small enough that a
// dropped connection loses little (the node keeps what it fsynced).
const PATCH_BYTES = 4 * 1024 * 1024;
// Retries of network errors and 5xx answers: waits grow to 15 s, and give up
// after about two minutes without progress.
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000, 15000, 15000, 15000];
const TUS = { 'Tus-Resumable': '1.0.0' };
// Where to resume a file added again after a reload: name/size/mtime -> upload URL.
const RESUME_KEY = 'diststore.resumable-uploads';

// Knobs for tests and operators. `skipSizeCheck` sends files even when they
// exceed the node's advertised limit, so the server's own check can be seen.
export const knobs = { skipSizeCheck: false, patchBytes: PATCH_BYTES };

const uploads = [];
// Overwrite decisions taken "for the rest of this upload", by batch.
const batchPolicy = new Map();
// One overwrite question at a time.
let asking = Promise.resolve();

const b64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

function resumeStore() {
  try {
    const parsed = JSON.parse(localStorage.getItem(RESUME_KEY) || '{}');
    return parsed && typeof parsed === 'object' ? parsed : {};
  } catch (_) {
    return {};
  }
}
function remember(key, url) {
  const all = resumeStore();
  if (url) all[key] = url;
  else delete all[key];
  localStorage.setItem(RESUME_KEY, JSON.stringify(all));
}

// The answer of one XHR: status 0 is a network error (or abort).
function send(method, url, { headers = {}, body = null, onProgress = null, track = null } = {}) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    if (track) track(xhr);
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => resolve(xhr);
    xhr.onerror = () => resolve(xhr);
    xhr.onabort = () => resolve(xhr);
    xhr.send(body);
  });
}

// Worth another try: the network, the node restarting or overloaded. A 4xx
// (bad name, too large, refused) would fail the same way again.
const retryable = (status) => status === 0 || status >= 500 || status === 408 || status === 429;

class Upload {
  constructor(file, name, batch) {
    this.file = file;
    this.name = name;
    this.batch = batch;
    this.url = null;
    this.offset = 0; // bytes the node confirmed
    this.sent = 0; // bytes on their way, for the progress bar
    this.xhr = null;
    this.attempts = 0;
    this.fileId = null;
    this.speed = 0; // bytes per second, smoothed
    this.resumeKey = `${name}\u0000${file.size}\u0000${file.lastModified}`;
    this.view = uploadView(this);
    this.setState('queued', 'Waiting…');
  }

  setState(kind, message) {
    this.state = kind;
    this.view.item.dataset.state = kind;
    this.view.stateLabel.textContent = {
      queued: 'Queued', uploading: 'Uploading', retrying: 'Waiting to resume', processing: 'Storing', done: 'Stored',
      error: 'Failed', cancelled: 'Cancelled', skipped: 'Skipped',
    }[kind];
    this.view.message.textContent = message || '';
    const finished = this.finished();
    this.view.cancel.hidden = finished;
    this.view.retry.hidden = !(kind === 'error' || kind === 'cancelled');
    this.view.item.classList.toggle('failed', kind === 'error');
    renderTotals();
  }

  finished() {
    return ['done', 'error', 'cancelled', 'skipped'].includes(this.state);
  }

  running() {
    return ['uploading', 'retrying', 'processing'].includes(this.state);
  }

  setProgress(sent) {
    const now = performance.now();
    if (this.lastAt !== undefined && now > this.lastAt) {
      const rate = ((sent - this.lastSent) * 1000) / (now - this.lastAt);
      if (rate >= 0) this.speed = this.speed ? 0.8 * this.speed + 0.2 * rate : rate;
    }
    this.lastAt = now;
    this.lastSent = sent;
    this.sent = sent;
    const total = this.file.size;
    const percent = total ? Math.floor((100 * sent) / total) : 100;
    this.view.progress.value = percent;
    this.view.progress.dataset.percent = String(percent);
    this.view.progress.setAttribute('aria-valuetext', `${percent} percent`);
    const eta = this.speed > 0 && sent < total ? ` · ${formatBytes(this.speed)}/s · ${formatDuration((total - sent) / this.speed)} left` : '';
    this.view.bytes.textContent = `${formatBytes(sent)} of ${formatBytes(total)} (${percent} %)${eta}`;
    renderTotals();
  }

  tooLarge() {
    const limit = health.status && health.status.max_upload_bytes;
    return Boolean(limit) && this.file.size > limit;
  }

  async start() {
    this.attempts += 1;
    this.view.item.dataset.attempts = String(this.attempts);
    if (this.tooLarge() && !knobs.skipSizeCheck) {
      this.fail(`Too large: ${formatBytes(this.file.size)} is over this node's limit of ${formatBytes(health.status.max_upload_bytes)} per file.`);
      return;
    }
    this.setState('uploading', '');
    this.setProgress(this.offset);
    try {
      if (!this.url && !(await this.mayWrite())) return;
      if (this.state !== 'uploading') return; // cancelled while asking
      await this.run();
    } catch (err) {
      if (this.state !== 'cancelled') this.fail(err.message || String(err), err.status);
    }
  }

  // Asks before replacing an existing name (once per batch when told so).
  async mayWrite() {
    let exists = false;
    const res = await send('HEAD', `${API}/files/${encodeName(this.name)}`);
    if (res.status === 200) exists = true;
    if (!exists) return true;
    let policy = batchPolicy.get(this.batch);
    if (!policy) {
      const turn = asking.then(async () => batchPolicy.get(this.batch) || overwriteDialog(this.name));
      asking = turn.catch(() => {});
      const answer = await turn;
      if (answer.all) batchPolicy.set(this.batch, answer);
      policy = answer;
    }
    if (!policy.replace) {
      this.setState('skipped', 'Kept the existing file.');
      pump();
      return false;
    }
    return true;
  }

  async run() {
    // Resume a file added again after a reload or a lost tab.
    if (!this.url) {
      const known = resumeStore()[this.resumeKey];
      if (known && (await this.sync(known))) this.url = known;
      else remember(this.resumeKey, null);
    }
    if (!this.url) await this.create();
    // Until the node says the file is stored (X-DistStore-Id). An upload whose
    // bytes all arrived but was not finished gets an empty PATCH, which finishes it.
    while (this.state === 'uploading') {
      if (this.fileId) {
        this.done(this.fileId);
        return;
      }
      const from = this.offset;
      const end = Math.min(this.file.size, from + knobs.patchBytes);
      const res = await send('PATCH', this.url, {
        headers: { ...TUS, 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': String(from) },
        body: this.file.slice(from, end),
        onProgress: (n) => this.setProgress(from + n),
        track: (xhr) => { this.xhr = xhr; },
      });
      if (this.state === 'cancelled') return;
      if (res.status === 204) {
        const offset = Number(res.getResponseHeader('Upload-Offset'));
        this.offset = Number.isFinite(offset) ? offset : end;
        this.fileId = res.getResponseHeader('X-DistStore-Id');
        this.retries = 0;
        continue;
      }
      if (res.status === 401 && (await obtainToken(auth.signIns, errorText(401, res.responseText)))) continue;
      if (res.status === 409 || retryable(res.status)) {
        // Find out what the node holds, then go on from there.
        if (!(await this.waitAndSync(res))) return;
        continue;
      }
      this.fail(errorText(res.status, res.responseText, res.statusText), res.status);
      return;
    }
  }

  async create() {
    for (;;) {
      const meta = [`name ${b64(this.name)}`, `filetype ${b64(this.file.type || 'application/octet-stream')}`];
      if (this.file.lastModified) meta.push(`mtime ${b64(String(Math.floor(this.file.lastModified / 1000)))}`);
      const res = await send('POST', `${API}/uploads`, {
        headers: { ...TUS, 'Upload-Length': String(this.file.size), 'Upload-Metadata': meta.join(',') },
        track: (xhr) => { this.xhr = xhr; },
      });
      if (this.state === 'cancelled') return;
      if (res.status === 201) {
        this.view.item.dataset.creates = String(Number(this.view.item.dataset.creates || 0) + 1);
        this.url = new URL(res.getResponseHeader('Location'), location.href).pathname;
        this.offset = 0;
        remember(this.resumeKey, this.url);
        // An empty file is stored on creation.
        this.fileId = res.getResponseHeader('X-DistStore-Id');
        return;
      }
      if (res.status === 401 && (await obtainToken(auth.signIns, errorText(401, res.responseText)))) continue;
      if (retryable(res.status)) {
        if (await this.backoff(res)) continue;
        return; // gave up (and said so) or cancelled
      }
      throw Object.assign(new Error(errorText(res.status, res.responseText, res.statusText)), { status: res.status });
    }
  }

  // Waits (growing delays), then asks the node for the offset; false when it gave up.
  async waitAndSync(res) {
    for (;;) {
      if (!(await this.backoff(res))) return false;
      if (await this.sync(this.url)) {
        this.setState('uploading', `Resumed at ${formatBytes(this.offset)}.`);
        this.view.item.dataset.resumedAt = String(this.offset);
        return true;
      }
      if (this.gone) {
        remember(this.resumeKey, null);
        this.url = null;
        this.offset = 0;
        this.fail('The node no longer has this upload (it expired or was removed). Retry to send the file again.', 404);
        return false;
      }
    }
  }

  // HEAD: how many bytes the node holds. True when it answered.
  async sync(url) {
    const res = await send('HEAD', url, { headers: TUS, track: (xhr) => { this.xhr = xhr; } });
    this.gone = res.status === 404 || res.status === 410;
    if (res.status !== 200) return false;
    const offset = Number(res.getResponseHeader('Upload-Offset'));
    if (!Number.isFinite(offset)) return false;
    this.offset = offset;
    this.fileId = res.getResponseHeader('X-DistStore-Id');
    this.setProgress(offset);
    return true;
  }

  async backoff(res) {
    this.retries = (this.retries || 0) + 1;
    const delay = RETRY_DELAYS[this.retries - 1];
    if (delay === undefined || this.state === 'cancelled') {
      if (this.state !== 'cancelled') this.fail(`Gave up after ${this.retries - 1} tries: ${this.networkMessage(res)}`, res.status);
      return false;
    }
    this.setState('retrying', `${this.networkMessage(res)} Trying again in ${Math.round(delay / 1000) || 1} s…`);
    this.view.item.dataset.retries = String(this.retries);
    await new Promise((resolve) => { this.retryTimer = setTimeout(resolve, delay); });
    if (this.state === 'cancelled') return false;
    this.setState('uploading', 'Reconnecting…');
    return true;
  }

  networkMessage(res) {
    if (res.status) return `The node answered ${res.status}: ${errorText(res.status, res.responseText, res.statusText)}.`;
    if (!navigator.onLine) return 'This device is offline.';
    return 'The connection to the node was lost.';
  }

  done(id) {
    remember(this.resumeKey, null);
    this.setProgress(this.file.size);
    this.setState('done', id ? `id ${id.slice(0, 12)}` : '');
    announce(`Uploaded ${this.name}.`);
    pump();
    onStored(this.name);
  }

  fail(message, status) {
    this.setState('error', message);
    if (status) this.view.message.dataset.status = String(status);
    announce(`Upload of ${this.name} failed: ${message}`);
    pump();
  }

  cancel() {
    if (this.finished()) return;
    const url = this.url;
    this.setState('cancelled', 'Cancelled.');
    clearTimeout(this.retryTimer);
    if (this.xhr) this.xhr.abort();
    // Frees the node's spool at once instead of at expiry.
    if (url) send('DELETE', url, { headers: TUS });
    remember(this.resumeKey, null);
    this.url = null;
    this.offset = 0;
    this.fileId = null;
    announce(`Upload of ${this.name} cancelled.`);
    pump();
  }

  retry() {
    this.retries = 0;
    this.xhr = null;
    this.view.progress.value = 0;
    delete this.view.message.dataset.status;
    this.setState('queued', 'Waiting…');
    pump();
  }
}

let onStored = () => {};
export function onUploadStored(fn) {
  onStored = fn;
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
      el('span', { class: 'upload-name', id: `${id}-name`, title: upload.name }, upload.name), stateLabel, cancel, retry),
    progress,
    el('div', { class: 'upload-line' }, bytes, message));
  return { item, stateLabel, progress, bytes, message, cancel, retry };
}

// Total line: files left, bytes, speed and ETA of what runs now.
function renderTotals() {
  const active = uploads.filter((u) => !u.finished());
  const panel = $('upload-panel');
  panel.hidden = uploads.length === 0;
  $('upload-tools').hidden = !uploads.some((u) => u.finished());
  if (!active.length) {
    const done = uploads.filter((u) => u.state === 'done').length;
    $('upload-total').textContent = uploads.length ? `${done} of ${uploads.length} stored` : '';
    $('upload-total').dataset.active = '0';
    return;
  }
  const total = active.reduce((s, u) => s + u.file.size, 0);
  const sent = active.reduce((s, u) => s + u.sent, 0);
  const speed = active.filter((u) => u.running()).reduce((s, u) => s + u.speed, 0);
  const eta = speed > 0 ? ` · ${formatBytes(speed)}/s · ${formatDuration((total - sent) / speed)} left` : '';
  $('upload-total').textContent = `${plural(active.length, 'file', 'files')} left · ${formatBytes(sent)} of ${formatBytes(total)}${eta}`;
  $('upload-total').dataset.active = String(active.length);
}

// Starts queued uploads while fewer than MAX_PARALLEL_UPLOADS run.
function pump() {
  let free = MAX_PARALLEL_UPLOADS - uploads.filter((u) => u.running()).length;
  for (const upload of uploads) {
    if (free <= 0) break;
    if (upload.state === 'queued') {
      free -= 1;
      upload.start();
    }
  }
  renderTotals();
}

let batches = 0;
// `entries`: [{file, path}] where path is relative to the folder shown.
export function addUploads(entries, folder) {
  if (!entries.length) return;
  batches += 1;
  const batch = batches;
  const list = entries.map(({ file, path }) => new Upload(file, `${folder}${path || file.name}`, batch));
  uploads.push(...list);
  $('uploads').prepend(...list.map((u) => u.view.item));
  $('upload-panel').hidden = false;
  setPanelOpen(true);
  announce(`${plural(list.length, 'file', 'files')} added to the upload queue.`);
  pump();
}

function clearFinished() {
  for (let i = uploads.length - 1; i >= 0; i -= 1) {
    if (uploads[i].finished()) {
      uploads[i].view.item.remove();
      uploads.splice(i, 1);
    }
  }
  renderTotals();
}

function setPanelOpen(open) {
  $('uploads').hidden = !open;
  $('upload-toggle').setAttribute('aria-expanded', String(open));
  $('upload-toggle').textContent = open ? 'Hide' : 'Show';
}

// Files of a dropped folder, with their paths, read through the entries API.
async function entriesOf(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, path: `${prefix}${file.name}` });
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  // readEntries hands out a directory in batches: read until it returns none.
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) await entriesOf(child, `${prefix}${entry.name}/`, out);
  }
}

export function wireUploads(currentFolder) {
  const files = $('file-input');
  const folder = $('folder-input');
  $('choose-files').addEventListener('click', () => files.click());
  $('choose-folder').addEventListener('click', () => folder.click());
  files.addEventListener('change', () => {
    addUploads([...files.files].map((file) => ({ file, path: file.name })), currentFolder());
    files.value = ''; // choosing the same file again must fire `change`
  });
  folder.addEventListener('change', () => {
    // webkitRelativePath keeps the chosen folder's own name first: "photos/2024/a.jpg".
    addUploads([...folder.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })), currentFolder());
    folder.value = '';
  });
  $('clear-uploads').addEventListener('click', clearFinished);
  $('upload-toggle').addEventListener('click', () => setPanelOpen($('uploads').hidden));

  // Leaving the page stops uploads: ask first. (A resumable upload can go on
  // later if the same file is added again, but only while the node keeps it.)
  window.addEventListener('beforeunload', (e) => {
    if (uploads.some((u) => !u.finished())) {
      e.preventDefault();
      e.returnValue = '';
    }
  });

  // Drops anywhere on the files view count; folders keep their structure.
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
  window.addEventListener('drop', async (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    zone.classList.remove('dragging');
    const target = currentFolder();
    if (location.hash.startsWith('#cluster')) location.hash = '#files';
    const items = [...(e.dataTransfer.items || [])];
    const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    // Entries must be taken before the first await: the drop's data goes away after it.
    const plain = [...e.dataTransfer.files];
    const out = [];
    try {
      for (let i = 0; i < plain.length; i += 1) {
        const entry = entries[i];
        if (entry && entry.isDirectory) await entriesOf(entry, '', out);
        else out.push({ file: plain[i], path: plain[i].name });
      }
    } catch (err) {
      notify(`Could not read the dropped folder: ${err.message || err}`, 'error');
    }
    addUploads(out, target);
  });
}

export const uploadsRunning = () => uploads.some((u) => !u.finished());
