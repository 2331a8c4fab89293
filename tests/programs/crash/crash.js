'use strict';
// Replies "ok"; "crash" exits with code 3 without replying.
const chat = require('libchat');

chat.onMessage((msg) => {
  if (msg.content === 'crash') process.exit(3);
  chat.reply('ok');
});
