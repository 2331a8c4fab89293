// libchat web page: plain JavaScript, no build step.
// Speaks docs/web.md over /ws: sends 1001/1002, renders 2001-2004, and on
// every (re)connect asks for what it missed with 1003 {after: last seq seen}.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const { el, itemNode, truncate } = window.LibchatRender; // render.js
  const REASONS = {
    completed: (p) => `${p || 'The program'} finished. Ask anything else.`,
    idle_timeout: (p) => `${p || 'The program'} stopped after being idle.`,
    program_exited: (p) => `${p || 'The program'} stopped unexpectedly.`,
    program_failed: (p) => `${p || 'The program'} could not start.`,
    client_closed: () => 'You ended this conversation.',
  };

  const state = {
    mode: 'dev', // or 'jwt', from /healthz
    user: null,
    token: null,
    dialogs: new Map(), // id -> dialog (see newDialog)
    current: null,
  };

  // -- identity ---------------------------------------------------------------

  function subOf(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const json = decodeURIComponent(escape(atob(part)));
      return JSON.parse(json).sub || null;
    } catch (e) {
      return null;
    }
  }

  function saveIdentity() {
    localStorage.setItem('libchat.identity',
      JSON.stringify(state.mode === 'jwt' ? { token: state.token } : { user: state.user }));
  }

  function loadIdentity() {
    try {
      const id = JSON.parse(localStorage.getItem('libchat.identity') || '{}');
      if (state.mode === 'jwt' && id.token && subOf(id.token)) {
        state.token = id.token;
        state.user = subOf(id.token);
      } else if (state.mode === 'dev' && id.user) {
        state.user = id.user;
      }
    } catch (e) { /* a fresh start */ }
    return Boolean(state.user);
  }

  function showLogin(error) {
    $('login-dev').hidden = state.mode !== 'dev';
    $('login-jwt').hidden = state.mode !== 'jwt';
    $('login-error').hidden = !error;
    $('login-error').textContent = error || '';
    $('login').hidden = false;
    (state.mode === 'dev' ? $('login-user') : $('login-token')).focus();
  }

  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (state.mode === 'dev') {
      const name = $('login-user').value.trim();
      if (!name) return showLogin('Please pick a user name.');
      state.user = name.slice(0, 256);
    } else {
      const token = $('login-token').value.trim();
      const sub = subOf(token);
      if (!sub) return showLogin('That does not look like a token (three base64 parts).');
      state.token = token;
      state.user = sub;
    }
    saveIdentity();
    $('login').hidden = true;
    start();
  });

  $('sign-out').addEventListener('click', () => {
    localStorage.removeItem('libchat.identity');
    socket.pause();
    state.user = state.token = null;
    state.dialogs.clear();
    state.current = null;
    renderAll();
    showLogin();
  });

  // -- dialogs ----------------------------------------------------------------

  function newDialog(id, title) {
    return {
      id, title: title || 'New conversation', program: null, state: 'open', updated: Date.now(),
      lastSeq: 0, loaded: false, unread: false, items: [], seen: new Set(), msgIds: new Set(),
    };
  }

  function storageKey() { return `libchat.dialogs.${state.user}`; }

  function saveDialogs() {
    const list = [...state.dialogs.values()].map((d) => ({
      id: d.id, title: d.title, program: d.program, state: d.state, updated: d.updated,
    }));
    localStorage.setItem(storageKey(), JSON.stringify(list.slice(-100)));
  }

  function loadDialogs() {
    state.dialogs.clear();
    let list = [];
    try { list = JSON.parse(localStorage.getItem(storageKey()) || '[]'); } catch (e) { /* none */ }
    for (const d of list) {
      state.dialogs.set(d.id, Object.assign(newDialog(d.id), d, { loaded: false }));
    }
  }

  function dialogFor(id, title) {
    let d = state.dialogs.get(id);
    if (!d) {
      d = newDialog(id, title);
      state.dialogs.set(id, d);
    }
    return d;
  }

  function randomId(prefix) {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return prefix + [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  }

  function select(id) {
    state.current = id;
    const d = id && state.dialogs.get(id);
    if (d) {
      d.unread = false;
      if (!d.loaded) load(d);
    }
    renderAll();
    $('input').focus();
  }

  // ask the server for the whole transcript (a reload, or a dialog from another tab)
  function load(d) {
    if (!isOpen()) return;
    d.items = [];
    d.seen.clear();
    d.msgIds.clear();
    d.lastSeq = 0;
    d.loaded = true;
    send({ event_type: 1003, dialog_id: d.id, after: 0 });
  }

  // -- the socket (socket.js: reconnects with back-off) -------------------------

  const socket = new window.LibchatSocket({
    url() {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const q = state.mode === 'jwt' ? `token=${encodeURIComponent(state.token)}`
        : `user_id=${encodeURIComponent(state.user)}`;
      return `${scheme}//${location.host}/ws?${q}`;
    },
    onOpen() {
      for (const d of state.dialogs.values()) {
        if (d.loaded) send({ event_type: 1003, dialog_id: d.id, after: d.lastSeq });
      }
      const cur = state.current && state.dialogs.get(state.current);
      if (cur && !cur.loaded) load(cur);
      renderComposer();
    },
    onEvent: (ev) => handle(ev),
    onDown: () => renderComposer(),
    onStatus: (kind, text) => setStatus(kind, text),
    hint: (attempt, opened) => (!opened && attempt >= 3 && state.mode === 'jwt'
      ? ' (is your token valid?)' : ''),
  });

  function isOpen() { return socket.isOpen(); }
  function send(event) { return socket.send(event); }

  function setStatus(kind, text) {
    $('status').dataset.state = kind;
    $('status-text').textContent = text;
  }

  // -- events from the server ---------------------------------------------------

  function handle(ev) {
    if (ev.event_type === 2004) return handleError(ev);
    if (typeof ev.dialog_id !== 'string') return;
    const d = dialogFor(ev.dialog_id, ev.event_type === 1001 ? titleOf(ev) : null);
    if (typeof ev.seq === 'number') {
      if (d.seen.has(ev.seq)) return; // a replay overlapping what we have
      d.seen.add(ev.seq);
      d.lastSeq = Math.max(d.lastSeq, ev.seq);
    }
    const content = (ev.messages && ev.messages.content) || '';
    let item = null;
    if (ev.event_type === 1001) {
      if (d.msgIds.has(ev.message_id)) return;
      d.msgIds.add(ev.message_id);
      if (d.title === 'New conversation') d.title = titleOf(ev);
      item = { kind: 'user', text: content, attachments: attachmentsOf(ev) };
    } else if (ev.event_type === 2001) {
      item = { kind: 'reply', text: content, program: ev.program, background: !!ev.background,
        attachments: attachmentsOf(ev) };
      if (!ev.background && ev.program) d.program = ev.program;
      d.state = 'open';
    } else if (ev.event_type === 2002) {
      const closed = ev.reason === 'client_closed';
      const say = REASONS[ev.reason] || (() => `Ended (${ev.reason}).`);
      item = { kind: closed ? 'closed' : 'ended', reason: ev.reason, text: say(ev.program) };
      d.state = closed ? 'closed' : 'ended';
      d.program = null;
    } else if (ev.event_type === 2003) {
      item = { kind: 'unsupported',
        text: `Not supported: no program handles “${truncate(content, 80)}”. ` +
          'Try other words, or start with /program-name.' };
      d.program = null;
      d.state = 'open';
    } else {
      return;
    }
    d.updated = Date.now();
    push(d, item);
  }

  function handleError(ev) {
    const d = ev.dialog_id && state.dialogs.get(ev.dialog_id);
    if (/no such dialog/.test(ev.message || '')) return; // nothing kept yet: fine
    const text = ev.code === 'RATE_LIMIT' ? 'Slow down: that message was not sent. Try again.'
      : ev.code === 'BUSY' ? 'The server is busy right now. Try again in a moment.'
        : `${ev.code}: ${ev.message}`;
    const target = d || (state.current && state.dialogs.get(state.current));
    if (target) push(target, { kind: 'error', text });
  }

  function push(d, item) {
    d.items.push(item);
    if (d.id === state.current) {
      appendItem(item);
      renderHeader();
    } else {
      d.unread = true;
    }
    renderList();
    saveDialogs();
  }

  function titleOf(ev) { return truncate((ev.messages && ev.messages.content) || '…', 40); }
  function attachmentsOf(ev) {
    const a = ev.messages && ev.messages.attachments;
    return Array.isArray(a) ? a.length : 0;
  }

  // -- user actions -------------------------------------------------------------

  function sendMessage(text) {
    text = text.trim();
    if (!text || !isOpen()) return;
    let d = state.current && state.dialogs.get(state.current);
    if (!d || d.state === 'closed') {
      d = dialogFor(randomId('web-'), truncate(text, 40));
      d.loaded = true; // new: nothing to fetch
      state.current = d.id;
    }
    const messageId = randomId('m-');
    d.msgIds.add(messageId);
    if (d.title === 'New conversation') d.title = truncate(text, 40);
    send({ event_type: 1001, dialog_id: d.id, message_id: messageId,
      messages: { content: text, attachments: [] } });
    d.updated = Date.now();
    renderAll();
    push(d, { kind: 'user', text, attachments: 0 });
  }

  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    sendMessage($('input').value);
    $('input').value = '';
    autosize();
    renderComposer();
  });

  $('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('input').addEventListener('input', () => { autosize(); renderComposer(); });

  function autosize() {
    const el = $('input');
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, 200)}px`;
  }

  $('new-chat').addEventListener('click', () => select(null));

  $('close-dialog').addEventListener('click', () => {
    const d = state.current && state.dialogs.get(state.current);
    if (d && send({ event_type: 1002, dialog_id: d.id })) $('close-dialog').disabled = true;
  });

  for (const b of document.querySelectorAll('.suggestion')) {
    b.addEventListener('click', () => sendMessage(b.textContent));
  }

  // -- rendering ----------------------------------------------------------------

  function appendItem(item) {
    const box = $('messages');
    $('empty').hidden = true;
    const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
    box.append(itemNode(item));
    if (stick || item.kind === 'user') box.scrollTop = box.scrollHeight;
  }

  function renderMessages() {
    const box = $('messages');
    for (const node of [...box.children]) if (node.id !== 'empty') node.remove();
    const d = state.current && state.dialogs.get(state.current);
    $('empty').hidden = Boolean(d && d.items.length);
    if (d) for (const item of d.items) box.append(itemNode(item));
    box.scrollTop = box.scrollHeight;
  }

  function renderHeader() {
    const d = state.current && state.dialogs.get(state.current);
    $('title').textContent = d ? d.title : 'New conversation';
    $('program').hidden = !(d && d.program);
    $('program').textContent = d && d.program ? `● ${d.program}` : '';
    const label = d && d.state === 'closed' ? 'closed' : d && d.state === 'ended' ? 'ended' : '';
    $('dialog-state').hidden = !label;
    $('dialog-state').textContent = label;
    $('close-dialog').disabled = !(d && d.state !== 'closed' && isOpen());
    renderComposer();
  }

  function renderComposer() {
    const d = state.current && state.dialogs.get(state.current);
    $('send').disabled = !isOpen() || !$('input').value.trim();
    $('input').placeholder = !isOpen() ? 'Waiting for the connection…'
      : d && d.state === 'closed' ? 'This conversation is closed: type to start a new one…'
        : 'Message libchat…';
  }

  function renderList() {
    const nav = $('dialogs');
    nav.replaceChildren();
    const list = [...state.dialogs.values()].sort((a, b) => b.updated - a.updated);
    for (const d of list) {
      const b = el('button', `dialog-item${d.id === state.current ? ' active' : ''}`);
      b.type = 'button';
      b.dataset.dialog = d.id;
      const title = el('span', 'd-title');
      if (d.unread) title.append(el('span', 'unread'));
      title.append(document.createTextNode(d.title));
      const meta = d.state === 'closed' ? 'closed' : d.program ? `with ${d.program}`
        : d.state === 'ended' ? 'ended' : 'open';
      b.append(title, el('span', 'd-meta', meta));
      b.addEventListener('click', () => select(d.id));
      nav.append(b);
    }
  }

  function renderAll() {
    $('me-name').textContent = state.user || 'Not signed in';
    $('me-avatar').textContent = state.user ? state.user.slice(0, 1).toUpperCase() : '?';
    renderList();
    renderHeader();
    renderMessages();
  }

  // -- start --------------------------------------------------------------------

  function start() {
    loadDialogs();
    const recent = [...state.dialogs.values()].sort((a, b) => b.updated - a.updated)[0];
    state.current = recent ? recent.id : null;
    renderAll();
    socket.paused = false;
    socket.start();
    $('input').focus();
  }

  async function init() {
    try {
      const health = await (await fetch('/healthz', { cache: 'no-store' })).json();
      state.mode = health.auth === 'jwt' ? 'jwt' : 'dev';
    } catch (e) {
      state.mode = 'dev';
    }
    if (loadIdentity()) start();
    else { renderAll(); showLogin(); }
  }

  // for tests and the curious: window.libchat.pause() drops the socket and
  // holds it down; resume() reconnects and replays what was missed
  window.libchat = {
    state,
    socket,
    pause() { socket.pause(); renderComposer(); },
    resume() { socket.resume(); },
  };

  init();
})();
