'use strict';
// Sends 1000 numbered replies as fast as possible, then ends.
const chat = require('libchat');

chat.onMessage(() => {
  for (let n = 1; n <= 1000; n++) chat.reply(String(n));
  chat.end();
});
