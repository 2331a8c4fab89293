'use strict';
// Tries a second connection to its own socket after the SDK connected, and
// replies how that went.
const net = require('net');
const chat = require('libchat');

const path = process.argv.find((a) => a.startsWith('--socket=')).slice('--socket='.length);
chat.onMessage(() => {
  const second = net.createConnection(path);
  let answered = false;
  const answer = (what) => {
    if (answered) return;
    answered = true;
    second.destroy();
    chat.reply(what);
  };
  second.on('error', (err) => answer(`second refused: ${err.code}`));
  second.on('close', () => answer('second closed'));
  second.on('data', () => answer('second got data'));
});
