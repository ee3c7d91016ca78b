// docs/self-hosting.md's metrics table (and the metrics docs/cost.md and docs/checks.md describe) against what
// createMetrics registers: the same names, types and labels, both ways.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../../../src/config/load.ts';
import { createMetrics } from '../../../../src/observability/metrics.ts';

const read = (p: string) => readFileSync(join(repoRoot, p), 'utf8');

describe('metrics in the docs', () => {
  it('every metric is documented with its type and labels, and every documented metric exists', async () => {
    const registry = createMetrics('worker', { defaultMetrics: false }).registry;
    const exported = new Map(
      (await registry.getMetricsAsJSON()).map((m) => [m.name, { type: String(m.type), labels: [...(registry.getSingleMetric(m.name) as unknown as { labelNames: string[] }).labelNames].sort() }]),
    );
    const table = new Map<string, { type: string; labels: string[] }>();
    for (const [, name, type, labels] of read('docs/self-hosting.md').matchAll(/^\| `(blip3o_[a-z_]+)` \| (\w+) \| ([^|]*) \|/gm))
      table.set(name!, { type: type!, labels: labels!.split(',').map((l) => l.trim()).filter(Boolean).sort() });
    const elsewhere = new Set([...`${read('docs/cost.md')}\n${read('docs/checks.md')}`.matchAll(/`(blip3o_[a-z_]+)/g)].map((m) => m[1]!));
    for (const [name, m] of exported) {
      if (table.has(name)) expect(table.get(name), name).toEqual(m);
      else expect(elsewhere, `${name} is not documented`).toContain(name);
    }
    for (const name of [...table.keys(), ...elsewhere]) expect([...exported.keys()], `${name} is documented but not exported`).toContain(name);
  });
});
