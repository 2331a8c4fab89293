'use strict';
// Replies with every message content this instance has seen so far, in order,
// and its pid: a test can tell a message given twice, lost or reordered.
const chat = require('libchat');

const seen = [];
chat.onMessage((msg) => {
  seen.push(msg.content);
  chat.reply(JSON.stringify({ pid: process.pid, content: msg.content, seen }));
  if (msg.content === 'end') chat.end();
});
