// flowcast player kit: one page, three players (hls.js, dash.js, Shaka), one stats contract.
//
// window.flowcastStats (read by tests/browser.py and the latency benchmark):
//   {player, src, stream, timecode, startupMs, latencyMs, latencySource: 'timecode'|'pdt'|'prt'|null,
//    latencySamples: [...last N ms], latencyP50Ms, latencyP95Ms, bufferS, bitrateKbps,
//    width, height, stalls, stallMs, shortWaits, errors: [...], playing, currentTime, framesDecoded}
//
// Latency: the burned-in timecode (timecode.js) when the picture carries one, else the
// player's own wall-clock estimate: hls.js PROGRAM-DATE-TIME (playingDate, else
// hls.latency), dash.js getCurrentLiveLatency() ('prt' when the MPD has a
// ProducerReferenceTime, else 'pdt'), Shaka getPlayheadTimeAsDate().

import { TimecodeReader, SampleRing } from './timecode.js';

// Analytics are optional: loaded dynamically so that playback never depends on them (a
// blocked or missing analytics.js / consent.js leaves the player working, without QoE).
const qoeModules = await Promise.all([import('./analytics.js'), import('./consent.js')]).catch(() => null);
const { Analytics, WebRTCStatsHook } = qoeModules ? qoeModules[0] : {};
const { bannerFacts, initialDecision, pickLang, showBanner, showWithdraw } = qoeModules ? qoeModules[1] : {};

const STATS_INTERVAL_MS = 250; // 4x per second
const RING_SIZE = 120;
const MAX_ERRORS = 20;

const params = new URLSearchParams(location.search);
const playerName = (params.get('player') || 'hls').toLowerCase();
const stream = params.get('stream') || 'live';
const defaultSrc = playerName === 'dash'
  ? `/live/${stream}/manifest.mpd`
  : (playerName === 'whep' ? `/whep/${stream}` : `/live/${stream}/master.m3u8`);
const src = params.get('src') || defaultSrc;
// Optional target latency override (s). Without it each player follows the stream's own
// advice: PART-HOLD-BACK for LL-HLS (3 x 0.5 s parts = 1.5 s), ServiceDescription for DASH.
const targetLatencyS = params.has('latency') ? parseFloat(params.get('latency')) : null;
// ?timecode=off skips the burned-in timecode (to compare against, or test, the players'
// wall-clock estimates on a stream that does carry one).
const useTimecode = params.get('timecode') !== 'off';

// Signed URLs: a `token` in the page URL becomes the `flowcast_token` cookie, which the
// browser then sends with every same-origin request of every player (playlists, parts,
// segments, keys) without touching the pre-rendered, cacheable playlists.
if (params.has('token')) {
  document.cookie = `flowcast_token=${encodeURIComponent(params.get('token'))}; path=/; SameSite=Strict`;
}

// ClearKey license server of the origin (W3C JSON). The players only use it when the
// stream is encrypted; the same token cookie authorises the license request.
const licenseUrl = params.get('license') || `${location.origin}/license/clearkey`;

// QoE analytics (analytics.js, consent.js): ?telemetry=off disables them; ?consent=yes|no
// answers the consent question without the banner; ?lang=en|pt-BR picks its language.
const telemetryOn = params.get('telemetry') !== 'off' && qoeModules !== null;
const lang = telemetryOn ? pickLang(params, navigator.language) : 'en';
const protocol = params.get('protocol') || (playerName === 'whep' ? 'webrtc'
  : ((playerName === 'dash' || (playerName === 'shaka' && src.includes('.mpd'))) ? 'll-dash' : 'll-hls'));
const PLAYER_VERSIONS = {
  hls: 'hls.js 1.7.4', dash: 'dash.js 5.2.1', shaka: 'shaka-player 5.2.12', whep: 'whep RTCPeerConnection',
};
const analytics = telemetryOn ? new Analytics({
  protocol,
  cdn: params.get('cdn') || 'origin',
  playerVersion: PLAYER_VERSIONS[playerName] || playerName,
  streamId: stream,
  consent: initialDecision(params) === 'yes',
}) : null;
window.flowcastAnalytics = analytics;
// Late opt-in: players that can change their CMCD settings while playing take the new sid.
let enableCmcd = () => {};

const video = document.getElementById('video');
const view = document.getElementById('stats');

const stats = {
  player: playerName,
  src,
  stream,
  timecode: useTimecode,
  startupMs: null,
  latencyMs: null,
  latencySource: null,
  latencySamples: [],
  latencyP50Ms: null,
  latencyP95Ms: null,
  bufferS: 0,
  bitrateKbps: null,
  width: 0,
  height: 0,
  stalls: 0,
  stallMs: 0,
  shortWaits: 0,
  errors: [],
  playing: false,
  currentTime: 0,
  framesDecoded: 0,
};
window.flowcastStats = stats;

function recordError(where, detail) {
  let text;
  try {
    text = typeof detail === 'string' ? detail : JSON.stringify(detail);
  } catch (e) {
    text = String(detail);
  }
  stats.errors.push(`${where}: ${text}`.slice(0, 500));
  if (analytics) analytics.onError(`${where}:${text}`);
  if (stats.errors.length > MAX_ERRORS) stats.errors.shift();
}

window.addEventListener('error', (e) => recordError('window', e.message));
window.addEventListener('unhandledrejection', (e) => recordError('promise', String(e.reason)));

// ---- startup and stalls -------------------------------------------------------------

let playRequestedAt = null;
let firstFrameAt = null;
let stallStartedAt = null;

function markFirstFrame() {
  if (firstFrameAt !== null || playRequestedAt === null) return;
  firstFrameAt = performance.now();
  stats.startupMs = Math.round(firstFrameAt - playRequestedAt);
  stats.playing = true;
  if (analytics) analytics.onStartup(stats.startupMs);
}

// A 'waiting' with seconds of media buffered that clears within a few ms is the decoder or
// compositor missing a deadline on a busy CPU, not a rebuffer the viewer sees. It counts as
// a stall when the buffer was starved when it began, or once it has lasted STALL_MIN_MS.
// The short ones are still reported, as shortWaits.
const STALL_MIN_MS = 100;
const STARVED_BUFFER_S = 0.3;
let stallCounted = false;
let stallSeq = 0;

function countStall() {
  if (stallCounted) return;
  stallCounted = true;
  stats.stalls += 1;
}

function endStall() {
  if (stallStartedAt === null) return;
  if (stallCounted) {
    const ms = Math.round(performance.now() - stallStartedAt);
    stats.stallMs += ms;
    // WHEP: stalls reach the analytics from the receiver's freezes (WebRTCStatsHook), not twice.
    if (analytics && playerName !== 'whep') analytics.onStall(ms);
  } else stats.shortWaits += 1;
  stallStartedAt = null;
  stallCounted = false;
}

if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
  video.requestVideoFrameCallback(() => markFirstFrame());
}
video.addEventListener('playing', () => {
  markFirstFrame();
  stats.playing = true;
  endStall();
});
video.addEventListener('waiting', () => {
  // Only a stall once the first frame is out: startup buffering is startup time.
  if (firstFrameAt === null || stallStartedAt !== null) return;
  stallStartedAt = performance.now();
  stallCounted = false;
  stats.playing = false;
  const seq = ++stallSeq;
  if (bufferAhead() < STARVED_BUFFER_S) {
    countStall();
  } else {
    setTimeout(() => { if (seq === stallSeq && stallStartedAt !== null) countStall(); }, STALL_MIN_MS);
  }
});
let lastTime = -1;
video.addEventListener('timeupdate', () => {
  // Some players leave 'waiting' without a 'playing' (e.g. after a gap jump): progressing
  // playback ends the stall too.
  if (stallStartedAt !== null && video.currentTime > lastTime && !video.paused && video.readyState >= 3) {
    endStall();
    stats.playing = true;
  }
  lastTime = video.currentTime;
});
video.addEventListener('pause', () => { stats.playing = false; });
video.addEventListener('error', () => {
  const err = video.error;
  recordError('video', err ? `${err.code} ${err.message}` : 'unknown');
});

// ---- latency --------------------------------------------------------------------------

const latencyRing = new SampleRing(RING_SIZE);
const timecode = new TimecodeReader(video, { ringSize: RING_SIZE });
let wallClockLatency = () => null; // set per player: returns {ms, source} or null

function updateLatency() {
  // Keep the timecode as the source through short gaps (a busy renderer may skip frame callbacks).
  if (timecode.fresh(5000)) {
    stats.latencyMs = Math.round(timecode.samples.last());
    stats.latencySource = 'timecode';
    stats.latencySamples = timecode.samples.toArray();
    stats.latencyP50Ms = timecode.samples.p50();
    stats.latencyP95Ms = timecode.samples.p95();
    return;
  }
  let est = null;
  try {
    est = wallClockLatency();
  } catch (e) {
    est = null;
  }
  if (est && Number.isFinite(est.ms) && est.ms >= 0 && est.ms <= 60000 && stats.playing) {
    latencyRing.push(est.ms);
    stats.latencyMs = Math.round(est.ms);
    stats.latencySource = est.source;
    stats.latencySamples = latencyRing.toArray();
    stats.latencyP50Ms = latencyRing.p50();
    stats.latencyP95Ms = latencyRing.p95();
  }
}

// ---- buffer ---------------------------------------------------------------------------

function bufferAhead() {
  const t = video.currentTime;
  const b = video.buffered;
  for (let i = 0; i < b.length; i++) {
    if (b.start(i) <= t + 0.1 && t < b.end(i)) return b.end(i) - t;
  }
  return 0;
}

// ---- players --------------------------------------------------------------------------

let currentBitrate = () => null; // returns kbps or null

function loadScript(url) {
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = url;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${url}`));
    document.head.appendChild(s);
  });
}

async function startHls() {
  const { default: Hls } = await import('/vendor/hls.js/hls.mjs');
  if (!Hls.isSupported()) throw new Error('hls.js: MSE not supported');
  const config = {
    lowLatencyMode: true,
    // Keep a short back buffer: live viewers do not seek far back, and MSE memory is
    // finite on TVs and phones.
    backBufferLength: 30,
    // Catch up gently (<= 1.25x) when we fall behind the target latency.
    maxLiveSyncPlaybackRate: 1.25,
    // A part is 0.5 s: allow the ABR to react within a couple of parts.
    abrEwmaFastLive: 2,
    abrEwmaSlowLive: 6,
    enableWorker: true,
    emeEnabled: true,
    drmSystems: { 'org.w3.clearkey': { licenseUrl } },
  };
  // CMCD (CTA-5004) as a query parameter, sid = the analytics session id, only after consent.
  if (analytics && analytics.sessionId) config.cmcd = { sessionId: analytics.sessionId, contentId: stream };
  if (targetLatencyS !== null && targetLatencyS > 0) {
    // hls.js requires the pair; the max bounds the drift before a seek to the edge.
    config.liveSyncDuration = targetLatencyS;
    config.liveMaxLatencyDuration = Math.max(targetLatencyS * 3, targetLatencyS + 3);
  }
  const hls = new Hls(config);
  window.flowcastPlayer = hls;
  hls.on(Hls.Events.ERROR, (_e, data) => {
    if (data.fatal) recordError('hls', `${data.type} ${data.details}`);
    if (data.fatal && data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  hls.loadSource(src);
  hls.attachMedia(video);
  wallClockLatency = () => {
    const date = hls.playingDate;
    if (date) return { ms: Date.now() - date.getTime(), source: 'pdt' };
    const l = hls.latency;
    return Number.isFinite(l) && l > 0 ? { ms: l * 1000, source: 'pdt' } : null;
  };
  currentBitrate = () => {
    const level = hls.levels && hls.levels[hls.currentLevel];
    return level ? level.bitrate / 1000 : null;
  };
}

async function startDash() {
  const { default: dashjs } = await import('/vendor/dashjs/modern/esm/dash.all.min.js');
  const player = dashjs.MediaPlayer().create();
  window.flowcastPlayer = player;
  const settings = {
    debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
    streaming: {
      // Low-latency mode switches on by itself when the MPD has
      // availabilityTimeComplete="false" (chunked CMAF); these shape it.
      delay: { useSuggestedPresentationDelay: true },
      liveCatchup: { enabled: true, maxDrift: 3, playbackRate: { min: -0.2, max: 0.25 } },
      buffer: { stallThreshold: 0.3, lowLatencyStallThreshold: 0.3 },
      // Prefer the MPD's UTCTiming; never fall back to a third-party time server.
      utcSynchronization: {
        useManifestDateHeaderTimeSource: true,
        defaultTimingSource: { scheme: 'urn:mpeg:dash:utc:http-head:2014', value: location.origin + '/' },
      },
    },
  };
  if (targetLatencyS !== null && targetLatencyS > 0) {
    settings.streaming.delay.liveDelay = targetLatencyS;
  }
  const dashCmcd = (sid) => (sid
    ? { enabled: true, sid, cid: stream, mode: 'query', applyParametersFromMpd: false }
    : { enabled: false, sid: null });
  if (analytics && analytics.sessionId) settings.streaming.cmcd = dashCmcd(analytics.sessionId);
  enableCmcd = (sid) => player.updateSettings({ streaming: { cmcd: dashCmcd(sid) } });
  player.updateSettings(settings);
  if (params.has('token')) {
    // dash.js fetches chunked segments with credentials 'omit', so the token cookie does
    // not travel: add the token to every request URL instead.
    const token = params.get('token');
    player.addRequestInterceptor((request) => {
      const url = new URL(request.url, location.href);
      if (url.origin === location.origin && !url.searchParams.has('token')) {
        url.searchParams.set('token', token);
        request.url = url.toString();
      }
      return Promise.resolve(request);
    });
  }
  // No setProtectionData: dash.js takes the ClearKey license URL from the MPD
  // (dashif:Laurl); giving it here too makes dash.js 5.2 fail generateRequest().
  player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
    recordError('dash', e.error ? `${e.error.code} ${e.error.message}` : e);
  });
  let hasPrt = false;
  player.on(dashjs.MediaPlayer.events.MANIFEST_LOADED, (e) => {
    try {
      hasPrt = JSON.stringify(e.data || {}).includes('ProducerReferenceTime');
    } catch (err) {
      hasPrt = false;
    }
  });
  player.initialize(video, src, true);
  wallClockLatency = () => {
    const l = player.getCurrentLiveLatency();
    return Number.isFinite(l) && l > 0 ? { ms: l * 1000, source: hasPrt ? 'prt' : 'pdt' } : null;
  };
  currentBitrate = () => {
    const rep = player.getCurrentRepresentationForType('video');
    return rep && rep.bandwidth ? rep.bandwidth / 1000 : null;
  };
}

async function startShaka() {
  await loadScript('/vendor/shaka-player/shaka-player.compiled.js');
  const shaka = window.shaka;
  shaka.polyfill.installAll();
  if (!shaka.Player.isBrowserSupported()) throw new Error('shaka: browser not supported');
  const player = new shaka.Player();
  window.flowcastPlayer = player;
  await player.attach(video);
  const config = {
    streaming: {
      lowLatencyMode: true,
      // Live sync: speed up to catch the target, as hls.js and dash.js do.
      liveSync: { enabled: true, maxPlaybackRate: 1.25 },
    },
  };
  // Shaka sets up MediaKeys whenever a license server is configured, and a video element
  // with MediaKeys cannot be read back into a canvas (no timecode latency): so only for
  // protected streams, which the page is told about with ?drm=clearkey.
  if (params.get('drm') === 'clearkey') config.drm = { servers: { 'org.w3.clearkey': licenseUrl } };
  if (targetLatencyS !== null && targetLatencyS > 0) {
    config.streaming.liveSync.targetLatency = targetLatencyS;
  }
  const shakaCmcd = (sid) => (sid
    ? { enabled: true, sessionId: sid, contentId: stream, useHeaders: false }
    : { enabled: false, sessionId: '' });
  if (analytics && analytics.sessionId) config.cmcd = shakaCmcd(analytics.sessionId);
  enableCmcd = (sid) => player.configure({ cmcd: shakaCmcd(sid) });
  player.configure(config);
  player.addEventListener('error', (e) => recordError('shaka', `${e.detail.code}`));
  // Absolute: Shaka's CMCD query writer drops the host of a path-only URL.
  await player.load(new URL(src, location.href).href);
  wallClockLatency = () => {
    const date = player.getPlayheadTimeAsDate();
    return date ? { ms: Date.now() - date.getTime(), source: 'pdt' } : null;
  };
  currentBitrate = () => {
    const s = player.getStats();
    return s && s.streamBandwidth ? s.streamBandwidth / 1000 : null;
  };
}

// WHEP (draft-ietf-wish-whep): a plain RTCPeerConnection, recvonly video + audio. The offer
// is POSTed as soon as it is created, so the ICE servers of the answer's Link headers
// (TURN with per-session credentials) are known before gathering starts: they are set,
// then the offer is applied and our candidates trickle to the resource with PATCH.
// ?relay=1 forces relay-only ICE (iceTransportPolicy 'relay': the TURN path).
function parseIceLinks(headers) {
  const servers = [];
  const link = headers.get('link');
  if (!link) return servers;
  for (const part of link.split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]+)>(.*)/);
    if (!m || !/rel="?ice-server"?/.test(m[2])) continue;
    const server = { urls: m[1] };
    const user = m[2].match(/username="([^"]*)"/);
    const cred = m[2].match(/credential="([^"]*)"/);
    if (user && cred) {
      server.username = user[1];
      server.credential = cred[1];
    }
    servers.push(server);
  }
  return servers;
}

async function startWhep() {
  const relay = params.get('relay') === '1';
  const endpoint = new URL(src, location.href);
  const auth = params.has('token') ? { authorization: `Bearer ${params.get('token')}` } : {};
  const pc = new RTCPeerConnection({ iceServers: [], iceTransportPolicy: relay ? 'relay' : 'all' });
  window.flowcastPlayer = pc;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const ms = new MediaStream();
  pc.ontrack = (e) => {
    ms.addTrack(e.track);
    if (video.srcObject !== ms) video.srcObject = ms;
  };
  const offer = await pc.createOffer();
  const resp = await fetch(endpoint, {
    method: 'POST', body: offer.sdp, headers: { 'content-type': 'application/sdp', ...auth },
  });
  if (resp.status !== 201) throw new Error(`whep POST ${resp.status} ${(await resp.text()).slice(0, 200)}`);
  const resource = new URL(resp.headers.get('location'), endpoint).href;
  const answer = await resp.text();
  pc.setConfiguration({ iceServers: parseIceLinks(resp.headers), iceTransportPolicy: relay ? 'relay' : 'all' });
  const ufrag = (offer.sdp.match(/a=ice-ufrag:(.*)/) || [])[1];
  const pwd = (offer.sdp.match(/a=ice-pwd:(.*)/) || [])[1];
  pc.onicecandidate = (e) => {
    const line = e.candidate && e.candidate.candidate ? `a=${e.candidate.candidate}` : 'a=end-of-candidates';
    const body = `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n${line}\r\n`;
    fetch(resource, { method: 'PATCH', body, headers: { 'content-type': 'application/trickle-ice-sdpfrag' } })
      .catch(() => {});
  };
  await pc.setLocalDescription(offer);
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  pc.onconnectionstatechange = () => {
    stats.webrtcState = pc.connectionState;
    if (pc.connectionState === 'failed') recordError('whep', 'peer connection failed');
  };
  window.addEventListener('pagehide', () => {
    fetch(resource, { method: 'DELETE', keepalive: true }).catch(() => {});
    pc.close();
  });
  const hook = WebRTCStatsHook ? new WebRTCStatsHook(pc, analytics) : null;
  window.flowcastWebRTC = hook;
  let lastBytes = null;
  let lastAt = null;
  let kbps = null;
  setInterval(async () => {
    if (!hook) return;
    const s = await hook.poll();
    if (!s) return;
    if (lastBytes !== null && s.at > lastAt) kbps = ((s.bytesReceived - lastBytes) * 8) / (s.at - lastAt);
    lastBytes = s.bytesReceived;
    lastAt = s.at;
    stats.webrtc = hook.summary();
  }, 1000);
  currentBitrate = () => kbps;
}

// ---- view -----------------------------------------------------------------------------

function fmt(v, digits = 0, unit = '') {
  return v === null || v === undefined || Number.isNaN(v) ? '–' : `${Number(v).toFixed(digits)}${unit}`;
}

function render() {
  const rows = [
    ['player', stats.player],
    ['startup', fmt(stats.startupMs, 0, ' ms')],
    ['latency', `${fmt(stats.latencyMs, 0, ' ms')} (${stats.latencySource || 'n/a'})`],
    ['latency p50 / p95', `${fmt(stats.latencyP50Ms, 0)} / ${fmt(stats.latencyP95Ms, 0)} ms`],
    ['buffer ahead', fmt(stats.bufferS, 2, ' s')],
    ['bitrate', fmt(stats.bitrateKbps, 0, ' kbps')],
    ['resolution', stats.width ? `${stats.width}x${stats.height}` : '–'],
    ['stalls', `${stats.stalls} (${fmt(stats.stallMs / 1000, 2, ' s')})`],
    ['errors', stats.errors.length ? stats.errors[stats.errors.length - 1] : 'none'],
  ];
  view.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    return [dt, dd];
  }));
}

function tick() {
  stats.currentTime = video.currentTime;
  stats.bufferS = Math.round(bufferAhead() * 1000) / 1000;
  stats.width = video.videoWidth;
  stats.height = video.videoHeight;
  stats.framesDecoded = timecode.framesSeen;
  try {
    const kbps = currentBitrate();
    stats.bitrateKbps = kbps === null ? null : Math.round(kbps);
  } catch (e) {
    stats.bitrateKbps = null;
  }
  updateLatency();
  if (analytics) analytics.onTick(stats, video);
  render();
}

function setupConsent() {
  if (!analytics) return;
  const withdraw = () => showWithdraw(lang, async () => {
    await analytics.withdraw();
    enableCmcd(null);
  });
  const prove = (action) => bannerFacts(lang)
    .then((facts) => analytics.recordConsent(action, facts))
    .catch(() => null); // no proof must never stop playback
  if (analytics.consent) {
    prove('grant'); // decided earlier (stored choice or ?consent=yes): this session's proof
    withdraw();
  } else if (initialDecision(params) === null) {
    showBanner(lang, (yes) => {
      analytics.setConsent(yes);
      prove(yes ? 'grant' : 'decline');
      if (yes) {
        enableCmcd(analytics.sessionId); // hls.js fixes CMCD at creation: joins from the next load
        withdraw();
      }
    });
  }
}

async function main() {
  const starters = { hls: startHls, dash: startDash, shaka: startShaka, whep: startWhep };
  const start = starters[playerName];
  if (!start) {
    recordError('page', `unknown player ${playerName}`);
    render();
    return;
  }
  setupConsent();
  video.muted = true;
  // dash.js starts playback itself (initialize(..., autoplay=true)): a 'play' event that fires
  // before its PlaybackController listens leaves it believing the video is paused, and a
  // paused dash.js never refreshes the MPD, so it would miss every new Period (encoder
  // restarts, key rotation).
  const selfStarting = playerName === 'dash';
  video.autoplay = !selfStarting;
  playRequestedAt = performance.now();
  setInterval(tick, STATS_INTERVAL_MS);
  if (useTimecode) timecode.start();
  try {
    await start();
    const p = selfStarting ? null : video.play();
    if (p && p.catch) p.catch((e) => { if (e.name !== 'AbortError') recordError('play', e.message); });
  } catch (e) {
    recordError(playerName, e.message || String(e));
  }
}

main();
