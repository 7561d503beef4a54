// video_async page: uploads with progress, a task list kept fresh by polling, and the
// server's heartbeat. Plain JavaScript, no build step, nothing from another host.
// The server renders the page complete; this script only makes it live, so the page
// still works (upload, list, delete) with JavaScript turned off.
"use strict";

const POLL_ACTIVE_MS = 700; // something is queued or running: follow it closely
const POLL_IDLE_MS = 2000;
const POLL_HIDDEN_MS = 10000; // tab in the background: don't waste the server's time
const HEALTH_MS = 1000;

const $ = (selector, root = document) => root.querySelector(selector);
const form = $("#upload-form");
// The server's rules, from the page it rendered: the size limit and the accepted extensions.
const maxBytes = Number(form.dataset.maxBytes);
const accepted = form.dataset.extensions.split(",");
const taskList = $("#tasks");
const lastStates = new Map(); // task id -> state seen last, to announce changes
let tasksEtag = null;
let pollTimer = null;
let anyActive = false;

// ---- the upload rows' only text of their own (every card text comes from the server) ----

function timeLeft(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "";
  return seconds < 60 ? `about ${Math.max(1, Math.round(seconds))} s left` : `about ${Math.round(seconds / 60)} min left`;
}

function announce(text) {
  // aria-live region: screen readers read each new message once
  $("#announcer").textContent = text;
}

// ---- uploads ----

function refusal(file) {
  const name = file.name.toLowerCase();
  if (!accepted.some((ext) => name.endsWith(ext))) {
    return `"${file.name}" is not a video we can take: choose an ${form.dataset.extensionsText} file.`;
  }
  if (file.size === 0) return `"${file.name}" is empty.`;
  if (file.size > maxBytes) {
    return `"${file.name}" is over the limit of ${form.dataset.maxSize}.`;
  }
  return null;
}

function showUploadError(text) {
  // stays until dismissed, or until a later upload goes through
  const box = $("#upload-error");
  $(".text", box).textContent = text;
  box.hidden = !text;
}
$("#upload-error .dismiss").addEventListener("click", () => showUploadError(""));

function startUploads(files) {
  const resolution = new FormData(form).get("resolution") || "720";
  const refusals = [];
  for (const file of files) {
    const reason = refusal(file);
    if (reason) refusals.push(reason);
    else upload(file, resolution);
  }
  showUploadError(refusals.join(" "));
}

function upload(file, resolution) {
  // XMLHttpRequest, not fetch: only XHR reports upload progress.
  const row = $("#upload-template").content.firstElementChild.cloneNode(true);
  $(".name", row).textContent = file.name;
  $("#uploads").append(row);
  const xhr = new XMLHttpRequest();
  const started = performance.now();
  const body = new FormData();
  body.append("resolution", resolution); // before the file: a bad value is refused before the upload
  body.append("video", file, file.name);

  xhr.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.floor((event.loaded / event.total) * 100);
    const seconds = (performance.now() - started) / 1000;
    const rate = event.loaded / Math.max(seconds, 0.001);
    $(".bar", row).value = percent;
    $(".percent", row).textContent = `${percent}%`;
    $(".speed", row).textContent = `${(rate / 1e6).toFixed(1)} MB/s`;
    $(".left", row).textContent = timeLeft((event.total - event.loaded) / rate);
  });
  xhr.addEventListener("load", () => {
    row.remove();
    if (xhr.status === 201) {
      showUploadError("");
      announce(`${file.name} uploaded and queued.`);
      pollSoon();
      return;
    }
    let message = `The server refused "${file.name}" (HTTP ${xhr.status}).`;
    try {
      message = `"${file.name}": ${JSON.parse(xhr.responseText).error.message}`;
    } catch (_) { /* not our JSON: keep the generic message */ }
    showUploadError(message);
  });
  xhr.addEventListener("error", () => {
    row.remove();
    showUploadError(`The upload of "${file.name}" failed: the connection was lost.`);
  });
  xhr.addEventListener("abort", () => {
    row.remove();
    announce(`Upload of ${file.name} cancelled.`);
  });
  $(".cancel", row).addEventListener("click", () => xhr.abort());
  xhr.open("POST", "/videos/upload");
  xhr.setRequestHeader("Accept", "application/json");
  xhr.send(body);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#video-input");
  startUploads(input.files);
  input.value = "";
});

// Dropping a file anywhere on the page uploads it; without this, the browser
// would navigate away to play the dropped file.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) document.body.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  if (event.dataTransfer && event.dataTransfer.files.length) startUploads(event.dataTransfer.files);
});
$("#video-input").multiple = true; // several at once, each with its own bar

// ---- the task list ----

function cardFor(task) {
  let card = taskList.querySelector(`li.task[data-id="${CSS.escape(task.id)}"]`);
  if (!card) {
    card = $("#task-template").content.firstElementChild.cloneNode(true);
    card.dataset.id = task.id;
    $("form.retry", card).action = `/tasks/${task.id}/retry`;
    $("form.delete", card).action = `/tasks/${task.id}/delete`;
  }
  return card;
}

function updateCard(card, task) {
  card.dataset.state = task.state;
  $(".name", card).textContent = task.filename;
  const texts = task.display;
  $(".badge", card).textContent = texts.label;
  $(".res", card).textContent = texts.resolution;
  $(".size", card).textContent = texts.size;
  $(".duration", card).textContent = texts.duration;
  $(".output", card).textContent = texts.output;
  $(".status", card).textContent = texts.status;
  $(".detail", card).textContent = texts.detail;
  const bar = $(".bar", card);
  bar.hidden = task.state !== "PROCESSING";
  bar.value = task.progress;
  bar.textContent = `${task.progress}%`;

  const preview = $(".preview", card);
  if (task.download_url && !$("video", preview)) {
    // created once: re-creating it on each poll would stop a playing preview
    const video = document.createElement("video");
    video.controls = true;
    video.preload = "none"; // the poster is the thumbnail; fetch the video only to play it
    if (task.thumbnail_url) video.poster = task.thumbnail_url;
    video.src = task.download_url;
    preview.append(video);
  }
  const download = $("a.download", card);
  download.hidden = !task.download_url;
  if (task.download_url) download.href = task.download_url;
  $("form.retry", card).hidden = task.state !== "FAILED";

  const before = lastStates.get(task.id);
  if (before && before !== task.state) {
    announce(`${task.filename}: ${texts.label.toLowerCase()}${task.state === "FAILED" ? `, ${task.error}` : ""}.`);
  }
  lastStates.set(task.id, task.state);
}

function render(tasks) {
  const seen = new Set();
  let previous = null;
  for (const task of tasks) {
    const card = cardFor(task);
    updateCard(card, task);
    // keep server order (oldest first) without touching cards already in place
    const wanted = previous ? previous.nextElementSibling : taskList.firstElementChild;
    if (wanted !== card) taskList.insertBefore(card, wanted);
    previous = card;
    seen.add(task.id);
  }
  for (const card of [...taskList.querySelectorAll("li.task")]) {
    if (!seen.has(card.dataset.id)) {
      card.remove();
      lastStates.delete(card.dataset.id);
    }
  }
  $("#empty").hidden = tasks.length > 0;
  anyActive = tasks.some((t) => t.state === "QUEUED" || t.state === "PROCESSING");
}

function setOffline(offline) {
  $("#offline").hidden = !offline;
  document.body.classList.toggle("offline", offline);
}

let polling = false; // a poll is in flight
let pollAgain = false; // someone asked for a poll meanwhile

async function pollTasks() {
  clearTimeout(pollTimer);
  if (polling) {
    // never two polls at once: an older answer arriving last would draw a stale list
    pollAgain = true;
    return;
  }
  polling = true;
  let failed = false;
  try {
    const headers = tasksEtag ? { "If-None-Match": tasksEtag } : {};
    const response = await fetch("/tasks", { headers, cache: "no-store" });
    if (response.status === 200) {
      tasksEtag = response.headers.get("ETag");
      render(await response.json());
    } else if (response.status !== 304) {
      throw new Error(`HTTP ${response.status}`);
    }
    setOffline(false);
  } catch (_) {
    failed = true;
    setOffline(true);
  }
  // The next poll is scheduled only after this one answered: a slow server never
  // gets a pile of overlapping requests.
  polling = false;
  const delay = pollAgain ? 0 : document.hidden ? POLL_HIDDEN_MS : anyActive ? POLL_ACTIVE_MS : POLL_IDLE_MS;
  pollAgain = false;
  pollTimer = setTimeout(pollTasks, failed ? Math.max(delay, 2000) : delay);
}

function pollSoon() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(pollTasks, 0);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) pollSoon();
});

// Delete and Retry: the same forms work without JavaScript; with it, we ask
// first and stay on the page.
taskList.addEventListener("submit", async (event) => {
  const target = event.target;
  const card = target.closest("li.task");
  if (!card) return;
  event.preventDefault();
  const name = $(".name", card).textContent;
  if (target.classList.contains("delete")) {
    const running = card.dataset.state === "PROCESSING" ? " Its transcode will be stopped." : "";
    if (!window.confirm(`Delete "${name}" and its files?${running}`)) return;
    try {
      const response = await fetch(`/tasks/${card.dataset.id}`, { method: "DELETE" });
      if (response.ok || response.status === 404) {
        card.remove();
        announce(`${name} deleted.`);
      } else {
        announce(`${name} could not be deleted (HTTP ${response.status}).`);
      }
    } catch (_) {
      setOffline(true);
    }
  } else if (target.classList.contains("retry")) {
    try {
      const response = await fetch(`/tasks/${card.dataset.id}/retry`,
        { method: "POST", headers: { Accept: "application/json" } });
      announce(response.ok ? `${name} queued again.` : `${name} could not be retried (HTTP ${response.status}).`);
    } catch (_) {
      setOffline(true);
    }
  }
  pollSoon();
});

// ---- the heartbeat: the event loop's lag, as the server measures it ----

const lagSamples = [];

function drawLag() {
  const canvas = $("#lag-chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const scale = Math.max(10, ...lagSamples); // at least a 10 ms scale, so noise looks small
  $('[data-field="lag-scale"]').textContent = `(top: ${Math.ceil(scale)} ms)`;
  const step = width / 60;
  ctx.fillStyle = getComputedStyle(canvas).color;
  lagSamples.forEach((lag, i) => {
    const h = Math.max(1, (lag / scale) * height);
    ctx.fillRect(width - (lagSamples.length - i) * step, height - h, step - 1, h);
  });
}

function queueText(queue) {
  if (!queue.reachable) return "Redis unreachable";
  const hosts = [...new Set(queue.workers.map((worker) => worker.host))];
  return `${queue.workers.length}${hosts.length ? ` on ${hosts.join(", ")}` : ""}, ${queue.jobs_queued} queued`;
}

async function pollHealth() {
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const health = await response.json();
    const lag = health.event_loop_lag_ms;
    const beat = $("#heartbeat");
    $('[data-field="lag-last"]', beat).textContent = `${lag.last.toFixed(1)} ms`;
    $('[data-field="lag-max"]', beat).textContent = `${lag.max_1m.toFixed(1)} ms`;
    $('[data-field="uploads"]', beat).textContent = health.uploads_in_progress;
    $('[data-field="jobs"]', beat).textContent = health.jobs_running;
    const queueField = $('[data-field="queue"]', beat); // queue mode only
    if (queueField && health.queue) queueField.textContent = queueText(health.queue);
    beat.classList.toggle("busy", health.jobs_running + health.uploads_in_progress > 0);
    lagSamples.push(lag.last);
    if (lagSamples.length > 60) lagSamples.shift();
    drawLag();
  } catch (_) {
    setOffline(true);
  }
  setTimeout(pollHealth, document.hidden ? POLL_HIDDEN_MS : HEALTH_MS);
}

for (const card of taskList.querySelectorAll("li.task")) lastStates.set(card.dataset.id, card.dataset.state);
pollTasks();
pollHealth();
