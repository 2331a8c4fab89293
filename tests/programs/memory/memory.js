'use strict';
// "set K V" stores the string V under K; "get K" replies the JSON of the value.
// API errors are replied as the HTTP error body.
const chat = require('libchat');

chat.onMessage(async (msg) => {
  const m = /^(set|get)\s+(\S+)(?:\s+([\s\S]*))?$/.exec(msg.content);
  try {
    if (m && m[1] === 'set' && m[3] !== undefined) {
      await chat.memory.set(m[2], m[3]);
      chat.reply(`saved ${m[2]}`);
    } else if (m && m[1] === 'get' && m[3] === undefined) {
      chat.reply(JSON.stringify(await chat.memory.get(m[2])));
    } else {
      chat.reply('error: expected "set K V" or "get K"');
    }
  } catch (err) {
    chat.reply(err.body || `error: ${err.message}`);
  }
});
