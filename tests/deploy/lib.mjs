// Helpers shared by the deploy tests: paths, the pinned npm packages, child processes, HTTP.
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SOURCE_DIR = process.env.KVWIRE_SOURCE_DIR ||
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// The npm packages scripts/fetch_test_data.sh installs (yaml, kubernetes-models, ...).
const NPM_DIR = path.join(SOURCE_DIR, 'third_party_data/npm');
export function npmRequire(name) {
  if (!fs.existsSync(path.join(NPM_DIR, 'node_modules'))) {
    throw new Error(`${NPM_DIR}/node_modules is missing: run scripts/fetch_test_data.sh`);
  }
  return createRequire(path.join(NPM_DIR, 'package.json'))(name);
}
export function npmResolve(name) {
  return createRequire(path.join(NPM_DIR, 'package.json')).resolve(name);
}
export const YAML = npmRequire('yaml');

export function readYaml(file) {
  return YAML.parse(fs.readFileSync(file, 'utf8'));
}

// The absolute path of `name` on PATH; throws (the test fails) when it is not installed.
export function requireTool(name, hint) {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const found = r.status === 0 ? r.stdout.trim() : '';
  if (!found) throw new Error(`${name} is not installed (${hint})`);
  return found;
}

export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60000, ...opts });
  if (r.error) throw r.error;
  return r;
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// A child process whose stdout/stderr are collected. stop() sends SIGTERM and waits.
export class Proc {
  constructor(cmd, args, opts = {}) {
    this.out = '';
    this.err = '';
    this.exit = null;
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.child.stdout.on('data', (d) => { this.out += d; });
    this.child.stderr.on('data', (d) => { this.err += d; });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => { this.exit = { code, signal }; resolve(this.exit); });
    });
  }
  // Resolves with the first match of `re` in stdout, or rejects after `ms`.
  async waitFor(re, ms) {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = this.out.match(re);
      if (m) return m;
      if (this.exit) throw new Error(`process exited (${JSON.stringify(this.exit)}) before ${re}: ${this.err}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; stdout: ${this.out} stderr: ${this.err}`);
      await sleep(50);
    }
  }
  async stop(ms = 15000) {
    if (!this.exit) this.child.kill('SIGTERM');
    const timer = setTimeout(() => { if (!this.exit) this.child.kill('SIGKILL'); }, ms);
    const e = await this.exited;
    clearTimeout(timer);
    return e;
  }
  kill() { if (!this.exit) this.child.kill('SIGKILL'); }
}

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// A loopback port that was free a moment ago (for servers that cannot report an OS-chosen one).
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// GET url; resolves {status, body}.
export function httpGet(url, ms = 10000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(ms, () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
  });
}

// Parses one-JSON-object-per-line logs; other lines are ignored.
export function jsonLines(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try { out.push(JSON.parse(line)); } catch { /* not a log line */ }
  }
  return out;
}
