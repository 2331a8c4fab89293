'use strict';
// Spawns a long-lived child in its own process group (not detached) and
// reports its pid: stopping the instance must stop the grandchild too.
const { spawn } = require('child_process');
const chat = require('libchat');

chat.onMessage(() => {
  const child = spawn(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' });
  chat.reply(JSON.stringify({ child_pid: child.pid }));
});
