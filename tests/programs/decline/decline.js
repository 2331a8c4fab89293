'use strict';
// Declines every message (2003).
const chat = require('libchat');

chat.onMessage(() => chat.unsupported());
