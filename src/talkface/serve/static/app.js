// talkface live page: a face is uploaded once; speech (microphone or a file) goes to the server as
// 16 kHz int16 PCM over a WebSocket, JPEG frames come back and are drawn on the canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx2d = canvas.getContext("2d");
const RATE = 16000;

// What a test (or a curious user) can read from the console.
window.talkface = { face: null, frames: 0, skipped: 0, lastIndex: -1, e2e: [], proc: [], errors: [], done: false };

let info = null;
let session = null; // the live stream: {ws, audio, sent, chunks, ...}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  if (isError) window.talkface.errors.push(text);
}

async function jsonError(response) {
  try {
    return (await response.json()).error || response.statusText;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadInfo() {
  const r = await fetch("/api/info");
  if (!r.ok) return status(await jsonError(r), true);
  info = await r.json();
  $("backend").textContent = `backend: ${info.backend}`;
  $("lookahead").textContent = info.lookahead_ms;
}

async function useFace(blob) {
  status("finding the face...");
  const r = await fetch("/api/face", { method: "POST", body: blob, headers: { "Content-Type": "application/octet-stream" } });
  if (!r.ok) return status(await jsonError(r), true);
  const face = await r.json();
  window.talkface.face = face;
  const bitmap = await createImageBitmap(blob);
  canvas.width = face.width;
  canvas.height = face.height;
  ctx2d.drawImage(bitmap, 0, 0, face.width, face.height);
  $("mic").disabled = false;
  $("audiofile").disabled = false;
  status("face ready: start the microphone or play an audio file");
}

$("example").onclick = async () => useFace(await (await fetch("/api/example-face")).blob());
$("photo").onchange = (e) => e.target.files[0] && useFace(e.target.files[0]);

// -- live stream --------------------------------------------------------------------------------
function percentile(values, p) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function captureTime(chunks, sample) {
  // chunks: [{end, t}] in order; a sample's capture time is its chunk's time less the samples after it
  for (const c of chunks) if (c.end >= sample) return c.t - ((c.end - sample) / RATE) * 1000;
  return NaN;
}

function sendTime(chunks, samples) {
  for (const c of chunks) if (c.end >= samples) return c.t;
  return NaN;
}

function showStats() {
  const tf = window.talkface;
  $("s-frames").textContent = tf.skipped ? `${tf.frames} (${tf.skipped} skipped: the server is behind)` : tf.frames;
  const fmt = (v) => (Number.isFinite(v) ? `${v.toFixed(0)} ms` : "-");
  $("s-e2e").textContent = `${fmt(percentile(tf.e2e, 50))} (p90 ${fmt(percentile(tf.e2e, 90))})`;
  $("s-proc").textContent = `${fmt(percentile(tf.proc, 50))} (p90 ${fmt(percentile(tf.proc, 90))})`;
  if (session && session.firstFrameAt && tf.frames > 1) {
    const seconds = (performance.now() - session.firstFrameAt) / 1000;
    $("s-fps").textContent = `${((tf.frames - 1) / seconds).toFixed(1)} /s`;
  }
}

async function onFrame(data) {
  const view = new DataView(data);
  const index = view.getUint32(0, true);
  const samples = view.getUint32(4, true);
  const bitmap = await createImageBitmap(new Blob([data.slice(12)], { type: "image/jpeg" }));
  if (!session || index < window.talkface.lastIndex) return;
  const tf = window.talkface;
  tf.skipped += Math.max(0, index - tf.lastIndex - 1); // frames the server skipped: it fell behind
  tf.lastIndex = index;
  ctx2d.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const now = performance.now();
  tf.frames += 1;
  session.firstFrameAt = session.firstFrameAt || now;
  const centre = ((index + 0.5) * RATE) / session.fps;
  const e2e = now - captureTime(session.chunks, centre);
  const proc = now - sendTime(session.chunks, samples);
  if (Number.isFinite(e2e)) tf.e2e.push(e2e);
  if (Number.isFinite(proc)) tf.proc.push(proc);
  if (tf.e2e.length > 250) tf.e2e.shift();
  if (tf.proc.length > 250) tf.proc.shift();
  while (session.chunks.length > 1 && session.chunks[1].end < centre - RATE) session.chunks.shift();
  if (tf.frames % 5 === 0) showStats();
}

function send(block) {
  if (!session || session.ws.readyState !== WebSocket.OPEN) return;
  const pcm = new Int16Array(block.length);
  for (let i = 0; i < block.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(block[i] * 32767)));
  session.ws.send(pcm.buffer);
  session.sent += block.length;
  window.talkface.sent = session.sent;
  session.chunks.push({ end: session.sent, t: performance.now() });
}

async function captureNode(audio) {
  // AudioWorklet where the page is a secure context (localhost, https); ScriptProcessor elsewhere
  if (audio.audioWorklet) {
    await audio.audioWorklet.addModule("/static/capture.js");
    const node = new AudioWorkletNode(audio, "capture");
    node.port.onmessage = (e) => send(e.data);
    return node;
  }
  const node = audio.createScriptProcessor(1024, 1, 1);
  node.onaudioprocess = (e) => send(e.inputBuffer.getChannelData(0).slice(0));
  return node;
}

function openSocket() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?face=${window.talkface.face.face}`);
  ws.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") return onFrame(e.data);
      const msg = JSON.parse(e.data);
      if (msg.type === "ready") {
        resolve({ ws, fps: msg.fps });
      } else if (msg.type === "error") {
        status(msg.error, true);
        stop(false);
      } else if (msg.type === "warning") {
        status(msg.error, true);
      } else if (msg.type === "done") {
        window.talkface.done = true;
        showStats();
        status(`done: ${msg.frames} frames`);
        stop(false);
      }
    };
    ws.onerror = () => reject(new Error("could not connect (the server may be busy: see /api/info)"));
    ws.onclose = () => {
      if (session && session.ws === ws) stop(false);
    };
  });
}

async function start(kind, file) {
  if (session) await stop(true);
  Object.assign(window.talkface, { frames: 0, skipped: 0, lastIndex: -1, e2e: [], proc: [], done: false });
  let opened;
  try {
    opened = await openSocket();
  } catch (e) {
    return status(e.message, true);
  }
  const audio = new AudioContext({ sampleRate: RATE });
  session = { ...opened, audio, sent: 0, chunks: [], firstFrameAt: 0, source: null, media: null };
  const node = await captureNode(audio);
  const mute = audio.createGain();
  mute.gain.value = 0;
  node.connect(mute).connect(audio.destination); // pulls the capture node without playing the microphone
  if (kind === "mic") {
    try {
      // the raw signal: the model reads loudness, which automatic gain control would flatten
      const raw = { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false };
      session.media = await navigator.mediaDevices.getUserMedia({ audio: raw });
    } catch (e) {
      status(`microphone unavailable: ${e.message} (it needs localhost or https)`, true);
      return stop(false);
    }
    session.source = audio.createMediaStreamSource(session.media);
    session.source.connect(node);
    status("listening: speak!");
  } else {
    const buffer = await audio.decodeAudioData(await file.arrayBuffer());
    session.source = audio.createBufferSource();
    session.source.buffer = buffer;
    session.source.connect(node);
    session.source.connect(audio.destination);
    session.source.onended = () => stop(true);
    session.source.start();
    status(`playing ${file.name}`);
  }
  $("stop").disabled = false;
}

async function stop(flush) {
  const s = session;
  if (!s) return;
  if (flush && s.ws.readyState === WebSocket.OPEN) {
    s.ws.send(JSON.stringify({ type: "end" })); // the server sends the last frames, then "done"
    if (s.source && s.source.stop) s.source.onended = null;
  } else {
    session = null;
    if (s.ws.readyState <= WebSocket.OPEN) s.ws.close();
  }
  if (s.media) s.media.getTracks().forEach((t) => t.stop());
  if (s.source) s.source.disconnect();
  if (s.audio.state !== "closed") await s.audio.close();
  $("stop").disabled = !!session && !flush;
}

$("mic").onclick = () => start("mic");
$("audiofile").onchange = (e) => e.target.files[0] && start("file", e.target.files[0]);
$("stop").onclick = () => stop(true);

// -- offline job --------------------------------------------------------------------------------
$("job").onsubmit = async (e) => {
  e.preventDefault();
  status("generating the video...");
  $("download").textContent = "";
  const r = await fetch("/api/generate", { method: "POST", body: new FormData(e.target) });
  if (!r.ok) return status(await jsonError(r), true);
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = "talking.mp4";
  a.textContent = "download talking.mp4";
  $("download").replaceChildren(a);
  status("video ready");
};

loadInfo();
