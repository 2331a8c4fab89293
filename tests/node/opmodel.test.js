'use strict';
// The operator console's state model (libchat/doors/web/static/opmodel.js),
// fed the events of docs/operators.md exactly as the server sends them.
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { ROOT } = require('./helpers');

const { OpModel, entryOf } = require(path.join(ROOT, 'libchat', 'doors', 'web', 'static', 'opmodel.js'));

const user = (seq, content, dialog = 'd1') => ({
  event_type: 1001, dialog_id: dialog, user_id: 'ada', seq, message_id: `m${seq}`,
  messages: { content, attachments: [] },
});
const answer = (seq, content, dialog = 'd1', operator = 'olga') => ({
  event_type: 2001, dialog_id: dialog, user_id: 'ada', seq, operator,
  messages: { content, attachments: [] },
});
const assign = (dialog, transcript = [], userId = 'ada') => ({
  event_type: 3101, dialog_id: dialog, user_id: userId, program: 'human', channel: 'web', transcript,
});
const Q = (dialog, since = 1000) => ({ dialog_id: dialog, user_id: `u-${dialog}`, program: 'human', since });
const texts = (d) => d.entries.map((e) => e.text);
const seqs = (d) => d.entries.filter((e) => e.seq !== null).map((e) => e.seq);

describe('transcripts', () => {
  test('a 3101 transcript, then live events, merged by seq without duplicates', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, '人工')]));
    const d = m.dialogs.get('d1');
    assert.equal(d.userId, 'ada');
    assert.equal(d.program, 'human');
    m.apply(answer(2, 'Hello, I am Olga'));
    m.apply(answer(2, 'Hello, I am Olga')); // the same event twice (two sockets, a replay)
    m.apply(user(3, 'my order is late'));
    m.apply(user(1, '人工')); // a replay overlapping what is there
    assert.deepEqual(seqs(d), [1, 2, 3]);
    assert.deepEqual(texts(d), ['人工', 'Hello, I am Olga', 'my order is late']);
    assert.equal(d.lastSeq, 3);
  });

  test('out-of-order replay entries land in seq order', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    m.apply(user(4, 'd'));
    m.apply(user(3, 'c'));
    m.apply(answer(2, 'b'));
    assert.deepEqual(seqs(m.dialogs.get('d1')), [1, 2, 3, 4]);
    assert.deepEqual(texts(m.dialogs.get('d1')), ['a', 'b', 'c', 'd']);
  });

  test('a 3101 again on reconnect adds only what is new', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a'), answer(2, 'b')]));
    m.apply(assign('d1', [user(1, 'a'), answer(2, 'b'), user(3, 'c')]));
    assert.deepEqual(seqs(m.dialogs.get('d1')), [1, 2, 3]);
    assert.equal(m.list().length, 1);
  });

  test('operator replies are marked, program replies and queue notices are told apart', () => {
    assert.equal(entryOf(answer(2, 'x')).kind, 'operator');
    assert.equal(entryOf(answer(2, 'x')).operator, 'olga');
    assert.equal(entryOf({ event_type: 2001, dialog_id: 'd1', seq: 3, program: 'hello',
      messages: { content: 'Hi' } }).kind, 'program');
    const queued = entryOf({ event_type: 2001, dialog_id: 'd1', seq: 4, status: 'queued', place: 2,
      messages: { content: 'You are number 2 in the queue.' } });
    assert.equal(queued.kind, 'status');
    assert.equal(entryOf({ event_type: 2002, dialog_id: 'd1', seq: 5, reason: 'completed' }).kind, 'ended');
    assert.equal(entryOf({ event_type: 9999 }), null);
  });

  test('events of dialogs that are not mine are ignored', () => {
    const m = new OpModel();
    assert.deepEqual(m.apply(user(1, 'my own chat as a user', 'web-mine')), {});
    assert.deepEqual(m.apply({ event_type: 2002, dialog_id: 'web-mine', seq: 2, reason: 'completed' }), {});
    assert.equal(m.dialogs.size, 0);
  });

  test('a user message without content is shown as empty text, never as markup', () => {
    const m = new OpModel();
    m.apply(assign('d1', [{ event_type: 1001, dialog_id: 'd1', seq: 1, messages: { content: 5 } }]));
    assert.deepEqual(texts(m.dialogs.get('d1')), ['']);
  });
});

describe('unread counts', () => {
  test('1001s for a dialog that is not selected count; selecting clears', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    m.apply(assign('d2', [user(1, 'x', 'd2')], 'bob'));
    m.select('d2');
    assert.equal(m.dialogs.get('d1').unread, 1); // waiting for an answer
    m.apply(user(2, 'b'));
    m.apply(user(3, 'c'));
    m.apply(user(3, 'c')); // a duplicate does not count
    m.apply(user(2, 'x2', 'd2')); // the selected dialog does not count
    assert.equal(m.dialogs.get('d1').unread, 3);
    assert.equal(m.dialogs.get('d2').unread, 0);
    assert.equal(m.totalUnread(), 3);
    m.select('d1');
    assert.equal(m.dialogs.get('d1').unread, 0);
    assert.equal(m.current.id, 'd1');
  });

  test('a new assignment counts the user messages since the last reply', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a'), answer(2, 'b'), user(3, 'c'), user(4, 'd')]));
    assert.equal(m.dialogs.get('d1').unread, 2);
  });

  test('replies do not count, and an operator reply (say from another tab) clears', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    m.apply(user(2, 'b'));
    assert.equal(m.dialogs.get('d1').unread, 2);
    m.apply(answer(3, 'answered elsewhere'));
    assert.equal(m.dialogs.get('d1').unread, 0);
  });

  test('messages missed while away and replayed count as unread', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a'), answer(2, 'b')]));
    m.connected();
    m.apply({ event_type: 3100, operator_id: 'olga', queue: [], dialogs: ['d1'] });
    m.apply(assign('d1', [user(1, 'a'), answer(2, 'b'), user(3, 'c')]));
    m.apply(user(3, 'c')); // the 1003 replay overlaps the 3101
    m.apply(user(4, 'd'));
    assert.equal(m.dialogs.get('d1').unread, 2);
  });
});

describe('the queue and the snapshot', () => {
  test('3100 sets the operator and the queue; 3104 replaces the queue', () => {
    const m = new OpModel();
    assert.deepEqual(m.apply({ event_type: 3100, operator_id: 'olga', queue: [Q('q1'), Q('q2')], dialogs: [] }).queue, true);
    assert.equal(m.operatorId, 'olga');
    assert.equal(m.snapshotSeen, true);
    assert.deepEqual(m.queue.map((q) => q.dialog_id), ['q1', 'q2']);
    m.apply({ event_type: 3104, queue: [Q('q2'), Q('q3')] });
    assert.deepEqual(m.queue.map((q) => q.dialog_id), ['q2', 'q3']);
    m.apply({ event_type: 3104, queue: [] });
    assert.deepEqual(m.queue, []);
    m.apply({ event_type: 3104, queue: 'nonsense' });
    assert.deepEqual(m.queue, []);
  });

  test('after a reconnect, open dialogs missing from the 3100 are dropped with a notice', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    m.apply(assign('d2', [user(1, 'b', 'd2')], 'bob'));
    m.select('d1');
    m.connected();
    assert.equal(m.snapshotSeen, false);
    m.apply({ event_type: 3100, operator_id: 'olga', queue: [], dialogs: ['d2'] });
    assert.deepEqual([...m.dialogs.keys()], ['d2']);
    assert.equal(m.selected, null);
    assert.match(m.notices.at(-1).text, /ada/);
  });

  test('1003 replay requests: every open dialog after its last seq', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a'), answer(2, 'b')]));
    m.apply(assign('d2', [user(7, 'x', 'd2')], 'bob'));
    m.apply(assign('d3', [user(1, 'y', 'd3')], 'cy'));
    m.apply({ event_type: 1002, dialog_id: 'd3' }); // closed: nothing to ask for
    assert.deepEqual(m.replay(), [
      { event_type: 1003, dialog_id: 'd1', after: 2 },
      { event_type: 1003, dialog_id: 'd2', after: 7 },
    ]);
  });
});

describe('endings', () => {
  test('1002: the user left, the dialog is closed and can no longer be written', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    m.apply({ event_type: 1002, dialog_id: 'd1' });
    const d = m.dialogs.get('d1');
    assert.equal(d.state, 'closed');
    assert.equal(d.entries.at(-1).kind, 'closed');
    assert.equal(m.reply('d1', 'hello?'), null);
    m.apply({ event_type: 1002, dialog_id: 'd1' }); // told twice: one note
    assert.equal(d.entries.filter((e) => e.kind === 'closed').length, 1);
  });

  test('3105: the dialog is removed, with a notice saying why', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    m.select('d1');
    m.apply({ event_type: 3105, dialog_id: 'd1', reason: 'idle_timeout' });
    assert.equal(m.dialogs.size, 0);
    assert.equal(m.selected, null);
    assert.equal(m.notices.length, 1);
    assert.match(m.notices[0].text, /said nothing/);
    assert.deepEqual(m.apply({ event_type: 3105, dialog_id: 'unknown', reason: 'away' }), {});
  });

  test('2002 ends the dialog; a note made locally sorts after what was there', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    const done = m.done('d1');
    assert.deepEqual(done, { event_type: 3103, dialog_id: 'd1' });
    m.apply({ event_type: 2002, dialog_id: 'd1', seq: 2, reason: 'completed' });
    const d = m.dialogs.get('d1');
    assert.equal(d.state, 'ended');
    assert.deepEqual(d.entries.map((e) => e.kind), ['user', 'done', 'ended']);
    assert.equal(m.done('d1'), null); // Done on a finished dialog removes it
    assert.equal(m.dialogs.size, 0);
  });

  test('2004 errors become notices; a replay of a gone dialog is quiet', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    m.apply({ event_type: 2004, code: 'BAD_REQUEST', message: 'dialog is not assigned to you', dialog_id: 'd1' });
    assert.equal(m.notices.length, 1);
    assert.match(m.notices[0].text, /BAD_REQUEST: dialog is not assigned to you \(dialog with ada\)/);
    m.apply({ event_type: 2004, code: 'BAD_REQUEST', message: 'no such dialog of yours', dialog_id: 'd9' });
    assert.equal(m.notices.length, 1);
    for (let i = 0; i < 10; i += 1) m.apply({ event_type: 2004, code: 'RATE_LIMIT', message: `slow ${i}` });
    assert.equal(m.notices.length, 5);
    m.dismiss(m.notices[0].id);
    assert.equal(m.notices.length, 4);
  });
});

describe('what the page sends', () => {
  test('3102 with the trimmed text; nothing for empty text or an unknown dialog', () => {
    const m = new OpModel();
    m.apply(assign('d1', [user(1, 'a')]));
    assert.deepEqual(m.reply('d1', '  Hi there \n'), {
      event_type: 3102, dialog_id: 'd1', messages: { content: 'Hi there', attachments: [] } });
    assert.equal(m.reply('d1', '   '), null);
    assert.equal(m.reply('nope', 'hi'), null);
  });
});
