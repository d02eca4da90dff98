// The operators' dashboard of restream-relay: plain JavaScript, no build step, nothing fetched from
// anywhere but this relay. Every text that comes from the API goes into the page as a text node
// (textContent / append(string)): no innerHTML anywhere.
'use strict';

(() => {
  const KEY_STORAGE = 'restream-relay.apiKey';
  const PAGE_SIZE = 25;             // the API's page size
  const MAX_PAGES = 80;             // 2000 objects of a kind: the feed's own bound
  const HISTORY_SECONDS = 300;      // bitrate graphs show the last five minutes
  const FEED_SILENCE_MS = 40000;    // no event nor heartbeat this long: the feed is reopened
  const MASK = '\u2022'.repeat(8);

  const streams = new Map();        // id -> {data, view}
  const restreams = new Map();      // id -> {data, view}
  const history = new Map();        // 's<id>' | 'r<id>' -> [[unix seconds, kbps], ...]
  let apiKey = sessionStorage.getItem(KEY_STORAGE);
  let feedAbort = null;
  let reloadTimer = null;
  let reloading = null;

  const $ = (id) => document.getElementById(id);

  // DOM building ------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = String(value);
      else if (name === 'dataset') Object.assign(node.dataset, value);
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function setText(node, text) {
    const value = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  // Formatting --------------------------------------------------------------------------------
  function fmtRate(kbps) {
    const value = Number(kbps) || 0;
    return value >= 1000 ? `${(value / 1000).toFixed(1)} Mbit/s` : `${Math.round(value)} kbit/s`;
  }

  function fmtBytes(bytes) {
    let value = Number(bytes) || 0;
    for (const unit of ['B', 'KB', 'MB', 'GB']) {
      if (value < 1000) return `${unit === 'B' ? value : value.toFixed(1)} ${unit}`;
      value /= 1000;
    }
    return `${value.toFixed(1)} TB`;
  }

  function fmtDuration(seconds) {
    const total = Math.max(0, Math.floor(Number(seconds) || 0));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
  }

  function fmtFps(fps) {
    const value = Number(fps);
    return Number.isInteger(value) ? `${value} fps` : `${value.toFixed(2)} fps`;
  }

  function fmtMs(ms) {
    const value = Number(ms) || 0;
    if (value === 0) return '0 ms';
    return value < 10 ? `${Number(value.toPrecision(2))} ms` : `${Math.round(value)} ms`;
  }

  // Facts joined with a middle dot; each one kept on one line.
  function facts(...items) {
    return items.map((item) => item.replace(/ /g, '\u00a0')).join(' \u00b7 ');
  }

  // What the destination's link says: libsrt's figures for an SRT destination the relay sends to, the
  // kernel's TCP figures for an RTMP(S) one; nothing while the push is not running.
  function linkFacts(status) {
    const srt = status.srt;
    if (srt) {
      return {
        transport: 'srt',
        text: facts(`SRT RTT ${fmtMs(srt.rtt_ms)}`, `sent ${fmtRate(srt.send_rate_kbps)}`,
          `lost ${srt.packets_lost}`, `retrans ${srt.packets_retransmitted}`),
        title: `buffer ${fmtMs(srt.send_buffer_ms)}, latency ${fmtMs(srt.latency_ms)}, `
          + `dropped ${srt.packets_dropped} packets, ${fmtBytes(srt.bytes_sent)} sent`
          + (srt.encrypted ? ', encrypted' : ''),
      };
    }
    if (typeof status.rtt_ms === 'number') {
      return {
        transport: 'tcp',
        text: facts(`TCP RTT ${fmtMs(status.rtt_ms)}`, `acked ${fmtRate(status.acked_bitrate_kbps)}`,
          `retrans ${status.retransmits || 0}`),
        title: `unacknowledged ${fmtBytes(status.unacked_bytes)}`,
      };
    }
    return { transport: '', text: '\u2014', title: '' };
  }

  function restreamUptime(status) {
    if (!status) return 0;
    if (typeof status.uptime_seconds === 'number') return status.uptime_seconds;
    if (status.state === 'running' && status.since) {
      const since = Date.parse(status.since);
      if (!Number.isNaN(since)) return (Date.now() - since) / 1000;
    }
    return 0;
  }

  // The destination URI may carry the destination's stream key: show scheme and host only.
  function maskUri(uri) {
    const text = String(uri || '');
    const scheme = text.split(':', 1)[0];
    try {
      const url = new URL(text);
      const rest = (url.pathname && url.pathname !== '/') || url.search ? '/\u2026' : '';
      return `${url.protocol}//${url.host}${rest}`;
    } catch {
      return `${scheme}://\u2026`;
    }
  }

  function maskSecret(text, secret) {
    const value = String(text || '');
    return secret ? value.split(secret).join(MASK) : value;
  }

  // API ---------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function describeError(status, body) {
    if (body && typeof body === 'object') {
      if (body.errors && typeof body.errors === 'object') {
        return Object.entries(body.errors)
          .map(([field, messages]) => `${field}: ${[].concat(messages).join(', ').trim()}`).join('; ');
      }
      if (body.error) return String(body.error);
    }
    return `HTTP ${status}`;
  }

  async function api(method, path, body) {
    const headers = { Authorization: `APIKey ${apiKey}` };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.status === 401) {
      signOut('The relay refused this key.');
      throw new ApiError(401, 'invalid api key');
    }
    if (!response.ok) throw new ApiError(response.status, describeError(response.status, data));
    return data;
  }

  async function listAll(path) {
    const items = [];
    for (let page = 1; page <= MAX_PAGES; page += 1) {
      const batch = await api('GET', `${path}?page=${page}`);
      items.push(...batch);
      if (batch.length < PAGE_SIZE) break;
    }
    return items;
  }

  function notify(message) {
    const notice = $('notice');
    setText(notice, message);
    notice.hidden = !message;
  }

  async function attempt(action) {
    try {
      notify('');
      return await action();
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) notify(error.message || String(error));
      return undefined;
    }
  }

  // Graphs ------------------------------------------------------------------------------------
  function record(key, kbps, now) {
    let points = history.get(key);
    if (!points) history.set(key, (points = []));
    points.push([now, Number(kbps) || 0]);
    while (points.length && (points[0][0] < now - HISTORY_SECONDS || points.length > 400)) points.shift();
  }

  function drawGraph(canvas, key) {
    const points = history.get(key) || [];
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || Number(canvas.getAttribute('width'));
    const height = canvas.clientHeight || Number(canvas.getAttribute('height'));
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    ctx.strokeStyle = style.borderColor || '#ccc';
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, height - 0.5);
    ctx.lineTo(width, height - 0.5);
    ctx.stroke();
    if (!points.length) return;
    const now = points[points.length - 1][0];
    // The time axis spans the history there is: at least a minute, at most HISTORY_SECONDS.
    const span = Math.min(HISTORY_SECONDS, Math.max(60, now - points[0][0]));
    const peak = Math.max(1, ...points.map((p) => p[1]));
    canvas.title = `last ${fmtDuration(span)}, peak ${fmtRate(peak)}`;
    const x = (t) => width - ((now - t) / span) * width;
    const y = (v) => height - 2 - (v / peak) * (height - 5);
    ctx.beginPath();
    points.forEach(([t, v], index) => (index ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.strokeStyle = style.color;
    ctx.lineWidth = 1.5;
    ctx.lineJoin = 'round';
    ctx.stroke();
  }

  // Clipboard ---------------------------------------------------------------------------------
  async function copyText(text, button) {
    let done = false;
    try {
      await navigator.clipboard.writeText(text);
      done = true;
    } catch {
      const area = el('textarea', { class: 'offscreen', readonly: true });
      area.value = text;
      document.body.append(area);
      area.select();
      done = document.execCommand('copy');
      area.remove();
    }
    const label = button.textContent;
    button.textContent = done ? 'copied' : 'copy failed';
    setTimeout(() => { button.textContent = label; }, 1500);
  }

  // Streams -----------------------------------------------------------------------------------
  function ingestRow(label, url, secret) {
    const code = el('code', { class: 'url', text: maskSecret(url, secret) });
    const show = el('button', { type: 'button', class: 'small quiet', 'aria-pressed': 'false', text: 'show' });
    show.addEventListener('click', () => {
      const shown = show.getAttribute('aria-pressed') !== 'true';
      show.setAttribute('aria-pressed', String(shown));
      setText(show, shown ? 'hide' : 'show');
      setText(code, shown ? url : maskSecret(url, secret));
    });
    const copy = el('button', { type: 'button', class: 'small quiet', text: 'copy' });
    copy.addEventListener('click', () => copyText(url, copy));
    return el('div', { class: 'ingest-row', dataset: { transport: label.toLowerCase() } },
      el('span', { class: 'ingest-label', text: label }), code, show, copy);
  }

  function buildStreamCard(stream) {
    const view = {};
    view.title = el('h2', { class: 'stream-name' });
    view.badge = el('span', { class: 'live-badge' });
    view.meta = el('span', { class: 'muted' });
    view.facts = el('dl', { class: 'facts' });
    view.factValues = {};
    for (const [key, label] of [['size', 'Video'], ['fps', 'Frame rate'], ['bitrate', 'Bitrate'],
      ['received', 'Received'], ['uptime', 'Live for'], ['transport', 'Via'], ['input', 'Input'], ['node', 'Node']]) {
      view.factValues[key] = el('dd');
      view.facts.append(el('div', {}, el('dt', { text: label }), view.factValues[key]));
    }
    view.graph = el('canvas', { class: 'graph graph-stream', width: 220, height: 44, role: 'img',
      'aria-label': 'ingest bitrate, up to the last five minutes' });
    view.ingest = el('div', { class: 'ingest' });
    view.rows = el('tbody');
    view.emptyRow = el('tr', { class: 'empty-row' }, el('td', { colspan: 9, text: 'No destinations yet.' }));
    view.rows.append(view.emptyRow);
    const table = el('table', { class: 'restreams' },
      el('thead', {}, el('tr', {}, ...['Destination', 'State', 'Uptime', 'Bitrate', 'Link', 'Restarts', 'Last error',
        'Active', ''].map((h) => el('th', { scope: 'col', text: h })))),
      view.rows);
    const name = el('input', { name: 'name', type: 'text', placeholder: 'Name, e.g. YouTube', maxlength: 255,
      'aria-label': 'Destination name' });
    const uri = el('input', { name: 'uri', type: 'text', placeholder: 'rtmp://…, rtmps://… or srt://…?mode=caller',
      required: true, spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Destination URI' });
    const addForm = el('form', { class: 'add-destination', autocomplete: 'off' },
      name, uri, el('button', { type: 'submit', text: 'Add destination' }));
    addForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      const created = await attempt(() => api('POST', '/streaming/restreams', {
        restream: { name: name.value.trim(), uri: uri.value.trim(), stream_id: stream.id },
      }));
      if (created) {
        addForm.reset();
        upsertRestream(created);
        refreshSummary();
      }
    });
    const remove = el('button', { type: 'button', class: 'small danger quiet', text: 'delete stream' });
    remove.addEventListener('click', async () => {
      const current = streams.get(stream.id);
      if (!current || !window.confirm(`Delete stream "${current.data.name}" and all its destinations?`)) return;
      const ok = await attempt(() => api('DELETE', `/streaming/streams/${stream.id}`));
      if (ok !== undefined) removeStream(stream.id);
    });
    view.root = el('article', { class: 'card stream', dataset: { streamId: stream.id } },
      el('header', { class: 'stream-head' }, view.title, view.badge, view.meta, el('span', { class: 'spacer' }),
        remove),
      el('div', { class: 'stream-body' },
        el('div', { class: 'source' }, view.facts, el('div', { class: 'graph-box' }, view.graph,
          el('span', { class: 'muted small-text', text: 'ingest bitrate (up to 5 min)' }))),
        view.ingest),
      el('h3', { text: 'Destinations' }), table, addForm);
    return view;
  }

  function updateStreamCard(entry) {
    const { data: stream, view } = entry;
    const status = stream.status || {};
    setText(view.title, stream.name);
    setText(view.meta, `#${stream.id}${stream.active ? '' : ' · inactive'}`);
    // "reconnecting": the encoder dropped and the destinations are held for its return.
    const state = stream.live ? (status.state === 'reconnecting' ? 'reconnecting' : 'live') : 'offline';
    setText(view.badge, state === 'live' ? 'LIVE' : state);
    view.badge.dataset.live = String(Boolean(stream.live));
    view.badge.dataset.state = state;
    view.graph.dataset.state = state;
    view.root.classList.toggle('is-live', Boolean(stream.live));
    const values = view.factValues;
    setText(values.size, stream.video_width && stream.video_height
      ? `${stream.video_width}\u00d7${stream.video_height}` : '\u2014');
    setText(values.fps, stream.frame_rate ? fmtFps(stream.frame_rate) : '\u2014');
    const on = state === 'live';
    setText(values.bitrate, on ? fmtRate(status.bitrate_kbps) : '\u2014');
    setText(values.received, on ? fmtBytes(status.bytes_in) : '\u2014');
    setText(values.uptime, on ? fmtDuration(status.uptime_seconds) : '\u2014');
    setText(values.transport, on ? (status.transport || stream.stream_source_type || '').toUpperCase() : '\u2014');
    // Which input feeds the destinations: the main, or the backup while the main is gone or silent.
    const standby = stream.input === 'main' && stream.backup_live ? ' (backup ready)' : '';
    setText(values.input, stream.live && stream.input ? `${stream.input}${standby}` : '\u2014');
    values.input.dataset.input = stream.live && stream.input ? stream.input : '';
    // Several relay nodes: the one running the stream (the holder of its lease).
    setText(values.node, stream.live && stream.node_id ? stream.node_id : '\u2014');
    const urlsKey = [stream.push_url, stream.push_url_rtmps, stream.push_url_srt, stream.backup_push_url,
      stream.srt_passphrase].join('|');
    if (stream.push_url && view.urlsKey !== urlsKey) {
      view.urlsKey = urlsKey;
      const rows = [ingestRow('RTMP', stream.push_url, stream.token)];
      if (stream.push_url_rtmps) rows.push(ingestRow('RTMPS', stream.push_url_rtmps, stream.token));
      if (stream.push_url_srt) rows.push(ingestRow('SRT', stream.push_url_srt, stream.token));
      if (stream.backup_push_url) rows.push(ingestRow('Backup RTMP', stream.backup_push_url, stream.token));
      if (stream.backup_push_url_srt) rows.push(ingestRow('Backup SRT', stream.backup_push_url_srt, stream.token));
      if (stream.srt_passphrase) rows.push(ingestRow('SRT passphrase', stream.srt_passphrase, stream.srt_passphrase));
      view.ingest.replaceChildren(el('h3', { text: 'Ingest' }), ...rows);
    }
    drawGraph(view.graph, `s${stream.id}`);
  }

  function upsertStream(stream) {
    let entry = streams.get(stream.id);
    if (!entry) {
      entry = { data: stream, view: buildStreamCard(stream) };
      streams.set(stream.id, entry);
      placeStreams();
    } else {
      entry.data = { ...entry.data, ...stream };
    }
    updateStreamCard(entry);
    return entry;
  }

  function removeStream(id) {
    const entry = streams.get(id);
    if (!entry) return;
    entry.view.root.remove();
    streams.delete(id);
    history.delete(`s${id}`);
    for (const [rid, rentry] of restreams) if (rentry.data.stream_id === id) removeRestream(rid);
    placeStreams();
    refreshSummary();
  }

  function placeStreams() {
    const container = $('streams');
    const wanted = [...streams.keys()].sort((a, b) => b - a).map((id) => streams.get(id).view.root);
    const current = [...container.children];
    if (wanted.length !== current.length || wanted.some((node, i) => node !== current[i])) {
      container.replaceChildren(...wanted);
    }
    $('empty').hidden = streams.size > 0;
  }

  // Restreams ---------------------------------------------------------------------------------
  function buildRestreamRow(restream) {
    const view = {};
    view.name = el('span', { class: 'dest-name' });
    view.uri = el('span', { class: 'dest-uri muted' });
    view.state = el('span', { class: 'state' });
    view.uptime = el('td', { class: 'num' });
    view.bitrateText = el('span', { class: 'num' });
    view.graph = el('canvas', { class: 'graph graph-dest', width: 110, height: 26, role: 'img',
      'aria-label': 'push bitrate, up to the last five minutes' });
    view.link = el('td', { class: 'link small-text' });
    view.restarts = el('td', { class: 'num' });
    view.error = el('td', { class: 'last-error' });
    view.active = el('input', { type: 'checkbox', class: 'active-toggle', role: 'switch',
      'aria-label': 'Destination active' });
    view.active.addEventListener('change', async () => {
      const wanted = view.active.checked;
      view.active.disabled = true;
      const updated = await attempt(() => api('PATCH', `/streaming/restreams/${restream.id}`,
        { restream: { active: wanted } }));
      view.active.disabled = false;
      if (updated) upsertRestream(updated);
      else view.active.checked = !wanted;
    });
    const edit = el('button', { type: 'button', class: 'small quiet', text: 'edit' });
    const del = el('button', { type: 'button', class: 'small quiet danger', text: 'delete' });
    view.row = el('tr', { class: 'restream', dataset: { restreamId: restream.id } },
      el('td', {}, view.name, el('br'), view.uri),
      el('td', {}, view.state),
      view.uptime,
      el('td', {}, el('div', { class: 'bitrate' }, view.graph, view.bitrateText)),
      view.link,
      view.restarts,
      view.error,
      el('td', {}, el('label', { class: 'switch' }, view.active, el('span', { class: 'slider' }))),
      el('td', { class: 'actions' }, edit, del));

    const editName = el('input', { name: 'name', type: 'text', maxlength: 255, 'aria-label': 'New name' });
    const editUri = el('input', { name: 'uri', type: 'text', spellcheck: 'false', autocomplete: 'off',
      placeholder: 'new URI (leave empty to keep the current one)', 'aria-label': 'New URI' });
    const cancel = el('button', { type: 'button', class: 'quiet', text: 'cancel' });
    const editForm = el('form', { class: 'edit-destination', autocomplete: 'off' },
      editName, editUri, el('button', { type: 'submit', text: 'save' }), cancel);
    view.editRow = el('tr', { class: 'edit-row', hidden: true }, el('td', { colspan: 9 }, editForm));
    edit.addEventListener('click', () => {
      const current = restreams.get(restream.id);
      editName.value = current ? current.data.name : '';
      editUri.value = '';
      view.editRow.hidden = false;
      editName.focus();
    });
    cancel.addEventListener('click', () => { view.editRow.hidden = true; });
    editForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      const changes = { name: editName.value.trim() };
      if (editUri.value.trim()) changes.uri = editUri.value.trim();
      const updated = await attempt(() => api('PATCH', `/streaming/restreams/${restream.id}`, { restream: changes }));
      if (updated) {
        view.editRow.hidden = true;
        upsertRestream(updated);
      }
    });
    del.addEventListener('click', async () => {
      const current = restreams.get(restream.id);
      if (!current || !window.confirm(`Delete destination "${current.data.name || maskUri(current.data.uri)}"?`)) return;
      const ok = await attempt(() => api('DELETE', `/streaming/restreams/${restream.id}`));
      if (ok !== undefined) removeRestream(restream.id);
    });
    return view;
  }

  function updateRestreamRow(entry) {
    const { data: restream, view } = entry;
    const status = restream.status || {};
    const state = status.state || (restream.active ? 'idle' : 'disabled');
    setText(view.name, restream.name || '(unnamed)');
    if (restream.uri !== undefined) setText(view.uri, maskUri(restream.uri));
    setText(view.state, state);
    view.state.dataset.state = state;
    view.graph.dataset.state = state;
    setText(view.uptime, state === 'running' ? fmtDuration(restreamUptime(status)) : '\u2014');
    setText(view.bitrateText, fmtRate(status.bitrate_kbps));
    const link = linkFacts(state === 'running' || state === 'starting' ? status : {});
    setText(view.link, link.text);
    view.link.dataset.transport = link.transport;
    view.link.title = link.title;
    setText(view.restarts, status.restarts || 0);
    setText(view.error, status.last_error || '');
    if (status.last_error) view.error.title = String(status.last_error);
    else view.error.removeAttribute('title');
    if (!view.active.disabled) view.active.checked = Boolean(restream.active);
    drawGraph(view.graph, `r${restream.id}`);
  }

  function upsertRestream(restream) {
    const owner = streams.get(restream.stream_id);
    let entry = restreams.get(restream.id);
    if (entry && entry.data.stream_id !== restream.stream_id) {
      removeRestream(restream.id);
      entry = undefined;
    }
    if (!owner) return;
    if (!entry) {
      entry = { data: restream, view: buildRestreamRow(restream) };
      restreams.set(restream.id, entry);
      const rows = owner.view.rows;
      const later = [...rows.querySelectorAll('tr.restream')]
        .find((row) => Number(row.dataset.restreamId) > restream.id);
      rows.insertBefore(entry.view.row, later || null);
      rows.insertBefore(entry.view.editRow, later || null);
      owner.view.emptyRow.hidden = true;
    } else {
      entry.data = { ...entry.data, ...restream };
    }
    updateRestreamRow(entry);
  }

  function removeRestream(id) {
    const entry = restreams.get(id);
    if (!entry) return;
    entry.view.row.remove();
    entry.view.editRow.remove();
    restreams.delete(id);
    history.delete(`r${id}`);
    const owner = streams.get(entry.data.stream_id);
    if (owner) owner.view.emptyRow.hidden = owner.view.rows.querySelector('tr.restream') !== null;
    refreshSummary();
  }

  function refreshSummary() {
    const live = [...streams.values()].filter((entry) => entry.data.live).length;
    const running = [...restreams.values()].filter((entry) => (entry.data.status || {}).state === 'running').length;
    setText($('summary'), `${streams.size} stream${streams.size === 1 ? '' : 's'} \u00b7 ${live} live \u00b7 `
      + `${running}/${restreams.size} destination${restreams.size === 1 ? '' : 's'} running`);
  }

  // Loading and the event feed ----------------------------------------------------------------
  async function reload() {
    if (reloading) return reloading;
    reloading = (async () => {
      const [streamList, restreamList] = await Promise.all([listAll('/streaming/streams'),
        listAll('/streaming/restreams')]);
      const streamIds = new Set(streamList.map((s) => s.id));
      for (const id of [...streams.keys()]) if (!streamIds.has(id)) removeStream(id);
      streamList.forEach(upsertStream);
      const restreamIds = new Set(restreamList.map((r) => r.id));
      for (const id of [...restreams.keys()]) if (!restreamIds.has(id)) removeRestream(id);
      restreamList.forEach(upsertRestream);
      placeStreams();
      refreshSummary();
    })();
    try {
      await reloading;
    } finally {
      reloading = null;
    }
    return undefined;
  }

  function scheduleReload() {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = null;
      attempt(reload);
    }, 300);
  }

  async function refreshStream(id) {
    if (!streams.has(id)) {
      scheduleReload();
      return;
    }
    const stream = await attempt(() => api('GET', `/streaming/streams/${id}`));
    if (stream) upsertStream(stream);
    refreshSummary();
  }

  function onStats(stats) {
    const now = Date.now() / 1000;
    let unknown = false;
    const seenStreams = new Set();
    for (const item of stats.streams || []) {
      seenStreams.add(item.id);
      const entry = streams.get(item.id);
      if (!entry) {
        unknown = true;
        continue;
      }
      record(`s${item.id}`, item.live ? (item.status || {}).bitrate_kbps : 0, now);
      const wasLive = entry.data.live;
      upsertStream(item);
      if (wasLive !== item.live) refreshStream(item.id);
    }
    const seenRestreams = new Set();
    for (const item of stats.restreams || []) {
      seenRestreams.add(item.id);
      if (!restreams.has(item.id)) {
        unknown = true;
        continue;
      }
      record(`r${item.id}`, (item.status || {}).bitrate_kbps, now);
      upsertRestream(item);
    }
    if (unknown || [...streams.keys()].some((id) => !seenStreams.has(id))
      || [...restreams.keys()].some((id) => !seenRestreams.has(id))) {
      scheduleReload();
    }
    refreshSummary();
  }

  function onEvent(kind, payload) {
    switch (kind) {
      case 'hello':
        setConnection('live', 'live feed');
        break;
      case 'stats':
        onStats(payload);
        break;
      case 'stream.live': {
        const entry = streams.get(payload.stream_id);
        if (entry) {
          const status = { ...(entry.data.status || {}), state: payload.state || (payload.live ? 'live' : 'offline') };
          upsertStream({ id: payload.stream_id, live: Boolean(payload.live), backup_live: Boolean(payload.backup_live),
            status });
          for (const rentry of restreams.values()) {
            if (rentry.data.stream_id === payload.stream_id) upsertRestream({ ...rentry.data, live: Boolean(payload.live) });
          }
        }
        refreshStream(payload.stream_id);
        break;
      }
      case 'stream.input':
        if (streams.has(payload.stream_id)) upsertStream({ id: payload.stream_id, input: payload.input });
        break;
      case 'stream.info':
        if (streams.has(payload.stream_id)) {
          const { client_id: _client, stream_id: id, ...fields } = payload;
          upsertStream({ id, ...fields });
        }
        break;
      case 'restream.status':
        if (restreams.has(payload.restream_id) && payload.status) {
          upsertRestream({ id: payload.restream_id, stream_id: restreams.get(payload.restream_id).data.stream_id,
            status: payload.status });
          refreshSummary();
        } else {
          scheduleReload();
        }
        break;
      case 'resync':
        scheduleReload();
        break;
      default:
        break;
    }
  }

  function parseBlock(block) {
    let kind = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') kind = value;
      else if (field === 'data') data.push(value);
    }
    if (!data.length) return;
    try {
      onEvent(kind, JSON.parse(data.join('\n')));
    } catch (error) {
      console.warn('event feed: unreadable event', kind, error);
    }
  }

  function setConnection(state, text) {
    const pill = $('connection');
    pill.className = `conn conn-${state}`;
    setText(pill, text);
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  async function runFeed(abort) {
    let backoff = 1000;
    while (!abort.signal.aborted) {
      const attemptAbort = new AbortController();
      const stop = () => attemptAbort.abort();
      abort.signal.addEventListener('abort', stop);
      let watchdog = setTimeout(stop, FEED_SILENCE_MS);
      try {
        const response = await fetch('/streaming/events', {
          headers: { Authorization: `APIKey ${apiKey}`, Accept: 'text/event-stream' },
          cache: 'no-store', signal: attemptAbort.signal,
        });
        if (response.status === 401) {
          signOut('The relay refused this key.');
          return;
        }
        if (!response.ok || !response.body) throw new Error(`event feed: HTTP ${response.status}`);
        backoff = 1000;
        await attempt(reload);  // catch up on whatever happened while the feed was down
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          clearTimeout(watchdog);
          watchdog = setTimeout(stop, FEED_SILENCE_MS);
          buffer += value.replace(/\r\n?/g, '\n');
          let end = buffer.indexOf('\n\n');
          while (end >= 0) {
            parseBlock(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            end = buffer.indexOf('\n\n');
          }
          if (buffer.length > 1 << 20) buffer = '';  // never from this relay; keep memory bounded anyway
        }
      } catch (error) {
        if (abort.signal.aborted) return;
      } finally {
        clearTimeout(watchdog);
        abort.signal.removeEventListener('abort', stop);
      }
      if (abort.signal.aborted) return;
      setConnection('retry', 'reconnecting\u2026');
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  // Sign in and out ---------------------------------------------------------------------------
  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    apiKey = null;
    if (feedAbort) feedAbort.abort();
    feedAbort = null;
    streams.clear();
    restreams.clear();
    history.clear();
    $('streams').replaceChildren();
    $('board').hidden = true;
    $('forget-key').hidden = true;
    $('login').hidden = false;
    setText($('summary'), '');
    setText($('login-error'), message || '');
    setConnection('off', 'not connected');
    $('key-input').focus();
  }

  async function signIn(key) {
    apiKey = key;
    try {
      await api('GET', '/streaming/streams?page=1');
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        $('login').hidden = false;
        setText($('login-error'), `The relay did not answer: ${error.message}`);
      }
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    $('login').hidden = true;
    $('board').hidden = false;
    $('forget-key').hidden = false;
    setText($('login-error'), '');
    setConnection('retry', 'connecting\u2026');
    feedAbort = new AbortController();
    runFeed(feedAbort);
  }

  function start() {
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const key = $('key-input').value.trim();
      $('key-input').value = '';
      if (key) signIn(key);
    });
    $('forget-key').addEventListener('click', () => signOut(''));
    $('new-stream-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      const name = form.elements.name.value.trim();
      if (!name) return;
      const created = await attempt(() => api('POST', '/streaming/streams', { name }));
      if (created) {
        form.reset();
        upsertStream(created);
        refreshSummary();
      }
    });
    window.addEventListener('resize', () => {
      for (const [id, entry] of streams) drawGraph(entry.view.graph, `s${id}`);
      for (const [id, entry] of restreams) drawGraph(entry.view.graph, `r${id}`);
    });
    if (apiKey) signIn(apiKey);
    else signOut('');
  }

  start();
})();
