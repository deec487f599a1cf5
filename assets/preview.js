// Previews of a file, shown by the browser from the file's own URL: images,
// text and code, PDF, audio and video. Nothing is decoded by the page itself
// except text, of which only the first 64 KiB are fetched (a Range request).

import { API, el, fileUrl, formatBytes } from './util.js';
import { api } from './api.js';

const TEXT_PREVIEW_BYTES = 64 * 1024;

const EXT = {
  image: ['png', 'jpg', 'jpeg', 'gif', 'webp', 'svg', 'avif', 'bmp', 'ico'],
  video: ['mp4', 'webm', 'ogv', 'mov', 'm4v'],
  audio: ['mp3', 'ogg', 'oga', 'wav', 'flac', 'm4a', 'aac', 'opus'],
  pdf: ['pdf'],
  text: ['txt', 'md', 'csv', 'tsv', 'log', 'json', 'xml', 'yaml', 'yml', 'toml', 'ini', 'conf', 'cfg', 'rs', 'go', 'py',
    'js', 'mjs', 'ts', 'tsx', 'jsx', 'c', 'h', 'cc', 'cpp', 'hpp', 'java', 'kt', 'rb', 'php', 'sh', 'bash', 'zsh', 'sql',
    'html', 'htm', 'css', 'scss', 'lua', 'pl', 'swift', 'r', 'tex', 'diff', 'patch', 'dockerfile', 'makefile', 'gitignore'],
};

// What kind of preview a file gets: image, video, audio, pdf, text, or null.
export function previewKind(name, contentType = '') {
  const type = (contentType || '').split(';')[0].trim().toLowerCase();
  if (type.startsWith('image/')) return 'image';
  if (type.startsWith('video/')) return 'video';
  if (type.startsWith('audio/')) return 'audio';
  if (type === 'application/pdf') return 'pdf';
  if (type.startsWith('text/') || ['application/json', 'application/xml', 'application/javascript', 'application/toml',
    'application/x-sh', 'application/yaml'].includes(type)) return 'text';
  const base = name.slice(name.lastIndexOf('/') + 1).toLowerCase();
  const ext = base.includes('.') ? base.slice(base.lastIndexOf('.') + 1) : base;
  for (const [kind, list] of Object.entries(EXT)) if (list.includes(ext)) return kind;
  return null;
}

// Fills `box` with a preview of the file; `large` for the quick-look.
export async function renderPreview(box, file, { large = false } = {}) {
  const kind = previewKind(file.name, file.content_type);
  box.dataset.kind = kind || 'none';
  const url = fileUrl(file.name, false);
  const label = `Preview of ${file.name}`;
  switch (kind) {
    case 'image':
      box.replaceChildren(el('img', { src: url, alt: label, 'data-testid': 'preview-image', decoding: 'async' }));
      return;
    case 'video':
      box.replaceChildren(el('video', { src: url, controls: true, preload: 'metadata', 'aria-label': label, 'data-testid': 'preview-video' }));
      return;
    case 'audio':
      box.replaceChildren(el('audio', { src: url, controls: true, preload: 'metadata', 'aria-label': label, 'data-testid': 'preview-audio' }));
      return;
    case 'pdf':
      box.replaceChildren(el('iframe', { src: url, title: label, 'data-testid': 'preview-pdf', class: large ? 'pdf large' : 'pdf' }),
        el('p', { class: 'hint' }, 'If the document does not show here, ', el('a', { href: url, target: '_blank', rel: 'noopener' }, 'open it in a new tab'), '.'));
      return;
    case 'text': {
      box.replaceChildren(el('p', { class: 'muted' }, 'Loading preview…'));
      try {
        const res = await api(url.slice(API.length), { headers: { Range: `bytes=0-${TEXT_PREVIEW_BYTES - 1}` } });
        const text = await res.text();
        const cut = typeof file.size === 'number' && file.size > TEXT_PREVIEW_BYTES;
        box.replaceChildren(el('pre', { class: 'text-preview', 'data-testid': 'preview-text', tabindex: '0', 'aria-label': label }, text),
          cut ? el('p', { class: 'hint' }, `The first ${formatBytes(TEXT_PREVIEW_BYTES)} of ${formatBytes(file.size)}.`) : null);
      } catch (err) {
        box.replaceChildren(el('p', { class: 'error' }, `No preview: ${err.message}`));
      }
      return;
    }
    default:
      box.replaceChildren(el('p', { class: 'muted', 'data-testid': 'preview-none' }, 'No preview for this kind of file.'));
  }
}
