// QoE beacons for the flowcast collector (POST /qoe/v1/events; field names from
// reference/schema.md). Before consent every event goes out with consent:false, a constant
// session id and per-batch event numbers: the collector keeps only per-minute counts, and
// nothing links two events to one viewer. After consent: a random session id (also the
// players' CMCD sid, so the origin's access events join this session), full events.
//
// Events: session_start, startup (play request to first frame), stall (one per stall, its
// duration), bitrate_switch, latency (one sample per batch), error (code), heartbeat
// (play time, dropped frames and time-weighted bitrate since the previous one: deltas),
// session_end at pagehide. Batched every BATCH_MS; navigator.sendBeacon at pagehide.

const BATCH_MS = 5000;
const MAX_QUEUE = 400; // the collector takes 500 events per batch

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export class Analytics {
  constructor({ endpoint = '/qoe/v1/events', consentEndpoint = '/qoe/v1/consent', protocol, cdn = 'origin',
    playerVersion = '', streamId = '', consent = false, batchMs = BATCH_MS } = {}) {
    this.endpoint = endpoint;
    this.consentEndpoint = consentEndpoint;
    this.context = { protocol, cdn, player_version: playerVersion.slice(0, 64), stream_id: streamId.slice(0, 128) };
    this.queue = [];
    this.seq = 0;
    this.sessionId = null;
    this.consent = false;
    this.startupMs = null;
    this.sent = { batches: 0, events: 0, refused: 0, lastStatus: null };
    // Heartbeat accumulators (deltas since the last heartbeat).
    this.playMs = 0;
    this.bitrateMs = 0; // sum of kbps x ms
    this.bitratePlayMs = 0;
    this.droppedBase = null;
    this.lastBitrate = null;
    this.lastTickAt = null;
    if (consent) this.setConsent(true);
    this.timer = setInterval(() => this.flush(false), batchMs);
    window.addEventListener('pagehide', () => this.end());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden') this.flush(true);
    });
  }

  setConsent(yes) {
    if (yes && !this.consent) {
      this.consent = true;
      this.sessionId = newId();
      this.queue = []; // anonymous events still queued are re-sent below under the session (startup)
      this.emit('session_start', {});
      if (this.startupMs !== null) this.emit('startup', { startup_time_ms: this.startupMs });
    } else if (!yes) {
      this.consent = false;
    }
  }

  // The proof of a decision (grant: this session; decline: no session id exists).
  async recordConsent(action, facts) {
    if (!facts) return null;
    const resp = await fetch(this.consentEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ session_id: action === 'grant' ? this.sessionId : '', action, ...facts }),
    });
    return resp.status;
  }

  // Withdraw: stop identified collection now, ask the server to erase this session.
  async withdraw() {
    const sid = this.sessionId;
    this.consent = false;
    this.sessionId = null;
    this.queue = [];
    if (!sid) return null;
    const resp = await fetch(this.consentEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ session_id: sid, action: 'withdraw' }),
    });
    return resp.status;
  }

  emit(type, fields) {
    if (this.queue.length >= MAX_QUEUE) return;
    this.queue.push({ type, ts: Date.now(), consent: this.consent, sid: this.sessionId, fields });
  }

  // Hooks called by player.js ---------------------------------------------------------
  onStartup(ms) {
    this.startupMs = Math.round(ms);
    this.emit('startup', { startup_time_ms: this.startupMs });
  }

  onStall(ms) {
    this.emit('stall', { rebuffer_ms: Math.max(0, Math.round(ms)) });
  }

  onError(code) {
    this.emit('error', { error_code: String(code).slice(0, 64) });
  }

  // Every stats tick: play time, time-weighted bitrate, bitrate switches.
  onTick(stats, video) {
    const now = performance.now();
    const dt = this.lastTickAt === null ? 0 : now - this.lastTickAt;
    this.lastTickAt = now;
    const kbps = stats.bitrateKbps;
    if (stats.playing && !video.paused && dt > 0 && dt < 2000) {
      this.playMs += dt;
      if (kbps) {
        this.bitrateMs += kbps * dt;
        this.bitratePlayMs += dt;
      }
    }
    if (kbps && kbps !== this.lastBitrate) {
      if (this.lastBitrate !== null) this.emit('bitrate_switch', { avg_bitrate_kbps: kbps });
      this.lastBitrate = kbps;
    }
    this.video = video;
    this.stats = stats;
  }

  heartbeat(type = 'heartbeat') {
    const fields = { play_time_ms: Math.round(this.playMs) };
    if (this.bitratePlayMs > 0) fields.avg_bitrate_kbps = Math.round(this.bitrateMs / this.bitratePlayMs);
    const q = this.video && this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
    if (this.droppedSource) {
      // WebRTC: inbound-rtp framesDropped (WebRTCStatsHook), the receiver's own count.
      const dropped = this.droppedSource();
      if (this.droppedBase === null) this.droppedBase = 0;
      fields.dropped_frames = Math.max(0, dropped - this.droppedBase);
      this.droppedBase = dropped;
    } else if (q) {
      const dropped = q.droppedVideoFrames;
      if (this.droppedBase === null) this.droppedBase = 0;
      fields.dropped_frames = Math.max(0, dropped - this.droppedBase);
      this.droppedBase = dropped;
    }
    if (this.relaySource) {
      // WebRTC: the share of this interval's connected play time on a TURN relay pair.
      const [relay, pair] = this.relaySource();
      const [relay0, pair0] = this.relayBase || [0, 0];
      if (pair - pair0 > 0) fields.turn_relay_ratio = Math.round(((relay - relay0) / (pair - pair0)) * 1000) / 1000;
      this.relayBase = [relay, pair];
    }
    this.playMs = 0;
    this.bitrateMs = 0;
    this.bitratePlayMs = 0;
    this.emit(type, fields);
  }

  body(events) {
    let n = 0;
    const out = events.map((e) => {
      const ev = { event_id: e.consent ? newId() : `a${++n}`, type: e.type, ts: e.ts, consent: e.consent,
        session_id: e.consent ? e.sid : 'anonymous', ...e.fields };
      return ev;
    });
    return JSON.stringify({ session: { ...this.context }, events: out });
  }

  flush(final) {
    if (this.ended) return; // session_end was the last event of this page
    if (final === 'end') this.ended = true;
    if (this.stats && this.stats.latencyMs !== null && this.stats.latencyMs !== undefined && this.stats.playing) {
      this.emit('latency', { latency_ms: Math.max(0, Math.round(this.stats.latencyMs)) });
    }
    if (this.video) this.heartbeat(final === 'end' ? 'session_end' : 'heartbeat');
    if (!this.queue.length) return;
    const events = this.queue;
    this.queue = [];
    const body = this.body(events);
    this.sent.batches += 1;
    this.sent.events += events.length;
    if (final) {
      // pagehide / hidden: the page may be gone before a fetch completes.
      navigator.sendBeacon(this.endpoint, new Blob([body], { type: 'application/json' }));
      return;
    }
    fetch(this.endpoint, { method: 'POST', body, keepalive: true, headers: { 'content-type': 'application/json' } })
      .then((r) => {
        this.sent.lastStatus = r.status;
        if (!r.ok) this.sent.refused += 1;
      })
      .catch(() => { this.sent.refused += 1; });
  }

  end() {
    clearInterval(this.timer);
    this.flush('end');
  }
}

// WebRTC analytics hook (player=whep): RTCPeerConnection.getStats() -> the same QoE events.
//   inbound-rtp (video) framesDropped          -> heartbeat dropped_frames (deltas)
//   freezeCount / totalFreezesDuration         -> one stall event (rebuffer_ms) per new freeze
//   bytesReceived                              -> avg_bitrate_kbps (player.js bitrate)
//   framesPerSecond, jitterBufferDelay / jitterBufferEmittedCount, candidate-pair
//   currentRoundTripTime, selected local candidate type (relay / host / srflx / prflx)
//                                              -> summary() (window.flowcastStats.webrtc)
// turn_relay_ratio (schema.md, Infra): the share of polled play time on a relay pair, in
// the summary and, per interval, in every heartbeat (`flowcast qoe report` weighs it by
// play time).
// The session context says what the stream is (codec, profile, GOP, no B-frames, Opus).
export class WebRTCStatsHook {
  constructor(pc, analytics = null) {
    this.pc = pc;
    this.analytics = analytics;
    this.last = null;
    this.freezes = null;
    this.freezeS = 0;
    this.relayS = 0;
    this.pairS = 0;
    this.lastAt = null;
    this.state = {};
    if (analytics) {
      Object.assign(analytics.context, {
        codec: 'h264', profile: 'constrained-baseline', b_frames: 0, audio_codec: 'opus',
      });
      analytics.droppedSource = () => (this.last ? this.last.framesDropped : 0);
      analytics.relaySource = () => [this.relayS, this.pairS];
    }
  }

  async poll() {
    let report;
    try {
      report = await this.pc.getStats();
    } catch (e) {
      return null;
    }
    const now = performance.now();
    let inbound = null;
    let pair = null;
    const byId = new Map();
    report.forEach((r) => {
      byId.set(r.id, r);
      if (r.type === 'inbound-rtp' && r.kind === 'video') inbound = r;
    });
    report.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId);
    });
    if (!pair) {
      report.forEach((r) => {
        if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
      });
    }
    const local = pair ? byId.get(pair.localCandidateId) : null;
    const candidateType = local ? local.candidateType : null;
    const s = {
      at: now,
      bytesReceived: inbound ? inbound.bytesReceived || 0 : 0,
      framesDecoded: inbound ? inbound.framesDecoded || 0 : 0,
      framesDropped: inbound ? inbound.framesDropped || 0 : 0,
      framesPerSecond: inbound ? inbound.framesPerSecond || 0 : 0,
      freezeCount: inbound ? inbound.freezeCount || 0 : 0,
      totalFreezesDuration: inbound ? inbound.totalFreezesDuration || 0 : 0,
      jitterBufferMs: inbound && inbound.jitterBufferEmittedCount
        ? (1000 * inbound.jitterBufferDelay) / inbound.jitterBufferEmittedCount : null,
      rttMs: pair && pair.currentRoundTripTime !== undefined ? pair.currentRoundTripTime * 1000 : null,
      candidateType,
    };
    if (this.lastAt !== null && candidateType && s.framesDecoded > (this.last ? this.last.framesDecoded : 0)) {
      const dt = (now - this.lastAt) / 1000;
      this.pairS += dt;
      if (candidateType === 'relay') this.relayS += dt;
    }
    // A freeze (the receiver's own measure: a frame later than max(3 x avg, avg + 150 ms))
    // is what a viewer sees as a stall: one stall event each, with its share of duration.
    if (this.freezes !== null && s.freezeCount > this.freezes && this.analytics) {
      const ms = ((s.totalFreezesDuration - this.freezeS) * 1000) / (s.freezeCount - this.freezes);
      for (let i = this.freezes; i < s.freezeCount; i++) this.analytics.onStall(ms);
    }
    this.freezes = s.freezeCount;
    this.freezeS = s.totalFreezesDuration;
    this.last = s;
    this.lastAt = now;
    return s;
  }

  summary() {
    const s = this.last || {};
    return {
      candidate_type: s.candidateType || null,
      turn_relay_ratio: this.pairS > 0 ? Math.round((this.relayS / this.pairS) * 1000) / 1000 : null,
      dropped_frames: s.framesDropped || 0,
      frames_decoded: s.framesDecoded || 0,
      frames_per_second: s.framesPerSecond || 0,
      rebuffer_count: s.freezeCount || 0,
      rebuffer_ms: Math.round((s.totalFreezesDuration || 0) * 1000),
      jitter_buffer_ms: s.jitterBufferMs === null || s.jitterBufferMs === undefined ? null : Math.round(s.jitterBufferMs),
      rtt_ms: s.rttMs === null || s.rttMs === undefined ? null : Math.round(s.rttMs * 10) / 10,
      bytes_received: s.bytesReceived || 0,
    };
  }
}
