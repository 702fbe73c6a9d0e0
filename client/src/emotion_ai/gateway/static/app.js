// Emotion AI gateway page: a photo -> POST /v1/faces:analyze; the camera -> WS /v1/stream. No external code.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const video = $("video");
const base = new URL(".", window.location.href);
let socket = null;
let busy = false;

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function query(extra = {}) {
  const params = new URLSearchParams();
  if ($("variant").value !== "fast") params.set("variant", $("variant").value);
  if ($("detector").value) params.set("detector", $("detector").value);
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  const text = params.toString();
  return text ? "?" + text : "";
}

function headers(contentType) {
  const h = { "Content-Type": contentType, Accept: "application/json" };
  const token = $("token").value.trim();
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

function problemText(doc, status) {
  return doc && doc.detail ? `${doc.title || status}: ${doc.detail}` : `HTTP ${status}`;
}

function draw(image, prediction) {
  canvas.width = image.width || image.videoWidth;
  canvas.height = image.height || image.videoHeight;
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  const line = Math.max(1, Math.round(Math.max(canvas.width, canvas.height) / 400));
  prediction.faces.forEach((face, i) => {
    const [x, y, w, h] = face.box;
    ctx.lineWidth = line;
    ctx.strokeStyle = "#00c800";
    ctx.strokeRect(x, y, w, h);
    // The 15 keypoints: yellow dots with a dark rim, large enough to see on a scaled-down canvas.
    ctx.fillStyle = "#ffdc00";
    ctx.strokeStyle = "#333";
    ctx.lineWidth = Math.max(1, line / 2);
    for (const point of Object.values(face.keypoints)) {
      if (point[0] === null || point[1] === null) continue;
      ctx.beginPath();
      ctx.arc(point[0], point[1], Math.max(2.5, w / 40), 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }
    // The label names the face as its card does: "Face N" (several faces) or its track id (the camera).
    const name = face.track_id !== undefined ? "#" + face.track_id + " " : prediction.faces.length > 1 ? `${i + 1} ` : "";
    const label = `${name}${face.smoothed_emotion || face.emotion}`;
    const size = Math.max(12, Math.round(w / 10));
    ctx.font = `${size}px sans-serif`;
    const width = ctx.measureText(label).width + 6;
    const top = y - size - 6 >= 0 ? y - size - 6 : y + h;
    ctx.fillStyle = "#00c800";
    ctx.fillRect(x, top, width, size + 6);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x + 3, top + size);
  });
}

function bars(prediction) {
  const box = $("faces");
  box.replaceChildren();
  if (!prediction.faces.length) {
    box.textContent = "No face found.";
    return;
  }
  prediction.faces.forEach((face, i) => {
    const card = document.createElement("div");
    card.className = "face";
    const title = document.createElement("h2");
    title.textContent = `Face ${i + 1}${face.track_id !== undefined ? " (track " + face.track_id + ")" : ""}: ` +
      (face.smoothed_emotion || face.emotion);
    card.append(title);
    const scores = face.smoothed_scores || face.scores;
    const best = face.smoothed_emotion || face.emotion;
    for (const [label, value] of Object.entries(scores).sort((a, b) => b[1] - a[1])) {
      const row = document.createElement("div");
      row.className = label === best ? "bar top" : "bar";
      const name = document.createElement("span");
      name.textContent = label;
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = `${Math.round(100 * (value || 0))}%`;
      track.append(fill);
      const number = document.createElement("span");
      number.textContent = (value || 0).toFixed(2);
      row.append(name, track, number);
      card.append(row);
    }
    box.append(card);
  });
}

async function analyze(file) {
  stopCamera();
  setStatus(`Analysing ${file.name || "the photo"}…`);
  let image;
  try {
    image = await createImageBitmap(file);
  } catch (err) {
    setStatus("The browser cannot show this file as an image.", true);
    return;
  }
  const type = file.type && file.type.startsWith("image/") ? file.type : "application/octet-stream";
  let response;
  try {
    response = await fetch(new URL("v1/faces:analyze" + query(), base), { method: "POST", headers: headers(type), body: file });
  } catch (err) {
    setStatus("The gateway cannot be reached.", true);
    return;
  }
  const doc = await response.json().catch(() => null);
  if (!response.ok) {
    setStatus(problemText(doc, response.status), true);
    return;
  }
  draw(image, doc);
  bars(doc);
  $("json").textContent = JSON.stringify(doc, null, 2);
  setStatus(`${doc.faces.length} face(s) in ${Math.round(doc.timings_ms.total)} ms.`);
}

async function startCamera() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    setStatus("No camera (or no permission): " + err.message, true);
    return;
  }
  video.srcObject = stream;
  await video.play();
  const url = new URL("v1/stream" + query($("token").value.trim() ? { access_token: $("token").value.trim() } : {}), base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  $("camera").textContent = "Stop camera";
  const grab = document.createElement("canvas");
  socket.onopen = () => { setStatus("Camera on: frames go to the gateway."); sendFrame(grab); };
  socket.onmessage = (event) => {
    busy = false;
    const doc = JSON.parse(event.data);
    if (doc.type === "prediction") {
      draw(video, doc);
      bars(doc);
      $("json").textContent = JSON.stringify(doc, null, 2);
      setStatus(`Frame ${doc.frame}: ${doc.faces.length} face(s), ${doc.dropped} frame(s) skipped so far.`);
    } else if (doc.problem) {
      setStatus(problemText(doc.problem, doc.problem.status), true);
    }
    if (socket && socket.readyState === WebSocket.OPEN) sendFrame(grab);
  };
  socket.onclose = (event) => {
    if (socket) setStatus(`The stream closed (${event.code}${event.reason ? ": " + event.reason : ""}).`, event.code !== 1000);
    stopCamera();
  };
}

function sendFrame(grab) {
  // One frame in flight at a time: the next is grabbed when the answer comes (the gateway drops stale ones too).
  if (busy || !video.videoWidth) {
    if (!video.videoWidth) setTimeout(() => sendFrame(grab), 100);
    return;
  }
  grab.width = video.videoWidth;
  grab.height = video.videoHeight;
  grab.getContext("2d").drawImage(video, 0, 0);
  busy = true;
  grab.toBlob((blob) => {
    if (blob && socket && socket.readyState === WebSocket.OPEN) socket.send(blob);
    else busy = false;
  }, "image/jpeg", 0.8);
}

function stopCamera() {
  const open = socket;
  socket = null;
  busy = false;
  if (open) open.close(1000);
  if (video.srcObject) {
    for (const track of video.srcObject.getTracks()) track.stop();
    video.srcObject = null;
  }
  $("camera").textContent = "Start camera";
}

$("camera").addEventListener("click", () => (socket ? stopCamera() : startCamera()));
$("file").addEventListener("change", (event) => { if (event.target.files[0]) analyze(event.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) analyze(event.dataTransfer.files[0]);
});
$("token").value = sessionStorage.getItem("emotion-ai-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("emotion-ai-token", $("token").value.trim()));
