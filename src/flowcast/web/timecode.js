// Glass-to-glass latency from the timecode burned into the top-left of the picture.
//
// Contract (1280x720 source, scaled with the rendition): a strip 48 px tall of 34 blocks
// 36 px wide at (0, 0). Block 0 is white and block 1 black (reference levels); blocks
// 2..33 carry bits 31..0 (MSB first) of (ms since the Unix epoch mod 2**32) at the time
// the frame was generated; white = 1.
//
// Decoding is split in two: decodeLevels() is a pure function of the 34 block levels
// (testable without a browser), TimecodeReader does the canvas work per presented frame.

export const SOURCE_WIDTH = 1280;
export const SOURCE_HEIGHT = 720;
export const BLOCK_W = 36;
export const BLOCK_H = 48;
export const BLOCKS = 34;
export const TWO_32 = 4294967296;
// Below this white-black difference (0..255) the strip is treated as absent: compressed
// content that merely looks light/dark at the reference positions must not decode.
export const MIN_CONTRAST = 64;
export const MAX_LATENCY_MS = 60000;

// Canvas geometry: each block is downscaled to CELL x CELL pixels; only the centre half
// is averaged so that codec ringing at the block edges does not move the level.
const CELL = 16;

/** levels: 34 luma values (0..255). Returns the 32-bit code or null if no timecode. */
export function decodeLevels(levels) {
  if (!levels || levels.length < BLOCKS) return null;
  const white = levels[0];
  const black = levels[1];
  if (white - black < MIN_CONTRAST) return null;
  const mid = (white + black) / 2;
  let code = 0;
  for (let i = 0; i < 32; i++) {
    code = code * 2 + (levels[i + 2] > mid ? 1 : 0);
  }
  return code; // 0 .. 2**32-1, kept as a non-negative double (no sign bit issues)
}

/** Latency in ms of a frame carrying `code` seen at wall clock `nowMs`, or null. */
export function latencyFromCode(code, nowMs = Date.now()) {
  if (code === null || code === undefined) return null;
  const now32 = nowMs % TWO_32;
  const latency = (((now32 - code) % TWO_32) + TWO_32) % TWO_32;
  return latency >= 0 && latency <= MAX_LATENCY_MS ? latency : null;
}

/** Percentile (0..100) of a numeric array, nearest-rank; null when empty. */
export function percentile(values, p) {
  if (!values || values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** Fixed-size ring of latency samples. */
export class SampleRing {
  constructor(size = 120) {
    this.size = size;
    this.values = [];
  }
  push(v) {
    this.values.push(v);
    if (this.values.length > this.size) this.values.shift();
  }
  last() { return this.values.length ? this.values[this.values.length - 1] : null; }
  p50() { return percentile(this.values, 50); }
  p95() { return percentile(this.values, 95); }
  toArray() { return [...this.values]; }
}

/** Reads the timecode strip of a <video> per presented frame. */
export class TimecodeReader {
  constructor(video, { ringSize = 120, onSample = null } = {}) {
    this.video = video;
    this.samples = new SampleRing(ringSize);
    this.onSample = onSample;
    this.lastSampleAt = 0; // Date.now() of the last good decode
    this.framesSeen = 0;
    this.framesDecoded = 0;
    this.canvas = document.createElement('canvas');
    this.canvas.width = BLOCKS * CELL;
    this.canvas.height = CELL;
    this.ctx = this.canvas.getContext('2d', { willReadFrequently: true });
    this.ctx.imageSmoothingEnabled = true;
    this.ctx.imageSmoothingQuality = 'medium';
    this.running = false;
    this._tick = this._tick.bind(this);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this._schedule();
  }

  stop() { this.running = false; }

  _schedule() {
    if (!this.running) return;
    if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
      this.video.requestVideoFrameCallback(this._tick);
    } else {
      requestAnimationFrame(this._tick);
    }
  }

  _tick() {
    try {
      this.readFrame(Date.now());
    } catch (e) {
      // A tainted or not-yet-decodable frame: skip it, the next one will do.
    }
    this._schedule();
  }

  /** Sample the strip of the current frame; returns latency ms or null. */
  readFrame(nowMs) {
    const v = this.video;
    if (!v.videoWidth || !v.videoHeight || v.readyState < 2) return null;
    this.framesSeen++;
    const sx = v.videoWidth / SOURCE_WIDTH;
    const sy = v.videoHeight / SOURCE_HEIGHT;
    this.ctx.drawImage(v, 0, 0, BLOCKS * BLOCK_W * sx, BLOCK_H * sy,
                       0, 0, this.canvas.width, this.canvas.height);
    const img = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height).data;
    const levels = new Array(BLOCKS);
    const lo = CELL / 4;
    const hi = CELL - CELL / 4;
    for (let b = 0; b < BLOCKS; b++) {
      let sum = 0;
      let n = 0;
      for (let y = lo; y < hi; y++) {
        for (let x = b * CELL + lo; x < b * CELL + hi; x++) {
          const o = (y * this.canvas.width + x) * 4;
          // BT.709 luma of the rendered RGB
          sum += 0.2126 * img[o] + 0.7152 * img[o + 1] + 0.0722 * img[o + 2];
          n++;
        }
      }
      levels[b] = sum / n;
    }
    const latency = latencyFromCode(decodeLevels(levels), nowMs);
    if (latency === null) return null;
    this.framesDecoded++;
    this.lastSampleAt = nowMs;
    this.samples.push(latency);
    if (this.onSample) this.onSample(latency);
    return latency;
  }

  /** True if a timecode decoded within the last `withinMs`. */
  fresh(withinMs = 1000, nowMs = Date.now()) {
    return this.lastSampleAt > 0 && nowMs - this.lastSampleAt <= withinMs;
  }
}
