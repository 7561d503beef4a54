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
// The version of the list on screen: each poll asks only for what changed since.
let tasksVersion = taskList.dataset.version;
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

function showRefusal(text) {
  // each refused file on a line of its own, until dismissed
  const list = $("#refusals");
  const item = $("#refusal-template").content.firstElementChild.cloneNode(true);
  $(".text", item).textContent = text;
  $(".dismiss", item).addEventListener("click", () => {
    item.remove();
    list.hidden = list.children.length === 0;
  });
  list.append(item);
  list.hidden = false;
}

// The form's sizes, as its radio buttons offer them: each upload row offers the same.
function sizeChoices() {
  return [...form.querySelectorAll('input[name="resolution"]')].map(
    (input) => ({ value: input.value, text: input.parentElement.textContent.trim() }));
}

// Picking or dropping files starts their uploads at once, each at the size chosen in
// the form, which its row can change until its transcode starts.
function startUploads(files) {
  const resolution = new FormData(form).get("resolution") || "720";
  for (const file of files) {
    const reason = refusal(file);
    if (reason) {
      showRefusal(reason);
      continue;
    }
    // the same file as an interrupted upload (name, size, last change): go on with it,
    // at the size its row shows now
    const saved = savedUploads().find((entry) => sameFile(entry, file));
    if (saved) {
      const waiting = interruptedRows.get(saved.url);
      const choice = waiting ? $("select", waiting).value : saved.resolution;
      if (waiting) waiting.remove();
      interruptedRows.delete(saved.url);
      upload(file, choice, saved.url);
    } else {
      upload(file, resolution, null);
    }
  }
}

// ---- resumable uploads: the page's own tus 1.0.0 client ----
// POST /files creates an upload, PATCH sends the file from the offset the server
// holds, HEAD asks for that offset after a network error, DELETE cancels. Each
// unfinished upload's URL is kept in localStorage with the file's name, size and
// last change, so after a reload picking the same file goes on where it stopped.

const TUS = { "Tus-Resumable": "1.0.0" };
const SAVED_KEY = "video_async.uploads";
const RETRY_MS = [1000, 2000, 4000, 8000, 15000]; // then every 15 s, until Cancel
// Answers worth waiting out: the connection went quiet or broke on its way (408, and a
// proxy's 502/504), a busy or briefly failing server, a full disk that may get room.
// Any other 4xx (404, 410, 413, 415, 422, ...) is the server's last word on this upload.
const LOST = [408, 502, 504];
const BUSY = [409, 423, 429, 500, 503, 507];
const interruptedRows = new Map(); // upload URL -> its "Interrupted" row
const jobs = new Set(); // the uploads this page is sending

class NetworkError extends Error {}
class Cancelled extends Error {}
class Refused extends Error {
  constructor(status, message, code = "") {
    super(message);
    this.status = status;
    this.code = code; // the JSON error's code, when the server sent one
  }

  get lost() { // the connection failed, not the upload
    return LOST.includes(this.status) || (this.status === 400 && this.code === "client_disconnected");
  }

  get transient() {
    return this.lost || BUSY.includes(this.status);
  }
}

function savedUploads() {
  try {
    return JSON.parse(localStorage.getItem(SAVED_KEY)) || [];
  } catch (_) {
    return [];
  }
}

function saveUploads(list) {
  try {
    localStorage.setItem(SAVED_KEY, JSON.stringify(list));
  } catch (_) { /* storage full or off: the upload still works, it just won't survive a reload */ }
}

function remember(entry) {
  saveUploads([...savedUploads().filter((e) => e.url !== entry.url), entry]);
}

function forget(url) {
  saveUploads(savedUploads().filter((e) => e.url !== url));
}

function sameFile(entry, file) {
  return entry.name === file.name && entry.size === file.size && entry.lastModified === file.lastModified;
}

function base64(text) {
  // Upload-Metadata values are base64 of UTF-8: btoa alone takes only Latin-1
  return btoa(Array.from(new TextEncoder().encode(text), (byte) => String.fromCharCode(byte)).join(""));
}

async function refusedBy(response) {
  return refusedWith(response.status, await response.text().catch(() => ""));
}

function refusedWith(status, text) {
  try {
    const { error } = JSON.parse(text);
    return new Refused(status, error.message, error.code);
  } catch (_) {
    return new Refused(status, `HTTP ${status}`); // not our JSON (a proxy's page): keep the status
  }
}

async function tusFetch(url, options) {
  let response;
  try {
    response = await fetch(url, { ...options, headers: { ...TUS, Accept: "application/json", ...options.headers } });
  } catch (_) {
    throw new NetworkError();
  }
  return response;
}

// The form's other choices (each row has its own size), as the server reads them: every
// field of the upload form is a metadata key of the same name.
function otherChoices() {
  return [...new FormData(form)]
    .filter(([name, value]) => name !== "resolution" && typeof value === "string")
    .map(([name, value]) => `,${name} ${base64(value)}`).join("");
}

async function createUpload(file, resolution) {
  const response = await tusFetch("/files", {
    method: "POST",
    headers: {
      "Upload-Length": String(file.size),
      "Upload-Metadata": `filename ${base64(file.name)},resolution ${base64(resolution)}`
        + otherChoices(),
    },
  });
  if (response.status !== 201) throw await refusedBy(response);
  return response.headers.get("Location");
}

async function serverOffset(url) {
  const response = await tusFetch(url, { method: "HEAD", cache: "no-store" });
  if (response.status !== 200) throw new Refused(response.status, `HTTP ${response.status}`);
  return Number(response.headers.get("Upload-Offset"));
}

function sendFrom(job, offset) {
  // XMLHttpRequest, not fetch: only XHR reports upload progress.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    job.xhr = xhr;
    const started = performance.now();
    xhr.upload.addEventListener("progress", (event) => {
      const done = offset + event.loaded;
      const rate = event.loaded / Math.max((performance.now() - started) / 1000, 0.001);
      const percent = Math.floor((done / job.file.size) * 100);
      $(".bar", job.row).value = percent;
      $(".percent", job.row).textContent = `${percent}%`;
      $(".speed", job.row).textContent = `${(rate / 1e6).toFixed(1)} MB/s`;
      $(".left", job.row).textContent = timeLeft((job.file.size - done) / rate);
      if (event.loaded > 0) note(job, "");
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 204) resolve(Number(xhr.getResponseHeader("Upload-Offset")));
      else reject(refusedWith(xhr.status, xhr.responseText));
    });
    xhr.addEventListener("error", () => reject(new NetworkError()));
    xhr.addEventListener("abort", () => reject(new Cancelled()));
    xhr.open("PATCH", job.url);
    for (const [name, value] of Object.entries(TUS)) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader("Upload-Offset", String(offset));
    xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.send(job.file.slice(offset));
  });
}

function note(job, text) {
  $(".note", job.row).textContent = text;
}

function uploadRow(name, resolution) {
  const row = $("#upload-template").content.firstElementChild.cloneNode(true);
  $(".name", row).textContent = name;
  const select = $("select", row);
  for (const choice of sizeChoices()) select.add(new Option(choice.text, choice.value));
  select.value = resolution;
  $("#uploads").append(row);
  return row;
}

function upload(file, resolution, url) {
  // pending: the row's size is to be sent (a resumed upload's server may have another);
  // changed: it was changed since the upload was created (a restarted server forgets that)
  const job = { file, resolution, url, pending: url !== null, changed: url !== null,
                row: uploadRow(file.name, resolution), xhr: null, cancelled: false, failures: 0,
                wake: null };
  $(".cancel", job.row).addEventListener("click", () => cancel(job));
  $("select", job.row).addEventListener("change", (event) => {
    job.resolution = event.target.value;
    job.pending = job.changed = true;
    if (job.url) {
      rememberJob(job);
      sendSize(job);
    } // else the creation, still to come, takes it
  });
  jobs.add(job);
  run(job).finally(() => jobs.delete(job));
}

function rememberJob(job) {
  const { file } = job;
  remember({ url: job.url, name: file.name, size: file.size, lastModified: file.lastModified,
             resolution: job.resolution });
}

function uploadId(url) {
  return url.split("/").pop();
}

// The row's size, to the server: for the upload still sending, or the task it became.
async function sendSize(job) {
  const wanted = job.resolution;
  try {
    const response = await fetch(`/tasks/${uploadId(job.url)}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ resolution: wanted }),
    });
    if (response.ok) {
      if (job.resolution === wanted) job.pending = false;
      return;
    }
    const refused = await refusedBy(response);
    if (response.status === 409) announce(`${job.file.name}: ${refused.message}`);
    else note(job, refused.message);
  } catch (_) { /* offline: sent again when the upload goes on */ }
}

async function run(job) {
  const { file } = job;
  let offset = 0;
  while (!job.cancelled) {
    try {
      if (!job.url) {
        const asked = job.resolution;
        const url = await createUpload(file, asked);
        if (job.cancelled) {
          terminate(url); // Cancel came while the server was creating it
          return;
        }
        job.url = url;
        if (job.resolution === asked) job.pending = false;
        rememberJob(job);
      } else if (job.failures > 0 || offset === 0) {
        offset = await serverOffset(job.url); // where the server got to, not where we did
      }
      // the row's size changed while the upload was being created, or a resumed upload
      // (after a reload, or a server restart) takes the size its row shows now
      if (job.pending && offset < file.size) await sendSize(job);
      if (job.cancelled) return; // cancelled during one of the awaits above: send nothing
      // Offset at the length: every byte is in, though the answer to the last PATCH
      // may have been lost on the way; the task exists, under the upload's id.
      if (offset < file.size) {
        offset = await sendFrom(job, offset);
        job.failures = 0;
        if (offset < file.size) continue; // the server stopped early: send the rest
      }
      // a change made as the last bytes went: its task takes it while it is still queued
      if (job.pending) await sendSize(job);
      forget(job.url);
      job.row.remove();
      announce(`${file.name} uploaded and queued.`);
      pollSoon();
      return;
    } catch (error) {
      if (job.cancelled || error instanceof Cancelled) return;
      if (error instanceof Refused && !error.transient) {
        // the server said no (a bad file, a file too large, an expired upload): give up
        if (job.url) forget(job.url);
        job.row.remove();
        const reason = error.status === 404 || error.status === 410
          ? "the server no longer has it; upload it again." : error.message;
        showRefusal(`"${file.name}": ${reason}`);
        return;
      }
      // the connection, or a busy server: wait, then ask where it got to and go on
      job.failures += 1;
      if (job.changed) job.pending = true; // a restarted server has the size it was created with
      if (error instanceof Refused && error.status === 507) note(job, `${error.message} Retrying…`);
      else if (error instanceof NetworkError || error.lost) note(job, "Connection lost: retrying…");
      else note(job, "The server is busy: retrying…");
      await pause(job, RETRY_MS[Math.min(job.failures, RETRY_MS.length) - 1]);
    }
  }
}

function pause(job, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    job.wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

function cancel(job) {
  job.cancelled = true;
  if (job.xhr) job.xhr.abort();
  if (job.wake) job.wake();
  job.row.remove();
  if (job.url) terminate(job.url); // else run() terminates it once the server has made it
  announce(`Upload of ${job.file.name} cancelled.`);
}

function terminate(url) {
  // termination: the server removes every byte it had
  tusFetch(url, { method: "DELETE" }).then((response) => {
    if (response.status === 204 || response.status === 404 || response.status === 410) forget(url);
  }).catch(() => { /* offline: the upload stays listed, to cancel or resume later */ });
}

// Back online: every upload waiting to retry tries now.
window.addEventListener("online", () => {
  for (const job of jobs) if (job.wake) job.wake();
});

// After a reload: the uploads this browser left unfinished, and how far each got.
async function showInterrupted() {
  for (const entry of savedUploads()) {
    let offset;
    try {
      offset = await serverOffset(entry.url);
    } catch (error) {
      if (error instanceof Refused && !error.transient) forget(entry.url); // expired or cancelled
      continue;
    }
    if (offset >= entry.size) { // finished: its task is in the list
      forget(entry.url);
      continue;
    }
    const row = uploadRow(entry.name, entry.resolution);
    row.classList.add("interrupted");
    // the size it resumes at, when the file is picked again
    $("select", row).addEventListener("change", (event) => remember({ ...entry, resolution: event.target.value }));
    $(".badge", row).textContent = "Interrupted";
    const percent = Math.floor((offset / entry.size) * 100);
    $(".bar", row).value = percent;
    $(".percent", row).textContent = `${percent}%`;
    $(".note", row).textContent = `Interrupted: pick ${entry.name} again to resume from ${percent} %`;
    $(".cancel", row).addEventListener("click", () => {
      row.remove();
      interruptedRows.delete(entry.url);
      terminate(entry.url);
      announce(`Upload of ${entry.name} cancelled.`);
    });
    interruptedRows.set(entry.url, row);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#video-input");
  startUploads(input.files);
  input.value = "";
});
// With this script, a pick starts the uploads: the form's button is for pages without it.
$("#video-input").addEventListener("change", (event) => {
  startUploads(event.target.files);
  event.target.value = "";
});
$('#upload-form button[type="submit"]').hidden = true;

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
  card.dataset.resolution = task.resolution;
  $(".name", card).textContent = task.filename;
  const texts = task.display;
  $(".badge", card).textContent = texts.label;
  $(".res", card).textContent = texts.resolution;
  $(".size", card).textContent = texts.size;
  $(".duration", card).textContent = texts.duration;
  $(".output", card).textContent = texts.output;
  const uploaded = $(".uploaded", card);
  uploaded.textContent = texts.uploaded;
  uploaded.dateTime = task.created_at;
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
    if (task.ladder_url) video.dataset.ladder = task.ladder_url;
    preview.append(video);
    if (task.ladder_url) playLadder(video);
  }
  const download = $("a.download", card);
  download.hidden = !task.download_url;
  if (task.download_url) download.href = task.download_url;
  $("form.retry", card).hidden = task.state !== "FAILED";
  sizeChoice(card, task);

  const before = lastStates.get(task.id);
  if (before && before !== task.state) {
    announce(`${task.filename}: ${texts.label.toLowerCase()}${task.state === "FAILED" ? `, ${task.error}` : ""}.`);
  }
  lastStates.set(task.id, task.state);
}

// A queued task's size, still to change on its card until its transcode starts (the
// choice its upload row had goes on here). Made by this script: only it can send a change.
function sizeChoice(card, task) {
  let label = $("label.size", card);
  if (!label) {
    label = document.createElement("label");
    label.className = "size";
    label.append("Size ");
    const select = document.createElement("select");
    for (const choice of sizeChoices()) select.add(new Option(choice.text, choice.value));
    select.addEventListener("change", () => changeTaskSize(card, select));
    label.append(select);
    $(".actions", card).prepend(label);
  }
  label.hidden = task.state !== "QUEUED";
  const select = $("select", label);
  if (document.activeElement !== select) select.value = task.resolution;
}

async function changeTaskSize(card, select) {
  const name = $(".name", card).textContent;
  try {
    const response = await fetch(`/tasks/${card.dataset.id}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ resolution: select.value }),
    });
    if (response.ok) {
      announce(`${name} will be made at ${select.selectedOptions[0].text}.`);
    } else {
      announce(`${name}: ${(await refusedBy(response)).message}`);
    }
  } catch (_) {
    setOffline(true);
  }
  select.blur(); // the next poll shows what the server has
  pollSoon();
}

// "All sizes": the preview plays the HLS ladder, so the player picks the size the
// connection carries and switches as it changes. The browser's own HLS where it has it,
// else hls.js (vendored from npm: static/hls.light.min.js, its license beside it), loaded
// only once a card needs it. Without either the MP4 it was given stays.
let hlsScript = null;

function loadHls() {
  hlsScript ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/static/hls.light.min.js";
    script.onload = () => resolve(window.Hls);
    script.onerror = () => reject(new Error("the HLS player did not load"));
    document.head.append(script);
  });
  return hlsScript;
}

async function playLadder(video) {
  const url = video.dataset.ladder;
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    return;
  }
  let Hls;
  try {
    Hls = await loadHls();
  } catch {
    return; // the MP4 plays instead
  }
  if (!Hls || !Hls.isSupported()) return;
  // like preload="none": nothing is fetched until the person plays it
  // no worker: the page's policy lets no script run from a blob
  const hls = new Hls({ autoStartLoad: false, enableWorker: false });
  hls.loadSource(url);
  hls.attachMedia(video);
  video.addEventListener("play", () => hls.startLoad(), { once: true });
  video.hls = hls; // its levels are the ladder's sizes
}

// The whole list, as the server sent it: cards added, updated, put in order, removed.
function render(tasks) {
  const seen = new Set();
  let previous = null;
  for (const task of [...tasks].reverse()) { // the server sends oldest first; the page shows newest
    const card = cardFor(task);
    updateCard(card, task);
    // keep that order without touching cards already in place
    const wanted = previous ? previous.nextElementSibling : taskList.firstElementChild;
    if (wanted !== card) taskList.insertBefore(card, wanted);
    previous = card;
    seen.add(task.id);
  }
  for (const card of [...taskList.querySelectorAll("li.task")]) {
    if (!seen.has(card.dataset.id)) removeCard(card);
  }
  listChanged();
}

// What changed since the version on screen: the tasks changed (oldest first) and the ids removed.
function merge(changed, removed) {
  for (const id of removed) {
    const card = taskList.querySelector(`li.task[data-id="${CSS.escape(id)}"]`);
    if (card) removeCard(card);
  }
  for (const task of changed) {
    const card = cardFor(task);
    updateCard(card, task);
    // a task the page has not shown is newer than every card on it: it goes on top (changes
    // come oldest first, so the newest of them ends up first)
    if (!card.isConnected) taskList.prepend(card);
  }
  listChanged();
}

function removeCard(card) {
  card.remove();
  lastStates.delete(card.dataset.id);
}

function listChanged() {
  $("#empty").hidden = lastStates.size > 0;
  anyActive = [...lastStates.values()].some((state) => state === "QUEUED" || state === "PROCESSING");
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
    // the list's ETag is its version in quotes: an unchanged list costs a 304
    const response = await fetch(`/tasks?since=${encodeURIComponent(tasksVersion)}`,
      { headers: { "If-None-Match": `"${tasksVersion}"` }, cache: "no-store" });
    if (response.status === 200) {
      const changes = await response.json();
      // full: the server could not tell what changed (it restarted, or this page is too
      // far behind), so it sent every task
      if (changes.full) render(changes.tasks);
      else merge(changes.tasks, changes.removed);
      tasksVersion = changes.version;
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
        removeCard(card);
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
    const sent = performance.now();
    const response = await fetch("/healthz", { cache: "no-store" });
    const health = await response.json();
    const took = performance.now() - sent;
    const lag = health.event_loop_lag_ms;
    const beat = $("#heartbeat");
    // the worst of the last 2 s: a poll a second misses no spike
    $('[data-field="lag-last"]', beat).textContent = `${lag.max_2s.toFixed(1)} ms`;
    const requestField = $('[data-field="request-ms"]', beat);
    requestField.textContent = `${took.toFixed(0)} ms`;
    requestField.dataset.polls = String(Number(requestField.dataset.polls || 0) + 1);
    $('[data-field="lag-max"]', beat).textContent = `${lag.max_1m.toFixed(1)} ms`;
    $('[data-field="uploads"]', beat).textContent = health.uploads_in_progress;
    $('[data-field="unfinished"]', beat).textContent = health.unfinished_uploads.text;
    $('[data-field="jobs"]', beat).textContent = health.jobs_running;
    const queueField = $('[data-field="queue"]', beat); // queue mode only
    if (queueField && health.queue) queueField.textContent = queueText(health.queue);
    const teach = $("#block-the-loop"); // only on a loopback server started with --teach
    if (teach && health.teach && !teach.disabled) teach.checked = health.teach.block_the_loop;
    beat.classList.toggle("busy", health.jobs_running + health.uploads_in_progress > 0);
    lagSamples.push(lag.max_2s);
    if (lagSamples.length > 60) lagSamples.shift();
    drawLag();
  } catch (_) {
    setOffline(true);
  }
  setTimeout(pollHealth, document.hidden ? POLL_HIDDEN_MS : HEALTH_MS);
}

// Fold the heartbeat away, or back (remembered in this browser).
const beatFold = $("#heartbeat .beat-fold");
function foldBeat(folded) {
  $("#heartbeat").classList.toggle("folded", folded);
  beatFold.setAttribute("aria-expanded", String(!folded));
}
const foldSaved = localStorage.getItem("heartbeat-folded");
foldBeat(foldSaved === null ? false : foldSaved === "1");
beatFold.addEventListener("click", () => {
  const folded = !$("#heartbeat").classList.contains("folded");
  foldBeat(folded);
  localStorage.setItem("heartbeat-folded", folded ? "1" : "0");
});

const teachSwitch = $("#block-the-loop");
if (teachSwitch) {
  teachSwitch.addEventListener("change", async () => {
    teachSwitch.disabled = true; // until the server has it
    try {
      const response = await fetch("/teach", {
        method: "PUT", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ block_the_loop: teachSwitch.checked }),
      });
      teachSwitch.checked = (await response.json()).block_the_loop;
    } finally {
      teachSwitch.disabled = false;
    }
  });
}

for (const card of taskList.querySelectorAll("li.task")) {
  lastStates.set(card.dataset.id, card.dataset.state);
  sizeChoice(card, card.dataset); // the server's cards: state and resolution, as it drew them
}
for (const video of taskList.querySelectorAll("video[data-ladder]")) playLadder(video);
listChanged();
pollTasks();
pollHealth();
showInterrupted();
