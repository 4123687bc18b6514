#!/usr/bin/env node
// `npm run generate:prometheus-rule`: writes deploy/kubernetes/prometheusrule.yaml, the Prometheus
// Operator PrometheusRule that carries deploy/prometheus/alerts.yml's rule groups unchanged (recording
// rules, alerts, labels, annotations, comments and block styles), so Kubernetes and the compose stack
// alert alike. Run it after every change to alerts.yml; the unit tests fail while the two differ.
//
//   node scripts/generate-prometheus-rule.mjs            write the file
//   node scripts/generate-prometheus-rule.mjs --check    exit 1 (and say so) if the file is not what
//                                                         would be written
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as prettier from 'prettier';
import { Document, parseDocument } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = 'deploy/prometheus/alerts.yml';
const TARGET = 'deploy/kubernetes/prometheusrule.yaml';

const HEADER = [
  `Generated from ${SOURCE} by \`npm run generate:prometheus-rule\`: edit that file, not this one.`,
  'Prometheus Operator loads it into every Prometheus whose ruleSelector matches these labels (add a',
  "Helm release's `release: <name>` label in an overlay where it selects by one).",
].join('\n');

/** The PrometheusRule text for the alerts file's text (unformatted). */
function render(alertsText) {
  const source = parseDocument(alertsText);
  if (source.errors.length > 0) throw new Error(`${SOURCE}: ${source.errors[0].message}`);
  const groups = source.get('groups', true);
  if (groups === undefined) throw new Error(`${SOURCE}: no groups`);
  const rule = new Document({
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'cache-refresher',
      labels: {
        'app.kubernetes.io/name': 'cache-refresher',
        'app.kubernetes.io/component': 'cache-refresher',
      },
    },
    spec: {},
  });
  // The node itself, not its value: comments and scalar styles (`|`, `>-`) come along.
  rule.setIn(['spec', 'groups'], groups);
  rule.commentBefore = HEADER.split('\n')
    .map((line) => ` ${line}`)
    .join('\n');
  return rule.toString({ lineWidth: 110 });
}

const { values } = parseArgs({ options: { check: { type: 'boolean', default: false } } });
const target = path.join(ROOT, TARGET);
const options = (await prettier.resolveConfig(target)) ?? {};
const text = await prettier.format(render(readFileSync(path.join(ROOT, SOURCE), 'utf8')), {
  ...options,
  filepath: target,
});

if (values.check) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch (err) {
    if (err?.code !== 'ENOENT') throw err;
  }
  if (current !== text) {
    process.stderr.write(`${TARGET} is not generated from ${SOURCE}: run npm run generate:prometheus-rule\n`);
    process.exit(1);
  }
  process.stdout.write(`${TARGET} is up to date with ${SOURCE}\n`);
} else {
  writeFileSync(target, text);
  process.stdout.write(`wrote ${TARGET} from ${SOURCE}\n`);
}
