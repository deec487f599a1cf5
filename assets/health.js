// Node status, the live event stream, the health banner shown on every view,
// and the cluster view (nodes, capacity, repair, scrub).

import { $, API, el, ID_SHORT, announce, formatBytes, formatCount, formatDuration, formatTime, plural, relativeTime } from './util.js';
import { apiJson } from './api.js';

export const health = {
  status: null, // last /status answer, merged with later `status` events
  stream: 'connecting', // connecting | live | reconnecting | offline
  listeners: { status: [], file: [], live: [] },
};

export function on(kind, fn) {
  health.listeners[kind].push(fn);
}
const emit = (kind, value) => health.listeners[kind].forEach((fn) => fn(value));

// The problems worth a banner, each {key, text}; empty when all is well.
export function problems() {
  const s = health.status;
  const out = [];
  if (health.stream === 'offline' || health.stream === 'reconnecting') {
    out.push({ key: 'offline', text: 'This node cannot be reached: what you see may be out of date.' });
  }
  if (!s) return out;
  const down = (s.peers || []).filter((p) => p.state !== 'up');
  if (down.length) {
    const which = down.map((p) => p.url || (p.node_id || '').slice(0, ID_SHORT)).join(', ');
    out.push({ key: 'nodes-down', text: `${plural(down.length, 'node is', 'nodes are')} down: ${which}. Files they hold have fewer copies until they return.` });
  }
  const r = s.repair || {};
  if (r.missing > 0) {
    out.push({ key: 'under-replicated', text: `Under-replicated: ${plural(r.missing, 'chunk', 'chunks')} this node should hold are missing; repair is behind (${formatCount(r.fetched)} fetched so far).` });
  }
  if (s.scrub && s.scrub.corrupt > 0) {
    out.push({ key: 'damaged', text: `The scrub found ${plural(s.scrub.corrupt, 'damaged chunk copy', 'damaged chunk copies')} and dropped them for repair.` });
  }
  if (typeof s.disk_free_bytes === 'number' && typeof s.disk_reserve_bytes === 'number' && s.disk_free_bytes < s.disk_reserve_bytes) {
    out.push({ key: 'disk-full', text: `The data disk is full (${formatBytes(s.disk_free_bytes)} free, below the reserve of ${formatBytes(s.disk_reserve_bytes)}): uploads are refused.` });
  }
  return out;
}

function renderHealth() {
  const list = problems();
  const banner = $('health-banner');
  banner.hidden = list.length === 0;
  // Rebuilt only when the words change: no churn for screen readers.
  const text = list.map((p) => p.text).join('\n');
  if (banner.dataset.text !== text) {
    banner.dataset.text = text;
    $('health-items').replaceChildren(...list.map((p) => el('li', { 'data-testid': 'health-item', dataset: { key: p.key } }, p.text)));
  }
  // The header indicator: green only when connected and nothing is wrong.
  const conn = $('conn');
  let kind;
  let words;
  if (health.stream === 'live') {
    [kind, words] = list.length ? ['degraded', 'Degraded'] : ['live', 'Healthy'];
  } else if (health.stream === 'connecting') {
    [kind, words] = ['connecting', 'Connecting…'];
  } else if (health.stream === 'reconnecting') {
    [kind, words] = ['reconnecting', 'Reconnecting…'];
  } else {
    [kind, words] = ['offline', 'Offline'];
  }
  if (conn.dataset.state !== kind) {
    conn.dataset.state = kind;
    $('conn-text').textContent = words;
    if (kind !== 'connecting') announce(`Node status: ${words}.`);
  }
  conn.title = list.length ? list.map((p) => p.text).join(' ') : '';
}

export function setStream(kind) {
  health.stream = kind;
  renderHealth();
}

export function applyStatus(status) {
  // Merge: an event may carry fewer fields than /status does.
  health.status = { ...health.status, ...status };
  const s = health.status;
  $('sign-out').hidden = !s.auth_required;
  const limit = s.max_upload_bytes;
  $('upload-limit').textContent = limit ? `Up to ${formatBytes(limit)} per file.` : 'No size limit per file.';
  renderHealth();
  renderCluster();
  emit('status', s);
}

export async function loadStatus() {
  applyStatus(await apiJson('/status'));
}

let events = null;
let reconnectDelay = 1000;

export function connectEvents() {
  if (events) events.close();
  const source = new EventSource(`${API}/events`);
  events = source;
  source.addEventListener('open', () => {
    reconnectDelay = 1000;
    setStream('live');
    emit('live');
  });
  source.addEventListener('status', (e) => {
    const status = parseEvent(e);
    if (status) applyStatus(status);
  });
  source.addEventListener('file', (e) => {
    const change = parseEvent(e);
    if (change) emit('file', change);
  });
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CONNECTING) {
      // The browser retries on its own.
      setStream('reconnecting');
      return;
    }
    // CLOSED: the server answered with an error (e.g. 401) and the browser
    // gave up. Check the node ourselves (this asks for a token if needed),
    // then open a new stream, backing off while it keeps failing.
    setStream('offline');
    source.close();
    if (events === source) events = null;
    const delay = reconnectDelay;
    reconnectDelay = Math.min(reconnectDelay * 2, 30000);
    setTimeout(async () => {
      await loadStatus().catch(() => {});
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
// Cluster view

export function renderCluster() {
  const s = health.status;
  if (!s) return;
  const peers = s.peers || [];
  const self = {
    node_id: s.node_id, url: s.url || location.origin, state: 'up', last_seen: null, stored_bytes: s.stored_bytes, self: true,
    disk_free_bytes: s.disk_free_bytes, disk_total_bytes: s.disk_total_bytes,
  };
  // Lifecycle states (draining, removed, out) come from the member list; removed members
  // have no link any more, so they appear only there.
  const members = new Map((s.nodes || []).map((m) => [m.node_id, m]));
  const withState = (n) => ({ ...n, lifecycle: (members.get(n.node_id) || {}).state || n.state });
  const linked = new Set(peers.map((p) => p.node_id));
  const gone = (s.nodes || []).filter((m) => !m.me && !linked.has(m.node_id))
    .map((m) => ({ node_id: m.node_id, url: m.url, state: 'down', last_seen: m.since, lifecycle: m.state }));
  const nodes = [withState(self), ...peers.map(withState), ...gone];
  const up = nodes.filter((n) => n.state === 'up').length;
  const active = nodes.filter((n) => n.lifecycle !== 'removed').length;
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
    ['Nodes up', `${up} of ${active}`, 'nodes-up'],
    ['This node’s disk', diskSummary(self), 'disk'],
    ['Cluster disk', capacitySummary(s.capacity), 'capacity'],
    ['Chunks', formatCount(s.chunks), 'chunks'],
    ['Upload limit', s.max_upload_bytes ? formatBytes(s.max_upload_bytes) : 'none', 'limit'],
    ['Repair', repairSummary(s.repair), 'repair'],
    ['Scrub', scrubSummary(s.scrub, s.chunks), 'scrub'],
    ['This node', `${s.node_id.slice(0, ID_SHORT)} · v${s.version} · up ${formatDuration(s.uptime_secs)}`, 'self'],
  ];
  $('totals').replaceChildren(...totals.map(([k, v, t]) => el('div', { class: 'stat', 'data-testid': `total-${t}` },
    el('dt', {}, k), el('dd', {}, v))));
  $('node-rows').replaceChildren(...nodes.map(nodeRow));
}

function diskSummary(n) {
  if (typeof n.disk_total_bytes !== 'number' || !n.disk_total_bytes) return 'not reported';
  const used = n.disk_total_bytes - n.disk_free_bytes;
  return `${formatBytes(used)} used, ${formatBytes(n.disk_free_bytes)} free of ${formatBytes(n.disk_total_bytes)}`;
}

// A peer's disk as it last reported it; figures older than the node's bound
// (or from a node that is down) are labelled with their age, not shown as now.
function peerDisk(n) {
  const sp = n.space;
  if (!sp) return n.state === 'up' ? 'not reported yet' : 'unknown';
  const summary = diskSummary(sp);
  if (sp.current) return summary;
  return el('span', { class: 'stale', 'data-testid': 'disk-stale', title: formatTime(sp.measured_at) },
    `${summary} — stale, as of ${relativeTime(sp.measured_at)}`);
}

// The disks of the nodes that are up with current figures, each disk once
// (nodes sharing a file system count it once).
function capacitySummary(c) {
  if (!c || !c.disk_total_bytes) return 'not reported';
  const disks = c.disks === 1 ? '1 disk' : `${formatCount(c.disks)} disks`;
  const unknown = c.nodes_unknown > 0 ? `, ${plural(c.nodes_unknown, 'live node', 'live nodes')} not reported yet` : '';
  return `${formatBytes(c.disk_used_bytes)} used, ${formatBytes(c.disk_free_bytes)} free of ${formatBytes(c.disk_total_bytes)} (${disks} over ${plural(c.nodes, 'node', 'nodes')}${unknown})`;
}

// This node's repair: a ranking pass runs only when the cluster changes (a node joins,
// leaves, is drained or removed); chunks found missing wait in a queue.
function repairSummary(r) {
  if (!r) return '—';
  const moved = `${formatCount(r.fetched)} fetched, ${formatCount(r.dropped)} handed off`;
  if (r.pass_running) return `pass under way, ${formatCount(r.pass_ranked)} chunks ranked · ${moved}`;
  if (!r.passes) return 'idle (no change to act on)';
  const pending = r.missing > 0 ? `${formatCount(r.missing)} chunks to fetch` : 'in sync';
  const queued = r.queued > 0 ? `, ${formatCount(r.queued)} queued` : '';
  const when = r.last_pass ? ` (last pass ${relativeTime(r.last_pass)})` : '';
  return `${pending}${queued}${when} · ${moved}`;
}

// This node's scrub: how far the pass under way has got, and what it found.
function scrubSummary(r) {
  if (!r) return '—';
  if (!r.rate) return 'off';
  const passes = r.passes ? `${formatCount(r.passes)} ${r.passes === 1 ? 'pass' : 'passes'} done` : 'first pass running';
  const position = typeof r.pass_progress === 'number' && r.pass_progress > 0
    ? `, pass under way ${Math.floor(r.pass_progress * 100)} % through`
    : '';
  const checked = `${passes}${position}, ${formatCount(r.checked)} chunks checked`;
  if (r.corrupt > 0) return `${checked} · ${formatCount(r.corrupt)} damaged, dropped for repair`;
  return r.passes ? `${checked} · none damaged` : checked;
}

function nodeRow(n) {
  const seen = n.self ? 'this node' : relativeTime(n.last_seen);
  const lifecycle = n.lifecycle || n.state;
  const label = { up: 'Up', down: 'Down', out: 'Out', draining: 'Draining', removed: 'Removed' }[lifecycle] || 'Down';
  return el('tr', { 'data-testid': 'node-row', dataset: { nodeId: n.node_id || '', state: n.state, lifecycle } },
    el('th', { scope: 'row', 'data-label': 'Node' }, el('code', { title: n.node_id || '' }, (n.node_id || '?').slice(0, ID_SHORT)),
      n.self ? el('span', { class: 'badge' }, 'this node') : null),
    el('td', { 'data-label': 'Address' }, n.url || '—'),
    el('td', { 'data-label': 'State' }, el('span', { class: `state state-${n.state}`, title: lifecycle === 'out' ? 'down longer than --down-out-after: its share is copied to the others' : '' }, label)),
    el('td', { 'data-label': 'Last seen' }, n.last_seen
      ? el('time', { datetime: n.last_seen, title: formatTime(n.last_seen) }, seen)
      : seen),
    el('td', { class: 'num', 'data-label': 'Stored' }, formatBytes(n.stored_bytes)),
    el('td', { 'data-label': 'Disk', 'data-testid': 'node-disk' }, n.self ? diskSummary(n) : lifecycle === 'removed' ? '—' : peerDisk(n)));
}
