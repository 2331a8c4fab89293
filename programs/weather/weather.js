'use strict';
// The seed's demo intent: a canned forecast (no network) for a named city.
// The last city asked about is remembered as `last_city`.
const chat = require('libchat');

const KNOWN = {
  beijing: ['Beijing', 'sunny', 24], 北京: ['北京', 'sunny', 24],
  shanghai: ['Shanghai', 'light rain', 22], 上海: ['上海', 'light rain', 22],
  shenzhen: ['Shenzhen', 'humid and cloudy', 29], 深圳: ['深圳', 'humid and cloudy', 29],
  london: ['London', 'overcast', 14],
  paris: ['Paris', 'partly cloudy', 18],
  'new york': ['New York', 'clear', 20],
  tokyo: ['Tokyo', 'showers', 21],
  berlin: ['Berlin', 'windy', 12],
};
const CONDITIONS = ['sunny', 'partly cloudy', 'overcast', 'light rain', 'windy', 'clear'];

function forecast(city) {
  const known = KNOWN[city.toLowerCase()];
  if (known) return `${known[0]}: ${known[1]}, ${known[2]}°C (canned demo forecast)`;
  // Unknown city: stable made-up numbers derived from the name.
  let h = 0;
  for (const ch of city.toLowerCase()) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `${city}: ${CONDITIONS[h % CONDITIONS.length]}, ${5 + (h % 25)}°C (canned demo forecast)`;
}

function findCity(text) {
  let m = /\b(?:in|for|at)\s+([a-z][a-z .'-]*?)\s*(?:today|tomorrow|now|please)?\s*[?.!]*\s*$/i.exec(text);
  if (m) return m[1].trim();
  const lower = text.toLowerCase();
  for (const key of Object.keys(KNOWN)) if (lower.includes(key)) return KNOWN[key][0];
  m = /([\u4e00-\u9fff]{2,8}?)的?天气/.exec(text); // "杭州天气", "杭州的天气"
  if (m) return m[1];
  return null;
}

let askedCity = false;

function logError(err) {
  console.error(`weather: memory API: ${err.message}`);
  return null;
}

chat.onMessage(async (msg) => {
  let city = findCity(msg.content);
  if (!city && askedCity) city = msg.content.trim().replace(/[?.!]+$/, '').slice(0, 64);
  // Memory is a convenience here: answer even if the API is unavailable.
  if (!city) city = await chat.memory.get('last_city').catch(logError);
  if (!city) {
    askedCity = true;
    chat.reply('Which city would you like the forecast for?');
    return;
  }
  await chat.memory.set('last_city', city).catch(logError);
  chat.reply(`Weather for ${forecast(city)}`);
  chat.end();
});
