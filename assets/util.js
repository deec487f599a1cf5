// Small helpers shared by every part of the UI: DOM building, formatting,
// names and URLs, announcements. No state, no requests.

export const API = '/api/v1';
export const ID_SHORT = 12;

export const $ = (id) => document.getElementById(id);

// Builds an element: el('a', {href: '/x', class: 'c'}, 'text', child).
// Attributes with null/undefined/false values are left out.
export function el(tag, attrs = {}, ...children) {
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
export function formatBytes(n) {
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
export const formatCount = (n) => (typeof n === 'number' ? numberFormat.format(n) : '—');
export const plural = (n, one, many) => `${formatCount(n)} ${n === 1 ? one : many}`;

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
export function formatTime(iso) {
  const d = iso ? new Date(iso) : null;
  return d && !Number.isNaN(d.getTime()) ? dateFormat.format(d) : '—';
}

export function relativeTime(iso) {
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

export function formatDuration(secs) {
  if (typeof secs !== 'number' || !Number.isFinite(secs)) return '—';
  secs = Math.max(0, Math.round(secs));
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${secs % 60} s`;
  return `${secs} s`;
}

// Names are path-like: encode each segment, keep the slashes between them, so
// URLs stay readable. A browser resolves "." and ".." segments (also written
// %2e) and turns "\\" into "/" before sending, which would act on another
// name; such a name (the node refuses new ones, an older node may hold them)
// goes as one segment with its slashes encoded, which no browser rewrites.
export const encodeName = (name) => {
  const segments = name.split('/');
  const rewritten = name.includes('\\') || segments.some((s) => s === '.' || s === '..');
  return rewritten ? encodeURIComponent(name) : segments.map(encodeURIComponent).join('/');
};

// "a/b/c.txt" -> "c.txt"; "a/b/" -> "b".
export const baseName = (name) => {
  const trimmed = name.endsWith('/') ? name.slice(0, -1) : name;
  return trimmed.slice(trimmed.lastIndexOf('/') + 1) || trimmed;
};
// "a/b/c.txt" -> "a/b/"; "a/b/" -> "a/".
export const parentOf = (name) => {
  const trimmed = name.endsWith('/') ? name.slice(0, -1) : name;
  return trimmed.slice(0, trimmed.lastIndexOf('/') + 1);
};
export const isFolder = (key) => key.endsWith('/');

// Plain links (download, open, previews) carry the session cookie set at
// sign-in; the token itself never appears in a URL.
export function fileUrl(name, download) {
  return `${API}/files/${encodeName(name)}${download ? '?download=1' : ''}`;
}

// ---------------------------------------------------------------------------
// Announcements: a toast for everyone, a polite live region for screen readers.

let toastTimer = 0;
export function notify(message, kind = 'info') {
  const toast = $('toast');
  toast.textContent = message;
  toast.dataset.kind = kind;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, kind === 'error' ? 8000 : 3500);
}

export function announce(message) {
  // Clearing first makes screen readers repeat an identical message.
  const region = $('announce');
  region.textContent = '';
  setTimeout(() => { region.textContent = message; }, 50);
}

export async function copyText(text, what) {
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

// ---------------------------------------------------------------------------
// Dialogs that answer a question: each resolves when the dialog closes.

function ask(dialog, setup) {
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
    dialog.returnValue = '';
    setup?.();
    dialog.showModal();
  });
}

// Resolves true when the user confirms. Cancel has focus first: the safe default.
export async function confirmDialog(title, text, okLabel = 'Delete') {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  return (await ask($('confirm-dialog'))) === 'ok';
}

// Resolves to the text entered, or null when cancelled.
export async function promptDialog({ title, label, value = '', hint = '', ok = 'OK' }) {
  const input = $('prompt-input');
  const answer = await ask($('prompt-dialog'), () => {
    $('prompt-title').textContent = title;
    $('prompt-label').textContent = label;
    $('prompt-hint').textContent = hint;
    $('prompt-ok').textContent = ok;
    input.value = value;
    setTimeout(() => {
      input.focus();
      // Select the last segment of a name: what a rename usually changes.
      const from = value.endsWith('/') ? value.slice(0, -1).lastIndexOf('/') + 1 : value.lastIndexOf('/') + 1;
      input.setSelectionRange(from, value.length);
    }, 0);
  });
  return answer === 'ok' ? input.value.trim() : null;
}

// Resolves to {replace: bool, all: bool}.
export async function overwriteDialog(name) {
  const all = $('overwrite-all');
  const answer = await ask($('overwrite-dialog'), () => {
    $('overwrite-text').textContent = `“${name}” already exists. Replace it with the file being uploaded?`;
    all.checked = false;
  });
  return { replace: answer === 'replace', all: all.checked };
}
