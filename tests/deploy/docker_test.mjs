// docker/ cannot be built on CI (no Docker daemon), so these checks keep it consistent with what
// is tested: both Dockerfiles' build stages install scripts/setup.sh's package list (less the
// test tools they name), their runtime stages install the packages of every shared library the
// built `kvwire` binary needs, they are multi-stage, non-root, health-checked and carry the
// bundled models, and the compose stack's commands, ports and mounts agree with the binary's
// flags and deploy/prometheus.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { SOURCE_DIR, readYaml, requireTool, run } from './lib.mjs';

const DOCKER = path.join(SOURCE_DIR, 'docker');
const KVWIRE = process.env.KVWIRE_BINARY;
const DOCKERFILES = ['Dockerfile.cpu', 'Dockerfile.cuda'];
// Packages every Debian base image already has.
const BASE_IMAGE = new Set(['libc6', 'libstdc++6', 'libgcc-s1']);

function setupPackages() {
  const text = fs.readFileSync(path.join(SOURCE_DIR, 'scripts/setup.sh'), 'utf8');
  const m = text.match(/^PACKAGES=\(\n([\s\S]*?)^\)/m);
  assert.ok(m, 'PACKAGES=( ... ) in scripts/setup.sh');
  return m[1].split('\n').map((l) => l.replace(/#.*/, '')).join(' ').split(/\s+/).filter(Boolean);
}

// Package names in the apt-get install between `# NAME: begin` and `# NAME: end`.
function block(text, name, file) {
  const m = text.match(new RegExp(`# ${name}: begin\\n([\\s\\S]*?)# ${name}: end`));
  assert.ok(m, `${file}: '# ${name}: begin/end' block`);
  const install = m[1].split('apt-get install')[1];
  assert.ok(install, `${file}: ${name} block has an apt-get install`);
  return install.split('&&')[0].split(/\s+/).filter((w) => /^[a-z0-9][a-z0-9.+-]*$/.test(w));
}

function stages(text) {
  return text.split(/^FROM /m).slice(1);
}

test('build stages install scripts/setup.sh\'s packages', () => {
  const setup = setupPackages();
  assert.ok(setup.length > 20, `setup.sh PACKAGES: ${setup}`);
  for (const f of DOCKERFILES) {
    const text = fs.readFileSync(path.join(DOCKER, f), 'utf8');
    const installed = block(text, 'setup.sh packages', f);
    const leftOut = (text.match(/^# setup\.sh packages left out here[^:]*:(.*)$/m) || [, ''])[1].trim().split(/\s+/).filter(Boolean);
    const missing = setup.filter((p) => !installed.includes(p) && !leftOut.includes(p));
    const extra = installed.filter((p) => !setup.includes(p));
    const stale = leftOut.filter((p) => !setup.includes(p) || installed.includes(p));
    assert.deepEqual({ missing, extra, stale }, { missing: [], extra: [], stale: [] }, f);
    assert.equal(new Set(installed).size, installed.length, `${f}: duplicate packages`);
  }
});

test('runtime stages install the packages of the libraries kvwire loads', () => {
  assert.ok(KVWIRE && fs.existsSync(KVWIRE), `KVWIRE_BINARY not set or missing: ${KVWIRE}`);
  requireTool('dpkg', 'a Debian system');
  const needed = run('readelf', ['-d', KVWIRE]).stdout.split('\n')
    .map((l) => (l.match(/\(NEEDED\)\s+Shared library: \[(.*)\]/) || [])[1]).filter(Boolean);
  assert.ok(needed.length > 5, `NEEDED of ${KVWIRE}: ${needed}`);
  const resolved = new Map();
  for (const l of run('ldd', [KVWIRE]).stdout.split('\n')) {
    const m = l.match(/^\s*(\S+) => (\S+)/);
    if (m) resolved.set(m[1], m[2]);
  }
  const packages = new Map();  // package -> libraries
  for (const lib of needed) {
    const file = resolved.get(lib);
    assert.ok(file && file !== 'not', `${lib} does not resolve`);
    let owner = run('dpkg', ['-S', fs.realpathSync(file)]);
    if (owner.status !== 0) owner = run('dpkg', ['-S', file]);
    assert.equal(owner.status, 0, `no Debian package owns ${file}`);
    const pkg = owner.stdout.split(':')[0].trim();
    packages.set(pkg, [...(packages.get(pkg) || []), lib]);
  }
  for (const f of DOCKERFILES) {
    const runtime = new Set(block(fs.readFileSync(path.join(DOCKER, f), 'utf8'), 'runtime packages', f));
    // The CUDA image takes libtorch from the PyTorch wheel (/opt/kvwire/lib), not from Debian.
    const fromWheel = f.endsWith('cuda') ? (p) => p.startsWith('libtorch') : () => false;
    const missing = [...packages.keys()].filter((p) => !runtime.has(p) && !BASE_IMAGE.has(p) && !fromWheel(p));
    assert.deepEqual(missing, [], `${f}: runtime packages missing for ${missing.map((p) => packages.get(p)).flat()}`);
  }
});

test('images are multi-stage, non-root, health-checked and carry the models', () => {
  for (const f of DOCKERFILES) {
    const text = fs.readFileSync(path.join(DOCKER, f), 'utf8');
    const s = stages(text);
    assert.ok(s.length >= 2, `${f}: multi-stage`);
    const final = s[s.length - 1];
    const user = final.match(/^USER (\S+)/m);
    assert.ok(user && !/^(0|root)(:|$)/.test(user[1]), `${f}: final stage runs as a non-root USER`);
    assert.match(final, /^HEALTHCHECK .*\n?.*kvwire health --target 127\.0\.0\.1:\$\{KVWIRE_HEALTH_PORT\}/m, `${f}: HEALTHCHECK`);
    const models = final.match(/^COPY models\/ (\S+)$/m);
    assert.ok(models, `${f}: COPY models/`);
    assert.match(final, /^COPY --from=build \S*kvwire \/usr\/local\/bin\/kvwire$/m);
    assert.match(final, /^ENTRYPOINT \["kvwire"\]$/m);
    const cmd = JSON.parse(final.match(/^CMD (\[.*\])$/m)[1]);
    const model = cmd[cmd.indexOf('--model') + 1];
    assert.ok(model.startsWith(models[1]), `${f}: CMD's --model ${model} is under ${models[1]}`);
    assert.ok(fs.existsSync(path.join(DOCKER, `${f}.dockerignore`)), `${f}.dockerignore`);
    if (f.endsWith('cuda')) assert.deepEqual(cmd.slice(cmd.indexOf('--device'), cmd.indexOf('--device') + 2), ['--device', 'cuda']);
  }
});

// The option names `kvwire serve ROLE --help` lists.
function serveFlags(role) {
  const help = run(KVWIRE, ['serve', role, '--help']);
  assert.equal(help.status, 0, help.stderr);
  return new Set([...help.stdout.matchAll(/(--[a-z][a-z-]*)/g)].map((m) => m[1]));
}

test('compose stack: commands, ports and mounts agree with kvwire and deploy/', () => {
  assert.ok(KVWIRE && fs.existsSync(KVWIRE), `KVWIRE_BINARY not set or missing: ${KVWIRE}`);
  const compose = readYaml(path.join(DOCKER, 'compose.yaml'));
  const svc = compose.services;
  assert.deepEqual(Object.keys(svc).sort(), ['decode', 'grafana', 'prefill', 'prometheus']);
  const opt = (s, flag) => { const c = svc[s].command; const i = c.indexOf(flag); return i < 0 ? undefined : c[i + 1]; };
  for (const role of ['decode', 'prefill']) {
    const c = svc[role].command;
    assert.deepEqual(c.slice(0, 2), ['serve', role]);
    const flags = serveFlags(role);
    for (const a of c.filter((x) => x.startsWith('--'))) assert.ok(flags.has(a), `${role}: kvwire serve ${role} has no ${a}`);
    const port = opt(role, '--listen').split(':').pop();
    assert.equal(String(svc[role].environment.KVWIRE_HEALTH_PORT), port, `${role}: health check port`);
    // Preset files exist in the mounted directory.
    const [hostDir, mountDir] = svc[role].volumes[0].split(':');
    for (let i = c.indexOf('--presets'); i >= 0; i = c.indexOf('--presets', i + 1)) {
      assert.equal(path.dirname(c[i + 1]), mountDir);
      assert.ok(fs.existsSync(path.join(DOCKER, hostDir, path.basename(c[i + 1]))), c[i + 1]);
    }
  }
  assert.equal(opt('prefill', '--decode'), `decode:${opt('decode', '--listen').split(':').pop()}`);
  // Prometheus scrapes each node's --metrics-port under deploy/prometheus's job names.
  const promMount = svc.prometheus.volumes.find((v) => v.endsWith(':/etc/prometheus:ro')).split(':')[0];
  const config = readYaml(path.join(DOCKER, promMount, 'prometheus.yml'));
  const targets = Object.fromEntries(config.scrape_configs.map((c) => [c.job_name, c.static_configs[0].targets[0]]));
  assert.deepEqual(targets, { 'kvwire-prefill': `prefill:${opt('prefill', '--metrics-port')}`,
    'kvwire-decode': `decode:${opt('decode', '--metrics-port')}` });
  assert.equal(path.resolve(DOCKER, promMount), path.join(SOURCE_DIR, 'deploy/prometheus'));
  for (const v of svc.grafana.volumes) assert.ok(fs.existsSync(path.join(DOCKER, v.split(':')[0])), v);
  const home = svc.grafana.environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
  const dashMount = svc.grafana.volumes.find((v) => v.split(':')[1] === path.dirname(home));
  assert.ok(dashMount && fs.existsSync(path.join(DOCKER, dashMount.split(':')[0], path.basename(home))), home);
  // The Dockerfiles' default command uses flags the binary has.
  for (const f of DOCKERFILES) {
    const cmd = JSON.parse(fs.readFileSync(path.join(DOCKER, f), 'utf8').match(/^CMD (\[.*\])$/m)[1]);
    const flags = serveFlags(cmd[1]);
    for (const a of cmd.filter((x) => x.startsWith('--'))) assert.ok(flags.has(a), `${f}: ${a}`);
  }
});
