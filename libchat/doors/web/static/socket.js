// libchat web pages: the WebSocket to /ws that comes back by itself.
// Plain JavaScript, no build step; shared by every page (index.html loads it
// before app.js). Reconnects with exponential back-off and jitter (1 s, 2 s,
// 4 s ... 30 s, each ±20 %); the page's onOpen asks for what it missed (1003).
'use strict';

window.LibchatSocket = class LibchatSocket {
  /**
   * @param {{url: () => string, onOpen: () => void, onEvent: (ev: object) => void,
   *          onDown: () => void, onStatus: (kind: string, text: string) => void,
   *          hint?: (attempt: number, opened: boolean) => string}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.ws = null;
    this.attempt = 0;
    this.opened = false; // ever opened since start(): a token that never works gets a hint
    this.paused = false;
    this.retryTimer = null;
  }

  static get BACKOFF_MIN() { return 1000; }
  static get BACKOFF_MAX() { return 30000; }

  isOpen() { return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN); }

  /** Connect now (a fresh start: the back-off begins again). */
  start() {
    this.attempt = 0;
    this.opened = false;
    this.connect();
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.paused) return;
    const h = this.hooks;
    h.onStatus('connecting', this.attempt ? 'Reconnecting…' : 'Connecting…');
    const ws = new WebSocket(h.url());
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.opened = true;
      h.onStatus('online', 'Connected');
      h.onOpen();
    };
    ws.onmessage = (m) => {
      let event;
      try { event = JSON.parse(m.data); } catch (e) { return; }
      h.onEvent(event);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      h.onDown();
      if (this.paused) return h.onStatus('offline', 'Offline');
      const delay = Math.min(LibchatSocket.BACKOFF_MAX, LibchatSocket.BACKOFF_MIN * 2 ** this.attempt)
        * (0.8 + Math.random() * 0.4);
      this.attempt += 1;
      const hint = h.hint ? h.hint(this.attempt, this.opened) : '';
      h.onStatus('connecting', `Reconnecting in ${Math.round(delay / 1000)} s${hint}`);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  /** Drop the socket and stay down until resume(). */
  pause() {
    this.paused = true;
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
    this.hooks.onStatus('offline', 'Offline');
  }

  resume() {
    this.paused = false;
    this.attempt = 0;
    this.connect();
  }

  /** @returns {boolean} false when not connected (nothing was sent) */
  send(event) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(event));
    return true;
  }
};
