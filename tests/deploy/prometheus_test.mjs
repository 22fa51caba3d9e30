// A real Prometheus scrapes a real prefill and decode node (the tiny test model) on loopback
// while requests run; then every PromQL expression of deploy/grafana and deploy/prometheus must
// return data, the rules must load and evaluate, and the nodes' logs must tie each request's
// prefill and decode lines together by request id. promtool checks the live scrapes, the rules
// and the scrape config. Needs prometheus and promtool (Debian's prometheus package, installed
// by scripts/setup.sh): the test fails without them.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Proc, SOURCE_DIR, YAML, freePort, httpGet, jsonLines, readYaml, requireTool, run, sleep, tempDir } from './lib.mjs';
import { dashboardQueries, ruleQueries, splitAlert } from './promql.mjs';

const KVWIRE = process.env.KVWIRE_BINARY;
const TINY_MODEL = process.env.KVWIRE_TINY_MODEL;
const DEPLOY = path.join(SOURCE_DIR, 'deploy');
const RULES = path.join(DEPLOY, 'prometheus/rules.yml');
const SCRAPE_CONFIG = path.join(DEPLOY, 'prometheus/prometheus.yml');
const DASHBOARD = path.join(DEPLOY, 'grafana/dashboards/kvwire.json');
const PRESET_FILES = ['presets.conf', 'ladder.conf'].map((f) => path.join(DEPLOY, 'k8s/base/config', f));
const HINT = 'scripts/setup.sh installs Debian\'s prometheus package';

test('promtool accepts the rules and the scrape config', () => {
  requireTool('promtool', HINT);
  for (const args of [['check', 'rules', RULES], ['check', 'config', SCRAPE_CONFIG]]) {
    const r = run('promtool', args);
    assert.equal(r.status, 0, `promtool ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
  }
  // Every alert is QUERY OP NUMBER, so its query part can be checked for data below.
  for (const g of readYaml(RULES).groups) {
    for (const r of g.rules) if (r.alert) assert.ok(splitAlert(r.expr), `${r.alert}: ${r.expr}`);
  }
});

test('promtool rejects a broken rule file (the check can fail)', () => {
  requireTool('promtool', HINT);
  const dir = tempDir('kvwire-rules-');
  try {
    const bad = path.join(dir, 'bad.yml');
    fs.writeFileSync(bad, 'groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m]) > 1\n');
    assert.notEqual(run('promtool', ['check', 'rules', bad]).status, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// Waits until the decode node's own /metrics counts `n` finished shadow passes.
async function waitShadowDone(metricsAddress, n) {
  for (let deadline = Date.now() + 60000; ; await sleep(250)) {
    // A refused or reset scrape counts as "not yet": the exposer is a small thread pool.
    const body = (await httpGet(`http://${metricsAddress}/metrics`).catch(() => ({ body: '' }))).body;
    let done = 0;
    for (const m of body.matchAll(/^kvwire_shadow_passes_total\{[^}]*outcome="done"[^}]*\} (\S+)$/gm)) done += Number(m[1]);
    if (done >= n) return;
    assert.ok(Date.now() < deadline, `shadow passes done: ${done}, expected ${n}`);
  }
}

async function promQuery(base, expr) {
  const r = await httpGet(`${base}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = JSON.parse(r.body);
  if (body.status !== 'success') throw new Error(`query failed: ${expr}: ${r.body}`);
  return body.data.result;
}

function finiteValues(result) {
  return result.map((s) => Number(s.value[1])).filter((v) => Number.isFinite(v));
}

async function scrapeAndLint(address) {
  const r = await httpGet(`http://${address}/metrics`);
  assert.equal(r.status, 200);
  const lint = run('promtool', ['check', 'metrics'], { input: r.body });
  assert.equal(lint.status, 0, `promtool check metrics on ${address}:\n${lint.stdout}${lint.stderr}`);
  return r.body;
}

test('Prometheus scrapes running nodes; every dashboard and rule expression returns data', { timeout: 150000 }, async () => {
  requireTool('promtool', HINT);
  const prometheus = requireTool('prometheus', HINT);
  assert.ok(KVWIRE && fs.existsSync(KVWIRE), `KVWIRE_BINARY not set or missing: ${KVWIRE}`);
  assert.ok(TINY_MODEL && fs.existsSync(TINY_MODEL), `KVWIRE_TINY_MODEL not set or missing: ${TINY_MODEL}`);
  const dir = tempDir('kvwire-prom-');
  const procs = [];
  try {
    const model = path.join(dir, 'model');
    assert.equal(run(TINY_MODEL, [model, '2']).status, 0);
    const env = { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' };
    const presetArgs = PRESET_FILES.flatMap((f) => ['--presets', f]);
    const node = (role, extra) => {
      const p = new Proc(KVWIRE, ['serve', role, '--listen', '127.0.0.1:0', '--model', model, '--threads', '1',
        '--metrics-port', '0', '--max-new-tokens', '4', ...presetArgs, ...extra], { env });
      procs.push(p);
      return p;
    };
    const decode = node('decode', []);
    const decodeAddr = (await decode.waitFor(/listening on (127\.0\.0\.1:\d+)/, 60000))[1];
    const decodeMetrics = (await decode.waitFor(/metrics on http:\/\/(127\.0\.0\.1:\d+)\/metrics/, 10000))[1];
    // Every request gets a shadow pass, so the fidelity panels and rules have data.
    const prefill = node('prefill', ['--decode', decodeAddr, '--codec', 'int4-rans', '--shadow-rate', '1']);
    const prefillAddr = (await prefill.waitFor(/listening on (127\.0\.0\.1:\d+)/, 60000))[1];
    const prefillMetrics = (await prefill.waitFor(/metrics on http:\/\/(127\.0\.0\.1:\d+)\/metrics/, 10000))[1];

    // The deploy scrape config with its job names, pointed at the test's nodes and sped up.
    const config = readYaml(SCRAPE_CONFIG);
    config.global.scrape_interval = '1s';
    config.global.evaluation_interval = '1s';
    config.rule_files = [RULES];
    const targets = { 'kvwire-prefill': prefillMetrics, 'kvwire-decode': decodeMetrics };
    assert.deepEqual(config.scrape_configs.map((c) => c.job_name).sort(), Object.keys(targets).sort());
    for (const c of config.scrape_configs) c.static_configs = [{ targets: [targets[c.job_name]] }];
    const configFile = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(configFile, YAML.stringify(config));
    const promPort = await freePort();
    const base = `http://127.0.0.1:${promPort}`;
    const prom = new Proc(prometheus, [`--config.file=${configFile}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn']);
    procs.push(prom);
    for (let deadline = Date.now() + 30000; ; await sleep(200)) {
      assert.ok(!prom.exit, `prometheus exited: ${prom.err}`);
      assert.ok(Date.now() < deadline, `prometheus did not get ready: ${prom.err}`);
      const ready = await httpGet(`${base}/-/ready`).catch(() => null);
      if (ready && ready.status === 200) break;
    }
    for (let deadline = Date.now() + 20000; ; await sleep(200)) {
      const up = await promQuery(base, 'up');
      if (up.length === 2 && up.every((s) => s.value[1] === '1')) break;
      assert.ok(Date.now() < deadline, `targets not up: ${JSON.stringify(up)}`);
    }

    // Two rounds a few scrapes apart, so every per-preset counter has a sample before and after
    // an increase and rates are non-zero.
    const presets = ['int4-rans', 'full', 'snapkv25-int4', 'ladder-3'];
    const ids = [];
    for (let round = 0; round < 2; ++round) {
      for (const preset of presets) {
        const id = `prom-test-${round}-${preset}`;
        ids.push(id);
        const gen = run(KVWIRE, ['generate', '--prefill', prefillAddr, '--context',
          'The keeper\'s daughter rowed out to the reef and brought back nine sailors.',
          '--question', 'Who rowed out?', '--preset', preset, '--max-new-tokens', '3',
          '--request-id', id, '--timeout', '60', '--json']);
        assert.equal(gen.status, 0, `generate --preset ${preset}: ${gen.stderr}`);
        // One shadow pass at a time: on a loaded machine (CI runs tests in parallel) a burst
        // overflows the decode node's bounded queue, which then drops passes by design.
        await waitShadowDone(decodeMetrics, ids.length);
      }
      const bad = run(KVWIRE, ['generate', '--prefill', prefillAddr, '--context', 'x y', '--preset', 'nosuch', '--timeout', '30']);
      assert.equal(bad.status, 1, bad.stderr);
      await sleep(2500);
    }

    // The shadow passes run after the replies; wait until Prometheus has seen them all.
    for (let deadline = Date.now() + 30000; ; await sleep(300)) {
      const done = await promQuery(base, 'sum(kvwire_shadow_passes_total{role="decode",outcome="done"})');
      if (done.length === 1 && Number(done[0].value[1]) === 2 * presets.length) break;
      assert.ok(Date.now() < deadline, `shadow passes not all done: ${JSON.stringify(done)}`);
    }

    // The live scrapes pass promtool's lint.
    await scrapeAndLint(prefillMetrics);
    await scrapeAndLint(decodeMetrics);

    // Rules loaded and evaluated without errors.
    for (let deadline = Date.now() + 15000; ; await sleep(300)) {
      const r = JSON.parse((await httpGet(`${base}/api/v1/rules`)).body);
      const rules = r.data.groups.flatMap((g) => g.rules);
      const fresh = rules.length > 0 && rules.every((x) => x.health === 'ok' && Date.parse(x.lastEvaluation) > 0);
      if (fresh) {
        const names = rules.map((x) => x.name || x.record).sort();
        const expected = readYaml(RULES).groups.flatMap((g) => g.rules).map((x) => x.alert || x.record).sort();
        assert.deepEqual(names, expected);
        const firing = rules.filter((x) => x.type === 'alerting' && x.state !== 'inactive').map((x) => x.name);
        assert.deepEqual(firing, [], 'no alert is pending or firing on a healthy run');
        break;
      }
      assert.ok(Date.now() < deadline, `rules not all healthy: ${JSON.stringify(rules.map((x) => [x.name, x.health, x.lastError]))}`);
    }

    // Every expression of the dashboards and rules returns data with a finite value.
    const queries = [...dashboardQueries(DASHBOARD), ...ruleQueries(RULES)];
    assert.ok(queries.length >= 25, `only ${queries.length} expressions found`);
    const empty = [];
    for (const q of queries) {
      const result = await promQuery(base, q.expr);
      if (finiteValues(result).length === 0) empty.push(`${q.where}: ${q.expr} -> ${JSON.stringify(result)}`);
    }
    assert.deepEqual(empty, [], 'expressions without data');
    // The check can fail: a metric that does not exist has no data.
    assert.equal((await promQuery(base, 'sum by (preset) (rate(kvwire_no_such_metric_total[1m]))')).length, 0);

    // The figures add up across the two nodes.
    const one = async (expr) => {
      const r = await promQuery(base, expr);
      assert.equal(r.length, 1, `${expr}: ${JSON.stringify(r)}`);
      return Number(r[0].value[1]);
    };
    assert.equal(await one('sum(kvwire_requests_total{job="kvwire-prefill",code="OK"})'), 2 * presets.length);
    assert.equal(await one('sum(kvwire_requests_total{job="kvwire-prefill",code="INVALID_ARGUMENT"})'), 2);
    assert.equal(await one('sum(kvwire_requests_total{job="kvwire-decode",code="OK"})'), 2 * presets.length);
    assert.equal(await one('sum(kvwire_wire_bytes_total{role="prefill"})'), await one('sum(kvwire_wire_bytes_total{role="decode"})'));
    const perPreset = await promQuery(base, 'sum by (preset) (kvwire_wire_bytes_total{role="decode"})');
    assert.deepEqual(perPreset.map((s) => s.metric.preset).sort(), [...presets].sort());
    assert.ok(await one('sum(kvwire_generated_tokens_total{job="kvwire-decode"})') > 0);
    assert.equal(await one('sum(kvwire_streams_in_flight)'), 0);
    // Shadow passes: one per request, none dropped or failed; the lossless preset reproduces
    // the full cache exactly (agreement 1, KL 0, no reconstruction error).
    assert.equal(await one('sum(kvwire_shadow_sampled_total{role="prefill"})'), 2 * presets.length);
    assert.equal(await one('sum(kvwire_shadow_passes_total{role="decode",outcome=~"dropped|failed"})'), 0);
    assert.equal(await one('sum(kvwire_shadow_agreement_sum{preset="full"}) / sum(kvwire_shadow_agreement_count{preset="full"})'), 1);
    assert.equal(await one('sum(kvwire_shadow_kl_divergence_sum{preset="full"})'), 0);
    assert.equal(await one('sum(kvwire_shadow_reconstruction_error_sum{preset="full"})'), 0);
    assert.equal(await one('sum(kvwire_shadow_queue_length)'), 0);
    assert.equal(await one('sum(kvwire_caches_held_bytes)'), 0);

    // Structured logs: one JSON line per event; each request's id appears on both nodes.
    const stopped = await Promise.all([prefill.stop(), decode.stop()]);
    assert.deepEqual(stopped.map((e) => e.code), [0, 0], `prefill: ${prefill.err}\ndecode: ${decode.err}`);
    const prefillEvents = jsonLines(prefill.err);
    const decodeEvents = jsonLines(decode.err);
    for (const text of [prefill.err, decode.err]) {
      for (const line of text.split('\n').filter((l) => l.length)) assert.doesNotThrow(() => JSON.parse(line), line);
    }
    for (const id of ids) {
      const p = prefillEvents.filter((e) => e.event === 'request_done' && e.request_id === id);
      const d = decodeEvents.filter((e) => e.event === 'upload_done' && e.request_id === id);
      assert.equal(p.length, 1, `prefill log for ${id}`);
      assert.equal(d.length, 1, `decode log for ${id}`);
      assert.equal(p[0].code, 'OK');
      assert.equal(d[0].wire_bytes, p[0].wire_bytes);
    }
    for (const events of [prefillEvents, decodeEvents]) {
      assert.ok(events.some((e) => e.event === 'node_started'));
      assert.ok(events.some((e) => e.event === 'node_stopping' && e.signal === 'SIGTERM'));
    }
  } finally {
    await Promise.all(procs.map((p) => p.stop(5000)));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
