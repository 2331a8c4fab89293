// libchat web pages: DOM helpers shared by every page (loaded before app.js).
// Content from users and programs is untrusted: it only ever becomes text
// nodes (textContent), never HTML.
'use strict';

window.LibchatRender = (() => {
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text; // never innerHTML: content is untrusted
    return node;
  }

  function itemNode(item) {
    if (item.kind === 'user' || item.kind === 'reply') {
      const node = el('div', `msg ${item.kind}${item.background ? ' background' : ''}`);
      if (item.kind === 'reply') {
        const who = el('div', 'who');
        who.append(el('span', 'chip', item.program || 'libchat'));
        if (item.background) who.append(el('span', 'chip chip-bg', 'background'));
        node.append(who);
      }
      node.append(el('div', 'bubble', item.text));
      if (item.attachments) {
        node.append(el('div', 'attachments', `📎 ${item.attachments} attachment(s)`));
      }
      return node;
    }
    const node = el('div', `notice ${item.kind}${item.reason ? ` ${item.reason}` : ''}`,
      item.text);
    node.setAttribute('role', item.kind === 'error' ? 'alert' : 'status');
    return node;
  }

  function truncate(s, n) { return s.length > n ? `${s.slice(0, n - 1)}…` : s; }

  return { el, itemNode, truncate };
})();
