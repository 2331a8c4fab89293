'use strict';
// Fails before connecting.
console.error('failstart: exiting with code 1');
process.exit(1);
