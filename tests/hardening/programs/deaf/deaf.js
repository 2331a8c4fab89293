'use strict';
// Connects to its socket and never reads from it (no SDK): libchat must not
// buffer what it sends without bound.
const net = require('net');

const arg = process.argv.find((a) => a.startsWith('--socket='));
const socket = net.createConnection(arg.slice('--socket='.length));
socket.on('connect', () => socket.pause());
socket.on('error', () => {});
setInterval(() => {}, 1000);
