'use strict';
// Background worker demo: hands the microphone back at once (2002), then keeps
// replying once a second and exits by itself when the timer is done.
const chat = require('libchat');

chat.onMessage((msg) => {
  const m = /^\s*countdown\s+(\d{1,2})\s*$/i.exec(msg.content);
  const n = m ? Number(m[1]) : 0;
  if (n < 1 || n > 10) {
    chat.unsupported();
    return;
  }
  chat.reply(`Counting down from ${n} in the background`);
  chat.end();
  let left = n;
  const timer = setInterval(() => {
    if (left > 0) {
      chat.reply(String(left--));
    } else {
      chat.reply('liftoff!');
      clearInterval(timer); // nothing else keeps the process alive: it exits
    }
  }, 1000);
});
