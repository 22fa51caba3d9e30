// Checks Kubernetes objects against the Kubernetes API schemas shipped in the kubernetes-models
// npm packages (the core API, and the Prometheus Operator's CRDs for ServiceMonitor):
//   1. the package's JSON-schema validator (types, required fields, enums, formats);
//   2. unknown fields, which those schemas let through (a misspelt `readinesProbe` would be
//      silently dropped by a lenient API server): every field must exist in the type
//      declarations (.d.ts) generated from the same OpenAPI definitions.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { npmRequire, npmResolve } from './lib.mjs';

// apiVersion -> module exporting a class per kind.
function modelModule(apiVersion) {
  if (apiVersion === 'monitoring.coreos.com/v1') return '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
  return `kubernetes-models/${apiVersion}`;  // "v1", "apps/v1", "autoscaling/v2", "policy/v1", ...
}

// --- A small parser for the subset of TypeScript the .d.ts files use ---------------------------

function tokenize(text) {
  const src = text.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/[^\n]*/g, ' ');
  const re = /\s*("(?:[^"\\]|\\.)*"|[A-Za-z_$][\w$]*|-?\d+(?:\.\d+)?|=>|[{}()[\]<>|&:;?,.=])/gy;
  const out = [];
  let m;
  while (re.lastIndex < src.length && (m = re.exec(src))) out.push(m[1]);
  return out;
}

class Parser {
  constructor(tokens, i = 0) { this.t = tokens; this.i = i; }
  peek() { return this.t[this.i]; }
  next() { return this.t[this.i++]; }
  eat(tok) { if (this.t[this.i] !== tok) throw new Error(`expected ${tok}, got ${this.t[this.i]}`); this.i++; }
  type() {
    const alts = [this.intersection()];
    while (this.peek() === '|') { this.next(); alts.push(this.intersection()); }
    return alts.length === 1 ? alts[0] : { kind: 'union', of: alts };
  }
  intersection() {
    const parts = [this.postfix()];
    while (this.peek() === '&') { this.next(); parts.push(this.postfix()); }
    return parts.length === 1 ? parts[0] : { kind: 'union', of: parts };
  }
  postfix() {
    let t = this.primary();
    while (this.peek() === '[' && this.t[this.i + 1] === ']') { this.i += 2; t = { kind: 'array', of: t }; }
    return t;
  }
  primary() {
    const tok = this.next();
    if (tok === '{') return this.objectBody();
    if (tok === '(') { const t = this.type(); this.eat(')'); return t; }
    if (tok === 'Array' && this.peek() === '<') { this.next(); const t = this.type(); this.eat('>'); return { kind: 'array', of: t }; }
    if (/^[A-Za-z_$]/.test(tok)) {
      let name = tok;
      while (this.peek() === '.') { this.next(); name += `.${this.next()}`; }
      if (this.peek() === '<') { let depth = 0; do { const x = this.next(); if (x === '<') depth++; if (x === '>') depth--; } while (depth > 0); }
      if (this.peek() === '[' && this.t[this.i + 1] !== ']') { while (this.next() !== ']'); return { kind: 'leaf' }; }
      return { kind: 'ref', name };
    }
    return { kind: 'leaf' };  // string / number literal
  }
  // After '{': members until '}'.
  objectBody() {
    const fields = new Map();
    let index = null;
    while (this.peek() !== '}') {
      if (this.peek() === '[') {  // [key: string]: T
        while (this.next() !== ']');
        this.eat(':');
        index = this.type();
      } else {
        let name = this.next();
        if (name === 'readonly') name = this.next();
        if (name.startsWith('"')) name = JSON.parse(name);
        if (this.peek() === '?') this.next();
        this.eat(':');
        fields.set(name, this.type());
      }
      if (this.peek() === ';' || this.peek() === ',') this.next();
    }
    this.eat('}');
    return { kind: 'object', fields, index };
  }
}

// --- Resolving type names across .d.ts files ---------------------------------------------------

const fileCache = new Map();

function loadDts(file) {
  if (fileCache.has(file)) return fileCache.get(file);
  const tokens = tokenize(fs.readFileSync(file, 'utf8'));
  const imports = new Map();     // local name -> {from, name}
  const interfaces = new Map();  // name -> token index after '{'
  const aliases = new Map();     // exported alias -> local name
  const types = new Map();       // `type X = ...` -> token index after '='
  for (let i = 0; i < tokens.length; ++i) {
    if (tokens[i] === 'import' && tokens[i + 1] === '{') {
      let j = i + 2;
      const names = [];
      while (tokens[j] !== '}') {
        const n = tokens[j++];
        if (tokens[j] === 'as') { names.push([tokens[j + 1], n]); j += 2; } else names.push([n, n]);
        if (tokens[j] === ',') j++;
      }
      const from = JSON.parse(tokens[j + 2]);
      for (const [local, orig] of names) imports.set(local, { from, name: orig });
    } else if (tokens[i] === 'interface') {
      let j = i + 2;
      while (tokens[j] !== '{') j++;
      interfaces.set(tokens[i + 1], j + 1);
    } else if (tokens[i] === 'type' && tokens[i + 2] === '=') {
      types.set(tokens[i + 1], i + 3);
    } else if (tokens[i] === 'export' && tokens[i + 1] === '{') {
      let j = i + 2;
      while (tokens[j] !== '}') {
        const n = tokens[j++];
        if (tokens[j] === 'as') { aliases.set(tokens[j + 1], n); j += 2; } else aliases.set(n, n);
        if (tokens[j] === ',') j++;
      }
    }
  }
  const entry = { file, tokens, imports, interfaces, aliases, types, parsed: new Map() };
  fileCache.set(file, entry);
  return entry;
}

function resolveModuleFile(fromFile, spec) {
  const req = createRequire(fromFile);
  if (spec.startsWith('.')) return path.resolve(path.dirname(fromFile), `${spec}.d.ts`);
  const pkgJs = req.resolve(spec);  // e.g. .../ObjectMeta.js
  return pkgJs.replace(/\.(c|m)?js$/, '.d.ts');
}

// The parsed type named `name` in `file` (an interface, a type alias, or an import).
function namedType(file, name) {
  const e = loadDts(file);
  if (e.parsed.has(name)) return e.parsed.get(name);
  let result = { kind: 'leaf' };
  e.parsed.set(name, result);  // breaks cycles
  const local = e.aliases.get(name) || name;
  if (e.interfaces.has(local)) {
    result = new Parser(e.tokens, e.interfaces.get(local)).objectBody();
  } else if (e.types.has(local)) {
    result = new Parser(e.tokens, e.types.get(local)).type();
  } else if (e.imports.has(local)) {
    const imp = e.imports.get(local);
    if (imp.from.startsWith('@kubernetes-models/base')) return { kind: 'leaf' };
    result = namedType(resolveModuleFile(file, imp.from), imp.name);
  }
  result.file = result.file || file;
  e.parsed.set(name, result);
  return result;
}

function deref(t, file) {
  while (t && t.kind === 'ref') {
    if (['string', 'number', 'boolean', 'any', 'object', 'unknown', 'null', 'undefined'].includes(t.name)) return { kind: 'leaf' };
    const r = namedType(t.file || file, t.name);
    file = r.file;
    t = r;
  }
  return t;
}

function unknownFields(value, type, file, where, out) {
  const t = deref(type, file);
  if (!t || value === null || value === undefined) return;
  const f = t.file || file;
  if (t.kind === 'union') {
    const obj = t.of.map((x) => deref(x, f)).find((x) => x.kind === 'object');
    const arr = t.of.map((x) => deref(x, f)).find((x) => x.kind === 'array');
    if (Array.isArray(value) && arr) unknownFields(value, arr, arr.file || f, where, out);
    else if (typeof value === 'object' && !Array.isArray(value) && obj) unknownFields(value, obj, obj.file || f, where, out);
    return;
  }
  if (t.kind === 'array' && Array.isArray(value)) {
    value.forEach((v, i) => unknownFields(v, withFile(t.of, f), f, `${where}[${i}]`, out));
    return;
  }
  if (t.kind === 'object' && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) {
      if (t.fields.has(k)) unknownFields(v, withFile(t.fields.get(k), f), f, `${where}.${k}`, out);
      else if (t.index) unknownFields(v, withFile(t.index, f), f, `${where}.${k}`, out);
      else out.push(`${where}.${k}`);
    }
  }
}

function withFile(t, file) { if (t && !t.file) t.file = file; return t; }

// Errors (strings) for one object: no schema for its kind, schema violations, unknown fields.
export function checkObject(obj) {
  const where = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
  let mod;
  try { mod = npmRequire(modelModule(obj.apiVersion)); } catch (e) { return [`${where}: no schema for apiVersion ${obj.apiVersion}`]; }
  const Model = mod[obj.kind];
  if (!Model) return [`${where}: no schema for ${obj.apiVersion} ${obj.kind}`];
  const errors = [];
  try {
    new Model(obj).validate();
  } catch (e) {
    errors.push(`${where}: ${e.message}${e.errors ? ` ${JSON.stringify(e.errors)}` : ''}`);
  }
  const dts = path.join(path.dirname(npmResolve(modelModule(obj.apiVersion))), `${obj.kind}.d.ts`);
  if (!fs.existsSync(dts)) return [...errors, `${where}: no type declarations at ${dts}`];
  const unknown = [];
  unknownFields(obj, { kind: 'ref', name: `I${obj.kind}`, file: dts }, dts, where, unknown);
  for (const u of unknown) errors.push(`${u}: unknown field`);
  return errors;
}
