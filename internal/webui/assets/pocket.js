// The pocket's page: packages (add, sync, download, send), agents,
// registries, cache and sharing, all through /api/v1, with live progress
// from /api/v1/events.
'use strict';

(() => {
  const { api, write, el, bytes, rate, when, toast, errorList } = crpe;
  const $ = (id) => document.getElementById(id);

  const state = {
    info: null,
    packages: [],
    agents: [],
    agentStatus: {}, // name → status, or {checking: true}
    jobs: new Map(), // id → job
    syncing: new Set(), // packages whose sync this page asked for, until it ends
    view: 'packages',
  };

  // ---------- jobs ----------
  function latestJob(kind, pkg, agent) {
    let best = null;
    for (const j of state.jobs.values()) {
      if (j.kind !== kind || j.package !== pkg || (agent !== undefined && j.agent !== agent)) continue;
      if (!best || j.startedAt > best.startedAt || (j.startedAt === best.startedAt && j.state === 'running')) best = j;
    }
    return best;
  }

  // ---------- packages ----------
  // statusOf says in words how far a package is: Synced only when every
  // blob of its platforms is cached.
  function statusOf(p) {
    const sync = latestJob('sync', p.name);
    if (sync && sync.state === 'running') return { cls: 'syncing', text: 'Syncing ' + sync.percent + '%' };
    if (p.cache.state === 'synced') return { cls: 'synced', text: 'Synced' };
    if (sync && sync.state === 'failed') {
      return { cls: 'failed', text: 'Sync failed at ' + p.cache.percent + '% — ' + sync.error };
    }
    if (p.cache.state === 'none') return { cls: 'none', text: 'Not cached' };
    return { cls: 'partial', text: 'Partly cached ' + p.cache.percent + '%' };
  }

  function progressLines(j) {
    if (!j || j.state !== 'running') return [];
    const out = [el('progress', { max: Math.max(j.total, 1), value: j.bytes, 'aria-label': j.kind + ' progress' })];
    out.push(el('p', { class: 'meta', text: (j.phase ? j.phase + ': ' : '') + bytes(j.bytes) + ' of ' + bytes(j.total) + (j.rate ? ', ' + rate(j.rate) : '') }));
    if (j.images && j.images.length) {
      out.push(el('ul', { class: 'plain images' }, j.images.map((im) => el('li', {},
        el('span', { class: 'ref', text: im.ref }), el('br'),
        el('span', { class: 'meta', text: bytes(im.bytes) + ' of ' + bytes(im.total) + (im.rate ? ' · ' + rate(im.rate) : '') + (im.bytes >= im.total ? ' · done' : '') })))));
    }
    return out;
  }

  function sendLine(p) {
    let j = null;
    for (const a of state.agents) {
      const x = latestJob('send', p.name, a.name);
      if (x && (!j || x.startedAt > j.startedAt)) j = x;
    }
    if (!j) return null;
    if (j.state === 'running') {
      return el('div', { class: 'send-progress' },
        el('p', { class: 'status running', text: 'Sending to ' + j.agent + ' ' + j.percent + '%' }), progressLines(j));
    }
    if (j.state === 'done') {
      const r = j.result || {};
      // the agent's verdicts on the images' signatures, when it checks them
      const sigs = (r.import && r.import.signatures) || [];
      const signed = sigs.length ? '; signatures verified by the agent: ' + sigs.filter((v) => v.verified).length + '/' + sigs.length + ' images' : '';
      return el('p', { class: 'status ok send-result', title: sigs.map((v) => v.image + ': ' + (v.verified ? 'signed, key ' + v.key : v.reason)).join('\n'),
        text: 'Sent to ' + j.agent + ': ' + bytes(r.bytesSent) + ' sent, ' +
        bytes(r.bytesOmitted) + ' saved by the delta (' + (r.blobsOmitted || 0) + (r.blobsOmitted === 1 ? ' layer' : ' layers') + ' the agent had)' + signed });
    }
    return el('div', { class: 'send-result' },
      el('p', { class: 'status failed', role: 'alert', text: 'Send to ' + j.agent + ' failed: ' + j.error }),
      el('button', { type: 'button', class: 'secondary', onclick: () => send(p.name, j.agent) }, 'Retry send'));
  }

  function exportLine(p) {
    const j = latestJob('export', p.name);
    if (!j) return null;
    if (j.state === 'running') {
      return el('div', {}, el('p', { class: 'status running', text: 'Preparing the download ' + j.percent + '%' }), progressLines(j));
    }
    if (j.state === 'failed') return el('p', { class: 'status failed', role: 'alert', text: 'Download failed: ' + j.error });
    return null;
  }

  // live is what changes while jobs run: the status, progress, the last
  // download's and send's outcome.
  function live(p) {
    const st = statusOf(p);
    const sync = latestJob('sync', p.name);
    return [
      el('p', { class: 'status ' + st.cls, role: st.cls === 'failed' ? 'alert' : null, text: st.text }),
      progressLines(sync),
      exportLine(p),
      sendLine(p),
    ];
  }

  function updateLive(card, p) {
    const st = statusOf(p);
    card.dataset.status = st.cls;
    card.querySelector('.live').replaceChildren(...live(p).flat().filter(Boolean));
    const sync = latestJob('sync', p.name);
    card.querySelector('button.sync').disabled = !!(sync && sync.state === 'running');
  }

  function packageCard(p) {
    const card = el('article', { class: 'card package', id: 'pkg-' + p.name, 'data-name': p.name },
      el('header', {},
        el('h3', { text: p.name }),
        el('span', { class: 'version', text: p.version })),
      el('p', { class: 'meta', text: p.platforms + (p.namespace ? ' · namespace ' + p.namespace : '') + ' · ' + p.images.length + ' image' + (p.images.length === 1 ? '' : 's') +
        (p.cache.bytes ? ' · ' + bytes(p.cache.cachedBytes) + ' of ' + bytes(p.cache.bytes) + ' cached' : '') }),
      el('div', { class: 'live', 'aria-live': 'polite' }));
    const actions = el('div', { class: 'actions' },
      el('button', { type: 'button', class: 'sync', onclick: () => sync_(p.name) }, 'Sync'),
      el('a', { class: 'button secondary download', href: '/api/v1/kubepkgs/' + encodeURIComponent(p.name) + '/kubepkg.tgz', download: p.name + '-' + p.version + '.kubepkg.tgz', onclick: (e) => download(e, p) }, 'Download'));
    card.append(actions);
    if (state.agents.length) {
      const sel = el('select', { id: 'send-agent-' + p.name, class: 'send-agent' }, state.agents.map((a) => el('option', { value: a.name, text: a.name })));
      card.append(el('div', { class: 'field-inline' },
        el('label', { for: 'send-agent-' + p.name }, 'Agent', sel),
        el('button', { type: 'button', class: 'send', onclick: () => send(p.name, sel.value) }, 'Send to agent')));
    } else {
      card.append(el('p', { class: 'muted' }, el('a', { href: '#agents' }, 'Add an agent'), ' to send packages to it.'));
    }
    card.append(el('details', {}, el('summary', {}, 'Images'),
      el('ul', { class: 'plain' }, p.images.map((im) => el('li', {},
        el('span', { class: 'ref', text: im.ref }), el('br'),
        el('span', { class: 'meta', text: im.error ? 'not resolved yet' : bytes(im.cachedBytes) + ' of ' + bytes(im.bytes) + ' cached' }))))));
    card.append(el('div', { class: 'actions' },
      p.source ? el('button', { type: 'button', class: 'secondary', onclick: () => refresh(p.name) }, 'Fetch again') : null,
      el('button', { type: 'button', class: 'danger', onclick: () => remove(p.name) }, 'Remove')));
    updateLive(card, p);
    return card;
  }

  // renderPackages keeps the cards whose package did not change (so a
  // control being used is not replaced under the finger) and refreshes
  // their live part.
  const signatures = new Map();
  function renderPackages() {
    const box = $('packages');
    if (!state.packages.length) {
      box.replaceChildren(el('p', { class: 'muted' }, 'No package yet: add one above.'));
      signatures.clear();
      $('add-package').open = true;
      return;
    }
    const agentsSig = state.agents.map((a) => a.name).join(',');
    const cards = [];
    const keep = new Set();
    for (const p of state.packages) {
      const sig = JSON.stringify(p) + '|' + agentsSig;
      let c = document.getElementById('pkg-' + p.name);
      if (c && c.parentNode === box && signatures.get(p.name) === sig) {
        updateLive(c, p);
      } else {
        const open = c && c.querySelector('details[open]');
        const prevSel = c && c.querySelector('select.send-agent');
        c = packageCard(p);
        if (open) c.querySelector('details').open = true;
        const s = c.querySelector('select.send-agent');
        if (s && prevSel) s.value = prevSel.value;
        signatures.set(p.name, sig);
      }
      keep.add(p.name);
      cards.push(c);
    }
    for (const k of [...signatures.keys()]) if (!keep.has(k)) signatures.delete(k);
    // re-order only when needed
    const current = [...box.children];
    if (current.length !== cards.length || current.some((n, i) => n !== cards[i])) box.replaceChildren(...cards);
  }

  function renderPackageLive(name) {
    const p = state.packages.find((x) => x.name === name);
    const c = document.getElementById('pkg-' + name);
    if (p && c) updateLive(c, p);
  }

  async function loadPackages() {
    try {
      state.packages = (await api('GET', '/api/v1/kubepkgs')).items;
      renderPackages();
    } catch (e) {
      $('packages').replaceChildren(errorList(e));
    }
  }

  async function sync_(name) {
    state.syncing.add(name);
    try {
      const j = await write('POST', '/api/v1/kubepkgs/' + encodeURIComponent(name) + '/sync');
      noteStarted(j);
      renderPackages();
    } catch (e) {
      state.syncing.delete(name);
      toast('Sync: ' + e.message);
    }
  }

  // noteStarted records a job a POST started. Its answer can arrive after
  // the event stream's news of the job (even of its end): the stream is
  // newer then, and the answer's snapshot does not replace it (it did, and
  // the page stayed at "Sending 0%").
  function noteStarted(j) {
    if (!state.jobs.has(j.id)) state.jobs.set(j.id, j);
  }

  async function send(name, agent) {
    if (!agent) return;
    try {
      const j = await write('POST', '/api/v1/kubepkgs/' + encodeURIComponent(name) + '/send?agent=' + encodeURIComponent(agent));
      noteStarted(j);
      renderPackages();
    } catch (e) {
      toast('Send: ' + e.message);
    }
  }

  function download(ev, p) {
    if (p.cache.state !== 'synced' && state.info && state.info.offline) {
      ev.preventDefault();
      toast('Not all images of ' + p.name + ' are cached and the pocket is offline: sync it while online.');
    }
  }

  async function refresh(name) {
    try {
      await write('POST', '/api/v1/kubepkgs/' + encodeURIComponent(name) + '/refresh');
      toast('Fetched ' + name + ' again');
      loadPackages();
    } catch (e) {
      toast(e.message);
    }
  }

  async function remove(name) {
    try {
      await write('DELETE', '/api/v1/kubepkgs/' + encodeURIComponent(name));
      toast('Removed ' + name);
      loadPackages();
    } catch (e) {
      toast(e.message);
    }
  }

  $('add-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const doc = $('add-doc').value.trim();
    const url = $('add-url').value.trim();
    const errs = $('add-errors');
    errs.replaceChildren();
    if (!doc && !url) {
      errs.append(errorList(new Error('Paste a KubePkg or give a URL.')));
      return;
    }
    const btn = $('add-submit');
    btn.disabled = true;
    try {
      const body = url ? { url, token: $('add-url-token').value.trim() || undefined } : doc;
      const res = await write('POST', '/api/v1/kubepkgs', body);
      $('add-doc').value = '';
      $('add-url').value = '';
      $('add-url-token').value = '';
      $('add-package').open = false;
      toast('Added ' + res.items.map((p) => p.name + ' ' + p.version).join(', '));
      await loadPackages();
    } catch (e) {
      errs.append(errorList(e));
    } finally {
      btn.disabled = false;
    }
  });

  // ---------- a package from a Helm chart ----------
  const charts = { repo: '', list: [] };

  function chartVersions() {
    const c = charts.list.find((x) => x.name === $('chart-name').value);
    const sel = $('chart-version');
    $('chart-desc').textContent = c && c.description ? c.description : '';
    sel.replaceChildren(...(c ? c.versions.map((v) => el('option', { value: v.version,
      text: v.version + (v.appVersion ? ' (app ' + v.appVersion + ')' : '') + (v.deprecated ? ' — deprecated' : '') })) : []));
    sel.disabled = !c;
  }

  // listCharts fills the chart picker from the repository's index; a
  // second call for the same repository while one runs waits for it, and
  // a chart already picked stays picked.
  let listing = null;
  function listCharts() {
    const repo = $('chart-repo').value.trim();
    if (listing && listing.repo === repo) return listing.done;
    const errs = $('chart-errors');
    errs.replaceChildren();
    if (!repo) {
      errs.append(errorList(new Error('Give the chart repository URL.')));
      return Promise.resolve();
    }
    const btn = $('chart-list');
    btn.disabled = true;
    const me = { repo };
    listing = me;
    me.done = (async () => {
      try {
        const res = await write('GET', '/api/v1/charts?repo=' + encodeURIComponent(repo));
        if (listing !== me) return;
        const sel = $('chart-name');
        const picked = charts.repo === repo ? sel.value : '';
        charts.repo = repo;
        charts.list = res.charts;
        if (!res.charts.length) {
          sel.replaceChildren(el('option', { value: '', text: 'No chart in this repository' }));
          sel.disabled = true;
        } else {
          sel.replaceChildren(...res.charts.map((c) => el('option', { value: c.name, text: c.name })));
          sel.disabled = false;
          if (res.charts.some((c) => c.name === picked)) sel.value = picked;
        }
        chartVersions();
      } catch (e) {
        if (listing === me) errs.append(errorList(e));
      } finally {
        if (listing === me) {
          listing = null;
          btn.disabled = false;
        }
      }
    })();
    return me.done;
  }

  // an oci:// location has no index to list: the chart's name and version
  // are typed instead
  const isOCI = () => $('chart-repo').value.trim().startsWith('oci://');
  function chartMode() {
    const oci = isOCI();
    $('chart-oci').classList.toggle('hidden', !oci);
    $('chart-pick').classList.toggle('hidden', oci);
    $('chart-list-row').classList.toggle('hidden', oci);
    $('chart-name').required = $('chart-version').required = !oci;
  }
  $('chart-list').addEventListener('click', listCharts);
  $('chart-repo').addEventListener('input', chartMode);
  $('chart-repo').addEventListener('change', () => {
    chartMode();
    if (!isOCI() && $('chart-repo').value.trim() !== charts.repo) listCharts();
  });
  $('chart-name').addEventListener('change', chartVersions);

  $('chart-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const errs = $('chart-errors');
    errs.replaceChildren();
    const repo = $('chart-repo').value.trim();
    const oci = isOCI();
    const chart = oci ? $('chart-oci-name').value.trim() : $('chart-name').value;
    const version = oci ? $('chart-oci-version').value.trim() : $('chart-version').value;
    if (oci && (!chart || !version)) {
      errs.append(errorList(new Error('Give the chart\'s name and version under that location.')));
      return;
    }
    if (!oci && (!repo || !chart || repo !== charts.repo)) {
      errs.append(errorList(new Error('List the repository\'s charts and pick one first.')));
      return;
    }
    const btn = $('chart-submit');
    btn.disabled = true;
    btn.textContent = 'Rendering…';
    try {
      const res = await write('POST', '/api/v1/charts/render', {
        repo, chart, version, plainHTTP: oci && $('chart-oci-plain').checked ? true : undefined,
        values: $('chart-values').value || undefined,
        releaseName: $('chart-release').value.trim() || undefined,
        namespace: $('chart-namespace').value.trim() || undefined,
      });
      $('chart-values').value = '';
      $('add-chart').open = false;
      await loadPackages(); // first: the notice then goes where it covers no card's control
      toast('Added ' + res.items.map((p) => p.name + ' ' + p.version).join(', ') + ' from chart ' + res.chart.name + ' ' + res.chart.version);
    } catch (e) {
      errs.append(errorList(e));
    } finally {
      btn.disabled = false;
      btn.textContent = 'Add package';
    }
  });

  // ---------- agents ----------
  async function loadAgents() {
    try {
      state.agents = (await api('GET', '/api/v1/agents')).items;
    } catch (e) {
      state.agents = [];
    }
    renderAgents();
    renderPackages();
    if (state.view === 'agents') state.agents.forEach((a) => checkAgent(a.name));
  }

  async function checkAgent(name) {
    state.agentStatus[name] = { checking: true };
    renderAgents();
    try {
      state.agentStatus[name] = await api('GET', '/api/v1/agents/' + encodeURIComponent(name));
    } catch (e) {
      state.agentStatus[name] = { error: e.message };
    }
    renderAgents();
  }

  const actionText = {
    upgrade: 'would be upgraded',
    current: 'up to date',
    'newer-on-agent': 'newer on the agent',
    install: 'not installed',
    'agent-only': 'only on the agent',
  };

  function agentCard(a) {
    const st = state.agentStatus[a.name] || {};
    const card = el('article', { class: 'card agent', 'data-name': a.name },
      el('header', {}, el('h3', { text: a.name })),
      el('p', { class: 'meta ref', text: a.url }));
    if (st.checking) {
      card.append(el('p', { class: 'status', text: 'Checking…' }));
    } else if (st.error && !st.reachable) {
      card.append(el('p', { class: 'status bad', role: 'alert', text: st.error }));
    } else if (st.checkedAt) {
      card.append(el('p', { class: 'status ' + (st.tokenAccepted ? 'ok' : 'warn'), text: st.tokenAccepted ? 'Reachable, token accepted' : st.error }));
      if (st.packages.length) {
        card.append(el('ul', { class: 'plain' }, st.packages.map((p) => el('li', { 'data-package': p.name, 'data-action': p.action },
          el('strong', { text: p.name }), ' ',
          p.version ? 'agent ' + p.version : 'not on the agent',
          p.pocketVersion ? ' · pocket ' + p.pocketVersion : '',
          ' · ', el('span', { class: 'badge ' + (p.action === 'current' ? 'ok' : p.action === 'upgrade' || p.action === 'install' ? 'warn' : ''), text: actionText[p.action] || p.action })))));
      }
    }
    card.append(el('div', { class: 'actions' },
      el('button', { type: 'button', class: 'secondary', onclick: () => checkAgent(a.name) }, st.error ? 'Retry' : 'Check'),
      el('button', { type: 'button', class: 'danger', onclick: () => removeAgent(a.name) }, 'Remove')));
    if (st.error && /token/.test(st.error)) {
      const input = el('input', { type: 'password', id: 'agent-token-' + a.name, autocomplete: 'off' });
      card.append(el('form', { class: 'field-inline', onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await write('POST', '/api/v1/agents', { name: a.name, url: a.url, token: input.value.trim() });
          checkAgent(a.name);
        } catch (e) { toast(e.message); }
      } }, el('label', { for: 'agent-token-' + a.name }, 'New agent token', input), el('button', { type: 'submit' }, 'Save token')));
    }
    return card;
  }

  function renderAgents() {
    const box = $('agents');
    box.replaceChildren();
    if (!state.agents.length) box.append(el('p', { class: 'muted' }, 'No agent yet.'));
    state.agents.forEach((a) => box.append(agentCard(a)));
  }

  async function removeAgent(name) {
    try {
      await write('DELETE', '/api/v1/agents/' + encodeURIComponent(name));
      delete state.agentStatus[name];
      loadAgents();
    } catch (e) { toast(e.message); }
  }

  $('agent-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const errs = $('agent-errors');
    errs.replaceChildren();
    try {
      const st = await write('POST', '/api/v1/agents', { name: $('agent-name').value.trim() || undefined, url: $('agent-url').value.trim(), token: $('agent-token').value.trim() });
      state.agentStatus[st.name] = st;
      ev.target.reset();
      $('add-agent').open = false;
      toast('Added agent ' + st.name);
      loadAgents();
    } catch (e) {
      errs.append(errorList(e));
    }
  });

  // ---------- registries ----------
  async function loadRegistries() {
    const box = $('registries');
    try {
      const res = await api('GET', '/api/v1/registries');
      box.replaceChildren();
      if (res.offline) box.append(el('p', { class: 'notice' }, 'The pocket runs offline: it asks no registry.'));
      if (!res.items.length) box.append(el('p', { class: 'muted' }, 'Registries are reached directly, with the credentials of Docker\'s config.json.'));
      res.items.forEach((r) => box.append(el('article', { class: 'card registry', 'data-host': r.host },
        el('header', {}, el('h3', { text: r.host }), el('span', { class: 'meta', text: r.source === 'flag' ? 'command line' : 'set here' })),
        r.endpoint ? el('p', { class: 'meta ref', text: '→ ' + r.endpoint }) : null,
        el('p', { class: 'meta', text: [r.insecure ? 'plain HTTP' : '', r.username ? 'user ' + r.username : '', r.hasPassword ? 'password set' : ''].filter(Boolean).join(' · ') || 'no credentials' }),
        r.source === 'api' ? el('div', { class: 'actions' }, el('button', { type: 'button', class: 'danger', onclick: async () => {
          try { await write('DELETE', '/api/v1/registries/' + encodeURIComponent(r.host)); loadRegistries(); } catch (e) { toast(e.message); }
        } }, 'Remove')) : null)));
    } catch (e) {
      box.replaceChildren(errorList(e));
    }
  }

  $('registry-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const errs = $('registry-errors');
    errs.replaceChildren();
    const body = { endpoint: $('reg-endpoint').value.trim(), insecure: $('reg-insecure').checked, username: $('reg-user').value.trim() };
    if ($('reg-pass').value) body.password = $('reg-pass').value;
    try {
      await write('PUT', '/api/v1/registries/' + encodeURIComponent($('reg-host').value.trim().toLowerCase()), body);
      ev.target.reset();
      $('add-registry').open = false;
      toast('Registry saved');
      loadRegistries();
    } catch (e) {
      errs.append(errorList(e));
    }
  });

  // ---------- cache ----------
  async function loadCache() {
    const box = $('cache');
    try {
      const c = await api('GET', '/api/v1/cache');
      const stat = (k, v) => [el('dt', { text: k }), el('dd', { text: v })];
      box.replaceChildren(
        el('dl', { class: 'stats' },
          stat('Cached', bytes(c.bytes) + ' in ' + c.blobs + ' blobs'),
          stat('Needed by packages', bytes(c.neededBytes)),
          stat('Needed by none', bytes(c.unneededBytes) + ' in ' + c.unneededBlobs + ' blobs'),
          stat('Free space', c.free >= 0 ? bytes(c.free) : 'unknown')),
        el('div', { class: 'actions' }, el('button', { type: 'button', id: 'clean', disabled: !c.unneededBlobs, onclick: clean }, 'Clean up')),
        el('p', { class: 'muted', text: 'Clean up removes the cached blobs no package of this pocket needs (written more than a minute ago).' }));
    } catch (e) {
      box.replaceChildren(errorList(e));
    }
  }

  async function clean() {
    try {
      const r = await write('POST', '/api/v1/cache/clean');
      toast('Freed ' + bytes(r.bytesFreed) + ' (' + r.blobsRemoved + ' blobs)');
      loadCache();
    } catch (e) { toast(e.message); }
  }

  // ---------- share ----------
  let qrURL = '';
  async function showQR(url, img) {
    try {
      const res = await api('GET', '/api/v1/pocket/qr?url=' + encodeURIComponent(url), null, { raw: true });
      const blob = await res.blob();
      if (qrURL) URL.revokeObjectURL(qrURL);
      qrURL = URL.createObjectURL(blob);
      img.src = qrURL;
    } catch (e) { toast(e.message); }
  }

  function renderShare() {
    const info = state.info;
    const box = $('share');
    box.replaceChildren();
    if (!info) return;
    // the pocket's addresses on the local networks, and the one this page
    // was opened with when it is not a loopback name
    const urls = [...info.urls];
    const here = location.origin + '/';
    if (!/^(localhost|127\.|\[::1\])/.test(location.hostname) && !urls.includes(here)) urls.unshift(here);
    if (!urls.length) {
      box.append(el('p', { class: 'notice' }, 'The pocket listens on ' + info.listen + ' only: other devices cannot reach it. Start it with --addr :6060 to share it on the local network.'));
    } else {
      const img = el('img', { class: 'qr', alt: 'QR code of the pocket\'s address', width: 280, height: 280 });
      const sel = el('select', { id: 'share-url' }, urls.map((u) => el('option', { value: u, text: u })));
      sel.addEventListener('change', () => showQR(sel.value, img));
      box.append(el('label', { for: 'share-url' }, 'Address on the local network'), sel, img,
        el('p', { class: 'muted', text: info.authorized ? 'Scan it with another phone: the code carries the token, so that phone can change the pocket too. Show it only to people you trust.' : 'Scan it with another phone to open the pocket there.' }));
      showQR(sel.value, img);
    }
    const sb = $('signin');
    sb.replaceChildren();
    if (info.trusted) {
      sb.append(el('p', { class: 'muted', text: 'This device runs the pocket: it needs no token.' }));
    } else {
      const input = el('input', { id: 'signin-token', type: 'password', autocomplete: 'off', value: crpe.token() });
      sb.append(el('p', { class: 'status ' + (info.authorized ? 'ok' : 'warn'), text: info.authorized ? 'Signed in: this device may change the pocket.' : 'Not signed in: this device can look, not change.' }),
        el('form', { onsubmit: (ev) => { ev.preventDefault(); crpe.setToken(input.value.trim()); loadInfo(); toast('Token saved'); } },
          el('label', { for: 'signin-token' }, 'Pocket token'), input,
          el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Save token'),
            el('button', { type: 'button', class: 'secondary', onclick: () => { crpe.setToken(''); loadInfo(); } }, 'Forget token'))));
    }
  }

  async function loadInfo() {
    try {
      state.info = await api('GET', '/api/v1/pocket');
    } catch (e) {
      if (e.status === 401) { // a stale token: forget it
        crpe.setToken('');
        toast('The stored token was refused: it is forgotten.');
        return loadInfo();
      }
      state.info = null;
    }
    const m = $('mode');
    if (state.info) {
      m.textContent = state.info.offline ? 'offline' : 'online';
      m.title = 'crpe ' + state.info.version;
    }
    if (state.view === 'share') renderShare();
  }

  // ---------- views ----------
  const loaders = { packages: loadPackages, agents: loadAgents, registries: loadRegistries, cache: loadCache, share: renderShare };
  function route() {
    if (crpe.takeFragmentToken()) {
      toast('Signed in with the token of the link');
      loadInfo();
    }
    const v = (location.hash.replace('#', '') || 'packages').split('&')[0];
    state.view = loaders[v] ? v : 'packages';
    for (const k of Object.keys(loaders)) {
      $('view-' + k).classList.toggle('hidden', k !== state.view);
      const tab = $('tab-' + k);
      if (k === state.view) tab.setAttribute('aria-current', 'page'); else tab.removeAttribute('aria-current');
    }
    if (state.view === 'agents') loadAgents();
    else if (state.view !== 'packages') loaders[state.view]();
  }
  window.addEventListener('hashchange', route);

  // ---------- events ----------
  let reloadTimer = 0;
  function reloadSoon(fn) {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(fn, 150);
  }
  function connect() {
    const es = new EventSource('/api/v1/events');
    es.addEventListener('job', (ev) => {
      const j = JSON.parse(ev.data);
      const prev = state.jobs.get(j.id);
      state.jobs.set(j.id, j);
      if (j.state !== 'running' && (!prev || prev.state === 'running')) {
        // once, as it happens: a sync this page asked for (its end may come
        // before the answer to the request) or saw running; not one that
        // ended before the page opened (the stream replays the jobs it knows)
        const asked = j.kind === 'sync' && state.syncing.delete(j.package);
        if (j.kind === 'sync' && j.state === 'done' && (asked || prev)) toast(j.package + ' synced');
        reloadSoon(() => { loadPackages(); if (state.view === 'cache') loadCache(); if (j.kind === 'send' && state.view === 'agents') loadAgents(); });
      }
      renderPackageLive(j.package);
    });
    es.addEventListener('change', (ev) => {
      const c = JSON.parse(ev.data);
      if (c.what === 'kubepkgs') reloadSoon(loadPackages);
      else if (c.what === 'agents' && state.view === 'agents') reloadSoon(loadAgents);
      else if (c.what === 'registries' && state.view === 'registries') reloadSoon(loadRegistries);
      else if (c.what === 'cache' && state.view === 'cache') reloadSoon(loadCache);
    });
  }

  route();
  loadInfo().then(() => Promise.all([loadAgents(), loadPackages()])).then(() => {
    document.body.dataset.readyAt = String(Math.round(performance.now()));
    document.body.dataset.ready = 'true';
  });
  connect();
  crpe.registerServiceWorker();
})();
