'use strict';
// Greets the user; remembers their name across dialogs via the memory API.
const chat = require('libchat');

let askedName = false;

// "my name is Ada." / "I'm Ada" / "Ada" -> "Ada"
function extractName(text) {
  return text
    .trim()
    .replace(/^(my name is|my name's|i am|i'm|im|call me|it's|it is)\s+/i, '')
    .replace(/[.!?,;]+$/, '')
    .trim()
    .slice(0, 64);
}

chat.onMessage(async (msg) => {
  if (!askedName) {
    const name = await chat.memory.get('name');
    if (typeof name === 'string' && name) {
      chat.reply(`Hello again, ${name}! Good to see you.`);
      chat.end();
      return;
    }
    askedName = true;
    chat.reply("Hello! What's your name?");
    return;
  }
  const name = extractName(msg.content);
  if (!name) {
    chat.reply("Sorry, I didn't catch that. What's your name?");
    return;
  }
  await chat.memory.set('name', name);
  chat.reply(`Nice to meet you, ${name}! I'll remember you.`);
  chat.end();
});
