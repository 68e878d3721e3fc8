// The agent's page: imported packages with their history and, when the
// agent has cluster access, their Applied/Ready state; upload of a
// kubepkg.tgz with progress; the nodes' mirror configuration. Viewing needs
// no token; uploading asks for it.
'use strict';

(() => {
  const { api, el, bytes, when, toast, errorList } = crpe;
  const $ = (id) => document.getElementById(id);
  let info = null;
  let cluster = {}; // ns/name → state

  function condBadge(label, c) {
    if (!c) return el('span', { class: 'badge warn', text: label + ': pending' });
    const ok = c.status === 'True';
    const cls = ok ? 'ok' : (c.reason === 'Progressing' ? 'warn' : 'bad');
    return el('span', { class: 'badge ' + cls, title: c.message || '', text: label + ': ' + (ok ? 'yes' : (c.reason || 'no')) });
  }

  function packageCard(p) {
    const key = p.namespace + '/' + p.name;
    const cs = cluster[key];
    const hist = el('ul', { class: 'plain' }, el('li', { class: 'muted', text: 'Loading…' }));
    const details = el('details', { ontoggle: async () => {
      if (!details.open || details.dataset.loaded) return;
      try {
        const full = await api('GET', '/api/v1/kubepkgs/' + encodeURIComponent(p.namespace) + '/' + encodeURIComponent(p.name));
        details.dataset.loaded = '1';
        hist.replaceChildren(...(full.history || []).slice().reverse().map((v) => el('li', {},
          el('strong', { text: v.version }), ' · ', when(v.importedAt),
          v.forced ? ' · forced' : '', v.expired ? ' · expired' : '')));
      } catch (e) {
        hist.replaceChildren(el('li', {}, errorList(e)));
      }
    } }, el('summary', {}, 'Import history'), hist);
    return el('article', { class: 'card package', 'data-name': p.name, 'data-version': p.version },
      el('header', {}, el('h3', { text: p.name }), el('span', { class: 'version', text: p.version })),
      el('p', { class: 'meta', text: 'namespace ' + p.namespace + (p.platforms ? ' · ' + p.platforms : '') + ' · imported ' + when(p.importedAt) }),
      cs ? el('p', { class: 'cluster-state' },
        condBadge('Applied', cs.applied), ' ', condBadge('Ready', cs.ready),
        cs.appliedVersion && cs.appliedVersion !== p.version ? el('span', { class: 'meta', text: ' applied ' + cs.appliedVersion }) : null) : null,
      el('ul', { class: 'plain' }, Object.keys(p.images || {}).sort().map((r) => el('li', { class: 'ref', text: r }))),
      details);
  }

  async function loadPackages() {
    const box = $('packages');
    try {
      const [list] = await Promise.all([api('GET', '/api/v1/kubepkgs'), loadCluster()]);
      box.replaceChildren();
      if (!list.items.length) box.append(el('p', { class: 'muted' }, 'No package imported yet.'));
      list.items.forEach((p) => box.append(packageCard(p)));
    } catch (e) {
      if (e.status === 401 && await crpe.askToken('Reading this agent needs a token.')) return loadPackages();
      box.replaceChildren(errorList(e));
    }
  }

  // loadCluster asks for the cluster state only when the agent has cluster
  // access: an agent without it gets no request that would fail.
  async function loadCluster() {
    if (!info || !info.cluster) return;
    const note = $('cluster-note');
    try {
      const res = await api('GET', '/api/v1/cluster/kubepkgs');
      cluster = {};
      res.items.forEach((c) => { cluster[c.namespace + '/' + c.name] = c; });
      note.replaceChildren();
    } catch (e) {
      note.replaceChildren(el('p', { class: 'notice bad', text: 'Cluster state unavailable: ' + e.message }));
    }
  }

  async function loadInfo() {
    try {
      info = await api('GET', '/api/v1/agent', null, { anonymous: true });
    } catch (e) {
      info = null;
    }
    if (crpe.token()) {
      // a stored token the agent refuses would refuse every read too
      try {
        await api('GET', '/api/v1/agent');
      } catch (e) {
        if (e.status === 401) {
          crpe.setToken('');
          toast('The stored token was refused: it is forgotten.');
        }
      }
    }
    if (info && !info.cluster) {
      $('cluster-note').replaceChildren(el('p', { class: 'muted', text: 'This agent has no Kubernetes access: packages are shown without their cluster state.' }));
    }
  }

  // ---------- upload ----------
  let chosen = null;
  const fileInput = $('upload-file');
  const zone = $('dropzone');
  fileInput.addEventListener('change', () => {
    chosen = fileInput.files[0] || null;
    $('upload-status').textContent = chosen ? chosen.name + ' · ' + bytes(chosen.size) : '';
  });
  ['dragenter', 'dragover'].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add('over'); }));
  ['dragleave', 'drop'].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.remove('over'); }));
  zone.addEventListener('drop', (e) => {
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) {
      chosen = f;
      $('upload-status').textContent = f.name + ' · ' + bytes(f.size);
    }
  });

  function upload(file, force) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', '/api/v1/kubepkgs' + (force ? '?force=true' : ''));
      const h = crpe.headers({ 'Content-Type': /\.tar$/.test(file.name) ? 'application/x-tar' : 'application/gzip' });
      Object.entries(h).forEach(([k, v]) => xhr.setRequestHeader(k, v));
      const bar = $('upload-progress');
      bar.classList.remove('hidden');
      bar.max = file.size || 1;
      bar.value = 0;
      const start = Date.now();
      xhr.upload.onprogress = (e) => {
        bar.value = e.loaded;
        const secs = (Date.now() - start) / 1000;
        $('upload-status').textContent = 'Uploading ' + bytes(e.loaded) + ' of ' + bytes(file.size) + (secs > 0.2 ? ' · ' + bytes(e.loaded / secs) + '/s' : '');
      };
      xhr.upload.onload = () => { $('upload-status').textContent = 'Uploaded; the agent is importing…'; };
      xhr.onerror = () => reject(new Error('the upload broke off: try again'));
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status === 201) return resolve(body);
        reject(new crpe.ApiError(xhr.status, body && body.errors, xhr.responseText.slice(0, 300)));
      };
      xhr.send(file);
    });
  }

  $('upload-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const errs = $('upload-errors');
    errs.replaceChildren();
    if (!chosen) {
      errs.append(errorList(new Error('Choose a kubepkg.tgz first.')));
      return;
    }
    if (!crpe.token() && !await crpe.askToken('Uploading needs the agent\'s token.')) return;
    const btn = $('upload-submit');
    btn.disabled = true;
    try {
      let res;
      try {
        res = await upload(chosen, $('upload-force').checked);
      } catch (e) {
        if (e.status !== 401 || !await crpe.askToken(e.message)) throw e;
        res = await upload(chosen, $('upload-force').checked);
      }
      const names = (res.packages || []).map((p) => p.name + ' ' + p.version + (p.previous ? ' (was ' + p.previous + ')' : '')).join(', ');
      $('upload-status').textContent = 'Imported ' + names + ': ' + res.blobsReceived + ' blobs received (' + bytes(res.bytesReceived) + '), ' + res.blobsPresent + ' already here.';
      toast('Imported ' + names);
      loadPackages();
    } catch (e) {
      $('upload-status').textContent = '';
      errs.append(errorList(e));
    } finally {
      btn.disabled = false;
    }
  });

  // ---------- node configuration ----------
  async function loadMirror(ev) {
    if (ev) ev.preventDefault();
    const q = new URLSearchParams({ format: $('mirror-format').value, hosts: $('mirror-hosts').value, agent: $('mirror-agent').value });
    try {
      $('mirror-config').textContent = await api('GET', '/api/v1/mirror-config?' + q);
    } catch (e) {
      $('mirror-config').textContent = e.message;
    }
  }
  $('mirror-agent').value = location.origin;
  $('mirror-form').addEventListener('submit', loadMirror);
  $('mirror-format').addEventListener('change', () => loadMirror());
  $('mirror-copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('mirror-config').textContent);
      toast('Copied');
    } catch (e) {
      toast('Select the text to copy it');
    }
  });

  $('token-button').addEventListener('click', () => crpe.askToken('').then((ok) => ok && toast('Token saved')));
  $('reload').addEventListener('click', loadPackages);

  crpe.takeFragmentToken();
  loadInfo().then(() => Promise.all([loadPackages(), loadMirror()])).then(() => {
    document.body.dataset.readyAt = String(Math.round(performance.now()));
    document.body.dataset.ready = 'true';
    // the operator applies packages in the background: their state is
    // read again while the page is in view
    if (info && info.cluster) {
      setInterval(() => { if (document.visibilityState === 'visible') loadPackages(); }, 15000);
    }
  });
  crpe.registerServiceWorker();
})();
