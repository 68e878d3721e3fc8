// crpe's service worker: the page and its assets come from the network when
// it answers (so an upgraded binary is seen at once) and from the cache when
// it does not (the pocket's address may be out of reach for a moment). The
// API and the registry are never cached.
'use strict';
const CACHE = 'crpe-ui-v1';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (e) => {
  const req = e.request;
  const url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== self.location.origin) return;
  const shell = url.pathname === '/' || url.pathname.startsWith('/ui/') || url.pathname === '/manifest.webmanifest';
  if (!shell) return;
  e.respondWith((async () => {
    try {
      const res = await fetch(req);
      if (res.ok) {
        const copy = res.clone();
        caches.open(CACHE).then((c) => c.put(req, copy)).catch(() => {});
      }
      return res;
    } catch (err) {
      const hit = await caches.match(req);
      if (hit) return hit;
      throw err;
    }
  })());
});
