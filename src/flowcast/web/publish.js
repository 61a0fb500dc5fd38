// WHIP publisher (RFC 9725): one POST with a complete SDP offer, DELETE to stop.
// The page publishes to /whip/<stream> on the origin that served it.
// Query: ?stream=live&source=camera|test&token=<bearer> (token fields are never logged).

const params = new URLSearchParams(location.search);
const stream = params.get('stream') || 'live';
const endpoint = `${location.origin}/whip/${encodeURIComponent(stream)}`;
const $ = (id) => document.getElementById(id);

const publisher = {
  state: 'idle',
  error: null,
  pc: null,
  resource: null,
  token: null,
  media: null,
  async stats() {
    if (!this.pc) return {};
    const out = { framesSent: 0, bytesSent: 0, packetsSent: 0 };
    (await this.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp') {
        out.framesSent += r.framesSent || 0;
        out.bytesSent += r.bytesSent || 0;
        out.packetsSent += r.packetsSent || 0;
      }
    });
    return out;
  },
  async stop() {
    if (this.resource) {
      try {
        await fetch(new URL(this.resource, endpoint), {
          method: 'DELETE', headers: { Authorization: `Bearer ${this.token}` },
        });
      } catch (e) { /* the server reaps sessions that go away */ }
    }
    if (this.pc) this.pc.close();
    if (this.media) this.media.stop();
    this.pc = this.resource = this.media = null;
    setState('closed');
  },
};
window.flowcastPublisher = publisher;

function setState(state, detail) {
  publisher.state = state;
  $('status').textContent = detail ? `${state}: ${detail}` : state;
  $('start').disabled = state === 'connecting' || state === 'connected';
  $('stop').disabled = !(state === 'connecting' || state === 'connected');
}

// A test source that needs no devices: a moving pattern with the wall clock, and a tone.
function testSource() {
  const canvas = document.createElement('canvas');
  canvas.width = 1280;
  canvas.height = 720;
  const g = canvas.getContext('2d');
  let frame = 0;
  const timer = setInterval(() => {
    frame += 1;
    const hue = (frame * 2) % 360;
    g.fillStyle = `hsl(${hue} 60% 35%)`;
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = '#fff';
    g.fillRect((frame * 8) % canvas.width, 300, 120, 120);
    g.font = '64px sans-serif';
    g.fillText(new Date().toISOString().slice(11, 23), 40, 100);
  }, 1000 / 30);
  const video = canvas.captureStream(30);
  const audio = new AudioContext();
  const osc = audio.createOscillator();
  osc.frequency.value = 440;
  const dest = audio.createMediaStreamDestination();
  osc.connect(dest);
  osc.start();
  const tracks = [...video.getVideoTracks(), ...dest.stream.getAudioTracks()];
  return {
    stream: new MediaStream(tracks),
    stop() { clearInterval(timer); tracks.forEach((t) => t.stop()); audio.close(); },
  };
}

async function cameraSource() {
  const media = await navigator.mediaDevices.getUserMedia({
    video: { width: 1280, height: 720, frameRate: 30 }, audio: true,
  });
  return { stream: media, stop() { media.getTracks().forEach((t) => t.stop()); } };
}

function iceGatheringDone(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, 3000); // publish with what we have: host candidates come first
  });
}

async function publish(token, source) {
  setState('connecting');
  publisher.token = token;
  publisher.media = source === 'test' ? testSource() : await cameraSource();
  $('preview').srcObject = publisher.media.stream;
  const pc = new RTCPeerConnection();
  publisher.pc = pc;
  for (const track of publisher.media.stream.getTracks()) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [publisher.media.stream] });
  }
  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'connected') setState('connected');
    if (pc.connectionState === 'failed') setState('failed', 'ICE/DTLS failed');
  });
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    const why = (await res.text()).trim();
    await publisher.stop();
    setState('refused', `${res.status} ${why}`);
    return;
  }
  publisher.resource = res.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  publish($('token').value, $('source').value).catch((err) => {
    publisher.error = String(err);
    setState('failed', String(err));
  });
});
$('stop').addEventListener('click', () => publisher.stop());

if (params.get('token')) {
  $('token').value = params.get('token');
  $('source').value = params.get('source') || 'camera';
  history.replaceState(null, '', location.pathname + `?stream=${encodeURIComponent(stream)}`); // token out of the address bar
  publish($('token').value, $('source').value).catch((err) => setState('failed', String(err)));
}
