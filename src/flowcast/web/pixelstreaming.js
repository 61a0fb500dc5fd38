// Pixel Streaming player page: Epic's frontend library against flowcast's signalling server.
// Bundled by esbuild into pixelstreaming.bundle.js (see the Makefile's `web` target).
//
// window.flowcastStats mirrors the player kit's contract (playing, startupMs, currentTime,
// latency samples from the burned-in timecode) plus Pixel Streaming state: signalling
// messages seen, playerCount, streamerDisconnected, the library's disconnect reasons.

import { Config, Logger, LogLevel, PixelStreaming } from '@epicgames-ps/lib-pixelstreamingfrontend-ue5.5';
import { TimecodeReader } from './timecode.js';

const params = new URLSearchParams(window.location.search);
// The library logs every message at Info with a stack trace; ?log=info brings that back.
Logger.InitLogging(params.get('log') === 'info' ? LogLevel.Info : LogLevel.Warning, false);
const token = params.get('token');
const wsScheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
const signallingUrl = wsScheme + window.location.host + '/signalling' + (token ? '?token=' + encodeURIComponent(token) : '');

const started = performance.now();
const stats = {
  playing: false,
  startupMs: null,
  currentTime: 0,
  videoWidth: 0,
  videoHeight: 0,
  latencyMs: null,
  latencyP50: null,
  latencyP95: null,
  latencySamples: [],
  framesDecoded: 0,
  playerCount: null,
  streamerDisconnected: 0,
  disconnects: [],
  subscribeFailed: [],
  messages: {},
  dataChannelOpen: false,
  connects: 0,
  keySentAt: [],
  audioPacketsReceived: 0,
  audioCodec: null,
  videoCodec: null,
  jitterBufferMs: null,
  localCandidateType: null,
  remoteCandidateType: null,
};
window.flowcastStats = stats;

const config = new Config({
  useUrlParams: false,
  initialSettings: {
    ss: signallingUrl,
    AutoConnect: true,
    AutoPlayVideo: true,
    StartVideoMuted: true,
    HoveringMouse: true,
    WaitForStreamer: true,
    MaxReconnectAttempts: 60,
    StreamerAutoJoinInterval: 1000,
    KeyboardInput: true,
    MouseInput: true,
    TouchInput: true,
    FakeMouseWithTouches: false,
    SuppressBrowserKeys: true,
    TimeoutIfIdle: false,
    MatchViewportRes: false,
    // ?streamer= (or ?stream=, as `flowcast token --stream X` prints it) picks the streamer
    StreamerId: params.get('streamer') || params.get('stream') || '',
    ForceTURN: params.get('forceTurn') === '1', // relay-only ICE (iceTransportPolicy 'relay')
  },
});

const parent = document.getElementById('player');
const ps = new PixelStreaming(config, { videoElementParent: parent });
window.flowcastPixelStreaming = ps;

const status = document.getElementById('status');
function say(text) { if (status) status.textContent = text; }

ps.signallingProtocol.transport.addListener('message', (msg) => {
  stats.messages[msg.type] = (stats.messages[msg.type] || 0) + 1;
});
ps.signallingProtocol.addListener('streamerDisconnected', () => {
  stats.streamerDisconnected += 1;
  say('streamer disconnected; waiting for it to come back');
});
ps.addEventListener('webRtcConnected', () => { stats.connects += 1; say('connected'); });
ps.addEventListener('playerCount', (e) => { stats.playerCount = e.data.count; });
ps.addEventListener('subscribeFailed', (e) => { stats.subscribeFailed.push(e.data.message); say('subscribe failed: ' + e.data.message); });
ps.addEventListener('webRtcDisconnected', (e) => {
  stats.disconnects.push(e.data.eventString);
  stats.playing = false;
  stats.dataChannelOpen = false;
  say('disconnected: ' + e.data.eventString);
});
ps.addEventListener('dataChannelOpen', () => { stats.dataChannelOpen = true; });
ps.addEventListener('dataChannelClose', () => { stats.dataChannelOpen = false; });

let reader = null;
function watchVideo() {
  const video = parent.querySelector('video');
  if (!video || video === watchVideo.video) return;
  watchVideo.video = video;
  reader = new TimecodeReader(video, {
    ringSize: 4000,
    onSample: (ms) => {
      stats.latencyMs = ms;
      stats.latencySamples.push(ms);
      if (stats.latencySamples.length > 4000) stats.latencySamples.shift();
    },
  });
  reader.start();
}
ps.addEventListener('playStream', () => { watchVideo(); say('playing'); });
ps.addEventListener('videoInitialized', watchVideo);

// Input timing for the benchmark: when the page saw each key (before the library sends it).
window.addEventListener('keydown', (e) => { stats.keySentAt.push([e.keyCode, Date.now()]); }, { capture: true });

setInterval(() => {
  const video = parent.querySelector('video');
  if (!video) return;
  stats.currentTime = video.currentTime;
  stats.videoWidth = video.videoWidth;
  stats.videoHeight = video.videoHeight;
  if (!stats.playing && video.videoWidth > 0 && video.currentTime > 0 && !video.paused) {
    stats.playing = true;
    if (stats.startupMs === null) stats.startupMs = Math.round(performance.now() - started);
  }
  if (reader) {
    stats.framesDecoded = reader.framesDecoded;
    stats.latencyP50 = reader.samples.p50();
    stats.latencyP95 = reader.samples.p95();
  }
}, 100);

// RTP-level view of what arrives (audio has no picture to check): from the peer connection.
setInterval(async () => {
  const pc = ps.webRtcController?.peerConnectionController?.peerConnection;
  if (!pc || pc.connectionState === 'closed') return;
  const report = await pc.getStats();
  const codecs = {};
  report.forEach((r) => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
  report.forEach((r) => {
    if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
    const pair = report.get(r.selectedCandidatePairId);
    stats.localCandidateType = pair ? report.get(pair.localCandidateId)?.candidateType || null : null;
    stats.remoteCandidateType = pair ? report.get(pair.remoteCandidateId)?.candidateType || null : null;
  });
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    if (r.kind === 'audio') {
      stats.audioPacketsReceived = r.packetsReceived || 0;
      stats.audioCodec = codecs[r.codecId] || null;
    } else if (r.kind === 'video') {
      stats.videoCodec = codecs[r.codecId] || null;
      if (r.jitterBufferEmittedCount) stats.jitterBufferMs = Math.round((1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount);
    }
  });
}, 1000);
