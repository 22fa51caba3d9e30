// Renders every kustomize overlay of deploy/k8s offline with `kubectl kustomize` (Debian's
// kubernetes-client or any kubectl; scripts/setup.sh installs one), checks every object against
// the Kubernetes schemas (k8s_schema.mjs) and checks that the objects fit together: Services
// select the pods and name their ports, probes use gRPC health on the served port, ConfigMaps
// referenced exist, the prefill pods reach the decode pods through the headless Service, the
// ServiceMonitor's job names are the ones the rules and dashboard use, and the GPU overlay asks
// for nvidia.com/gpu.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { SOURCE_DIR, YAML, readYaml, requireTool, run } from './lib.mjs';
import { checkObject } from './k8s_schema.mjs';

const K8S = path.join(SOURCE_DIR, 'deploy/k8s');
const OVERLAYS = fs.readdirSync(path.join(K8S, 'overlays')).sort();

function render(overlay) {
  const kubectl = requireTool('kubectl', 'scripts/setup.sh installs Debian\'s kubernetes-client');
  const r = run(kubectl, ['kustomize', path.join(K8S, 'overlays', overlay)]);
  assert.equal(r.status, 0, `kubectl kustomize ${overlay}:\n${r.stderr}`);
  return YAML.parseAllDocuments(r.stdout).map((d) => d.toJS()).filter((o) => o);
}

// The option names `kvwire serve ROLE --help` lists (the deployments' args must be among them).
function serveFlags(role) {
  const kvwire = process.env.KVWIRE_BINARY;
  assert.ok(kvwire && fs.existsSync(kvwire), `KVWIRE_BINARY not set or missing: ${kvwire}`);
  const help = run(kvwire, ['serve', role, '--help']);
  assert.equal(help.status, 0, help.stderr);
  return new Set([...help.stdout.matchAll(/(--[a-z][a-z-]*)/g)].map((m) => m[1]));
}

const byKind = (objs, kind) => objs.filter((o) => o.kind === kind);
const named = (objs, kind, name) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind}/${name} missing`);
  return o;
};
const matches = (selector, labels) => Object.entries(selector).every(([k, v]) => labels[k] === v);
const arg = (container, flag) => {
  const a = container.args.find((x) => x.startsWith(`${flag}=`));
  return a && a.slice(flag.length + 1);
};

test('overlays exist: cpu and gpu', () => {
  assert.deepEqual(OVERLAYS, ['cpu', 'gpu']);
});

test('the schema check can fail: misspelt fields and wrong types are reported', () => {
  const objs = render('cpu');
  const d = structuredClone(named(objs, 'Deployment', 'kvwire-decode'));
  d.spec.template.spec.containers[0].readinesProbe = { grpc: { port: 1 } };
  d.spec.minReadySeconds = 'soon';
  const errors = checkObject(d).join('\n');
  assert.match(errors, /containers\[0\]\.readinesProbe: unknown field/);
  assert.match(errors, /minReadySeconds/);
  const sm = structuredClone(byKind(objs, 'ServiceMonitor')[0]);
  sm.spec.endpoints[0].intervall = '5s';
  assert.match(checkObject(sm).join('\n'), /endpoints\[0\]\.intervall: unknown field/);
  assert.match(checkObject({ apiVersion: 'example.com/v1', kind: 'Thing', metadata: { name: 'x' } }).join(), /no schema/);
});

for (const overlay of OVERLAYS) {
  test(`overlay ${overlay} renders, matches the Kubernetes schemas and fits together`, () => {
    const objs = render(overlay);
    const errors = objs.flatMap((o) => checkObject(o));
    assert.deepEqual(errors, [], 'schema errors');

    const kinds = objs.map((o) => `${o.apiVersion} ${o.kind}`).sort();
    for (const k of ['apps/v1 Deployment', 'v1 Service', 'v1 ConfigMap', 'autoscaling/v2 HorizontalPodAutoscaler',
      'policy/v1 PodDisruptionBudget', 'monitoring.coreos.com/v1 ServiceMonitor', 'v1 Namespace']) {
      assert.ok(kinds.includes(k), `${k} missing`);
    }
    for (const o of objs) {
      if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'kvwire', `${o.kind}/${o.metadata.name} namespace`);
    }

    const configMaps = new Map(byKind(objs, 'ConfigMap').map((c) => [c.metadata.name, c]));
    const deployments = byKind(objs, 'Deployment');
    assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), ['kvwire-decode', 'kvwire-prefill']);
    const services = byKind(objs, 'Service');
    for (const d of deployments) {
      const pod = d.spec.template;
      assert.ok(matches(d.spec.selector.matchLabels, pod.metadata.labels), `${d.metadata.name}: selector vs pod labels`);
      assert.equal(pod.spec.securityContext.runAsNonRoot, true);
      for (const vol of pod.spec.volumes || []) {
        if (vol.configMap) assert.ok(configMaps.has(vol.configMap.name), `${d.metadata.name}: volume ConfigMap ${vol.configMap.name}`);
      }
      assert.equal(pod.spec.containers.length, 1);
      const c = pod.spec.containers[0];
      for (const ref of c.envFrom || []) assert.ok(configMaps.has(ref.configMapRef.name), `envFrom ${ref.configMapRef.name}`);
      const role = c.args[1];
      assert.deepEqual(c.args.slice(0, 2), ['serve', role]);
      const flags = serveFlags(role);
      for (const a of c.args.filter((x) => x.startsWith('--'))) {
        assert.ok(flags.has(a.split('=')[0]), `${d.metadata.name}: kvwire serve ${role} has no ${a}`);
      }
      assert.equal(d.metadata.name, `kvwire-${role}`);
      const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
      assert.equal(Number(arg(c, '--listen').split(':').pop()), ports.grpc, 'listen port = grpc port');
      assert.equal(Number(arg(c, '--metrics-port')), ports.metrics, '--metrics-port = metrics port');
      for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        assert.equal(c[probe].grpc.port, ports.grpc, `${d.metadata.name} ${probe} on gRPC health`);
      }
      assert.ok(c.resources.requests.cpu && c.resources.requests.memory, 'resource requests');
      assert.ok(c.resources.limits.memory, 'memory limit');
      // The preset files the node is told to load are in the mounted ConfigMap.
      const mount = c.volumeMounts.find((m) => m.name === 'codec');
      const codec = configMaps.get(pod.spec.volumes.find((v) => v.name === 'codec').configMap.name);
      for (const flag of c.args.filter((a) => a.startsWith('--presets='))) {
        const file = flag.slice('--presets='.length);
        assert.equal(path.dirname(file), mount.mountPath);
        const key = path.basename(file);
        assert.equal(codec.data[key], fs.readFileSync(path.join(K8S, 'base/config', key), 'utf8'), key);
      }
      // Every ClusterIP Service that selects these pods names ports the container has.
      for (const s of services.filter((x) => matches(x.spec.selector, pod.metadata.labels))) {
        for (const p of s.spec.ports) assert.ok(p.targetPort in ports, `${s.metadata.name}: targetPort ${p.targetPort}`);
      }
      // GPU overlay: one GPU per pod, engine on cuda; CPU overlay: none.
      const env = Object.assign({}, ...c.envFrom.map((r) => configMaps.get(r.configMapRef.name).data));
      if (overlay === 'gpu') {
        assert.equal(String(c.resources.limits['nvidia.com/gpu']), '1');
        assert.equal(env.KVWIRE_DEVICE, 'cuda');
        assert.ok(pod.spec.tolerations.some((t) => t.key === 'nvidia.com/gpu'));
      } else {
        assert.ok(!('nvidia.com/gpu' in (c.resources.limits || {})));
        assert.equal(env.KVWIRE_DEVICE, 'cpu');
      }
    }

    // Client-side balancing: the prefill pods dial the headless Service of the decode pods.
    const headless = named(objs, 'Service', 'kvwire-decode-headless');
    assert.equal(headless.spec.clusterIP, 'None');
    const decodePod = named(objs, 'Deployment', 'kvwire-decode').spec.template;
    assert.ok(matches(headless.spec.selector, decodePod.metadata.labels));
    const prefillC = named(objs, 'Deployment', 'kvwire-prefill').spec.template.spec.containers[0];
    assert.equal(arg(prefillC, '--decode'), `dns:///kvwire-decode-headless:${headless.spec.ports[0].port}`);

    for (const h of byKind(objs, 'HorizontalPodAutoscaler')) {
      named(objs, h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name);
      assert.ok(h.spec.minReplicas >= 1 && h.spec.maxReplicas >= h.spec.minReplicas);
    }
    const pdbs = byKind(objs, 'PodDisruptionBudget');
    for (const d of deployments) {
      assert.ok(pdbs.some((p) => matches(p.spec.selector.matchLabels, d.spec.template.metadata.labels)), `PDB for ${d.metadata.name}`);
    }

    // The ServiceMonitor scrapes the prefill and decode Services (not the headless one) under
    // the job names the Prometheus config, rules and dashboard use.
    const sm = byKind(objs, 'ServiceMonitor')[0];
    const scraped = services.filter((s) => matches(sm.spec.selector.matchLabels, s.metadata.labels || {}));
    const jobs = scraped.map((s) => s.metadata.labels[sm.spec.jobLabel]).sort();
    const promJobs = readYaml(path.join(SOURCE_DIR, 'deploy/prometheus/prometheus.yml')).scrape_configs.map((c) => c.job_name).sort();
    assert.deepEqual(jobs, promJobs);
    for (const s of scraped) assert.ok(s.spec.ports.some((p) => p.name === sm.spec.endpoints[0].port), `${s.metadata.name} metrics port`);
  });
}
