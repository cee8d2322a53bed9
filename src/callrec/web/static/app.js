// callrec web UI: progressive enhancement only; every page works without this file.
"use strict";

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.textContent = dateTime.format(when);
      el.title = el.getAttribute("datetime");
    }
  }
}

function fillZones(root) {
  for (const input of root.querySelectorAll("input[data-tz]")) input.value = zone;
}

// Whole seconds cut down, as players count (6.6 s is 0:06): the same rule as the pages'
// `duration` filter (pages/render.py) and the browser's own audio controls.
function formatDuration(seconds) {
  const total = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
}

// -- recordings list: search in place, the URL follows, back/forward work -----------------

function searchUrl(form) {
  const params = new URLSearchParams();
  const data = new FormData(form);
  const dated = data.get("since") || data.get("until");
  for (const [key, value] of data) {
    if (!value) continue;
    if (key === "tz" && !dated) continue;
    if (key === "sort" && value === "-start_time") continue;
    if (key === "limit" && value === "50") continue;
    params.append(key, value);
  }
  const query = params.toString();
  return form.getAttribute("action") + (query ? "?" + query : "");
}

let loading = null;
async function loadResults(url, push) {
  if (loading) loading.abort();
  loading = new AbortController();
  const results = document.getElementById("results");
  results.setAttribute("aria-busy", "true");
  try {
    const response = await fetch(url, { signal: loading.signal, headers: { "X-Requested-With": "fetch" } });
    if (response.redirected && !new URL(response.url).pathname.startsWith("/recordings")) {
      location.href = response.url;
      return;
    }
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("results");
    if (!fresh) { location.href = url; return; }
    results.replaceWith(fresh);
    localTimes(fresh);
    updateSelection();
    if (push) history.pushState({ url }, "", url);
  } catch (err) {
    if (err.name !== "AbortError") location.href = url;
  } finally {
    const current = document.getElementById("results");
    if (current) current.removeAttribute("aria-busy");
  }
}

function syncForm(form) {
  const params = new URLSearchParams(location.search);
  for (const el of form.elements) {
    if (!el.name || el.type === "hidden") continue;
    if (el.tagName === "SELECT") {
      const fallback = el.name === "sort" ? "-start_time" : el.name === "limit" ? "50" : "";
      el.value = params.get(el.name) || fallback;
    } else {
      el.value = params.get(el.name) || "";
    }
  }
}

function setupSearch() {
  const form = document.getElementById("search");
  if (!form) return;
  history.replaceState({ url: location.href }, "", location.href);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    loadResults(searchUrl(form), true);
  });
  form.addEventListener("change", (event) => {
    if (event.target.name !== "q") form.requestSubmit();
  });
  let timer = null;
  form.q.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => form.requestSubmit(), 350);
  });
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-nav]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    loadResults(link.href, true);
  });
  window.addEventListener("popstate", () => {
    syncForm(form);
    loadResults(location.href, false);
  });
}

function updateSelection() {
  const zip = document.getElementById("zip");
  if (!zip) return;
  const boxes = document.querySelectorAll("#bulk input[name=id]");
  const ticked = [...boxes].filter((b) => b.checked).length;
  zip.disabled = ticked === 0;
  zip.textContent = ticked ? `Download ${ticked} selected (ZIP)` : "Download selected (ZIP)";
  const all = document.getElementById("all");
  if (all) all.checked = ticked > 0 && ticked === boxes.length;
}

document.addEventListener("change", (event) => {
  if (event.target.id === "all") {
    for (const box of document.querySelectorAll("#bulk input[name=id]")) box.checked = event.target.checked;
  }
  if (event.target.closest("#bulk")) updateSelection();
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !confirm(message)) event.preventDefault();
});

// -- recording page: waveform player --------------------------------------------------------

async function setupPlayer() {
  const player = document.getElementById("player");
  if (!player) return;
  const audio = document.getElementById("audio");
  const canvas = document.getElementById("wave");
  const ctx = canvas.getContext("2d");
  let peaks = [];
  let seconds = parseFloat(player.dataset.duration) || 0;

  function duration() {
    return isFinite(audio.duration) && audio.duration > 0 ? audio.duration : seconds;
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio, height = canvas.clientHeight * ratio;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    ctx.clearRect(0, 0, width, height);
    const played = duration() ? audio.currentTime / duration() : 0;
    const mid = height / 2;
    const n = peaks.length;
    for (let x = 0; x < width; x++) {
      const i = Math.floor((x / width) * n);
      const [lo, hi] = n ? peaks[Math.min(i, n - 1)] : [0, 0];
      ctx.fillStyle = x / width < played ? "#8fb0ff" : "#4b5d85";
      const top = mid - Math.max(hi, 0.004) * mid;
      const bottom = mid - Math.min(lo, -0.004) * mid;
      ctx.fillRect(x, top, 1, bottom - top);
    }
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(Math.round(played * width), 0, Math.max(1, ratio), height);
  }

  canvas.addEventListener("click", (event) => {
    const rect = canvas.getBoundingClientRect();
    const fraction = (event.clientX - rect.left) / rect.width;
    if (duration()) {
      audio.currentTime = Math.max(0, Math.min(1, fraction)) * duration();
      draw();
    }
  });
  const clock = document.getElementById("clock");
  function tick() {
    if (clock) clock.textContent = formatDuration(audio.currentTime) + " / " + formatDuration(duration());
  }
  for (const name of ["timeupdate", "seeked", "loadedmetadata", "play", "pause"]) {
    audio.addEventListener(name, draw);
    audio.addEventListener(name, tick);
  }
  player.addEventListener("duration", (event) => { seconds = event.detail; tick(); draw(); });
  window.addEventListener("resize", draw);
  let frame = null;
  const animate = () => { draw(); frame = audio.paused ? null : requestAnimationFrame(animate); };
  audio.addEventListener("play", () => { if (!frame) frame = requestAnimationFrame(animate); });

  try {
    const buckets = Math.max(10, Math.min(4000, Math.round(canvas.clientWidth * (window.devicePixelRatio || 1))));
    const response = await fetch(`/api/v1/recordings/${player.dataset.id}/peaks?buckets=${buckets}`);
    if (response.ok) {
      const data = await response.json();
      peaks = data.peaks;
      if (!seconds) seconds = data.duration;
      player.dataset.peaks = String(peaks.length);
    }
  } finally {
    draw();
    player.dataset.ready = "1";
  }
}

// -- recording page of a call still being recorded: running figures, then the final ones ---

function setupCallLive() {
  const player = document.getElementById("player");
  if (!player || player.dataset.status !== "recording" || !window.EventSource) return;
  const id = Number(player.dataset.id);
  const set = (name, text) => {
    for (const el of document.querySelectorAll(`[data-live='${name}']`)) el.textContent = text;
  };
  const show = (seconds, counters) => {
    set("duration", formatDuration(seconds));
    set("seconds", `(${seconds.toFixed(2)} s)`);
    for (const [name, value] of Object.entries(counters)) {
      for (const el of document.querySelectorAll(`[data-counter='${name}']`)) el.textContent = String(value);
    }
    player.dispatchEvent(new CustomEvent("duration", {detail: seconds}));
  };
  const source = new EventSource("/api/v1/live/events");
  let seen = false;
  source.addEventListener("snapshot", async (event) => {
    const live = JSON.parse(event.data).find((s) => s.rec_id === id);
    if (live) {
      seen = true;
      show(live.duration, live.counters);
      player.dataset.live = "1";
      return;
    }
    // Gone from the live view: finished (or never there). Show what the catalogue has now.
    source.close();
    const response = await fetch(`/api/v1/recordings/${id}`);
    if (!response.ok) return;
    const rec = await response.json();
    if (rec.duration !== null) show(rec.duration, rec.counters);
    set("status", rec.status);
    for (const el of document.querySelectorAll("[data-live='status']")) el.className = `status status-${rec.status}`;
    set("stop_reason", rec.stop_reason || "");
    set("grade", rec.quality.grade);
    set("loss", `(${rec.quality.loss_percent} % of ${rec.quality.expected})`);
    set("note", "");
    if (rec.end_time) {
      const time = document.createElement("time");
      time.setAttribute("datetime", rec.end_time);
      for (const el of document.querySelectorAll("[data-live='end_time']")) {
        el.replaceChildren(time.cloneNode());
        localTimes(el);
      }
    }
    player.dataset.status = rec.status;
    player.dataset.live = seen ? "ended" : "0";
  });
}

// -- live page ------------------------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function party(number, name) {
  return name ? `${number} (${name})` : number;
}

// The button static/listen.js answers (listen live to the call).
function listenCell(s) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "listen";
  button.dataset.listen = s.uid;
  button.dataset.what = `${party(s.local_number, s.local_name)} ↔ ${party(s.remote_number, s.remote_name)}`;
  button.textContent = "Listen";
  const td = document.createElement("td");
  td.append(button);
  return td;
}

function setupLive() {
  const table = document.getElementById("live");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const state = document.getElementById("live-state");
  const count = document.getElementById("live-count");
  const source = new EventSource(table.dataset.source);
  let known = new Set([...body.querySelectorAll("tr[data-session]")].map((r) => r.dataset.session));
  source.addEventListener("open", () => { state.textContent = "Connected; updates every second."; });
  source.addEventListener("error", () => { state.textContent = "Connection lost; retrying…"; });
  // The server ended the feed: this session or token no longer holds. Nothing stays shown.
  source.addEventListener("end", (event) => {
    source.close();
    body.replaceChildren();
    count.textContent = "–";
    state.textContent = `${JSON.parse(event.data).reason}. Sign in again to watch.`;
    state.dataset.ended = "1";
  });
  source.addEventListener("snapshot", (event) => {
    const sessions = JSON.parse(event.data);
    const rows = [];
    const now = new Set();
    for (const s of sessions) {
      const tr = document.createElement("tr");
      tr.dataset.session = s.session_id;
      tr.dataset.recording = s.rec_id;
      if (!known.has(s.session_id)) tr.className = "flash-new";
      now.add(s.session_id);
      const started = document.createElement("td");
      const time = document.createElement("time");
      time.setAttribute("datetime", s.started_at);
      started.append(time);
      tr.append(started, cell(s.direction), cell(party(s.local_number, s.local_name)),
        cell(party(s.remote_number, s.remote_name)), cell(s.device, "mono"), cell(s.codec),
        cell(formatDuration(s.duration), "r"), cell(String(s.counters.received), "r"),
        cell(String(s.counters.lost), "r"), cell(String(s.counters.foreign), "r"),
        cell(s.session_id, "mono"), listenCell(s));
      rows.push(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "none";
      const td = cell("No call is being recorded.", "empty");
      td.colSpan = 12;
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    localTimes(body);
    known = now;
    count.textContent = String(sessions.length);
  });
}

function setupBack() {
  const link = document.querySelector("a[data-back]");
  if (!link) return;
  link.addEventListener("click", (event) => {
    if (document.referrer && new URL(document.referrer).origin === location.origin &&
        new URL(document.referrer).pathname === "/recordings") {
      event.preventDefault();
      history.back();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  fillZones(document);
  setupSearch();
  updateSelection();
  setupPlayer();
  setupCallLive();
  setupLive();
  setupBack();
});
