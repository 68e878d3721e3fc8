// The agent's page: imported packages with their history and, when the
// agent has cluster access, their Applied/Ready state; upload of a
// kubepkg.tgz (or of the parts of a split one) with progress; the nodes'
// mirror configuration. Viewing needs no token; uploading asks for it.
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

  // sigBadge sums up an import's signature verdicts: every image verified
  // (naming the keys), or which were let through unsigned.
  function sigBadge(sigs) {
    if (!sigs || !sigs.length) return null;
    const ok = sigs.filter((v) => v.verified);
    const keys = [...new Set(ok.map((v) => (v.keyName || '').split('/').pop() + ' ' + (v.key || '').slice(0, 19)))];
    const title = sigs.map((v) => v.image + ': ' + (v.verified ? 'signed, key ' + v.key : v.reason)).join('\n');
    if (ok.length === sigs.length) {
      return el('span', { class: 'badge ok signatures', title, text: 'Signed: ' + ok.length + '/' + sigs.length + ' images · ' + keys.join(', ') });
    }
    return el('span', { class: 'badge warn signatures', title, text: 'Signed: ' + ok.length + '/' + sigs.length + ' images (the rest let through unsigned by the policy)' });
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
          v.forced ? ' · forced' : '', v.expired ? ' · expired' : '',
          v.signatures && v.signatures.length ? ' · signatures: ' + v.signatures.map((s) => s.image + (s.verified ? ' ✓ ' + (s.key || '').slice(0, 19) : ' — ' + s.reason)).join('; ') : '')));
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
      sigBadge(p.signatures) ? el('p', { class: 'signatures-state' }, sigBadge(p.signatures)) : null,
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
  // chosen are the files selected: one kubepkg.tgz, or the parts of a split
  // one (NAME.000, NAME.001, …) with or without its parts file (NAME.parts)
  let chosen = [];
  const fileInput = $('upload-file');
  const zone = $('dropzone');
  function choose(files) {
    chosen = Array.from(files || []);
    const total = chosen.reduce((n, f) => n + f.size, 0);
    $('upload-status').textContent = chosen.length === 1 ? chosen[0].name + ' · ' + bytes(total)
      : chosen.length ? chosen.length + ' files · ' + bytes(total) : '';
  }
  fileInput.addEventListener('change', () => choose(fileInput.files));
  ['dragenter', 'dragover'].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add('over'); }));
  ['dragleave', 'drop'].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.remove('over'); }));
  zone.addEventListener('drop', (e) => {
    if (e.dataTransfer && e.dataTransfer.files.length) choose(e.dataTransfer.files);
  });

  const PART = /^(.+)\.([0-9]{3,})$/;
  const PARTS_MEDIA_TYPE = 'application/vnd.octohelm.crpe.kubepkg-parts.v1+json';
  const partName = (archive, i) => archive + '.' + String(i).padStart(3, '0');

  // plan orders what was chosen into what goes to the agent: one archive
  // as it is, or the parts in their order (by the parts file, else by their
  // suffix). A missing part, or one of another size than the parts file
  // says, is refused here, naming it, before a byte is sent; the agent
  // checks each part's digest as it arrives.
  async function plan(files) {
    if (files.length === 1 && !PART.test(files[0].name) && !files[0].name.endsWith('.parts')) return { file: files[0] };
    const lists = files.filter((f) => f.name.endsWith('.parts'));
    const parts = files.filter((f) => !f.name.endsWith('.parts'));
    if (lists.length > 1) throw new Error('Two parts files chosen: ' + lists.map((f) => f.name).join(', ') + '.');
    const byName = new Map();
    for (const f of parts) {
      if (!PART.test(f.name)) throw new Error(f.name + ' is neither a part (NAME.000, NAME.001, …) nor a parts file (NAME.parts): choose one kubepkg.tgz, or the parts of one.');
      if (byName.has(f.name)) throw new Error('Part ' + f.name + ' chosen twice.');
      byName.set(f.name, f);
    }
    const list = lists[0] || null;
    let ordered = [];
    if (list) {
      if (list.size > 2 * 1024 * 1024) throw new Error(list.name + ' is too large for a parts file.');
      let m;
      try { m = JSON.parse(await list.text()); } catch (e) { throw new Error(list.name + ' is not a parts file: ' + e.message); }
      if (!m || m.mediaType !== PARTS_MEDIA_TYPE || !Array.isArray(m.parts) || !m.archive) throw new Error(list.name + ' is not a parts file.');
      const listed = new Set(m.parts.map((p) => p.name));
      for (const name of byName.keys()) {
        if (!listed.has(name)) throw new Error('Part ' + name + ': ' + list.name + ' does not list it.');
      }
      for (const p of m.parts) {
        const f = byName.get(p.name);
        if (!f) throw new Error('Part ' + p.name + ' is missing: choose every part (' + m.parts.length + ') with ' + list.name + '.');
        if (f.size !== p.size) throw new Error('Part ' + p.name + ' has ' + f.size + ' bytes, the parts file says ' + p.size + ' (truncated, or not this archive\'s part).');
        ordered.push(f);
      }
    } else {
      if (!parts.length) throw new Error('The parts file alone is not enough: choose the parts too.');
      const archive = PART.exec(parts[0].name)[1];
      let last = -1;
      for (const f of parts) {
        const [, a, n] = PART.exec(f.name);
        if (a !== archive) throw new Error(f.name + ' is not a part of ' + archive + '.');
        last = Math.max(last, Number(n));
      }
      for (let i = 0; i <= last; i++) {
        const f = byName.get(partName(archive, i));
        if (!f) throw new Error('Part ' + partName(archive, i) + ' is missing.');
        ordered.push(f);
      }
    }
    return { list, parts: ordered };
  }

  function upload(what, force) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', '/api/v1/kubepkgs' + (force ? '?force=true' : ''));
      let body = what.file;
      let extra = { 'Content-Type': body && /\.tar$/.test(body.name) ? 'application/x-tar' : 'application/gzip' };
      if (!body) {
        // the parts go as one multipart body, in order, straight from the
        // files (the browser sets the Content-Type with its boundary)
        body = new FormData();
        if (what.list) body.append('parts', what.list, what.list.name);
        what.parts.forEach((f) => body.append('part', f, f.name));
        extra = {};
      }
      const h = crpe.headers(extra);
      Object.entries(h).forEach(([k, v]) => xhr.setRequestHeader(k, v));
      const bar = $('upload-progress');
      bar.classList.remove('hidden');
      bar.max = 1;
      bar.value = 0;
      const start = Date.now();
      xhr.upload.onprogress = (e) => {
        bar.max = e.total || 1;
        bar.value = e.loaded;
        const secs = (Date.now() - start) / 1000;
        $('upload-status').textContent = 'Uploading ' + bytes(e.loaded) + ' of ' + bytes(e.total) + (secs > 0.2 ? ' · ' + bytes(e.loaded / secs) + '/s' : '');
      };
      xhr.upload.onload = () => { $('upload-status').textContent = 'Uploaded; the agent is importing…'; };
      xhr.onerror = () => reject(new Error('the upload broke off: try again'));
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status === 201) return resolve(body);
        reject(new crpe.ApiError(xhr.status, body && body.errors, xhr.responseText.slice(0, 300)));
      };
      xhr.send(body);
    });
  }

  $('upload-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const errs = $('upload-errors');
    errs.replaceChildren();
    if (!chosen.length) {
      errs.append(errorList(new Error('Choose a kubepkg.tgz first.')));
      return;
    }
    let what;
    try {
      what = await plan(chosen);
    } catch (e) {
      errs.append(errorList(e));
      return;
    }
    if (!crpe.token() && !await crpe.askToken('Uploading needs the agent\'s token.')) return;
    const btn = $('upload-submit');
    btn.disabled = true;
    try {
      let res;
      try {
        res = await upload(what, $('upload-force').checked);
      } catch (e) {
        if (e.status !== 401 || !await crpe.askToken(e.message)) throw e;
        res = await upload(what, $('upload-force').checked);
      }
      const names = (res.packages || []).map((p) => p.name + ' ' + p.version + (p.previous ? ' (was ' + p.previous + ')' : '')).join(', ');
      const sigs = res.signatures || [];
      const signed = sigs.length ? ' Signatures: ' + sigs.filter((v) => v.verified).length + '/' + sigs.length + ' images verified.' : '';
      $('upload-status').textContent = 'Imported ' + names + ': ' + res.blobsReceived + ' blobs received (' + bytes(res.bytesReceived) + '), ' + res.blobsPresent + ' already here.' + signed;
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
