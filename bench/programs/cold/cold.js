'use strict';
// Benchmark program for cold starts: the same echo, but its package.json sets
// "warm": 0, which overrides libchat's --warm, so every dialog starts a process.
const chat = require('libchat');

chat.onMessage((msg) => {
  chat.reply(msg.content);
});
