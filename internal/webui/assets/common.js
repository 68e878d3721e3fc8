// What the pocket's and the agent's pages share: the API client (with the
// token, asked for once and kept), DOM helpers, formatting, the token
// dialog, the toast and the service worker.
'use strict';

const crpe = (() => {
  const app = document.documentElement.dataset.app || 'crpe';
  const KEY = 'crpe.' + app + '.token';

  function token() {
    try { return localStorage.getItem(KEY) || ''; } catch (e) { return ''; }
  }
  function setToken(t) {
    try {
      if (t) localStorage.setItem(KEY, t); else localStorage.removeItem(KEY);
    } catch (e) { /* private mode: kept for this page only */ }
    memo = t;
  }
  let memo = '';
  function currentToken() { return token() || memo; }

  // A QR code opens the page as .../#token=...: keep it, drop it from the URL.
  function takeFragmentToken() {
    const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
    if (!m) return false;
    setToken(decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
    return true;
  }

  class ApiError extends Error {
    constructor(status, errors, text) {
      const first = (errors && errors[0]) || {};
      super(first.message || text || ('HTTP ' + status));
      this.status = status;
      this.code = first.code || '';
      this.errors = errors || [];
    }
  }

  function headers(extra) {
    const h = Object.assign({ 'X-Crpe-UI': '1' }, extra || {});
    const t = currentToken();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  async function api(method, path, body, opts) {
    opts = opts || {};
    const init = { method, headers: headers(opts.headers), cache: 'no-store' };
    if (opts.anonymous) delete init.headers.Authorization;
    if (body !== undefined && body !== null) {
      if (typeof body === 'string') {
        init.body = body;
        init.headers['Content-Type'] = opts.contentType || 'application/yaml';
      } else {
        init.body = JSON.stringify(body);
        init.headers['Content-Type'] = 'application/json';
      }
    }
    const res = await fetch(path, init);
    if (res.status === 204) return null;
    const ct = res.headers.get('Content-Type') || '';
    if (!res.ok) {
      let errors = null;
      let text = '';
      if (ct.includes('json')) {
        try { errors = (await res.json()).errors; } catch (e) { /* not JSON after all */ }
      } else {
        text = (await res.text()).slice(0, 300);
      }
      throw new ApiError(res.status, errors, text);
    }
    if (opts.raw) return res;
    if (ct.includes('json')) return res.json();
    return res.text();
  }

  // write sends a change; a refused token asks for one and tries again.
  async function write(method, path, body, opts) {
    try {
      return await api(method, path, body, opts);
    } catch (e) {
      if (e.status === 401 && await askToken(e.message)) return api(method, path, body, opts);
      throw e;
    }
  }

  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') n.className = v;
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else if (k === 'text') n.textContent = v;
      else n.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  function bytes(n) {
    if (!(n > 0)) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
  }
  function rate(n) { return bytes(n) + '/s'; }
  function when(s) {
    if (!s) return '';
    const d = new Date(s);
    return isNaN(d) ? s : d.toLocaleString();
  }

  // toast shows a notice for 4 s where it covers no control: at the bottom
  // of the screen, else at the top, else (a screen full of controls) in the
  // page's flow above the content, pushing it down rather than covering it.
  let toastTimer = 0;
  const controls = 'button, a, input, select, textarea, summary, [tabindex]';
  function covers(t) {
    const r = t.getBoundingClientRect();
    for (const n of document.querySelectorAll(controls)) {
      if (t.contains(n) || !n.checkVisibility()) continue;
      const c = n.getBoundingClientRect();
      if (c.width && c.height && c.left < r.right && c.right > r.left && c.top < r.bottom && c.bottom > r.top) return true;
    }
    return false;
  }
  function toast(msg) {
    const t = document.getElementById('toast');
    if (!t) return;
    t.textContent = msg;
    t.classList.remove('top', 'inline');
    t.classList.add('show');
    if (covers(t)) {
      t.classList.add('top');
      if (covers(t)) {
        t.classList.remove('top');
        t.classList.add('inline');
        const main = document.querySelector('main');
        if (main && t.parentNode !== main) main.prepend(t);
      }
    }
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove('show', 'top', 'inline'), 4000);
  }

  // askToken shows the token dialog; resolves true once a token is saved.
  function askToken(reason) {
    const d = document.getElementById('token-dialog');
    if (!d) return Promise.resolve(false);
    const input = d.querySelector('input');
    d.querySelector('.reason').textContent = reason || '';
    input.value = currentToken();
    return new Promise((resolve) => {
      const form = d.querySelector('form');
      const done = (ok) => {
        form.removeEventListener('submit', onSubmit);
        d.querySelector('.cancel').removeEventListener('click', onCancel);
        if (d.open) d.close();
        resolve(ok);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        setToken(input.value.trim());
        done(!!input.value.trim());
      };
      const onCancel = () => done(false);
      form.addEventListener('submit', onSubmit);
      d.querySelector('.cancel').addEventListener('click', onCancel);
      d.showModal();
      input.focus();
    });
  }

  function errorList(e) {
    const box = el('div', { class: 'errors', role: 'alert' });
    const errs = (e && e.errors && e.errors.length) ? e.errors : [{ message: e.message || String(e) }];
    if (errs.length === 1) {
      box.append(el('p', { text: errs[0].message }));
    } else {
      box.append(el('ul', {}, errs.map((x) => el('li', { text: x.message }))));
    }
    return box;
  }

  function registerServiceWorker() {
    if ('serviceWorker' in navigator && window.isSecureContext) {
      navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {});
    }
  }

  return { api, write, el, bytes, rate, when, toast, askToken, errorList, token: currentToken, setToken,
    takeFragmentToken, registerServiceWorker, headers, ApiError };
})();
