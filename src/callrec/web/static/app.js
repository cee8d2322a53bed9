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
    fillZones(fresh);
    labelCells(fresh);
    updateSelection();
    markPlaying();
    markPresets();
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
  // The jump-to-date form (inside the results) loads in place like the links.
  document.addEventListener("submit", (event) => {
    const jump = event.target.closest("form[data-nav-form]");
    if (!jump || event.defaultPrevented) return;
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(jump)) if (value) params.append(key, value);
    loadResults(jump.getAttribute("action") + "?" + params.toString(), true);
  });
  setupPresets(form);
}

// -- date presets: in the browser's time zone, as the dates are shown ----------------------

function isoDay(day) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${day.getFullYear()}-${pad(day.getMonth() + 1)}-${pad(day.getDate())}`;
}

function presetSpan(key) {
  const today = new Date();
  const day = (offset) => new Date(today.getFullYear(), today.getMonth(), today.getDate() + offset);
  switch (key) {
    case "today": return [isoDay(today), isoDay(today)];
    case "yesterday": return [isoDay(day(-1)), isoDay(day(-1))];
    case "week": return [isoDay(day(-6)), isoDay(today)];
    case "month": return [isoDay(new Date(today.getFullYear(), today.getMonth(), 1)), isoDay(today)];
  }
  return null;
}

function markPresets() {
  const form = document.getElementById("search");
  if (!form) return;
  for (const link of document.querySelectorAll("a[data-preset]")) {
    const span = presetSpan(link.dataset.preset);
    const on = span && form.since.value === span[0] && form.until.value === span[1];
    link.classList.toggle("active", Boolean(on));
    if (on) link.setAttribute("aria-current", "true"); else link.removeAttribute("aria-current");
  }
}

function setupPresets(form) {
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-preset]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const span = presetSpan(link.dataset.preset);
    if (!span) return;
    event.preventDefault();
    [form.since.value, form.until.value] = span;
    markPresets();
    form.requestSubmit();
  });
  markPresets();
}

function updateSelection() {
  const zip = document.getElementById("zip");
  if (!zip) return;
  const boxes = document.querySelectorAll("#bulk input[name=id]");
  const ticked = [...boxes].filter((b) => b.checked).length;
  zip.disabled = ticked === 0;
  zip.textContent = ticked ? `Download ${ticked} selected (ZIP)` : "Download selected (ZIP)";
  const remove = document.getElementById("delete-selected");
  if (remove) {
    remove.disabled = ticked === 0;
    remove.textContent = ticked ? `Delete ${ticked} selected` : "Delete selected";
    remove.dataset.confirm = `Delete ${ticked} recording${ticked === 1 ? "" : "s"} and their files for good?`;
  }
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
  const message = (event.submitter && event.submitter.dataset.confirm) || event.target.dataset.confirm;
  if (message && !confirm(message)) event.preventDefault();
});

// -- recordings list: one player for the page -----------------------------------------------

let playingId = null;

function listAudio() {
  return document.getElementById("list-audio");
}

function markPlaying() {
  const audio = listAudio();
  if (!audio) return;
  for (const row of document.querySelectorAll("#results tr[data-id]")) {
    const on = row.dataset.id === playingId;
    row.classList.toggle("playing", on);
    if (on) row.setAttribute("aria-current", "true"); else row.removeAttribute("aria-current");
    const link = row.querySelector("a[data-play]");
    if (link) {
      const pause = on && !audio.paused;
      link.textContent = pause ? "❚❚" : "▶";
      link.setAttribute("aria-label", `${pause ? "Pause" : "Play"} recording ${row.dataset.id}`);
    }
  }
  const toggle = document.getElementById("playbar-toggle");
  if (toggle) toggle.textContent = audio.paused ? "▶" : "❚❚";
}

function playRow(row) {
  const audio = listAudio();
  if (!audio || !row) return;
  if (row.dataset.id === playingId) {
    if (audio.paused) audio.play().catch(() => {}); else audio.pause();
    return;
  }
  playingId = row.dataset.id;
  const link = row.querySelector("a[data-play]");
  const title = document.getElementById("playbar-title");
  title.textContent = link ? link.dataset.title : `Recording ${playingId}`;
  title.href = `/recordings/${playingId}`;
  const when = row.querySelector("time");
  document.getElementById("playbar-time").textContent = when ? when.textContent : "";
  audio.src = `/api/v1/recordings/${playingId}/audio`;
  document.getElementById("playbar").hidden = false;
  document.body.classList.add("has-playbar");
  audio.play().catch(() => {});
  markPlaying();
}

function setupListPlayer() {
  const audio = listAudio();
  if (!audio) return;
  for (const name of ["play", "pause", "ended", "emptied"]) audio.addEventListener(name, markPlaying);
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-play]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    const row = link.closest("tr[data-id]");
    markRow(row, false);
    playRow(row);
  });
  document.getElementById("playbar-toggle").addEventListener("click", () => {
    if (audio.paused) audio.play().catch(() => {}); else audio.pause();
  });
  document.getElementById("playbar-close").addEventListener("click", () => {
    audio.pause();
    audio.removeAttribute("src");
    audio.load();
    playingId = null;
    document.getElementById("playbar").hidden = true;
    document.body.classList.remove("has-playbar");
    markPlaying();
  });
}

// -- keyboard: list and recording page ------------------------------------------------------

function markedRow() {
  return document.querySelector("#results tr[data-id].marked");
}

function markRow(row, focus) {
  if (!row) return;
  for (const other of document.querySelectorAll("#results tr.marked")) other.classList.remove("marked");
  row.classList.add("marked");
  if (focus) {
    const link = row.querySelector("a.rec-link");
    if (link) link.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }
}

function moveRow(step) {
  const rows = [...document.querySelectorAll("#results tr[data-id]")];
  if (!rows.length) return;
  const at = rows.indexOf(markedRow() || document.querySelector("#results tr.playing"));
  const next = at < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.max(0, Math.min(rows.length - 1, at + step));
  markRow(rows[next], true);
}

function toggleHelp(show) {
  const help = document.getElementById("keys-help");
  if (!help) return;
  help.hidden = show === undefined ? !help.hidden : !show;
  if (!help.hidden) help.querySelector("[data-keys-close]").focus();
}

function setupKeys() {
  const help = document.getElementById("keys-help");
  if (!help) return;
  for (const hint of document.querySelectorAll(".keys-hint")) hint.hidden = false;
  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-keys-help]")) toggleHelp(true);
    else if (event.target.closest("[data-keys-close]") || event.target === help) toggleHelp(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    const target = event.target;
    // Typing in a field, or a control that has its own use of the key.
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    if (event.key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (event.key === "Escape") { toggleHelp(false); return; }
    if (!help.hidden) return;
    const list = listAudio();
    const audio = list || document.getElementById("audio");
    const own = target.closest && target.closest("button, audio, video, summary");
    switch (event.key) {
      case " ":
        if (own || !audio) return;
        event.preventDefault();
        if (list && !playingId) playRow(markedRow() || document.querySelector("#results tr[data-id]"));
        else if (audio.paused) audio.play().catch(() => {}); else audio.pause();
        return;
      case "ArrowLeft":
      case "ArrowRight": {
        if (own || !audio || !audio.currentSrc) return;
        event.preventDefault();
        const step = (event.shiftKey ? 30 : 5) * (event.key === "ArrowLeft" ? -1 : 1);
        const end = isFinite(audio.duration) ? audio.duration : Infinity;
        audio.currentTime = Math.max(0, Math.min(end, audio.currentTime + step));
        return;
      }
    }
    if (!list) return;
    switch (event.key) {
      case "j": event.preventDefault(); moveRow(1); return;
      case "k": event.preventDefault(); moveRow(-1); return;
      case "p": { const row = markedRow(); if (row) { event.preventDefault(); playRow(row); } return; }
      case "o": { const row = markedRow(); if (row) location.href = `/recordings/${row.dataset.id}`; return; }
    }
  });
}

// -- narrow screens: each cell of a list says what it is, for the card layout ---------------

function labelCells(root) {
  for (const table of root.querySelectorAll("table.list")) {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    for (const row of table.querySelectorAll("tbody tr")) {
      let column = 0;
      for (const td of row.cells) {
        const head = heads[column];
        if (!td.hasAttribute("data-label") && head && td.colSpan === 1) td.dataset.label = head;
        column += td.colSpan;
      }
    }
  }
}

function setupLabels() {
  labelCells(document);
  // Rows a page's script adds later (the live page) get their labels too.
  const observer = new MutationObserver((changes) => {
    for (const change of changes) {
      const table = change.target.closest && change.target.closest("table.list");
      if (table) labelCells(table.parentNode);
    }
  });
  for (const body of document.querySelectorAll("table.list tbody")) {
    observer.observe(body, { childList: true, subtree: true });
  }
}

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

// -- recording page: the transcript (issue 18): a word seeks the player, the word being
// played is marked. The words are buttons in the page's HTML: keyboard users tab to one and
// press enter; without this script they are text to read.

function setupTranscript() {
  const box = document.querySelector("[data-transcript]");
  const audio = document.getElementById("audio");
  if (!box || !audio) return;
  const words = [...box.querySelectorAll("button.word")];
  const starts = words.map((w) => parseFloat(w.dataset.start));
  const ends = words.map((w) => parseFloat(w.dataset.end));
  let current = null;

  // The word being said at `time`: the last one started by then, while it lasts or until
  // the next starts (a pause keeps the word before marked, as a reader's finger would).
  function wordAt(time) {
    let lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= time + 0.001) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    if (found < 0) return null;
    const next = found + 1 < starts.length ? starts[found + 1] : Infinity;
    return time < Math.max(ends[found], Math.min(next, ends[found] + 1)) ? words[found] : null;
  }

  function mark(word) {
    if (word === current) return;
    if (current) { current.classList.remove("current"); current.removeAttribute("aria-current"); }
    current = word;
    if (!word) return;
    word.classList.add("current");
    word.setAttribute("aria-current", "true");
    // Keep it in view inside the transcript's own scroll box, not the page's.
    const top = word.offsetTop - box.offsetTop;
    if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - word.offsetHeight) {
      box.scrollTop = Math.max(0, top - box.clientHeight / 3);
    }
  }

  const update = () => mark(wordAt(audio.currentTime));
  for (const name of ["timeupdate", "seeked", "seeking"]) audio.addEventListener(name, update);

  box.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-start]");
    if (!button) return;
    const start = parseFloat(button.dataset.start);
    audio.currentTime = start;
    mark(button.classList.contains("word") ? button : wordAt(start));
  });
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

// The button static/listen.js answers (listen live to the call); another node's call says
// where it is recorded instead (its file is there: docs/scaling.md).
function listenCell(s) {
  const td = document.createElement("td");
  if (s.remote) {
    const where = document.createElement(s.node_url ? "a" : "span");
    where.className = "on-node";
    where.textContent = `on node ${s.node}`;
    if (s.node_url) where.href = `${s.node_url}/live`;
    td.append(where);
    return td;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "listen";
  button.dataset.listen = s.uid;
  button.dataset.what = `${party(s.local_number, s.local_name)} ↔ ${party(s.remote_number, s.remote_name)}`;
  button.textContent = "Listen";
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
  // Rows are kept from one snapshot to the next and only their figures change: a row (and
  // its Listen button) replaced every second could swallow a click landing in between.
  const FIGURES = 7; // the cells from Duration on: duration, packets, lost, foreign
  source.addEventListener("snapshot", (event) => {
    const sessions = JSON.parse(event.data);
    const existing = new Map([...body.querySelectorAll("tr[data-uid]")].map((r) => [r.dataset.uid, r]));
    const rows = [];
    const now = new Set();
    for (const s of sessions) {
      now.add(s.session_id);
      const figures = [formatDuration(s.duration), String(s.counters.received),
        String(s.counters.lost), String(s.counters.foreign)];
      let tr = existing.get(s.uid);
      if (tr && tr.cells.length === 13) {
        figures.forEach((text, i) => {
          const td = tr.cells[FIGURES + i];
          if (td.textContent !== text) td.textContent = text;
        });
        tr.dataset.recording = s.rec_id;
        tr.classList.remove("flash-new");
      } else {
        tr = document.createElement("tr");
        tr.dataset.session = s.session_id;
        tr.dataset.uid = s.uid;
        tr.dataset.recording = s.rec_id;
        if (!known.has(s.session_id)) tr.className = "flash-new";
        const started = document.createElement("td");
        const time = document.createElement("time");
        time.setAttribute("datetime", s.started_at);
        started.append(time);
        tr.append(started, cell(s.direction), cell(party(s.local_number, s.local_name)),
          cell(party(s.remote_number, s.remote_name)), cell(s.device, "mono"), cell(s.node || "", "node"), cell(s.codec),
          ...figures.map((text) => cell(text, "r")), cell(s.session_id, "mono"), listenCell(s));
      }
      rows.push(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "none";
      const td = cell("No call is being recorded.", "empty");
      td.colSpan = 13;
      tr.append(td);
      rows.push(tr);
    }
    // Moved only when calls came or went, so the rows that stay are never detached.
    const same = rows.length === body.rows.length && rows.every((r, i) => body.rows[i] === r);
    if (!same) {
      body.replaceChildren(...rows);
      localTimes(body);
    }
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
  setupTranscript();
  setupCallLive();
  setupLive();
  setupBack();
  setupListPlayer();
  setupKeys();
  setupLabels();
});
