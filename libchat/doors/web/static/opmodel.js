// libchat operator console: the state model (docs/operators.md), no DOM.
// Loaded by operator.html before operator.js (window.LibchatOpModel) and by
// `node --test` (module.exports), so every rule of the console is testable
// without a browser. The socket's events go in through apply(); what the page
// sends comes out of replay()/reply()/done().
'use strict';

(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.LibchatOpModel = factory();
}(typeof self !== 'undefined' ? self : this, () => {
  const SNAPSHOT = 3100;
  const ASSIGNED = 3101;
  const REPLY = 3102;
  const DONE = 3103;
  const QUEUE = 3104;
  const RELEASED = 3105;
  const USER_MESSAGE = 1001;
  const CLIENT_CLOSE = 1002;
  const REPLAY = 1003;
  const PROGRAM_REPLY = 2001;
  const ENDED = 2002;
  const UNSUPPORTED = 2003;
  const ERROR = 2004;
  const MAX_NOTICES = 5;

  const LOST = {
    away: 'you were away for more than 30 s; it went back to the queue',
    idle_timeout: 'the user said nothing for too long',
    stopped: 'the server stopped it',
  };

  /** The text of an event's messages (untrusted: the page only ever shows it as text). */
  function contentOf(ev) {
    const m = ev && ev.messages;
    return m && typeof m.content === 'string' ? m.content : '';
  }

  function attachmentsOf(ev) {
    const a = ev && ev.messages && ev.messages.attachments;
    return Array.isArray(a) ? a.length : 0;
  }

  /**
   * One transcript entry as the console shows it, from a transcript/replay/live
   * event; null for what is not shown.
   */
  function entryOf(ev) {
    const base = { seq: typeof ev.seq === 'number' ? ev.seq : null };
    switch (ev.event_type) {
      case USER_MESSAGE:
        return { ...base, kind: 'user', text: contentOf(ev), attachments: attachmentsOf(ev),
          messageId: typeof ev.message_id === 'string' ? ev.message_id : null };
      case PROGRAM_REPLY:
        if (ev.status === 'queued') {
          return { ...base, kind: 'status', text: contentOf(ev) || `Queued (number ${ev.place}).` };
        }
        return { ...base, kind: ev.operator ? 'operator' : 'program', text: contentOf(ev),
          operator: ev.operator || null, program: ev.program || null,
          attachments: attachmentsOf(ev), background: Boolean(ev.background) };
      case ENDED:
        return { ...base, kind: 'ended', reason: ev.reason || null,
          text: ev.reason === 'completed' ? 'Done: the dialog ended.'
            : `The dialog ended (${ev.reason || 'ended'}).` };
      case UNSUPPORTED:
        return { ...base, kind: 'status', text: 'No operator in time: the dialog went elsewhere.' };
      default:
        return null;
    }
  }

  class Dialog {
    constructor(id, order) {
      this.id = id;
      this.order = order; // when it became mine (the list's order)
      this.userId = null;
      this.program = null;
      this.channel = null;
      this.state = 'open'; // open | closed (user left) | ended (2002, or Done pressed)
      this.unread = 0;
      this.lastSeq = 0;
      this.entries = []; // sorted by key: seq, or a note's place after a seq
      this.seqs = new Set();
      this.notes = 0;
    }

    /**
     * Merge one entry: by seq, never twice. @returns {boolean} whether it is new
     */
    merge(entry) {
      if (entry.seq !== null) {
        if (this.seqs.has(entry.seq)) return false;
        this.seqs.add(entry.seq);
        this.lastSeq = Math.max(this.lastSeq, entry.seq);
        entry.key = entry.seq;
      } else {
        this.notes += 1; // a local note sits after what was there when it came
        entry.key = this.lastSeq + 1 - 1 / (this.notes + 1);
      }
      let i = this.entries.length;
      while (i > 0 && this.entries[i - 1].key > entry.key) i -= 1;
      this.entries.splice(i, 0, entry);
      return true;
    }

    note(kind, text) { this.merge({ seq: null, kind, text }); }

    get writable() { return this.state === 'open'; }
  }

  class OpModel {
    constructor() {
      this.operatorId = null;
      this.queue = []; // [{dialog_id, user_id, program, since}], oldest first
      this.dialogs = new Map(); // dialog_id -> Dialog
      this.selected = null;
      this.notices = []; // [{id, kind, text}], newest last
      this.noticeIds = 0;
      this.order = 0;
      this.snapshotSeen = false; // a 3100 came on this connection
    }

    /** Dialogs for the list: in the order they became mine. */
    list() { return [...this.dialogs.values()].sort((a, b) => a.order - b.order); }

    get current() { return this.selected ? this.dialogs.get(this.selected) || null : null; }

    notice(kind, text) {
      this.noticeIds += 1;
      this.notices.push({ id: this.noticeIds, kind, text });
      if (this.notices.length > MAX_NOTICES) this.notices.splice(0, this.notices.length - MAX_NOTICES);
    }

    dismiss(id) { this.notices = this.notices.filter((n) => n.id !== id); }

    select(id) {
      const d = id ? this.dialogs.get(id) : null;
      this.selected = d ? d.id : null;
      if (d) d.unread = 0;
      return d;
    }

    /** The socket is (re)opened: a 3100 is expected again. */
    connected() { this.snapshotSeen = false; }

    /**
     * One event from the server. @returns {{queue?: boolean, dialogs?: boolean,
     * transcript?: string, notices?: boolean}} what changed (what to render)
     */
    apply(ev) {
      if (!ev || typeof ev !== 'object') return {};
      switch (ev.event_type) {
        case SNAPSHOT: return this.snapshot(ev);
        case QUEUE: return this.setQueue(ev.queue);
        case ASSIGNED: return this.assigned(ev);
        case RELEASED: return this.released(ev);
        case CLIENT_CLOSE: return this.userLeft(ev);
        case ERROR: return this.error(ev);
        default: return this.dialogEvent(ev);
      }
    }

    snapshot(ev) {
      this.snapshotSeen = true;
      if (typeof ev.operator_id === 'string') this.operatorId = ev.operator_id;
      const mine = new Set(Array.isArray(ev.dialogs) ? ev.dialogs : []);
      // open dialogs the server no longer gives me were lost while I was away
      for (const d of [...this.dialogs.values()]) {
        if (d.state === 'open' && !mine.has(d.id)) this.drop(d, 'it is no longer assigned to you');
      }
      this.setQueue(ev.queue);
      return { queue: true, dialogs: true, notices: true, transcript: this.selected };
    }

    setQueue(queue) {
      this.queue = Array.isArray(queue) ? queue.filter((q) => q && typeof q.dialog_id === 'string') : [];
      return { queue: true };
    }

    assigned(ev) {
      if (typeof ev.dialog_id !== 'string') return {};
      let d = this.dialogs.get(ev.dialog_id);
      const fresh = !d || d.state !== 'open';
      if (!d) {
        this.order += 1;
        d = new Dialog(ev.dialog_id, this.order);
        this.dialogs.set(d.id, d);
      }
      d.state = 'open';
      d.userId = typeof ev.user_id === 'string' ? ev.user_id : d.userId;
      d.program = typeof ev.program === 'string' ? ev.program : d.program;
      d.channel = typeof ev.channel === 'string' ? ev.channel : d.channel;
      const transcript = Array.isArray(ev.transcript) ? ev.transcript : [];
      let waiting = 0; // user messages since the last reply: what the newcomer is waiting for
      for (const item of transcript) {
        const entry = item && entryOf(item);
        if (!entry) continue;
        const added = d.merge(entry);
        if (entry.kind === 'user') waiting += 1;
        else if (entry.kind === 'operator' || entry.kind === 'program') waiting = 0;
        if (added && !fresh && entry.kind === 'user' && d.id !== this.selected) d.unread += 1;
      }
      if (fresh && d.id !== this.selected) d.unread = waiting;
      return { dialogs: true, transcript: d.id };
    }

    dialogEvent(ev) {
      const d = typeof ev.dialog_id === 'string' ? this.dialogs.get(ev.dialog_id) : null;
      if (!d) return {}; // e.g. the operator's own dialogs as a user: not the console's
      const entry = entryOf(ev);
      if (!entry || !d.merge(entry)) return {};
      if (entry.kind === 'user' && d.id !== this.selected) d.unread += 1;
      if (entry.kind === 'operator') d.unread = 0; // answered (perhaps from another tab)
      if (entry.kind === 'ended') d.state = 'ended';
      return { dialogs: true, transcript: d.id };
    }

    userLeft(ev) {
      const d = typeof ev.dialog_id === 'string' ? this.dialogs.get(ev.dialog_id) : null;
      if (!d) return {};
      if (d.state === 'open') {
        d.state = 'closed';
        d.note('closed', 'The user left: the dialog is closed.');
      }
      return { dialogs: true, transcript: d.id };
    }

    released(ev) {
      const d = typeof ev.dialog_id === 'string' ? this.dialogs.get(ev.dialog_id) : null;
      if (!d) return {};
      this.drop(d, LOST[ev.reason] || `reason: ${ev.reason}`);
      return { dialogs: true, notices: true, transcript: this.selected };
    }

    drop(d, why) {
      this.dialogs.delete(d.id);
      if (this.selected === d.id) this.selected = null;
      this.notice('lost', `Dialog with ${d.userId || d.id} was taken from you: ${why}.`);
    }

    error(ev) {
      if (/no such dialog/.test(ev.message || '')) return {}; // a replay of a dialog that is gone
      const d = typeof ev.dialog_id === 'string' ? this.dialogs.get(ev.dialog_id) : null;
      const text = `${ev.code || 'ERROR'}: ${ev.message || 'refused'}`;
      this.notice('error', d && d.userId ? `${text} (dialog with ${d.userId})` : text);
      return { notices: true };
    }

    // -- what the page sends ------------------------------------------------------------

    /** 1003 for each dialog I hold, after the last seq I have (on every reconnect). */
    replay() {
      return this.list().filter((d) => d.state === 'open')
        .map((d) => ({ event_type: REPLAY, dialog_id: d.id, after: d.lastSeq }));
    }

    /** The 3102 for a reply, or null (empty, or the dialog is not writable). */
    reply(id, text) {
      const d = this.dialogs.get(id);
      const content = typeof text === 'string' ? text.trim() : '';
      if (!d || !d.writable || !content) return null;
      return { event_type: REPLY, dialog_id: d.id, messages: { content, attachments: [] } };
    }

    /**
     * Done with a dialog: the 3103 for an open one (it is marked ended here; the
     * server may not echo the 2002), or null for one already over, which is
     * removed from the list instead.
     */
    done(id) {
      const d = this.dialogs.get(id);
      if (!d) return null;
      if (!d.writable) {
        this.dialogs.delete(id);
        if (this.selected === id) this.selected = null;
        return null;
      }
      d.state = 'ended';
      d.note('done', 'You marked the dialog done.');
      return { event_type: DONE, dialog_id: d.id };
    }

    totalUnread() { return this.list().reduce((n, d) => n + d.unread, 0); }
  }

  return { OpModel, Dialog, entryOf, codes: { SNAPSHOT, ASSIGNED, REPLY, DONE, QUEUE, RELEASED } };
}));
