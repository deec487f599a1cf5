// DistStore browser UI: the entry point. Plain ES modules, no build step, no
// dependencies; each module is one concern:
//   util.js     DOM helpers, formatting, names, dialogs that ask a question
//   api.js      requests to /api/v1 and the sign-in they may need
//   health.js   node status, the event stream, the health banner, the cluster view
//   files.js    the file manager: folders, search, sort, selection, actions
//   preview.js  previews of images, text, PDF, audio and video
//   uploads.js  resumable uploads (tus) with speed and ETA
//
// The page talks only to the public REST API under /api/v1 and to its event
// stream. Lists are paged by the server, so a store of a million names costs
// the page one page of names at a time.

import { $, announce, notify } from './util.js';
import { signOut } from './api.js';
import { connectEvents, loadStatus, on, renderCluster, setStream } from './health.js';
import { listState, onFileEvent, onRoute, scheduleRefresh, showListError, viewFromHash, wireFiles } from './files.js';
import { knobs, onUploadStored, wireUploads } from './uploads.js';

// Tests and operators can reach the upload knobs (see uploads.js).
window.diststore = knobs;

function showView(fromUser) {
  const cluster = viewFromHash().page === 'cluster';
  $('view-files').hidden = cluster;
  $('view-cluster').hidden = !cluster;
  $('nav-files').removeAttribute('aria-current');
  $('nav-cluster').removeAttribute('aria-current');
  $(cluster ? 'nav-cluster' : 'nav-files').setAttribute('aria-current', 'page');
  const path = listState.view.path;
  document.title = cluster ? 'Cluster · DistStore' : `${path ? `${path} · ` : ''}DistStore`;
  // Moving focus to the new view's heading tells screen readers the page changed.
  if (fromUser && cluster) $('cluster-heading').focus();
}

function route(fromUser) {
  onRoute();
  showView(fromUser);
}

async function start() {
  try {
    await loadStatus();
  } catch (err) {
    setStream('offline');
    showListError(err);
    return;
  }
  connectEvents();
  route(false);
}

on('file', onFileEvent);
// Whatever changed while the stream was away shows up now.
on('live', () => scheduleRefresh());
onUploadStored(() => scheduleRefresh());
wireFiles();
wireUploads(() => (listState.view.q ? '' : listState.view.path));
$('sign-out').addEventListener('click', signOut);
window.addEventListener('hashchange', () => route(true));
// Relative times ("12 s ago") go stale; refresh them while visible.
setInterval(() => { if (viewFromHash().page === 'cluster') renderCluster(); }, 5000);
window.addEventListener('online', () => notify('Back online.'));
window.addEventListener('offline', () => notify('This device is offline.', 'error'));
announce('');
start();
