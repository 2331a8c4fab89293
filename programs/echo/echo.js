'use strict';
// Echoes every message back; "bye" ends the conversation.
const chat = require('libchat');

chat.onMessage((msg) => {
  chat.reply(`echo: ${msg.content}`);
  if (msg.content.trim().toLowerCase() === 'bye') chat.end();
});
