'use strict';
// Ignores SIGTERM, 1002 and losing the socket: only SIGKILL (or libchat's
// death, seen as stdin EOF) stops it.
const chat = require('libchat');

process.on('SIGTERM', () => {});
setInterval(() => {}, 1 << 30); // stay alive without the socket
chat.onClose(() => false);
chat.onDisconnect(() => false);
chat.onMessage(() => chat.reply('still here'));
