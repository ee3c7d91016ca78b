// monitoring/grafana-dashboard.json must only chart metrics the processes actually export.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../../src/config/load.ts';
import { createMetrics } from '../../../src/observability/metrics.ts';

interface Panel { id: number; title: string; targets: { expr: string }[]; gridPos: { x: number; y: number; w: number; h: number } }
const dashboard = JSON.parse(readFileSync(join(repoRoot, 'monitoring/grafana-dashboard.json'), 'utf8')) as {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string }[] };
};

describe('grafana dashboard', () => {
  it('charts only metrics that createMetrics registers, and covers every metric of the issue', async () => {
    const exported = new Set((await createMetrics('worker').registry.getMetricsAsJSON()).map((m) => m.name));
    const used = new Set<string>();
    for (const p of dashboard.panels) {
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) for (const m of t.expr.matchAll(/\bblip3o_\w+/g)) used.add(m[0].replace(/_(bucket|count|sum)$/, ''));
    }
    for (const name of used) expect(exported, `${name} is charted but not exported`).toContain(name);
    for (const needed of ['blip3o_queue_depth', 'blip3o_queue_wait_seconds', 'blip3o_job_stage_seconds', 'blip3o_gpu_seconds_total', 'blip3o_deliveries_total', 'blip3o_failures_total', 'blip3o_execution_provider'])
      expect(used, needed).toContain(needed);
  });

  it('groups, filters and labels only by labels those metrics have (plus component and what Prometheus adds)', () => {
    const registry = createMetrics('worker').registry;
    const labelsOf = (name: string): string[] => {
      const m = registry.getSingleMetric(name) as unknown as { labelNames: string[] } | undefined;
      return m ? [...m.labelNames, 'component', 'instance', 'job', ...(name.endsWith('_bucket') ? ['le'] : [])] : [];
    };
    for (const p of dashboard.panels)
      for (const t of p.targets as { expr: string; legendFormat?: string }[]) {
        const metrics = [...t.expr.matchAll(/\bblip3o_\w+/g)].map((m) => m[0]);
        const known = new Set(metrics.flatMap((m) => [...labelsOf(m), ...labelsOf(m.replace(/_(bucket|count|sum)$/, '')), ...(m.endsWith('_bucket') ? ['le'] : [])]));
        const used = [
          ...[...t.expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()).filter(Boolean)),
          ...[...t.expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1]!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1]!)),
          ...[...(t.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!),
        ];
        for (const label of used) expect(known, `${p.title}: ${label} in ${t.expr}`).toContain(label);
      }
  });

  it('takes its data source from a variable, so it works both imported and provisioned', () => {
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', query: 'prometheus' }));
    const text = JSON.stringify(dashboard.panels);
    expect(text).not.toMatch(/"uid":"(?!\$\{DS_PROMETHEUS\})/);
  });

  it('has unique panel ids and no overlapping panels', () => {
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels)
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++)
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
  });
});
