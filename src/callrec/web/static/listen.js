// callrec: listen live to a call being recorded (the live page and a call's page).
//
// A WebSocket brings the recording's PCM as the server writes it (see docs/listen.md); each
// binary message becomes an AudioBuffer scheduled right after the previous one, MARGIN
// seconds ahead of the audio clock so that arrival jitter does not make gaps. Every frame is
// acknowledged ({"received": n}), which keeps the server from sending more than a second
// ahead of what arrived: a slow connection then loses old audio and stays near live.
// With ?listen-debug=1 in the page's address, the samples scheduled are kept in
// window.callrecListen (the browser tests compare them with the recording).
"use strict";

(() => {
  const MARGIN = 0.15; // seconds scheduled ahead of the audio clock when (re)starting
  const MAX_AHEAD = 3.0; // more than this scheduled ahead: skip to the newest audio
  const debug = new URLSearchParams(location.search).has("listen-debug");
  if (debug) window.callrecListen = { chunks: [], events: [] };

  const CLOSED = {
    1000: "The call has ended.",
    1001: "The call has ended.",
    1008: "Refused: open this page from the callrec server itself.",
    1011: "The server cannot check the sign-in or audit the listening now; try again.",
    1012: "The server is restarting.",
    4401: "Your sign-in is no longer valid; sign in again.",
    4403: "This call is no longer one you may hear.",
    4404: "This call is not being recorded now (or is not yours to hear).",
  };

  let player = null;

  function panel() {
    let el = document.getElementById("listen-panel");
    if (el) return el;
    el = document.createElement("section");
    el.id = "listen-panel";
    el.className = "card listen-panel";
    el.setAttribute("role", "status");
    const title = document.createElement("strong");
    title.textContent = "Listening live";
    const what = document.createElement("span");
    what.className = "listen-what";
    const state = document.createElement("span");
    state.className = "listen-state muted";
    const stop = document.createElement("button");
    stop.type = "button";
    stop.id = "listen-stop";
    stop.textContent = "Stop";
    stop.addEventListener("click", () => { if (player) player.stop("Stopped."); });
    el.append(title, what, state, stop);
    const heading = document.querySelector("main h1");
    if (heading) heading.after(el); else document.querySelector("main").prepend(el);
    return el;
  }

  class LivePlayer {
    constructor(uid, what) {
      this.uid = uid;
      this.panel = panel();
      this.panel.hidden = false;
      this.panel.dataset.uid = uid;
      this.panel.querySelector(".listen-what").textContent = what || "";
      this.format = null;
      this.position = 0; // sample frames from the call's start, of the next frame to come
      this.received = 0;
      this.dropped = 0;
      this.next = 0; // audio-clock time at which the next buffer starts
      this.sources = [];
      this.lastArrival = 0;
      this.ended = false;
      this.stopped = false;
      // Made in the click, so the browser lets it play.
      this.ctx = new AudioContext();
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      this.ws = new WebSocket(`${scheme}//${location.host}/api/v1/live/${encodeURIComponent(uid)}/listen`);
      this.ws.binaryType = "arraybuffer";
      this.ws.addEventListener("message", (event) => this.message(event.data));
      this.ws.addEventListener("close", (event) => this.closed(event));
      this.timer = setInterval(() => this.show(), 250);
      this.setState("connecting", "Connecting…");
      if (debug) window.callrecListen.player = this;
    }

    setState(state, text) {
      this.panel.dataset.state = state;
      this.panel.querySelector(".listen-state").textContent = text;
    }

    message(data) {
      if (typeof data === "string") {
        const event = JSON.parse(data);
        if (debug) window.callrecListen.events.push(event);
        if (event.event === "start") {
          this.format = event;
          this.useRate(event.sample_rate);
          this.setState("waiting", "Waiting for audio…");
        } else if (event.event === "position") {
          this.position = event.position;
          this.dropped = event.dropped;
        } else if (event.event === "ended") {
          this.ended = true;
        }
        return;
      }
      if (!this.format || this.stopped) return;
      const channels = this.format.channels;
      const pcm = new Int16Array(data);
      const frames = pcm.length / channels;
      if (!frames) return;
      this.received += frames;
      this.ws.send(JSON.stringify({ received: this.received }));
      const buffer = this.ctx.createBuffer(channels, frames, this.format.sample_rate);
      const planes = [];
      for (let c = 0; c < channels; c++) {
        const plane = buffer.getChannelData(c);
        for (let i = 0; i < frames; i++) plane[i] = pcm[i * channels + c] / 32768;
        planes.push(plane);
      }
      const now = this.ctx.currentTime;
      if (this.next - now > MAX_AHEAD) this.flush(); // the audio clock lags the phone's
      if (this.next < now + 0.01) this.next = now + MARGIN; // a start, or a gap
      const source = this.ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(this.ctx.destination);
      source.start(this.next);
      source.addEventListener("ended", () => {
        this.sources = this.sources.filter((s) => s !== source);
      });
      this.sources.push(source);
      if (debug) {
        window.callrecListen.chunks.push({ position: this.position, channels: planes.map((p) => Array.from(p)) });
      }
      this.next += buffer.duration;
      this.position += frames;
      this.lastArrival = performance.now();
      if (this.panel.dataset.state !== "playing") this.setState("playing", "");
    }

    // Play at the call's own rate: the browser then resamples one continuous stream to the
    // device, not each buffer apart (which clicks at their edges). The page was clicked, so
    // a context made now may play; where that rate is refused, the first one stays.
    useRate(rate) {
      if (this.ctx.sampleRate === rate) return;
      let ctx;
      try {
        ctx = new AudioContext({ sampleRate: rate });
      } catch (err) {
        return;
      }
      this.ctx.close();
      this.ctx = ctx;
      if (ctx.state === "suspended") ctx.resume();
    }

    flush() {
      for (const source of this.sources) {
        try { source.stop(); } catch (err) { /* not started yet */ }
      }
      this.sources = [];
      this.next = 0;
    }

    show() {
      if (this.panel.dataset.state !== "playing") return;
      const ahead = Math.max(0, this.next - this.ctx.currentTime);
      const behind = ahead + (performance.now() - this.lastArrival) / 1000;
      const parts = [`buffer ${ahead.toFixed(2)} s`, `≈${behind.toFixed(1)} s behind the recording`];
      if (this.dropped) parts.push(`${this.dropped} frames skipped (slow connection)`);
      this.panel.querySelector(".listen-state").textContent = parts.join(" · ");
      this.panel.dataset.ahead = ahead.toFixed(3);
    }

    closed(event) {
      clearInterval(this.timer);
      if (this.stopped) return;
      const text = CLOSED[event.code] || "The connection was lost.";
      this.setState(this.ended ? "ended" : "closed", text);
      this.panel.dataset.code = String(event.code);
      // Let what is scheduled play out, then let the audio device go.
      const left = Math.max(0, this.next - this.ctx.currentTime);
      setTimeout(() => this.ctx.close(), (left + 0.2) * 1000);
      if (player === this) player = null;
    }

    stop(text) {
      this.stopped = true;
      clearInterval(this.timer);
      this.ws.close(1000);
      this.flush();
      this.ctx.close();
      this.setState("stopped", text);
      if (player === this) player = null;
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-listen]");
    if (!button) return;
    const uid = button.dataset.listen;
    const same = player && player.uid === uid;
    if (player) player.stop("Stopped.");
    if (!same) player = new LivePlayer(uid, button.dataset.what);
  });
})();
