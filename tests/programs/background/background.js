'use strict';
// Replies, ends the foreground, replies again 300 ms later, then exits by itself.
const chat = require('libchat');

chat.onMessage(() => {
  chat.reply('working');
  chat.end();
  setTimeout(() => chat.reply('done in background'), 300);
});
