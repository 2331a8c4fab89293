// libchat operator console: plain JavaScript, no build step.
// Speaks the operator side of /ws (docs/operators.md): the state lives in
// opmodel.js (OpModel); this file only signs in, moves events between the
// socket (socket.js: back-off 1 s doubling to 30 s, with jitter) and the model,
// and draws the model. Every user-supplied string becomes a text node.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const { el, truncate } = window.LibchatRender; // render.js
  const { OpModel } = window.LibchatOpModel; // opmodel.js
  const IDENTITY = 'libchat.operator.identity';
  const SNAPSHOT_WAIT_MS = 5000;

  const session = { mode: 'dev', user: null, token: null };
  let model = new OpModel();
  let snapshotTimer = null;
  const heard = []; // the last frames' (event_type, dialog_id, seq), for tests

  // -- identity ---------------------------------------------------------------

  function subOf(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(decodeURIComponent(escape(atob(part)))).sub || null;
    } catch (e) {
      return null;
    }
  }

  function loadIdentity() {
    try {
      const id = JSON.parse(localStorage.getItem(IDENTITY) || '{}');
      if (session.mode === 'jwt' && id.token && subOf(id.token)) {
        session.token = id.token;
        session.user = subOf(id.token);
      } else if (session.mode === 'dev' && id.user) {
        session.user = id.user;
      }
    } catch (e) { /* a fresh start */ }
    return Boolean(session.user);
  }

  function showLogin(error) {
    $('login-dev').hidden = session.mode !== 'dev';
    $('login-jwt').hidden = session.mode !== 'jwt';
    $('login-error').hidden = !error;
    $('login-error').textContent = error || '';
    $('login').hidden = false;
    (session.mode === 'dev' ? $('login-user') : $('login-token')).focus();
  }

  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (session.mode === 'dev') {
      const name = $('login-user').value.trim();
      if (!name) return showLogin('Please pick an operator id.');
      session.user = name.slice(0, 256);
    } else {
      const token = $('login-token').value.trim();
      const sub = subOf(token);
      if (!sub) return showLogin('That does not look like a token (three base64 parts).');
      session.token = token;
      session.user = sub;
    }
    localStorage.setItem(IDENTITY, JSON.stringify(
      session.mode === 'jwt' ? { token: session.token } : { user: session.user }));
    $('login').hidden = true;
    start();
  });

  $('sign-out').addEventListener('click', () => {
    localStorage.removeItem(IDENTITY);
    socket.pause();
    session.user = session.token = null;
    model = new OpModel();
    renderAll();
    showLogin();
  });

  // -- the socket ---------------------------------------------------------------

  const socket = new window.LibchatSocket({
    url() {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const q = session.mode === 'jwt' ? `token=${encodeURIComponent(session.token)}`
        : `user_id=${encodeURIComponent(session.user)}&role=operator`;
      return `${scheme}//${location.host}/ws?${q}`;
    },
    onOpen() {
      model.connected();
      // what happened while we were away, after the last seq of each dialog;
      // the server's 3101s overlap it, and the model merges by seq
      for (const ev of model.replay()) socket.send(ev);
      clearTimeout(snapshotTimer);
      snapshotTimer = setTimeout(() => {
        if (model.snapshotSeen || !socket.isOpen()) return;
        model.notice('error', 'The server did not take this socket as an operator’s (no 3100): '
          + (session.mode === 'jwt' ? 'does the token carry "role": "operator"?'
            : 'is an operators program (e.g. programs/human) installed?'));
        renderNotices();
      }, SNAPSHOT_WAIT_MS);
      renderComposer();
    },
    onEvent(ev) {
      heard.push({ event_type: ev.event_type, dialog_id: ev.dialog_id, seq: ev.seq });
      if (heard.length > 500) heard.splice(0, heard.length - 500);
      const changed = model.apply(ev);
      if (ev.event_type === 3100) clearTimeout(snapshotTimer);
      render(changed);
    },
    onDown: () => renderComposer(),
    onStatus(kind, text) {
      // socket.js says 'connecting' for both; the console tells them apart
      const state = kind === 'connecting' && (socket.opened || socket.attempt > 0)
        ? 'reconnecting' : kind;
      $('status').dataset.state = state;
      $('status-text').textContent = text;
    },
    hint: (attempt, opened) => (!opened && attempt >= 3 && session.mode === 'jwt'
      ? ' (is your token valid?)' : ''),
  });

  // -- user actions -------------------------------------------------------------

  function select(id) {
    model.select(id);
    renderAll();
    if (!$('reply').disabled) $('reply').focus();
  }

  $('reply-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const d = model.current;
    const ev = d && model.reply(d.id, $('reply').value);
    if (!ev || !socket.send(ev)) return renderComposer();
    $('reply').value = ''; // the 2001 comes back from the server, with its seq
    autosize();
    renderComposer();
  });

  $('reply').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('reply-form').requestSubmit();
    }
  });
  $('reply').addEventListener('input', () => { autosize(); renderComposer(); });

  function autosize() {
    const box = $('reply');
    box.style.height = 'auto';
    box.style.height = `${Math.min(box.scrollHeight, 200)}px`;
  }

  $('done').addEventListener('click', () => {
    const d = model.current;
    if (!d) return;
    if (d.writable && !socket.isOpen()) return;
    const ev = model.done(d.id);
    if (ev) socket.send(ev);
    renderAll();
  });

  // -- rendering ----------------------------------------------------------------

  function render(changed) {
    if (changed.queue) renderQueue();
    if (changed.dialogs) renderDialogs();
    if (changed.notices) renderNotices();
    if (changed.transcript !== undefined && changed.transcript === model.selected) {
      renderTranscript();
    }
    if (changed.dialogs || changed.transcript !== undefined) renderHeader();
  }

  function waited(since) {
    const s = Math.max(0, Math.floor(Date.now() / 1000 - Number(since || 0)));
    return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  }

  function renderQueue() {
    const list = $('queue');
    list.replaceChildren();
    for (const q of model.queue) {
      const li = el('li');
      li.dataset.dialog = q.dialog_id;
      const row = el('div', 'op-item');
      const text = el('span', 'op-item-text');
      text.append(el('span', 'op-item-title', String(q.user_id || q.dialog_id)),
        el('span', 'op-item-meta', String(q.program || '')));
      const wait = el('span', 'op-wait', waited(q.since));
      wait.dataset.since = String(q.since || 0);
      row.append(text, wait);
      li.append(row);
      list.append(li);
    }
    $('queue-count').textContent = String(model.queue.length);
    $('queue-empty').hidden = model.queue.length > 0;
  }

  // the waits tick without a message from the server
  setInterval(() => {
    for (const w of document.querySelectorAll('#queue .op-wait')) {
      w.textContent = waited(w.dataset.since);
    }
  }, 1000);

  function lastLine(d) {
    for (let i = d.entries.length - 1; i >= 0; i -= 1) {
      const e = d.entries[i];
      if (e.kind === 'user' || e.kind === 'operator' || e.kind === 'program') {
        return `${e.kind === 'user' ? '' : 'You: '}${truncate(e.text, 60)}`;
      }
    }
    return '';
  }

  function renderDialogs() {
    const list = $('dialogs');
    list.replaceChildren();
    const dialogs = model.list();
    for (const d of dialogs) {
      const li = el('li', d.id === model.selected ? 'active' : '');
      li.dataset.dialog = d.id;
      li.dataset.state = d.state;
      const b = el('button', 'op-item');
      b.type = 'button';
      const text = el('span', 'op-item-text');
      const meta = d.state === 'closed' ? 'the user left'
        : d.state === 'ended' ? 'done' : lastLine(d) || d.program || '';
      text.append(el('span', 'op-item-title', d.userId || d.id), el('span', 'op-item-meta', meta));
      b.append(text);
      if (d.unread > 0) {
        const badge = el('span', 'unread', String(d.unread));
        badge.setAttribute('aria-label', `${d.unread} unread`);
        b.append(badge);
      }
      b.addEventListener('click', () => select(d.id));
      li.append(b);
      list.append(li);
    }
    const open = dialogs.filter((d) => d.state === 'open').length;
    $('dialogs-count').textContent = String(open);
    $('dialogs-empty').hidden = dialogs.length > 0;
    const unread = model.totalUnread();
    document.title = `${unread ? `(${unread}) ` : ''}libchat · operator console`;
  }

  function renderNotices() {
    const box = $('notices');
    box.replaceChildren();
    for (const n of model.notices) {
      const node = el('div', `op-notice ${n.kind}`);
      node.setAttribute('role', n.kind === 'error' ? 'alert' : 'status');
      node.dataset.kind = n.kind;
      const close = el('button', '', '×');
      close.type = 'button';
      close.setAttribute('aria-label', 'Dismiss');
      close.addEventListener('click', () => { model.dismiss(n.id); renderNotices(); });
      node.append(el('span', 'op-notice-text', n.text), close);
      box.append(node);
    }
  }

  function entryNode(d, e) {
    const talk = e.kind === 'user' || e.kind === 'operator' || e.kind === 'program';
    const node = el('div', `entry ${talk ? e.kind : `note ${e.kind}`}`);
    if (e.seq !== null) node.dataset.seq = String(e.seq);
    if (talk) {
      const who = el('div', 'who');
      if (e.kind === 'user') who.append(el('span', 'chip chip-muted', d.userId || 'user'));
      else if (e.kind === 'operator') {
        who.append(el('span', 'chip', e.operator === model.operatorId ? 'you' : `operator ${e.operator}`));
      } else {
        who.append(el('span', 'chip', e.program || 'program'));
        if (e.background) who.append(el('span', 'chip chip-bg', 'background'));
      }
      node.append(who);
    }
    node.append(el('div', 'bubble', e.text));
    if (e.attachments) node.append(el('div', 'attachments', `📎 ${e.attachments} attachment(s)`));
    return node;
  }

  function renderTranscript() {
    const box = $('transcript');
    const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
    for (const node of [...box.children]) if (node.id !== 'empty') node.remove();
    const d = model.current;
    $('empty').hidden = Boolean(d);
    if (d) for (const e of d.entries) box.append(entryNode(d, e));
    if (stick) box.scrollTop = box.scrollHeight;
  }

  function renderHeader() {
    const d = model.current;
    $('title').textContent = d ? `${d.userId || 'user'} · ${d.id}` : 'No dialog selected';
    $('dialog-program').hidden = !(d && d.program);
    $('dialog-program').textContent = d && d.program ? `● ${d.program}` : '';
    const label = d && d.state === 'closed' ? 'user left' : d && d.state === 'ended' ? 'done' : '';
    $('dialog-state').hidden = !label;
    $('dialog-state').textContent = label;
    $('done').textContent = d && !d.writable ? 'Remove' : 'Done';
    $('done').title = d && !d.writable ? 'Remove this finished dialog from the list'
      : 'Done: end this dialog for the user (3103)';
    $('done').disabled = !d || (d.writable && !socket.isOpen());
    renderComposer();
  }

  function renderComposer() {
    const d = model.current;
    const can = Boolean(d && d.writable && socket.isOpen());
    $('reply').disabled = !can;
    $('send').disabled = !can || !$('reply').value.trim();
    $('reply').placeholder = !socket.isOpen() ? 'Waiting for the connection…'
      : !d ? 'Select a dialog to answer…'
        : !d.writable ? 'This dialog is over.' : `Answer ${d.userId || 'the user'}…`;
    if (d) $('done').disabled = d.writable && !socket.isOpen();
  }

  function renderAll() {
    $('me-name').textContent = session.user || 'Not signed in';
    $('me-avatar').textContent = session.user ? session.user.slice(0, 1).toUpperCase() : '?';
    renderQueue();
    renderDialogs();
    renderNotices();
    renderTranscript();
    renderHeader();
  }

  // -- start --------------------------------------------------------------------

  function start() {
    model = new OpModel();
    renderAll();
    socket.paused = false;
    socket.start();
  }

  async function init() {
    try {
      const health = await (await fetch('/healthz', { cache: 'no-store' })).json();
      session.mode = health.auth === 'jwt' ? 'jwt' : 'dev';
    } catch (e) {
      session.mode = 'dev';
    }
    if (loadIdentity()) start();
    else { renderAll(); showLogin(); }
  }

  // for tests and the curious: heard lists the frames that came in (their
  // type, dialog and seq); pause() drops the socket and holds it down;
  // resume() reconnects (1003 replay); drop() closes it as a network would,
  // so the back-off reconnects by itself
  window.opconsole = {
    get model() { return model; },
    socket,
    heard,
    pause() { socket.pause(); renderComposer(); },
    resume() { socket.resume(); },
    drop() { if (socket.ws) socket.ws.close(); },
  };

  init();
})();
