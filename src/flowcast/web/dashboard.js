// flowcast QoE dashboard: live charts from /qoe/v1/timeseries, the last hour by CDN, recent
// sessions, and one session's player events and origin requests on one timeline.
// Plain canvas drawing, no chart library. Admin routes: loopback, or ?token= (bearer).

const params = new URLSearchParams(location.search);
const REFRESH_MS = 5000;
const token = params.get('token');
const headers = token ? { authorization: `Bearer ${token}` } : {};

const CHARTS = [
  ['sessions', 'Active sessions', ''],
  ['startup_p95_ms', 'Startup time p95', ' ms'],
  ['rebuffer_ratio', 'Rebuffer ratio', ''],
  ['stalls', 'Stalls', ''],
  ['latency_p95_ms', 'Latency p95', ' ms'],
  ['avg_bitrate_kbps', 'Average bitrate', ' kbps'],
  ['origin_requests', 'Origin requests', ''],
  ['origin_ttfb_p95_ms', 'Origin time to first byte p95', ' ms'],
];

window.flowcastDashboard = { refreshes: 0, points: 0, session: null, errors: [] };

async function getJson(path) {
  const r = await fetch(path, { headers });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function setupCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400;
  const h = canvas.clientHeight || 180;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, w, h);
  return { ctx, w, h };
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtTime(t) {
  return new Date(t * 1000).toISOString().slice(11, 19);
}

// A line chart of [t, v] points (v null = gap) with axes and the last value.
function lineChart(canvas, pts, unit, t0, t1) {
  const { ctx, w, h } = setupCanvas(canvas);
  const L = 52, R = 8, T = 8, B = 20;
  const vals = pts.filter((p) => p[1] !== null).map((p) => p[1]);
  const ymax = niceMax(Math.max(0, ...vals));
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (w - L - R);
  const y = (v) => T + (1 - v / ymax) * (h - T - B);
  ctx.strokeStyle = '#ccc';
  ctx.fillStyle = '#555';
  ctx.font = '11px sans-serif';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    ctx.beginPath();
    ctx.moveTo(L, y(v));
    ctx.lineTo(w - R, y(v));
    ctx.stroke();
    ctx.fillText(ymax < 1 ? v.toFixed(3) : ymax < 10 ? v.toFixed(1) : String(Math.round(v)), 4, y(v) + 4);
  }
  ctx.fillText(fmtTime(t0), L, h - 5);
  ctx.fillText(fmtTime(t1), w - R - 50, h - 5);
  ctx.strokeStyle = '#1f6feb';
  ctx.lineWidth = 2;
  ctx.beginPath();
  let pen = false;
  for (const [t, v] of pts) {
    if (v === null) { pen = false; continue; }
    if (pen) ctx.lineTo(x(t), y(v)); else ctx.moveTo(x(t), y(v));
    pen = true;
  }
  ctx.stroke();
  ctx.fillStyle = '#1f6feb';
  for (const [t, v] of pts) if (v !== null) ctx.fillRect(x(t) - 2, y(v) - 2, 4, 4);
  if (!vals.length) {
    ctx.fillStyle = '#999';
    ctx.fillText('no data yet', w / 2 - 25, h / 2);
  } else {
    const last = vals[vals.length - 1];
    ctx.fillStyle = '#111';
    ctx.font = 'bold 12px sans-serif';
    ctx.fillText(`${last < 1 && last > 0 ? last.toFixed(4) : Math.round(last)}${unit}`, w - R - 90, T + 12);
  }
  return vals.length;
}

function buildCharts() {
  const root = document.getElementById('charts');
  for (const [key, title] of CHARTS) {
    const fig = document.createElement('figure');
    const cap = document.createElement('figcaption');
    cap.textContent = title;
    const c = document.createElement('canvas');
    c.id = `chart-${key}`;
    c.className = 'chart';
    fig.append(cap, c);
    root.append(fig);
  }
}

function table(el, head, rows) {
  const tr = (cells, tag) => {
    const r = document.createElement('tr');
    for (const c of cells) {
      const td = document.createElement(tag);
      if (c instanceof Node) td.append(c); else td.textContent = c === null || c === undefined ? '–' : String(c);
      r.append(td);
    }
    return r;
  };
  el.replaceChildren(tr(head, 'th'), ...rows.map((r) => tr(r, 'td')));
}

const n0 = (v) => (v === null || v === undefined ? null : Math.round(v));

async function refresh() {
  try {
    const ts = await getJson('/qoe/v1/timeseries?since=15m&step=10');
    const now = Date.now() / 1000;
    let points = 0;
    for (const [key, , unit] of CHARTS) {
      const pts = ts.series.map((p) => [p.t, p[key] === undefined ? null : p[key]]);
      points += lineChart(document.getElementById(`chart-${key}`), pts, unit, now - 900, now);
    }
    const rep = await getJson('/qoe/v1/report?since=1h&by=cdn');
    table(document.getElementById('report'),
      ['cdn', 'sessions', 'startup p95 ms', 'rebuffer ratio', 'stalls', 'latency p95 ms', 'bitrate kbps', 'error rate'],
      rep.rows.map((r) => [r.group.cdn, r.sessions, n0(r.startup_p95_ms),
        r.rebuffer_ratio === null ? null : r.rebuffer_ratio.toFixed(4), r.rebuffer_count,
        n0(r.latency_p95_ms), n0(r.avg_bitrate_kbps), r.error_rate]));
    const ss = await getJson('/qoe/v1/sessions?since=1h&limit=20');
    table(document.getElementById('sessions'),
      ['session', 'protocol', 'startup ms', 'stalls', 'rebuffer ms', 'play s', 'last seen'],
      ss.sessions.map((s) => {
        const a = document.createElement('a');
        a.textContent = s.session_id;
        a.addEventListener('click', () => showSession(s.session_id));
        return [a, s.protocol, n0(s.startup_time_ms), s.rebuffer_count, n0(s.rebuffer_ms),
          (s.play_time_ms / 1000).toFixed(1), fmtTime(s.last_ts)];
      }));
    document.getElementById('updated').textContent = `updated ${fmtTime(now)} UTC`;
    window.flowcastDashboard.refreshes += 1;
    window.flowcastDashboard.points = points;
  } catch (e) {
    window.flowcastDashboard.errors.push(String(e));
  }
}

// One session: origin requests as ticks (height = time to first byte, colour = CMCD object
// type), CMCD buffer length as a line, stalls as red spans, startup and bitrate switches as
// markers, latency samples as dots.
function drawTimeline(canvas, doc) {
  const { ctx, w, h } = setupCanvas(canvas);
  const all = doc.timeline.map((x) => x.ts);
  const stalls = doc.player_events.filter((e) => e.type === 'stall');
  for (const s of stalls) all.push(s.ts - s.rebuffer_ms / 1000);
  const t0 = Math.min(...all) - 0.5;
  const t1 = Math.max(...all) + 0.5;
  const L = 10, R = 10;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (w - L - R);
  const mid = h * 0.55;
  ctx.font = '11px sans-serif';
  ctx.fillStyle = '#555';
  ctx.fillText('player', 12, 14);
  ctx.fillText('origin (TTFB, CMCD buffer)', 12, mid + 14);
  ctx.strokeStyle = '#ccc';
  ctx.beginPath();
  ctx.moveTo(L, mid);
  ctx.lineTo(w - R, mid);
  ctx.stroke();
  for (const s of stalls) {
    ctx.fillStyle = 'rgba(220,40,40,0.35)';
    ctx.fillRect(x(s.ts - s.rebuffer_ms / 1000), 20, Math.max(2, x(s.ts) - x(s.ts - s.rebuffer_ms / 1000)), mid - 24);
    ctx.fillStyle = '#b00';
    ctx.fillText(`stall ${(s.rebuffer_ms / 1000).toFixed(2)} s`, x(s.ts - s.rebuffer_ms / 1000) + 2, 32);
  }
  const reqs = doc.origin_requests;
  const maxTtfb = niceMax(Math.max(1, ...reqs.map((r) => r.ttfb_ms)));
  const colours = { v: '#1f6feb', a: '#2da44e', av: '#8250df', m: '#999', i: '#bf8700' };
  for (const r of reqs) {
    ctx.fillStyle = r.status >= 400 ? '#d00' : (colours[r.object_type] || '#666');
    const hh = 4 + (r.ttfb_ms / maxTtfb) * (h - mid - 30);
    ctx.fillRect(x(r.ts), h - 6 - hh, 2, hh);
  }
  const maxBl = niceMax(Math.max(1, ...reqs.map((r) => r.buffer_length_ms)));
  ctx.strokeStyle = '#bf8700';
  ctx.beginPath();
  let pen = false;
  for (const r of reqs) {
    if (r.object_type !== 'v' && r.object_type !== 'av') continue;
    const yy = h - 6 - (r.buffer_length_ms / maxBl) * (h - mid - 30);
    if (pen) ctx.lineTo(x(r.ts), yy); else ctx.moveTo(x(r.ts), yy);
    pen = true;
  }
  ctx.stroke();
  const lat = doc.player_events.filter((e) => e.type === 'latency');
  const maxLat = niceMax(Math.max(1, ...lat.map((e) => e.latency_ms)));
  ctx.fillStyle = '#8250df';
  for (const e of lat) ctx.fillRect(x(e.ts) - 3, mid - 6 - (e.latency_ms / maxLat) * (mid - 50) - 3, 6, 6);
  for (const e of doc.player_events) {
    if (e.type === 'startup' || e.type === 'bitrate_switch' || e.type === 'error' || e.type === 'session_start') {
      ctx.fillStyle = e.type === 'error' ? '#d00' : '#111';
      ctx.fillRect(x(e.ts) - 1, 18, 2, 12);
      const label = e.type === 'startup' ? `startup ${Math.round(e.startup_time_ms)} ms`
        : e.type === 'bitrate_switch' ? `${Math.round(e.avg_bitrate_kbps)} kbps` : e.type;
      ctx.fillText(label, x(e.ts) + 3, 46);
    }
  }
  ctx.fillStyle = '#555';
  ctx.fillText(`${fmtTime(t0)} – ${fmtTime(t1)} UTC`, w - 170, h - 8 - (h - mid - 20));
}

async function showSession(id) {
  document.getElementById('session-id').value = id;
  const title = document.getElementById('session-title');
  try {
    const doc = await getJson(`/qoe/v1/sessions/${encodeURIComponent(id)}`);
    const s = doc.session || {};
    const startup = doc.player_events.find((e) => e.type === 'startup');
    const stalls = doc.player_events.filter((e) => e.type === 'stall');
    title.textContent = `${id} · ${s.protocol || ''} · ${s.player_version || ''} · startup `
      + `${startup ? Math.round(startup.startup_time_ms) : '–'} ms · ${stalls.length} stall(s) · `
      + `${doc.origin_requests.length} origin requests`;
    drawTimeline(document.getElementById('timeline'), doc);
    table(document.getElementById('session-events'), ['time (UTC)', 'type', 'value'],
      doc.player_events.map((e) => [fmtTime(e.ts), e.type,
        e.type === 'startup' ? `${Math.round(e.startup_time_ms)} ms`
          : e.type === 'stall' ? `${Math.round(e.rebuffer_ms)} ms`
            : e.type === 'latency' ? `${Math.round(e.latency_ms)} ms`
              : e.type === 'bitrate_switch' ? `${Math.round(e.avg_bitrate_kbps)} kbps`
                : e.type === 'error' ? e.error_code
                  : e.type === 'heartbeat' || e.type === 'session_end'
                    ? `${(e.play_time_ms / 1000).toFixed(1)} s played, ${e.dropped_frames} dropped` : '']));
    window.flowcastDashboard.session = { id, events: doc.player_events.length, requests: doc.origin_requests.length };
  } catch (e) {
    title.textContent = `${id}: ${e.message}`;
    window.flowcastDashboard.errors.push(String(e));
  }
}

buildCharts();
document.getElementById('session-go').addEventListener('click', () => showSession(document.getElementById('session-id').value.trim()));
refresh();
setInterval(refresh, REFRESH_MS);
if (params.get('session')) showSession(params.get('session'));
