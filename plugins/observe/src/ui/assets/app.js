// Porin Flow UI: the page. Plain JavaScript, no dependencies: the server sends an
// aggregated service map and the newest flows over Server-Sent Events
// (/api/stream); this file draws the map in SVG and keeps the flow table.
//
// Layout is stable: a node gets a grid slot the first time it appears and keeps
// it (workloads of the namespace in the middle, other namespaces' clients to the
// left, their servers and world/host/kube-apiserver to the right), so the map never
// moves as flows arrive.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const MIN_COLS = 2;      // workload grid columns of the namespace, at least
const FOREIGN_COLS = 2;  // columns for workloads of other namespaces
const XS = 220, YS = 100; // slot size
const NODE_W = 160, NODE_H = 44;
const MAX_ROWS = 500;    // flows kept for the table
const SHOWN_ROWS = 150;  // flows drawn in the table
const ENTITY_ORDER = ['world', 'kube-apiserver', 'host', 'remote-node'];

const ui = {
  namespace: '',
  source: null,
  paused: false,
  pendingMap: null,
  pendingRows: [],
  map: { nodes: [], edges: [] },
  nodes: new Map(),     // id -> node
  edges: new Map(),     // id -> edge
  nodeEls: new Map(),   // id -> <g>
  edgeEls: new Map(),   // id -> <g>
  slots: new Map(),     // id -> {x, y}
  cols: MIN_COLS,       // fixed by the first map of the namespace
  used: { ns: 0, foreign: 0, right: 0 },
  rows: [],
  selection: null,      // {kind: 'node'|'edge', id}
  verdict: 'all',
  live: false,          // set after the first map: later edges count as new
  edgeSeenAt: {},       // edge id -> Date.now() when drawn
  latencies: [],        // {id, ms}: flow time in the datapath -> edge on screen
  renderMs: [],         // time spent applying each map update
  lastStatus: '',
  lost: 0,
  flowsSeen: 0,
};
window.porinUi = ui;    // for tests and the curious

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function status(text, cls) {
  const s = $('status');
  s.textContent = text;
  s.className = 'status' + (cls ? ' ' + cls : '');
  ui.lastStatus = text;
}

// ---- namespaces and the stream

async function loadNamespaces() {
  let names = [];
  try {
    const r = await fetch('api/namespaces');
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    names = body.namespaces;
  } catch (e) {
    status('namespaces: ' + e.message, 'error');
  }
  const select = $('namespace');
  const wanted = decodeURIComponent(location.hash.slice(1)) || ui.namespace;
  select.replaceChildren(el('option', { value: '' }, names.length ? 'choose…' : 'no flows yet'));
  for (const n of names) select.append(el('option', { value: n }, n));
  if (wanted && !names.includes(wanted)) select.append(el('option', { value: wanted }, wanted));
  if (wanted) {
    select.value = wanted;
    if (wanted !== ui.namespace) connect(wanted);
  }
}

function connect(namespace) {
  if (ui.source) ui.source.close();
  reset();
  ui.namespace = namespace;
  if (!namespace) return;
  history.replaceState(null, '', '#' + encodeURIComponent(namespace));
  status('connecting to ' + namespace + '…');
  const source = new EventSource('api/stream?namespace=' + encodeURIComponent(namespace));
  ui.source = source;
  source.addEventListener('map', (e) => onMap(JSON.parse(e.data)));
  source.addEventListener('flows', (e) => onFlows(JSON.parse(e.data)));
  source.addEventListener('status', (e) => {
    const s = JSON.parse(e.data);
    ui.lost = s.lost;
    status(s.message, 'error');
  });
  source.addEventListener('upstream-error', (e) => status(JSON.parse(e.data).message + ' (reconnecting)', 'error'));
  source.onerror = () => status('connection to the UI server lost; reconnecting…', 'error');
}

function reset() {
  ui.nodes.clear(); ui.edges.clear(); ui.nodeEls.clear(); ui.edgeEls.clear();
  ui.slots.clear(); ui.used = { ns: 0, foreign: 0, right: 0 }; ui.cols = MIN_COLS;
  ui.rows = []; ui.pendingRows = []; ui.pendingMap = null; ui.selection = null;
  ui.live = false; ui.edgeSeenAt = {}; ui.latencies = []; ui.flowsSeen = 0;
  $('nodes').replaceChildren(); $('edges').replaceChildren();
  $('clear').disabled = true;
  showHelp();
  renderRows();
}

// ---- the map

function onMap(map) {
  if (ui.paused) { ui.pendingMap = map; return; }
  applyMap(map);
}

function slotOf(node, serverOnly) {
  let s = ui.slots.get(node.id);
  if (s) return s;
  if (node.kind !== 'workload') {
    const i = ENTITY_ORDER.indexOf(node.kind);
    s = { x: (ui.cols + 1.4) * XS, y: (i < 0 ? ENTITY_ORDER.length : i) * YS };
  } else if (node.namespace !== ui.namespace && serverOnly) {
    // Other namespaces' workloads that only receive (DNS, a shared database) go
    // right, with the entities; their clients come from the left.
    const i = ui.used.right++;
    s = { x: (ui.cols + 0.2) * XS, y: i * YS + YS * 0.5 };
  } else if (node.namespace === ui.namespace) {
    const i = ui.used.ns++;
    const col = i % ui.cols;
    // Odd columns sit half a row lower, so edges along a row miss the boxes between.
    s = { x: col * XS, y: Math.floor(i / ui.cols) * YS + (col % 2) * YS * 0.5 };
  } else {
    const i = ui.used.foreign++;
    const col = i % FOREIGN_COLS;
    s = { x: -(FOREIGN_COLS - col + 0.3) * XS, y: Math.floor(i / FOREIGN_COLS) * YS + col * YS * 0.5 };
  }
  ui.slots.set(node.id, s);
  return s;
}

function applyMap(map) {
  const t0 = performance.now();
  ui.map = map;
  ui.flowsSeen = map.flows;
  // New nodes take the next free slots in id order, so one data set always
  // gives the same picture.
  const fresh = map.nodes.filter((n) => !ui.slots.has(n.id)).sort((a, b) => a.id < b.id ? -1 : 1);
  if (ui.slots.size === 0) {
    // The grid's width is chosen once, from the first map: a wide screen shape.
    const own = fresh.filter((n) => n.kind === 'workload' && n.namespace === ui.namespace).length;
    ui.cols = Math.max(MIN_COLS, Math.ceil(Math.sqrt(own * 2.2)));
  }
  const sources = new Set(map.edges.map((e) => e.source));
  for (const n of fresh) slotOf(n, !sources.has(n.id));
  for (const n of map.nodes) {
    ui.nodes.set(n.id, n);
    if (!ui.nodeEls.has(n.id)) drawNode(n);
  }
  // Parallel edges between one pair of nodes bend apart.
  const pairs = new Map();
  for (const e of map.edges) {
    const k = e.source < e.target ? e.source + '\n' + e.target : e.target + '\n' + e.source;
    if (!pairs.has(k)) pairs.set(k, []);
    pairs.get(k).push(e.id);
  }
  const now = Date.now();
  for (const e of map.edges) {
    const k = e.source < e.target ? e.source + '\n' + e.target : e.target + '\n' + e.source;
    const group = pairs.get(k);
    ui.edges.set(e.id, e);
    let g = ui.edgeEls.get(e.id);
    if (!g) {
      g = drawEdge(e);
      ui.edgeSeenAt[e.id] = now;
      if (ui.live && e.first_ms > 0) ui.latencies.push({ id: e.id, ms: now - e.first_ms });
    }
    updateEdge(g, e, group.indexOf(e.id), group.length);
  }
  fitView();
  ui.live = true;
  ui.renderMs.push(performance.now() - t0);
  if (ui.renderMs.length > 200) ui.renderMs.shift();
  if (ui.selection) showSelection();
  const lost = ui.lost ? ` · ${ui.lost} lost upstream` : '';
  const cut = map.truncated ? ` · ${map.truncated} left out` : '';
  status(`${ui.namespace}: ${map.nodes.length} workloads · ${map.edges.length} connections · ${map.flows} flows${lost}${cut}`);
}

function drawNode(n) {
  const s = ui.slots.get(n.id);
  const foreign = n.kind === 'workload' && n.namespace !== ui.namespace;
  const cls = 'node' + (n.kind !== 'workload' ? ' entity' : '') + (foreign ? ' foreign' : '');
  const g = svg('g', { class: cls, 'data-id': n.id, transform: `translate(${s.x},${s.y})` });
  g.append(svg('rect', { x: -NODE_W / 2, y: -NODE_H / 2, width: NODE_W, height: NODE_H, rx: 6 }));
  const name = svg('text', { y: foreign ? -7 : 0 });
  name.textContent = n.name.length > 24 ? n.name.slice(0, 23) + '…' : n.name;
  g.append(name);
  if (foreign) {
    const ns = svg('text', { class: 'ns', y: 10 });
    ns.textContent = n.namespace;
    g.append(ns);
  }
  const title = svg('title');
  title.textContent = n.id;
  g.append(title);
  g.addEventListener('click', () => select({ kind: 'node', id: n.id }));
  $('nodes').append(g);
  ui.nodeEls.set(n.id, g);
}

function edgePath(e, index, count) {
  const a = ui.slots.get(e.source), b = ui.slots.get(e.target);
  if (!a || !b) return '';
  if (e.source === e.target) {
    const x = a.x + NODE_W / 2 - 10, y = a.y - NODE_H / 2;
    const r = 18 + index * 8;
    return `M${x - 20},${y} C${x - 20},${y - r * 2} ${x + r},${y - r} ${x + 2},${y + 4}`;
  }
  // From border to border of the two boxes, bent by the edge's place among its pair.
  const dx = b.x - a.x, dy = b.y - a.y;
  const len = Math.hypot(dx, dy) || 1;
  const clip = (ux, uy) => {
    const tx = Math.abs(ux) > 1e-6 ? (NODE_W / 2 + 4) / Math.abs(ux) : Infinity;
    const ty = Math.abs(uy) > 1e-6 ? (NODE_H / 2 + 4) / Math.abs(uy) : Infinity;
    return Math.min(tx, ty);
  };
  const ux = dx / len, uy = dy / len;
  const t = clip(ux, uy);
  const sx = a.x + ux * t, sy = a.y + uy * t;
  const ex = b.x - ux * t, ey = b.y - uy * t;
  // A slight curve always, more for parallel edges: straight lines would run
  // through the boxes between distant nodes.
  const bend = (index - (count - 1) / 2) * 26 + Math.min(40, len * 0.08);
  const mx = (sx + ex) / 2 - uy * bend, my = (sy + ey) / 2 + ux * bend;
  return `M${sx},${sy} Q${mx},${my} ${ex},${ey}`;
}

function drawEdge(e) {
  const g = svg('g', { class: 'edge', 'data-id': e.id });
  const hit = svg('path', { class: 'hit' });
  const line = svg('path', { class: 'line' });
  const label = svg('text');
  g.append(hit, line, label);
  g.addEventListener('click', (ev) => { ev.stopPropagation(); select({ kind: 'edge', id: e.id }); });
  $('edges').append(g);
  ui.edgeEls.set(e.id, g);
  return g;
}

function updateEdge(g, e, index, count) {
  const key = index + '/' + count;
  if (g.dataset.place !== key) {
    const d = edgePath(e, index, count);
    g.children[0].setAttribute('d', d);
    g.children[1].setAttribute('d', d);
    const mid = g.children[1].getTotalLength ? midpoint(g.children[1]) : null;
    if (mid) { g.children[2].setAttribute('x', mid.x); g.children[2].setAttribute('y', mid.y - 4); }
    g.dataset.place = key;
  }
  const cls = 'edge ' + e.verdict + (ui.selection && ui.selection.id === e.id ? ' selected' : '');
  if (g.getAttribute('class') !== cls) g.setAttribute('class', cls);
  g.dataset.verdict = e.verdict;
  const width = (1.5 + Math.min(8, Math.log2(1 + e.rate) * 1.6)).toFixed(1);
  if (g.children[1].getAttribute('stroke-width') !== width) g.children[1].setAttribute('stroke-width', width);
  const text = e.port ? `${e.protocol} ${e.port}` : e.protocol;
  if (g.children[2].textContent !== text) g.children[2].textContent = text;
}

function midpoint(path) {
  try {
    const l = path.getTotalLength();
    return path.getPointAtLength(l / 2);
  } catch (_) {
    return null;
  }
}

function fitView() {
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const s of ui.slots.values()) {
    minX = Math.min(minX, s.x); minY = Math.min(minY, s.y);
    maxX = Math.max(maxX, s.x); maxY = Math.max(maxY, s.y);
  }
  if (minX === Infinity) return;
  const pad = 60;
  const vb = `${minX - NODE_W / 2 - pad} ${minY - NODE_H / 2 - pad} ${maxX - minX + NODE_W + 2 * pad} ${maxY - minY + NODE_H + 2 * pad}`;
  const map = $('map');
  if (map.getAttribute('viewBox') !== vb) map.setAttribute('viewBox', vb);
}

// ---- flows

function onFlows(update) {
  if (ui.paused) {
    ui.pendingRows.push(...update.rows);
    if (ui.pendingRows.length > MAX_ROWS) ui.pendingRows.splice(0, ui.pendingRows.length - MAX_ROWS);
    return;
  }
  addRows(update.rows);
}

function addRows(rows) {
  // Newest first.
  for (const r of rows) ui.rows.unshift(r);
  if (ui.rows.length > MAX_ROWS) ui.rows.length = MAX_ROWS;
  scheduleRows();
}

// The table is redrawn at most every 500 ms while flows stream in (a busy
// namespace would otherwise rebuild it on every update); filters redraw at once.
let rowsTimer = null, rowsDirty = false;
function scheduleRows() {
  if (rowsTimer) { rowsDirty = true; return; }
  renderRows();
  rowsTimer = setTimeout(() => {
    rowsTimer = null;
    if (rowsDirty) { rowsDirty = false; scheduleRows(); }
  }, 500);
}

function rowMatches(r) {
  if (ui.verdict !== 'all' && r.verdict !== ui.verdict) return false;
  const s = ui.selection;
  if (!s) return true;
  if (s.kind === 'node') return r.source_node === s.id || r.target_node === s.id;
  return r.edge === s.id;
}

function time(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function renderRows() {
  const body = document.querySelector('#flows tbody');
  const frag = document.createDocumentFragment();
  let shown = 0;
  for (const r of ui.rows) {
    if (shown >= SHOWN_ROWS) break;
    if (!rowMatches(r)) continue;
    shown++;
    const tr = el('tr', { class: r.verdict });
    tr.append(
      el('td', {}, time(r.time_ms)),
      el('td', {}, r.source),
      el('td', {}, r.destination + (r.is_reply ? ' (reply)' : '')),
      el('td', {}, r.port),
      el('td', { class: 'verdict' }, r.verdict),
      el('td', {}, r.drop_reason),
      el('td', {}, r.l7),
      el('td', {}, r.node_name),
    );
    frag.append(tr);
  }
  body.replaceChildren(frag);
}

// ---- selection, details and policy hints

function select(sel) {
  ui.selection = sel;
  $('clear').disabled = false;
  for (const g of document.querySelectorAll('#map .selected')) g.classList.remove('selected');
  const g = sel.kind === 'node' ? ui.nodeEls.get(sel.id) : ui.edgeEls.get(sel.id);
  if (g) g.classList.add('selected');
  showSelection(true);
  renderRows();
}

function clearSelection() {
  ui.selection = null;
  $('clear').disabled = true;
  for (const g of document.querySelectorAll('#map .selected')) g.classList.remove('selected');
  showHelp();
  renderRows();
}

function showHelp() {
  $('details').replaceChildren(el('p', { class: 'hint' },
    'Click a workload or a connection to filter the flows; click a dropped connection to see which policy dropped it.'));
}

function facts(pairs) {
  const dl = el('dl');
  for (const [k, v] of pairs) dl.append(el('dt', {}, k), el('dd', {}, String(v)));
  return dl;
}

function showSelection(fresh) {
  const s = ui.selection;
  const pane = $('details');
  if (s.kind === 'node') {
    const n = ui.nodes.get(s.id);
    if (!n) return;
    const out = ui.map.edges.filter((e) => e.source === n.id).length;
    const inc = ui.map.edges.filter((e) => e.target === n.id).length;
    pane.replaceChildren(el('h2', {}, n.id), facts([
      ['kind', n.kind], ['namespace', n.namespace || '-'], ['outgoing', out], ['incoming', inc],
      ['labels', n.labels.join(', ')],
    ]));
    return;
  }
  const e = ui.edges.get(s.id);
  if (!e) return;
  let box = pane.querySelector('.facts');
  const dl = facts([
    ['from', e.source], ['to', e.target], ['port', e.port ? `${e.port}/${e.protocol}` : e.protocol],
    ['verdict', e.verdict], ['forwarded', e.forwarded], ['dropped', e.dropped],
    ['flows/s', e.rate], ['drop reason', e.drop_reason || '-'],
  ].concat(e.denied_by.length ? [['denied by (datapath)', e.denied_by.join(', ')]] : []));
  dl.classList.add('facts');
  if (!fresh && box) { box.replaceWith(dl); return; }
  const hint = el('div', { id: 'policy-hint' });
  pane.replaceChildren(el('h2', {}, `${e.source} → ${e.target}`), dl, hint);
  if (e.dropped > 0) explain(e, hint);
}

async function explain(e, box) {
  const src = ui.nodes.get(e.source), dst = ui.nodes.get(e.target);
  if (!src || !dst) return;
  box.replaceChildren(el('p', { class: 'hint' }, 'tracing the policies…'));
  const q = new URLSearchParams({
    src: src.labels.join(','), dst: dst.labels.join(','), port: String(e.port), protocol: e.protocol,
  });
  try {
    const r = await fetch('api/policy-hint?' + q);
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    const div = el('div', { class: 'policy' + (body.verdict === 'ALLOWED' ? ' allowed' : '') });
    div.append(el('strong', {}, 'Policy trace: ' + body.verdict), el('p', { class: 'summary' }, body.summary));
    for (const w of body.warnings) div.append(el('p', { class: 'hint' }, 'warning: ' + w));
    div.append(el('pre', {}, JSON.stringify({ egress: body.trace.egress, ingress: body.trace.ingress }, null, 1)));
    box.replaceChildren(div);
  } catch (err) {
    box.replaceChildren(el('p', { class: 'policy' }, 'no policy hint: ' + err.message));
  }
}

// ---- controls

function setPaused(paused) {
  ui.paused = paused;
  $('pause').textContent = paused ? 'Resume' : 'Pause';
  if (paused) {
    status('paused', 'paused');
    return;
  }
  if (ui.pendingMap) applyMap(ui.pendingMap);
  ui.pendingMap = null;
  addRows(ui.pendingRows);
  ui.pendingRows = [];
}

$('namespace').addEventListener('change', (e) => connect(e.target.value));
$('verdict').addEventListener('change', (e) => { ui.verdict = e.target.value; renderRows(); });
$('pause').addEventListener('click', () => setPaused(!ui.paused));
$('clear').addEventListener('click', clearSelection);
window.addEventListener('hashchange', () => {
  const ns = decodeURIComponent(location.hash.slice(1));
  if (ns && ns !== ui.namespace) { $('namespace').value = ns; connect(ns); }
});
loadNamespaces();
setInterval(() => { if (!ui.namespace) loadNamespaces(); }, 5000);
