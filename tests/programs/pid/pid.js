'use strict';
// Reports how it was started; "end" ends the dialog.
const chat = require('libchat');

chat.onMessage((msg) => {
  const token = process.env.LIBCHAT_TOKEN;
  chat.reply(JSON.stringify({
    pid: process.pid,
    content: msg.content,
    argv: process.argv.slice(2),
    cwd: process.cwd(),
    token_in_argv: Boolean(token) && process.argv.some((a) => a.includes(token)),
    has_token: Boolean(token),
  }));
  if (msg.content === 'end') chat.end();
});
