// The PromQL expressions deploy/ uses: dashboard targets and template variables, recording rules
// and the query part of each alert, made runnable against a plain Prometheus.
import fs from 'node:fs';
import path from 'node:path';
import { readYaml } from './lib.mjs';

// Grafana's macros and this dashboard's variables, as a test run substitutes them.
export function substituteGrafana(expr) {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('${preset}', '.*')
    .replaceAll('$preset', '.*');
}

// [{where, expr}] of every panel target (rows' nested panels included) and of each query
// variable (label_values(M, L) becomes M: the variable has values when M has series).
export function dashboardQueries(file) {
  const d = JSON.parse(fs.readFileSync(file, 'utf8'));
  const out = [];
  const visit = (panels) => {
    for (const p of panels || []) {
      for (const t of p.targets || []) {
        if (t.expr) out.push({ where: `${path.basename(file)}: ${p.title} (${t.refId})`, expr: substituteGrafana(t.expr) });
      }
      visit(p.panels);
    }
  };
  visit(d.panels);
  for (const v of (d.templating && d.templating.list) || []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query.query;
    const m = q.match(/^label_values\((.*),\s*\w+\)$/s);
    if (!m) throw new Error(`variable ${v.name}: only label_values(metric, label) is supported: ${q}`);
    out.push({ where: `${path.basename(file)}: variable ${v.name}`, expr: m[1] });
  }
  return out;
}

// An alert expression `QUERY OP NUMBER` split into its parts; null if it has another form.
export function splitAlert(expr) {
  const m = expr.trim().match(/^(.*\S)\s*(==|!=|>=|<=|>|<)\s*([-+]?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)$/s);
  return m ? { query: m[1], op: m[2], threshold: Number(m[3]) } : null;
}

// [{where, expr}] for every recording rule and the query part of every alert.
export function ruleQueries(file) {
  const out = [];
  for (const g of readYaml(file).groups) {
    for (const r of g.rules) {
      if (r.record) {
        out.push({ where: `${path.basename(file)}: record ${r.record}`, expr: r.expr });
      } else {
        const split = splitAlert(r.expr);
        if (!split) throw new Error(`alert ${r.alert}: expr must be 'QUERY OP NUMBER': ${r.expr}`);
        out.push({ where: `${path.basename(file)}: alert ${r.alert}`, expr: split.query });
      }
    }
  }
  return out;
}
