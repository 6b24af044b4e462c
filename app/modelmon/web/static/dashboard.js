// modelmon dashboard: vanilla JS + hand-drawn SVG, no dependencies, no build step.
// Data: /api/v1/models, /api/v1/models/{model}, /api/v1/models/{model}/windows, /api/v1/alerts.
// Every drawn point, headline number and table cell carries data-* attributes with the API's raw value
// (JSON text). Text from events goes into the page escaped (esc) or as text nodes (the panels' el()).
'use strict';
(() => {
  // Every refresh reads the newest TAIL_MS of event time of the range again; the whole range is read
  // again every FULL_MS (older windows change with late labels) and whenever the selection changes.
  const REFRESH_MS = 5000, TIMEOUT_MS = 15000, FULL_MS = 60000, TAIL_MS = 900000, TOKEN_KEY = 'modelmon.token';
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const isNum = (v) => typeof v === 'number' && isFinite(v);
  const raw = (v) => (v === undefined ? 'null' : JSON.stringify(v));
  const exact = (v) => (isNum(v) ? esc(raw(v)) : '—');
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const pad = (n) => String(n).padStart(2, '0');
  const iso = (t) => new Date(t).toISOString().replace('.000Z', 'Z');
  const utc = (t) => new Date(t).toISOString().replace('T', ' ').replace(/(\.000)?Z$/, ' UTC');
  const hm = (t, sec) => {
    const d = new Date(t);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${sec ? ':' + pad(d.getUTCSeconds()) : ''}`;
  };
  const get = (o, path) => path.split('.').reduce((a, k) => (a == null ? null : a[k]), o);
  const SEV = { critical: 0, warning: 1, info: 2 };

  // ---------------------------------------------------------------- formatting (display only)
  const fix = (v, d) => (isNum(v) ? v.toFixed(d) : '—');
  const fmt = {
    pct: (v) => (isNum(v) ? `${(v * 100).toFixed(1)}%` : '—'),
    rate: (v) => (isNum(v) ? `${fix(v, v >= 100 ? 0 : v >= 10 ? 1 : 2)}/s` : '—'),
    ms: (v) => (isNum(v) ? `${fix(v, v >= 100 ? 0 : v >= 10 ? 1 : 2)} ms` : '—'),
    num: (v) => (isNum(v) ? String(Number(v.toPrecision(4))) : '—'),
    int: (v) => (isNum(v) ? v.toLocaleString('en-US') : '—'),
    dur: (s) => {
      if (!isNum(s)) return '—';
      const a = Math.abs(s);
      return a < 60 ? `${s.toFixed(1)} s` : a < 3600 ? `${(s / 60).toFixed(1)} min`
        : a < 86400 ? `${(s / 3600).toFixed(1)} h` : `${(s / 86400).toFixed(1)} d`;
    },
  };
  fmt.bytes = (v) => (!isNum(v) ? '—' : v < 1024 ? `${Math.round(v)} B` : v < 1048576 ? `${(v / 1024).toFixed(1)} KiB`
    : `${(v / 1048576).toFixed(1)} MiB`);
  // p-values: an exact 0 is a p-value below what the test's floating-point normal CDF can represent.
  fmt.p = (v) => (!isNum(v) ? '—' : v === 0 ? '≈ 0' : v < 0.001 ? v.toExponential(1) : String(Number(v.toPrecision(2))));
  fmt.pts = (v) => (isNum(v) ? `${v > 0 ? '+' : v < 0 ? '−' : ''}${Math.abs(v * 100).toFixed(1)} pts` : '—');
  fmt.signed = (v) => (isNum(v) ? `${v > 0 ? '+' : v < 0 ? '−' : ''}${fmt.num(Math.abs(v))}` : '—');
  const span = (t) => fmt.dur(t / 1000).replace(/\.0 /, ' ');

  // ---------------------------------------------------------------- state
  const q = new URLSearchParams(location.search);
  const st = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    sel: q.get('model') ? { model: q.get('model'), version: q.has('version') ? q.get('version') || null : undefined } : null,
    range: [900, 3600, 21600, 86400].includes(+q.get('range')) ? +q.get('range') : 3600,
    models: [], firing: [], recent: [], data: null, error: null, lastOk: null,
    paused: false, busy: false, again: false, timer: 0, hover: null, renders: 0, optKey: '',
  };
  const tokenMatch = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (tokenMatch) {
    st.token = decodeURIComponent(tokenMatch[1]);
    sessionStorage.setItem(TOKEN_KEY, st.token);
    history.replaceState(null, '', location.pathname + location.search);
  }

  // ---------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(status, code, message, path) {
      super(message);
      Object.assign(this, { status, code, path });
    }
  }
  async function api(path) {
    const headers = { Accept: 'application/json' };
    if (st.token) headers.Authorization = `Bearer ${st.token}`;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    let res, body = null;
    try {
      res = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store' });
      body = await res.json().catch(() => null);
    } catch (e) {
      throw new ApiError(0, 'unreachable', e.name === 'AbortError' ? 'no answer in 15 s' : 'the server cannot be reached', path);
    } finally {
      clearTimeout(timer);
    }
    if (!res.ok) {
      const err = (body && body.error) || {};
      throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || res.statusText, path);
    }
    return body;
  }

  const keyOf = (m, v) => JSON.stringify([m, v == null ? null : v]);
  const currentMv = () => st.sel && st.models.find((m) => m.model === st.sel.model && m.model_version === st.sel.version);
  const alertsOf = (list, m, v) => list.filter((a) => a.model === m && (a.version == null || a.version === v));

  function choose() {
    const s = st.sel;
    if (s && s.version === undefined) {
      // no version given: the model's first versioned series (the versionless one holds dead letters)
      const mine = st.models.filter((m) => m.model === s.model);
      const first = mine.find((m) => m.model_version != null) || mine[0];
      st.sel = first ? { model: first.model, version: first.model_version } : null;
    }
    if (!currentMv()) {
      // Default: the model of the most severe firing alert (the list is sorted), else the first versioned
      // model with a task (the versionless series often hold only dead-lettered events), else the first.
      const hot = st.firing.map((a) => st.models.find((m) => m.model === a.model && (a.version == null || m.model_version === a.version))).find(Boolean);
      const pick = hot || st.models.find((m) => m.task && m.model_version != null && m.model !== '__unknown__') || st.models[0];
      st.sel = pick ? { model: pick.model, version: pick.model_version } : null;
    }
    const p = new URLSearchParams();
    if (st.sel) {
      p.set('model', st.sel.model);
      p.set('version', st.sel.version == null ? '' : st.sel.version);
    }
    p.set('range', st.range);
    history.replaceState(null, '', `${location.pathname}?${p}`);
  }

  async function refresh() {
    if (st.busy) { st.again = true; return; }
    st.busy = true;
    clearTimeout(st.timer);
    try {
      const [models, firing, recent] = await Promise.all([
        api('api/v1/models'), api('api/v1/alerts?state=firing&limit=1000'), api('api/v1/alerts?limit=50'),
      ]);
      st.models = models.models;
      st.firing = firing.alerts.filter((a) => a.state === 'firing')
        .sort((a, b) => (SEV[a.severity] ?? 3) - (SEV[b.severity] ?? 3) || Date.parse(b.ts) - Date.parse(a.ts));
      st.recent = recent.alerts.filter((a) => a.state !== 'firing');
      choose();
      const mv = currentMv();
      let data = null;
      if (mv) {
        const to = Date.parse(mv.last_window_end), from = to - st.range * 1000;
        const base = `api/v1/models/${enc(mv.model)}`, vq = `version=${enc(mv.model_version == null ? '' : mv.model_version)}`;
        const key = JSON.stringify([mv.model, mv.model_version, st.range]), c = st.cache;
        const full = !c || c.key !== key || to < c.to || Date.now() - c.fullAt > FULL_MS;
        const qFrom = full ? from : Math.max(from, c.to - TAIL_MS);
        // The model without a version filter: every version's summary and views (the comparison table).
        const [summary, win] = await Promise.all([
          api(base),
          api(`${base}/windows?${vq}&from=${enc(iso(qFrom))}&to=${enc(iso(to))}&limit=10000`),
        ]);
        const sum = summary.versions.find((v) => v.model_version === mv.model_version) || null;
        let ws = prepare(win.windows), truncated = win.truncated;
        if (full) st.cache = { key, to, fullAt: Date.now(), ws, truncated };
        else {
          ws = c.ws.filter((p) => p.t0 >= from && p.t0 < qFrom).concat(ws);
          truncated = c.truncated || truncated;
          Object.assign(c, { to, ws, truncated });
        }
        data = { mv, sum, all: summary.versions, truncated, from, to, ws };
      }
      st.data = data;
      st.error = null;
      st.lastOk = new Date();
      render();
    } catch (e) {
      st.error = e instanceof ApiError ? e : new ApiError(0, 'internal', String(e), '');
      if (st.error.status === 404 && st.error.code === 'not_found') st.sel = null;
      renderStatus();
    } finally {
      st.busy = false;
      if (st.again) { st.again = false; refresh(); } else schedule();
    }
  }
  function schedule() {
    clearTimeout(st.timer);
    if (!st.paused && !document.hidden && !(st.error && st.error.status === 401)) st.timer = setTimeout(refresh, REFRESH_MS);
    renderUpdated();
  }
  function prepare(windows) {
    return windows.map((w) => {
      const t0 = Date.parse(w.window.start), t1 = Date.parse(w.window.end);
      return { w, t0, t1, tc: (t0 + t1) / 2 };
    });
  }

  // ---------------------------------------------------------------- rendering: status
  function renderUpdated() {
    const el = $('updated');
    if (!st.lastOk) { el.textContent = st.error ? 'No data yet.' : 'Loading…'; return; }
    const when = st.lastOk.toLocaleTimeString();
    el.dataset.time = st.lastOk.toISOString();
    el.textContent = `Last updated ${when}` + (st.paused ? ' · paused' : document.hidden ? ' · paused while hidden'
      : st.error ? '' : ` · refresh every ${REFRESH_MS / 1000} s`);
  }
  function renderStatus() {
    const e = st.error, ban = $('error'), tf = $('token-form');
    document.body.dataset.state = e ? (e.status === 401 ? 'token' : 'error') : 'ok';
    $('main').classList.toggle('stale', !!e && !!st.lastOk);
    tf.hidden = !(e && e.status === 401);
    if (e && e.status === 401) {
      $('token-msg').textContent = st.token ? 'The token was refused.' : '';
      ban.hidden = true;
      if (document.activeElement !== $('token')) $('token').focus();
    } else if (e) {
      ban.hidden = false;
      ban.dataset.status = e.status;
      ban.dataset.code = e.code;
      const what = e.status ? `API error ${e.status} (${e.code})` : 'API unreachable';
      const kept = st.lastOk ? ` Showing the data of ${st.lastOk.toLocaleTimeString()};` : '';
      ban.textContent = `${what}: ${e.message}.${kept} retrying every ${REFRESH_MS / 1000} s.`;
    } else ban.hidden = true;
    const n = st.firing.length, pill = $('firing-count');
    pill.hidden = !n;
    pill.textContent = `${n} firing`;
    pill.className = `pill sev-${n ? st.firing[0].severity : 'info'}`;
    document.title = `${n ? `(${n} firing) ` : ''}modelmon`;
    renderUpdated();
  }

  function render() {
    const t = performance.now();
    renderStatus();
    renderSelect();
    renderModels();
    renderAlerts();
    renderModel();
    document.body.dataset.renders = ++st.renders;
    document.body.dataset.renderMs = Math.round(performance.now() - t);
  }

  function mvLabel(m, v) { return v == null ? m : `${m}@${v}`; }
  function renderSelect() {
    const opts = st.models.map((m) => {
      const n = alertsOf(st.firing, m.model, m.model_version).length;
      return { m, n, text: (m.model_version == null ? `${m.model} (no version)` : `${m.model} @ ${m.model_version}`) + (n ? ` — ${n} firing` : '') };
    });
    const key = opts.map((o) => o.text).join('\n');
    const sel = $('model');
    if (key !== st.optKey) {
      st.optKey = key;
      sel.innerHTML = opts.map((o) => `<option value="${esc(keyOf(o.m.model, o.m.model_version))}" data-model="${esc(o.m.model)}" `
        + `data-version="${esc(o.m.model_version == null ? '' : o.m.model_version)}">${esc(o.text)}</option>`).join('');
    }
    if (st.sel) sel.value = keyOf(st.sel.model, st.sel.version);
    $('range').value = String(st.range);
  }

  function renderModels() {
    $('empty').hidden = st.models.length > 0;
    $('models').tBodies[0].innerHTML = st.models.map((m) => {
      const n = alertsOf(st.firing, m.model, m.model_version).length;
      const on = st.sel && st.sel.model === m.model && st.sel.version === m.model_version;
      return `<tr data-model="${esc(m.model)}" data-version="${esc(m.model_version == null ? '' : m.model_version)}"${on ? ' class="on" aria-current="true"' : ''}>`
        + `<td><a href="?model=${enc(m.model)}&amp;version=${enc(m.model_version || '')}">${esc(m.model)}</a></td>`
        + `<td>${esc(m.model_version == null ? '—' : m.model_version)}</td><td>${esc(m.task || '—')}</td>`
        + `<td class="n">${m.windows}</td><td>${esc(utc(Date.parse(m.last_window_end)))}</td>`
        + `<td class="n${n ? ' hot' : ''}">${n}</td></tr>`;
    }).join('');
  }

  function alertItem(a) {
    const mv = st.models.filter((m) => m.model === a.model && (a.version == null || m.model_version === a.version));
    const now = Math.max(...mv.map((m) => Date.parse(m.last_window_end)), Date.parse(a.ts));
    const since = Date.parse(a.started_at || a.ts);
    const when = a.state === 'resolved' ? `resolved ${esc(utc(Date.parse(a.ts)))}` : `since ${esc(utc(since))} · ${span(now - since)}`;
    return `<li class="alert sev-${esc(a.severity)}" data-id="${esc(a.id)}" data-rule="${esc(a.rule)}" data-model="${esc(a.model)}" `
      + `data-version="${esc(a.version == null ? '' : a.version)}" data-severity="${esc(a.severity)}" data-state="${esc(a.state)}">`
      + `<span class="sev">${esc(a.severity)}${a.state === 'firing' ? '' : ` · ${esc(a.state)}`}</span> <b class="rule">${esc(a.rule)}</b> `
      + `<a class="mv" href="?model=${enc(a.model)}${a.version == null ? '' : `&amp;version=${enc(a.version)}`}">${esc(mvLabel(a.model, a.version))}</a>`
      + `<span class="msg">${esc(a.message)}</span><span class="since">${when}</span></li>`;
  }
  function renderAlerts() {
    $('alerts').innerHTML = st.firing.map(alertItem).join('') || '<li class="none">No firing alerts.</li>';
    $('recent').innerHTML = st.recent.slice(0, 20).map(alertItem).join('') || '<li class="none">None.</li>';
  }

  // ---------------------------------------------------------------- rendering: the selected model
  function seriesOf(clf) {
    const first = clf
      ? { id: 'accuracy', title: 'Accuracy per window, with its 95% confidence band', path: 'classification.accuracy',
        lo: 'classification.accuracy_ci_low', hi: 'classification.accuracy_ci_high', fmt: fmt.pct, pct: true }
      : { id: 'mae', title: 'Mean absolute error per window', path: 'regression.mae', fmt: fmt.num, zero: true };
    return [first,
      { id: 'rate', title: 'Traffic (predictions per second)', path: 'traffic.rate_per_s', fmt: fmt.rate, zero: true, unit: ' /s' },
      { id: 'latency_p95', title: 'Latency p95', path: 'latency.p95_ms', fmt: fmt.ms, zero: true, unit: ' ms' },
      { id: 'coverage', title: 'Label coverage', path: 'labels.coverage', fmt: fmt.pct, pct: true, fixed: [0, 1] },
      { id: 'delay_p95', title: 'Label delay p95', path: 'labels.delay_p95_s', fmt: fmt.dur, zero: true, dur: true }];
  }
  const isClf = (d) => (d.mv.task ? d.mv.task === 'classification'
    : !d.ws.some((p) => p.w.regression) || d.ws.some((p) => p.w.classification));

  function renderModel() {
    const d = st.data, sec = $('model-section');
    sec.hidden = !d;
    if (!d) return;
    const clf = isClf(d), mv = d.mv;
    const firing = alertsOf(st.firing, mv.model, mv.model_version);
    $('model-title').innerHTML = `${esc(mvLabel(mv.model, mv.model_version))} <small>${esc(mv.task || (clf ? 'classification' : 'regression'))}</small>`
      + (firing.length ? ` <span class="pill sev-${esc(firing[0].severity)}">${firing.length} firing: ${esc(firing.map((a) => a.rule).join(', '))}</span>` : '');
    const upd = mv.updated_at ? ` · series changed ${esc(new Date(Date.parse(mv.updated_at)).toLocaleTimeString())}` : '';
    $('model-info').innerHTML = `${mv.windows} windows retained from ${esc(utc(Date.parse(mv.first_window_start)))}`
      + ` · newest window ends <time datetime="${esc(mv.last_window_end)}">${esc(utc(d.to))}</time> (event time)${upd}`
      + (d.truncated ? ` · <strong>only the newest ${d.ws.length} windows of the range are shown</strong>` : '');
    renderHeadline(d, clf);
    renderCharts();
    renderVersions(d, clf);
    renderErrors(d, clf);
    renderQuality(d);
  }

  function field(src, path, v, f) {
    return `<span data-field="${esc(`${src}.${path}`)}" data-value="${esc(raw(v))}">${esc(f(v))}</span>`;
  }
  function renderHeadline(d, clf) {
    const sum = d.sum || {}, views = sum.views || {};
    const cols = [['views.5m', views['5m']], ['views.1h', views['1h']], ['views.24h', views['24h']], ['current', sum.current]];
    const names = ['5m', '1h', '24h', 'last window'];
    const cards = [
      clf ? { t: 'Accuracy', p: 'classification.accuracy', f: fmt.pct, ci: true, n: ['labels.labelled', 'labels'] }
        : { t: 'MAE', p: 'regression.mae', f: fmt.num, n: ['labels.labelled', 'labels'] },
      { t: 'Traffic', p: 'traffic.rate_per_s', f: fmt.rate, n: ['traffic.predictions', 'predictions'] },
      { t: 'Latency p95', p: 'latency.p95_ms', f: fmt.ms },
      { t: 'Label coverage', p: 'labels.coverage', f: fmt.pct },
      { t: 'Label delay p95', p: 'labels.delay_p95_s', f: fmt.dur },
    ];
    const ci = (src, ev) => {
      const lo = get(ev, 'classification.accuracy_ci_low'), hi = get(ev, 'classification.accuracy_ci_high');
      return ` <span class="ci">[${field(src, 'classification.accuracy_ci_low', lo, fmt.pct)} – ${field(src, 'classification.accuracy_ci_high', hi, fmt.pct)}]</span>`;
    };
    $('headline').innerHTML = cards.map((c) => {
      const [src, ev] = cols[0];
      const v5 = get(ev, c.p), hi5 = get(ev, 'classification.accuracy_ci_high'), v1 = get(views['1h'], c.p);
      const bad = c.ci && isNum(hi5) && isNum(v1) && hi5 < v1; // the 5m interval lies wholly below the hour's accuracy
      let h = `<div class="card${bad ? ' bad' : ''}" data-metric="${esc(c.p)}"><h3>${c.t} <small>5m</small></h3>`
        + `<p class="big">${field(src, c.p, v5, c.f)}</p>`;
      if (c.ci) h += `<p class="sub">95% CI${ci(src, ev)}</p>`;
      if (c.n) h += `<p class="sub">${field(src, c.n[0], get(ev, c.n[0]), fmt.int)} ${c.n[1]}</p>`;
      if (bad) h += '<p class="sub warn">below the last hour</p>';
      h += '<dl>' + cols.slice(1).map(([s, e], i) => `<dt>${names[i + 1]}</dt><dd>${field(s, c.p, get(e, c.p), c.f)}${c.ci ? ci(s, e) : ''}</dd>`).join('') + '</dl>';
      return h + '</div>';
    }).join('');
  }

  // ---------------------------------------------------------------- panels: error analysis, versions, data quality
  // Built with DOM calls, never innerHTML: text from events only ever becomes text nodes or attribute values.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null && v !== false) e.setAttribute(k, String(v));
    for (const k of kids.flat(Infinity)) if (k != null && k !== false && k !== '') e.append(k instanceof Node ? k : String(k));
    return e;
  }
  // A number cell: shown formatted, with the API's raw value and where it comes from (relative to its row).
  const cell = (path, v, f, ...extra) => el('td', { class: 'n', 'data-field': path, 'data-value': raw(v) }, f(v), ...extra);
  const ciOf = (lo, hi, loPath, hiPath) => (isNum(lo) || isNum(hi) ? el('span', { class: 'ci' }, ' [',
    el('span', { 'data-field': loPath, 'data-value': raw(lo) }, fmt.pct(lo)), ' – ',
    el('span', { 'data-field': hiPath, 'data-value': raw(hi) }, fmt.pct(hi)), ']') : null);
  const table = (attrs, heads, rows, caption) => el('div', { class: 'scroll' }, el('table', { class: 'tbl', ...attrs },
    caption ? el('caption', null, caption) : null,
    el('thead', null, el('tr', null, heads.map((t) => el('th', { scope: 'col' }, t)))), el('tbody', null, rows)));
  const put = (box, ...kids) => box.replaceChildren(...kids.filter((k) => k != null));
  const note = (attrs, ...kids) => el('p', { class: 'note', ...attrs }, ...kids);
  const period = (ev) => {
    const t0 = Date.parse(ev.window.start), t1 = Date.parse(ev.window.end);
    return `${hm(t0)}–${hm(t1)} UTC ${new Date(t1 - 1).toISOString().slice(0, 10)}`;
  };
  const vname = (v) => (v == null ? '(no version)' : v);

  function renderErrors(d, clf) {
    const ev = get(d.sum, 'views.1h'), box = $('errors');
    box.dataset.version = d.mv.model_version == null ? '' : d.mv.model_version;
    box.dataset.end = ev ? ev.window.end : '';
    $('errors-when').textContent = ev ? `1h view ${period(ev)} · ${fmt.int(get(ev, 'labels.labelled'))} labelled of `
      + `${fmt.int(get(ev, 'traffic.predictions'))} predictions` : '';
    if (!ev) { box.replaceChildren(note(null, 'No 1h view of this version yet.')); return; }
    const ea = ev.error_analysis || null, ws = ea ? ea.worst_slices : null, parts = [el('h4', null, 'Worst slices')];
    if (!ws) {
      parts.push(note({ id: 'worst-none' }, ea ? 'No slice analysis: the labelled predictions of this hour carry no segment tags.'
        : 'No slice analysis: no labels in this hour.'));
    } else if (!ws.slices || !ws.slices.length) {
      parts.push(note({ id: 'worst-none', 'data-tested': raw(ws.tested), 'data-alpha': raw(ws.alpha), 'data-significant': raw(ws.significant) },
        el('b', null, `No slice significantly worse (${ws.tested} tested, α = ${ws.alpha}).`),
        ` Test: ${ws.test}; a slice is tested with at least ${ws.min_labelled} labels in it and outside it.`));
    } else {
      const acc = ws.slices[0].metric === 'accuracy';
      parts.push(table({ id: 'worst-slices', 'data-test': ws.test },
        ['#', 'slice', 'labelled', acc ? 'accuracy [95% CI]' : 'MAE', acc ? 'rest accuracy' : 'rest MAE', 'difference',
          acc ? 'excess errors' : 'excess abs. error', 'p-value', 'adjusted p'],
        ws.slices.map((s, i) => {
          const a = s.metric === 'accuracy', f = a ? fmt.pct : fmt.num;
          return el('tr', { 'data-key': s.key, 'data-value': s.value, 'data-rank': i + 1 },
            el('td', { class: 'n' }, i + 1), el('th', { scope: 'row' }, `${s.key} = ${s.value}`),
            cell('labelled', s.labelled, fmt.int), cell('slice', s.slice, f, ciOf(s.ci_low, s.ci_high, 'ci_low', 'ci_high')),
            cell('rest', s.rest, f), cell('difference', s.difference, a ? fmt.pts : fmt.signed),
            cell('excess', s.excess, fmt.num), cell('p_value', s.p_value, fmt.p), cell('p_adjusted', s.p_adjusted, fmt.p));
        })));
      parts.push(note({ id: 'worst-test' }, `${ws.significant} of ${ws.tested} tested slices significantly worse than the rest at `
        + `α = ${ws.alpha} (family-wise)${ws.significant > ws.slices.length ? `, the worst ${ws.slices.length} listed` : ''}; `
        + `ranked by excess ${acc ? 'errors' : 'absolute error'}. Test: ${ws.test}.`));
    }

    parts.push(el('h4', null, 'Most confused classes'));
    const pairs = ea ? ea.confused_pairs : null;
    if (pairs && pairs.length) {
      parts.push(table({ id: 'confused', class: 'tbl fit' }, ['true → predicted', 'count', 'share of errors'], pairs.map((p) =>
        el('tr', { 'data-true': p.true, 'data-predicted': p.predicted },
          el('th', { scope: 'row' }, `${p.true} → ${p.predicted}`), cell('count', p.count, fmt.int),
          cell('share_of_errors', p.share_of_errors, fmt.pct)))));
    } else {
      parts.push(note({ id: 'confused-none' }, !clf ? 'Not applicable: a regression model.'
        : pairs ? 'No mistakes among the labelled predictions.' : 'No classification labels in this hour.'));
    }

    parts.push(el('h4', null, 'Segments'));
    const keys = get(ev, 'segments.keys');
    if (!keys || !Object.keys(keys).length) parts.push(note({ id: 'segments-none' }, 'No segment tags in this hour.'));
    else {
      parts.push(el('div', { class: 'segs' }, Object.entries(keys).map(([key, k]) => table({ class: 'tbl seg', 'data-key': key },
        ['value', 'predictions', 'share', 'error rate', 'labelled', clf ? 'accuracy [95% CI]' : 'MAE'],
        (k.values || []).map((r) => el('tr', { 'data-value': r.value },
          el('th', { scope: 'row' }, r.value === '__other__' ? el('i', null, 'other values') : r.value),
          cell('predictions', r.predictions, fmt.int), cell('share', r.share, fmt.pct), cell('error_rate', r.error_rate, fmt.pct),
          cell('labelled', r.labelled, fmt.int),
          clf ? cell('accuracy', r.accuracy, fmt.pct, ciOf(r.accuracy_ci_low, r.accuracy_ci_high, 'accuracy_ci_low', 'accuracy_ci_high'))
            : cell('mae', r.mae, fmt.num))),
        `${key}: ${k.distinct} distinct value${k.distinct === 1 ? '' : 's'}`
          + (k.folded_by_cap ? ' (values beyond the per-window cap folded into other values)' : '')))));
      if (get(ev, 'segments.keys_capped')) parts.push(note(null, 'More segment keys were seen than tracked (the 32 smallest names are kept).'));
    }
    put(box, ...parts);
  }

  // Version comparison. A value is marked when it is markedly worse than the best version's: accuracy when
  // the two 95% intervals do not overlap; error rate and label coverage when a pooled two-proportion z-test
  // gives |z| >= Z; latency and payload p50/p95 and MAE when at least RATIO times the best. Only versions with
  // enough data take part (min of n): 30 predictions for the proportions, TAIL predictions beyond a
  // percentile, MAE_N labels. p99 is shown but never marked: one hour rarely holds enough of the tail.
  const RATIO = 1.25, Z = 3, TAIL = 50, MAE_N = 200;
  function compareCols(clf) {
    const q = (v) => ({ p50: 0.5, p95: 0.95, p99: 0.99 })[v];
    const lat = (v) => ({ p: `latency.${v}_ms`, t: `latency ${v}`, f: fmt.ms, rule: v === 'p99' ? null : 'ratio', up: true,
      n: 'traffic.predictions', min: Math.round(TAIL / (1 - q(v))) });
    const pay = (v) => ({ p: `payload.${v}_bytes`, t: `payload ${v}`, f: fmt.bytes, rule: 'ratio', up: true, n: 'payload.n',
      min: Math.round(TAIL / (1 - q(v))) });
    return [
      { p: 'traffic.predictions', t: 'predictions', f: fmt.int },
      { p: 'traffic.rate_per_s', t: 'rate', f: fmt.rate },
      { p: 'traffic.error_rate', t: 'error rate', f: fmt.pct, rule: 'prop', up: true, k: 'traffic.errors', n: 'traffic.predictions', min: 30 },
      lat('p50'), lat('p95'), lat('p99'), pay('p50'), pay('p95'),
      clf ? { p: 'classification.accuracy', t: 'accuracy [95% CI]', f: fmt.pct, rule: 'ci', up: false, ci: true }
        : { p: 'regression.mae', t: 'MAE', f: fmt.num, rule: 'ratio', up: true, n: 'labels.labelled', min: MAE_N },
      { p: 'labels.coverage', t: 'label coverage', f: fmt.pct, rule: 'prop', up: false, k: 'labels.labelled', n: 'traffic.predictions', min: 30 },
    ];
  }
  const RULE_TEXT = { ci: 'its 95% interval lies wholly below', prop: `a two-proportion z-test gives |z| ≥ ${Z} against`,
    ratio: `at least ${RATIO}× the value of` };
  // Map: index of a markedly worse event in evs -> index of the best one it was compared with.
  function worseOf(c, evs) {
    const out = new Map();
    if (!c.rule) return out;
    const lo = 'classification.accuracy_ci_low', hi = 'classification.accuracy_ci_high';
    const rows = evs.map((e, i) => ({ i, e, v: get(e, c.p) })).filter((r) => isNum(r.v) && (!c.n || get(r.e, c.n) >= c.min)
      && (c.rule !== 'ci' || (isNum(get(r.e, lo)) && isNum(get(r.e, hi)))));
    if (rows.length < 2) return out;
    const best = rows.reduce((a, b) => ((c.up ? b.v < a.v : b.v > a.v) ? b : a));
    for (const r of rows) {
      if (r === best) continue;
      let bad;
      if (c.rule === 'ci') bad = get(r.e, hi) < get(best.e, lo);
      else if (c.rule === 'ratio') bad = r.v > best.v && r.v >= RATIO * best.v;
      else {
        const k1 = get(r.e, c.k), n1 = get(r.e, c.n), k2 = get(best.e, c.k), n2 = get(best.e, c.n);
        const pp = (k1 + k2) / (n1 + n2), se = Math.sqrt(pp * (1 - pp) * (1 / n1 + 1 / n2));
        bad = se > 0 && ((c.up ? 1 : -1) * (k1 / n1 - k2 / n2)) / se >= Z;
      }
      if (bad) out.set(r.i, best.i);
    }
    return out;
  }
  function renderVersions(d, clf) {
    const mine = st.models.filter((m) => m.model === d.mv.model);
    const byKey = new Map((d.all || []).map((v) => [keyOf(v.model, v.model_version), v]));
    const evs = mine.map((m) => get(byKey.get(keyOf(m.model, m.model_version)), 'views.1h'));
    const cols = compareCols(clf), marks = cols.map((c) => worseOf(c, evs));
    const rows = mine.map((m, i) => {
      const ev = evs[i], on = m.model_version === d.mv.model_version;
      return el('tr', { 'data-model': m.model, 'data-version': m.model_version == null ? '' : m.model_version,
        class: on ? 'on' : null, 'aria-current': on ? 'true' : null },
      el('th', { scope: 'row' }, el('a', { class: 'mv', href: `?model=${enc(m.model)}&version=${enc(m.model_version || '')}` },
        vname(m.model_version))),
      el('td', { 'data-field': 'window.end', 'data-value': raw(ev ? ev.window.end : null), title: ev ? ev.window.end : null },
        ev ? utc(Date.parse(ev.window.end)).slice(5, 16) : '—'),
      cols.map((c, k) => {
        const td = cell(c.p, get(ev, c.p), c.f, c.ci ? ciOf(get(ev, 'classification.accuracy_ci_low'),
          get(ev, 'classification.accuracy_ci_high'), 'classification.accuracy_ci_low', 'classification.accuracy_ci_high') : null);
        if (marks[k].has(i)) {
          td.classList.add('worse');
          td.dataset.worse = 'true';
          td.title = `Markedly worse: ${RULE_TEXT[c.rule]} version ${vname(mine[marks[k].get(i)].model_version)}`;
        }
        return td;
      }));
    });
    $('versions').replaceChildren(
      table({ id: 'versions-table' }, ['version', '1h view ends (UTC)', ...cols.map((c) => c.t)], rows),
      note(null, `Each version's 1h view: the hour up to that version's newest window.${mine.length < 2 ? ' This model has one version.' : ''}`
        + ` Marked in red: a value markedly worse than the best version's. Accuracy: the 95% intervals do not overlap; error rate and`
        + ` label coverage: two-proportion z-test |z| ≥ ${Z} (30+ predictions); latency and payload p50/p95: at least ${RATIO}× the best,`
        + ` with ${TAIL}+ predictions beyond the percentile${clf ? '' : `; MAE: at least ${RATIO}× the best, with ${MAE_N}+ labels`}.`
        + ' p99 is not marked (an hour rarely holds enough of the tail).'));
  }

  function renderQuality(d) {
    const ev = d.sum ? d.sum.current : null, box = $('quality');
    box.dataset.start = ev ? ev.window.start : '';
    $('quality-when').textContent = ev ? `newest window ${period(ev)}` : '';
    const dq = ev ? ev.data_quality : null, feats = Object.entries((dq && dq.features) || {});
    if (!feats.length) { box.replaceChildren(note({ id: 'quality-none' }, 'No prediction of the newest window carried features.')); return; }
    const ref = feats.some(([, f]) => 'reference_kind' in f);
    const rows = feats.map(([name, f]) => el('tr', { 'data-feature': name }, el('th', { scope: 'row' }, name),
      cell('present', f.present, fmt.int), cell('missing_rate', f.missing_rate, fmt.pct),
      el('td', { 'data-field': 'reference_kind', 'data-value': raw(f.reference_kind) },
        'reference_kind' in f ? (f.reference_kind == null ? 'not in reference' : f.reference_kind) : '—'),
      cell('type_change_share', f.type_change_share, fmt.pct), cell('out_of_range_share', f.out_of_range_share, fmt.pct)));
    put(box, table({ id: 'quality-table', class: 'tbl fit' },
      ['feature', 'present', 'missing rate', 'reference kind', 'type-change share', 'out-of-range share'], rows),
    ref ? null : note({ id: 'quality-noref' }, 'No reference to compare with yet: a version\'s reference is its first'
      + ' MODELMON_REFERENCE_S of event time, used once that period is complete.'),
    dq.capped ? note(null, 'More features were seen than tracked (the 64 smallest names are kept).') : null);
  }

  // ---------------------------------------------------------------- charts
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) hi = lo + 1;
    const raw0 = (hi - lo) / n, p = Math.pow(10, Math.floor(Math.log10(raw0))), f = raw0 / p;
    const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
    const a = Math.floor(lo / step + 1e-9) * step, b = Math.ceil(hi / step - 1e-9) * step, ticks = [];
    for (let v = a; v <= b + step / 2; v += step) ticks.push(Number(v.toFixed(12)));
    return { lo: a, hi: b, step, ticks };
  }
  const TSTEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
  function timeTicks(from, to, width) {
    const maxN = Math.max(2, Math.floor(width / 78));
    const step = TSTEPS.find((s) => (to - from) / s <= maxN) || 86400000, ticks = [];
    for (let t = Math.ceil(from / step) * step; t <= to; t += step) ticks.push(t);
    return { step, ticks };
  }

  function drawChart(s, d, width, spans) {
    const H = 150, ml = 56, mr = 12, mt = 8, mb = 22, pw = Math.max(40, width - ml - mr), ph = H - mt - mb;
    const { from, to, ws } = d;
    const vals = [], segs = [];
    let seg = null, prevEnd = null;
    ws.forEach((p, i) => {
      const v = get(p.w, s.path);
      if (!isNum(v) || (prevEnd !== null && p.t0 > prevEnd + 1)) seg = null;
      prevEnd = p.t1;
      if (!isNum(v)) return;
      const pt = { i, p, v, lo: s.lo ? get(p.w, s.lo) : null, hi: s.hi ? get(p.w, s.hi) : null };
      if (!seg) segs.push((seg = []));
      seg.push(pt);
      vals.push(v);
      if (isNum(pt.lo)) vals.push(pt.lo);
      if (isNum(pt.hi)) vals.push(pt.hi);
    });
    let lo = vals.length ? Math.min(...vals) : 0, hi = vals.length ? Math.max(...vals) : 1;
    if (s.fixed) [lo, hi] = s.fixed;
    if (s.zero) lo = Math.min(0, lo);
    if (hi - lo < 1e-12) { hi = s.pct ? Math.min(1, hi + 0.05) : hi + Math.max(1, Math.abs(hi) * 0.1); lo = s.pct ? hi - 0.1 : lo; }
    // Ticks in a readable unit: percent, or s/min/h for durations.
    const div = s.pct ? 0.01 : s.dur ? (hi >= 7200 ? 3600 : hi >= 120 ? 60 : 1) : 1;
    const suf = s.pct ? '%' : s.dur ? { 3600: ' h', 60: ' min', 1: ' s' }[div] : s.unit || '';
    const yt = niceTicks(lo / div, hi / div, 4);
    const y0 = yt.lo * div, y1 = yt.hi * div;
    const dec = Math.max(0, -Math.floor(Math.log10(yt.step) + 1e-9));
    const X = (t) => ml + ((t - from) / (to - from)) * pw, Y = (v) => mt + (1 - (v - y0) / (y1 - y0)) * ph;
    const f2 = (n) => n.toFixed(2);
    const all = segs.flat(), sparse = pw / Math.max(1, (to - from) / (ws.length ? ws[0].t1 - ws[0].t0 : 60000)) >= 5;
    let o = `<svg class="chart${sparse ? ' sparse' : ''}" width="${width}" height="${H}" viewBox="0 0 ${width} ${H}" tabindex="0" role="img" `
      + `data-series="${s.id}" data-points="${all.length}" data-ml="${ml}" data-pw="${pw}" `
      + `aria-label="${esc(`${s.title}: ${all.length} windows` + (all.length ? `, newest ${s.fmt(all[all.length - 1].v)}` : ''))}">`;
    for (const t of yt.ticks) {
      o += `<line class="grid" x1="${ml}" x2="${ml + pw}" y1="${f2(Y(t * div))}" y2="${f2(Y(t * div))}"/>`
        + `<text class="yl" x="${ml - 6}" y="${f2(Y(t * div) + 4)}">${t.toFixed(dec)}${suf}</text>`;
    }
    const tt = timeTicks(from, to, pw);
    for (const t of tt.ticks) {
      const midnight = t % 86400000 === 0 && tt.step >= 3600000;
      const lab = midnight ? new Date(t).toISOString().slice(5, 10) : hm(t, tt.step < 60000);
      o += `<line class="tick" x1="${f2(X(t))}" x2="${f2(X(t))}" y1="${mt + ph}" y2="${mt + ph + 4}"/>`
        + `<text class="xl${X(t) > ml + pw - 16 ? ' end' : ''}" x="${f2(X(t))}" y="${H - 5}">${lab}</text>`;
    }
    for (const a of spans) {
      const x0 = X(Math.max(from, a.t0)), x1 = X(Math.min(to, a.t1));
      o += `<rect class="span sev-${esc(a.severity)} ${esc(a.state)}" x="${f2(x0)}" y="${mt}" width="${f2(Math.max(1, x1 - x0))}" height="${ph}">`
        + `<title>${esc(`${a.rule} (${a.severity}, ${a.state})`)}</title></rect>`;
    }
    o += `<rect class="frame" x="${ml}" y="${mt}" width="${pw}" height="${ph}"/>`;
    if (s.lo) {
      for (const sg of segs) {
        const b = sg.filter((p) => isNum(p.lo) && isNum(p.hi));
        if (b.length) {
          const up = b.map((p) => `${f2(X(p.p.tc))},${f2(Y(p.hi))}`), dn = b.slice().reverse().map((p) => `${f2(X(p.p.tc))},${f2(Y(p.lo))}`);
          if (b.length === 1) { const x = X(b[0].p.tc); up.unshift(`${f2(x - 2)},${f2(Y(b[0].hi))}`); dn.push(`${f2(x - 2)},${f2(Y(b[0].lo))}`); }
          o += `<polygon class="band" points="${up.concat(dn).join(' ')}"/>`;
        }
      }
    }
    const path = segs.map((sg) => sg.map((p, k) => `${k ? 'L' : 'M'}${f2(X(p.p.tc))} ${f2(Y(p.v))}`).join('')).join('');
    if (path) o += `<path class="line" d="${path}"/>`;
    for (const sg of segs) {
      for (const p of sg) {
        o += `<circle class="pt${sg.length === 1 ? ' iso' : ''}" cx="${f2(X(p.p.tc))}" cy="${f2(Y(p.v))}" r="2.5" data-series="${s.id}" `
          + `data-i="${p.i}" data-start="${esc(p.p.w.window.start)}" data-value="${esc(raw(p.v))}"`
          + (s.lo ? ` data-ci-low="${esc(raw(p.lo))}" data-ci-high="${esc(raw(p.hi))}"` : '') + '/>';
      }
    }
    if (!all.length) o += `<text class="nodata" x="${ml + pw / 2}" y="${mt + ph / 2}">no data in this range</text>`;
    o += `<line class="guide" x1="0" x2="0" y1="${mt}" y2="${mt + ph}" visibility="hidden"/>`
      + `<circle class="hl" r="4" cx="0" cy="0" visibility="hidden"/></svg>`;
    return o;
  }

  function alertSpans(d) {
    const out = [], seen = new Set();
    for (const a of alertsOf(st.firing.concat(st.recent), d.mv.model, d.mv.model_version)) {
      if (seen.has(a.id)) continue;
      seen.add(a.id);
      const t0 = Date.parse(a.started_at || a.ts), t1 = a.state === 'resolved' ? Date.parse(a.ts) : d.to;
      if (isNum(t0) && t1 > d.from && t0 < d.to) out.push({ ...a, t0, t1 });
    }
    return out;
  }

  function renderCharts() {
    const d = st.data, box = $('charts');
    if (!d) return;
    st.rendering = true;
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.series : null;
    const clf = isClf(d), spans = alertSpans(d);
    Object.assign(box.dataset, {
      model: d.mv.model, version: d.mv.model_version == null ? '' : d.mv.model_version, from: iso(d.from), to: iso(d.to),
      range: (d.to - d.from) / 1000, windows: d.ws.length, truncated: d.truncated, task: clf ? 'classification' : 'regression',
    });
    const series = seriesOf(clf);
    // Lay the figures out first, then draw each chart at its figure's width (one or two columns).
    box.innerHTML = series.map((s) => `<figure class="fig" data-series="${s.id}"><figcaption>${esc(s.title)}</figcaption></figure>`).join('');
    const widths = series.map((s, k) => Math.max(260, box.children[k].clientWidth - 2)); // one layout
    series.forEach((s, k) => box.children[k].insertAdjacentHTML('beforeend', drawChart(s, d, widths[k], spans)));
    box._series = series;
    if (focused) { const el = box.querySelector(`svg[data-series="${focused}"]`); if (el) el.focus(); }
    st.rendering = false;
    // Keep a tooltip open across refreshes (on the same window, if it is still in the range).
    showHover(st.hoverOn && box.querySelector(`svg[data-series="${st.hoverOn}"]`), st.hoverBelow);
  }

  // ---------------------------------------------------------------- hover / keyboard tooltip
  function nearest(t) {
    const ws = st.data.ws;
    let lo = 0, hi = ws.length - 1;
    while (lo < hi) { const m = (lo + hi) >> 1; if (ws[m].tc < t) lo = m + 1; else hi = m; }
    return lo > 0 && Math.abs(ws[lo - 1].tc - t) <= Math.abs(ws[lo].tc - t) ? lo - 1 : lo;
  }
  function showHover(svg, below) {
    const d = st.data, tip = $('tip');
    const i = d && st.hover !== null ? d.ws.findIndex((p) => p.w.window.start === st.hover) : -1;
    const box = $('charts');
    for (const el of box.querySelectorAll('svg.chart')) {
      const g = el.querySelector('.guide'), hl = el.querySelector('.hl');
      const pt = i >= 0 ? el.querySelector(`circle.pt[data-i="${i}"]`) : null;
      if (i < 0) { g.setAttribute('visibility', 'hidden'); hl.setAttribute('visibility', 'hidden'); continue; }
      const x = +el.dataset.ml + ((d.ws[i].tc - d.from) / (d.to - d.from)) * +el.dataset.pw;
      g.setAttribute('x1', x); g.setAttribute('x2', x); g.setAttribute('visibility', 'visible');
      if (pt) { hl.setAttribute('cx', pt.getAttribute('cx')); hl.setAttribute('cy', pt.getAttribute('cy')); }
      hl.setAttribute('visibility', pt ? 'visible' : 'hidden');
    }
    if (i < 0 || !svg) { tip.hidden = true; return; }
    const p = d.ws[i], w = p.w, series = box._series;
    let h = `<b>${esc(hm(p.t0, true))}–${esc(hm(p.t1, true))} UTC</b> <span>${esc(new Date(p.t0).toISOString().slice(0, 10))} · revision ${w.revision}${w.final ? ', final' : ''}</span><table>`;
    for (const s of series) {
      const v = get(w, s.path);
      h += `<tr${s.id === svg.dataset.series ? ' class="cur"' : ''}><th>${esc(s.title.replace(/ per window.*| \(.*/, ''))}</th><td>${exact(v)}${isNum(v) && s.unit ? s.unit : ''}${isNum(v) && s.dur ? ' s' : ''}`
        + (s.lo && isNum(v) ? ` <small>CI ${exact(get(w, s.lo))} – ${exact(get(w, s.hi))}</small>` : '') + '</td></tr>';
    }
    h += `<tr><th>Predictions</th><td>${exact(get(w, 'traffic.predictions'))}</td></tr><tr><th>Labelled</th><td>${exact(get(w, 'labels.labelled'))}</td></tr></table>`;
    tip.innerHTML = h;
    tip.hidden = false;
    const r = svg.getBoundingClientRect();
    const x = r.left + +svg.dataset.ml + ((p.tc - d.from) / (d.to - d.from)) * +svg.dataset.pw;
    const left = x + 14 + tip.offsetWidth > document.documentElement.clientWidth ? x - 14 - tip.offsetWidth : x + 14;
    tip.style.left = `${Math.max(4, left + scrollX)}px`;
    tip.style.top = `${(below ? r.bottom + 4 : r.top + 6) + scrollY}px`;
  }
  function hoverAt(svg, clientX) {
    const d = st.data;
    if (!d || !d.ws.length) return;
    const r = svg.getBoundingClientRect();
    const t = d.from + ((clientX - r.left - +svg.dataset.ml) / +svg.dataset.pw) * (d.to - d.from);
    st.hover = d.ws[nearest(t)].w.window.start;
    st.hoverOn = svg.dataset.series;
    st.hoverBelow = false;
    showHover(svg);
  }

  // ---------------------------------------------------------------- events
  function init() {
    const box = $('charts');
    box.addEventListener('mousemove', (e) => { const svg = e.target.closest('svg.chart'); if (svg) hoverAt(svg, e.clientX); });
    const leave = () => { if (!st.rendering) { st.hover = st.hoverOn = null; showHover(null); } };
    box.addEventListener('mouseleave', leave);
    box.addEventListener('focusout', leave);
    box.addEventListener('keydown', (e) => {
      const svg = e.target.closest('svg.chart'), d = st.data;
      if (!svg || !d || !d.ws.length) return;
      let i = st.hover === null ? d.ws.length : d.ws.findIndex((p) => p.w.window.start === st.hover);
      if (e.key === 'ArrowLeft') i = Math.max(0, i - 1);
      else if (e.key === 'ArrowRight') i = Math.min(d.ws.length - 1, i + 1);
      else if (e.key === 'Home') i = 0;
      else if (e.key === 'End') i = d.ws.length - 1;
      else if (e.key === 'Escape') i = -1;
      else return;
      e.preventDefault();
      st.hover = i < 0 ? null : d.ws[Math.min(i, d.ws.length - 1)].w.window.start;
      st.hoverOn = svg.dataset.series;
      st.hoverBelow = true;
      showHover(svg, true);
    });
    const select = (model, version) => { st.sel = { model, version }; st.hover = null; refresh(); };
    $('model').addEventListener('change', (e) => {
      const o = e.target.selectedOptions[0];
      if (o) select(o.dataset.model, st.models.find((m) => keyOf(m.model, m.model_version) === o.value).model_version);
    });
    $('range').addEventListener('change', (e) => { st.range = +e.target.value; st.hover = null; refresh(); });
    document.addEventListener('click', (e) => {
      const a = e.target.closest('a.mv, #models tbody tr, #versions tbody tr');
      const host = a && a.closest('[data-model]');
      if (!host || e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      const v = host.dataset.version;
      const known = st.models.find((m) => m.model === host.dataset.model && (m.model_version || '') === v);
      select(host.dataset.model, known ? known.model_version : undefined);
    });
    $('pause').addEventListener('click', (e) => {
      st.paused = !st.paused;
      e.target.textContent = st.paused ? 'Resume' : 'Pause';
      e.target.setAttribute('aria-pressed', String(st.paused));
      if (st.paused) schedule(); else refresh();
    });
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      st.token = $('token').value.trim();
      sessionStorage.setItem(TOKEN_KEY, st.token);
      $('token').value = '';
      $('token-form').hidden = true;
      refresh();
    });
    document.addEventListener('visibilitychange', () => { if (document.hidden) schedule(); else if (!st.paused) refresh(); });
    let rt = 0;
    addEventListener('resize', () => { clearTimeout(rt); rt = setTimeout(renderCharts, 150); });
    window.modelmon = { state: st, refresh, compareCols, worseOf };
    refresh();
  }
  init();
})();
