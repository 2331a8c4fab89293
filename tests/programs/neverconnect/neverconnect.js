'use strict';
// Never connects to --socket; just stays alive (start-timeout test).
setInterval(() => {}, 1000);
