'use strict';
// Benchmark program: replies with the user's content unchanged. Its pool size
// comes from libchat's --warm (its package.json names none).
const chat = require('libchat');

chat.onMessage((msg) => {
  chat.reply(msg.content);
});
