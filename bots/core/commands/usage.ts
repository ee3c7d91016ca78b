// /blip3o-admin budget … and /blip3o-admin usage [days] (admins): GPU-second budgets per UTC day at runtime, and
// who used what (src/accounting/usage.ts). Budgets are stored in Redis, where they win over config usage.budgets; every
// bot and worker sees a change on the next request. The usage report is a short table and a small bar chart (SVG
// rendered to PNG with sharp), private to the admin.
import sharp from 'sharp';
import stringWidth from 'string-width';
import { UserError } from '../../../src/errors.ts';
import { charCount, clipText, cutPoint, firstChars } from '../../../src/text.ts';
import { channelKey, workspaceOf, type Destination } from '../../../src/jobs/contract.ts';
import type { Gate } from '../../../src/limits/gate.ts';
import { scopeIds } from '../../../src/limits/limiter.ts';
import { MAX_BUDGET_SECONDS, SCOPES, defaultReportDays, memberId, type BudgetField, type Scope, type UsageRow } from '../../../src/accounting/usage.ts';
import type { DisplayNames, Invocation, NameQuery, Reply } from '../port.ts';
import { stripControlChars } from '../plain-text.ts';
import { requireAdmin, type AdminDeps } from './limits.ts';

// Stryker disable next-line EqualityOperator: equivalent at 100 (both branches write "100")
const num = (n: number) => (n >= 100 ? Math.round(n).toLocaleString('en') : String(Math.round(n * 10) / 10));
const workspaceWord = (d: Destination) => (d.platform === 'discord' ? 'server' : 'workspace');
/** A user as the chat shows them: Discord and Slack render `<@id>` as the user's name (a private reply pings no one). */
const mention = (d: Destination, userId: string) => (d.platform === 'cli' ? userId : `<@${userId}>`);

/** The destination of the user a budget command is about: `targetUserId` where the admin asks, else the admin. */
const userAsked = (inv: Invocation, targetUserId: string | undefined): Destination =>
  targetUserId ? { ...inv.destination, userId: targetUserId } : inv.destination;

/**
 * Where a budget command's override is kept: this channel, this workspace, or a user (default the caller) in this
 * workspace only: an admin of one server or workspace must not change what a user may use in another.
 */
function target(inv: Invocation, scope: Scope, targetUserId: string | undefined): { field: BudgetField; id: string; name: string } {
  const d = inv.destination;
  const ids = scopeIds(d);
  if (scope === 'channel') return { field: scope, id: ids.channel, name: 'this channel' };
  if (scope === 'workspace') return { field: scope, id: ids.workspace, name: `this ${workspaceWord(d)}` };
  return { field: 'member', id: memberId(userAsked(inv, targetUserId)), name: targetUserId && targetUserId !== d.userId ? `user ${mention(d, targetUserId)}` : 'you' };
}

async function showBudgets(gate: Gate, inv: Invocation, targetUserId?: string): Promise<string> {
  const d = userAsked(inv, targetUserId);
  const [budgets, today] = await Promise.all([gate.usage.budgets(d), gate.usage.today(d)]);
  const lines = ['GPU-second budgets per day (UTC; resets at 00:00 UTC):'];
  for (const s of SCOPES) {
    const b = budgets[s];
    const { used, inflight } = today[s];
    // Stryker disable next-line ConditionalExpression: equivalent, the channel's and workspace's names do not depend on the user
    const who = s === 'user' ? target(inv, s, targetUserId).name : target(inv, s, undefined).name;
    // An admin's 0 is said as theirs (a reset brings the default back); until 2026-12-07 it read as "no budget", like none configured.
    const from = b.source === 'redis' ? ' (set by an admin)' : b.seconds > 0 ? ' (default)' : '';
    const limit = `${b.seconds > 0 ? num(b.seconds) : 'no budget'}${from}`;
    lines.push(`• ${who}: ${limit}; used today ${num(used)}${inflight > 0 ? `, ${num(inflight)} more queued or running (estimated)` : ''}`);
  }
  return lines.join('\n');
}

export async function budgetCommand(inv: Invocation, deps: AdminDeps): Promise<Reply> {
  const input = inv.input;
  if (input.command !== 'budget') throw new Error(`not a budget command: ${input.command}`);
  requireAdmin(inv, 'view or change GPU budgets');
  const { usage } = deps.gate;
  const scope = input.scope ?? 'channel';
  const t = target(inv, scope, input.targetUserId);
  switch (input.action) {
    case 'show':
      return { kind: 'text', text: await showBudgets(deps.gate, inv, input.targetUserId), private: true };
    case 'set': {
      const seconds = input.seconds;
      if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0 || seconds > MAX_BUDGET_SECONDS)
        throw new UserError('bad_request', `Give the budget in GPU-seconds per day, from 0 (no budget) to ${num(MAX_BUDGET_SECONDS)}.`);
      await usage.setBudget(t.field, t.id, seconds);
      const what = seconds > 0 ? `${num(seconds)} GPU-seconds per day (resets at 00:00 UTC)` : 'no budget';
      return { kind: 'text', text: `The GPU budget for ${t.name} is now ${what}.`, private: true };
    }
    case 'reset': {
      await usage.resetBudget(t.field, t.id);
      if (scope === 'user') {
        // A user's budget set before budgets were per server (2026-12-07) holds on every server, and no admin of one
        // server may lift it: say so rather than "back to the default".
        const inForce = (await usage.budgets(userAsked(inv, input.targetUserId))).user;
        if (inForce.source === 'redis') {
          const what = inForce.seconds > 0 ? `${num(inForce.seconds)} GPU-seconds per day` : 'no budget';
          return { kind: 'text', text: `The GPU budget for ${t.name} set in this ${workspaceWord(inv.destination)} is removed; a budget set for them on every ${workspaceWord(inv.destination)} before budgets were per ${workspaceWord(inv.destination)} still applies: ${what}.`, private: true };
        }
      }
      const fallback = deps.config.usage.budgets[scope];
      return { kind: 'text', text: `The GPU budget for ${t.name} is back to the default: ${fallback > 0 ? `${num(fallback)} GPU-seconds per day` : 'no budget'}.`, private: true };
    }
  }
}

// ---- the usage report ----------------------------------------------------------------------------------------

const TOP = 5;
/** A name longer than this is cut (with …) so the table stays readable on a phone. */
const NAME_CHARS = 24;

/** What the usage report needs: the admin commands' deps, and names for the ids it lists (the core has them). */
export interface UsageDeps extends AdminDeps {
  displayNames?(destination: Destination, ids: NameQuery): Promise<DisplayNames>;
}

/**
 * A platform's name as one line of a code block: no control characters, no backtick to end the block, cut to
 * NAME_CHARS characters (code points) between whole ones (src/text.ts: a flag or a family emoji is never cut in two).
 */
export function cleanName(name: string): string {
  const line = stripControlChars(name).replace(/`/g, "'").replace(/\s+/g, ' ').trim();
  if (charCount(line) <= NAME_CHARS) return line;
  return `${line.slice(0, cutPoint(line, firstChars(line, NAME_CHARS - 1).length)).trimEnd()}…`;
}

/**
 * `text` then spaces to `columns` columns of a monospace font, counted by string-width (East Asian Wide and Fullwidth
 * characters and emoji 2, combining marks 0). `padEnd` counts UTF-16 units: until 2026-12-08 a CJK or emoji name
 * pushed its row's numbers out of line with the others.
 */
const padColumns = (text: string, columns: number) => text + ' '.repeat(Math.max(0, columns - stringWidth(text)));

function table(title: string, rows: UsageRow[], label: (id: string) => string): string[] {
  if (rows.length === 0) return [`${title}: nothing yet.`];
  const names = rows.slice(0, TOP).map((r) => label(r.id));
  const w = Math.max(8, ...names.map((n) => stringWidth(n)));
  const out = [`${title}:`, '```', `${padColumns('name', w)}  GPU-s    jobs  cached  refused`];
  rows.slice(0, TOP).forEach((r, i) =>
    out.push(`${padColumns(names[i]!, w)}  ${num(r.gpuSeconds).padStart(5)}  ${String(r.jobs).padStart(6)}  ${String(r.hits).padStart(6)}  ${String(r.refusals).padStart(7)}`),
  );
  out.push('```');
  return out;
}

const escapeXml = (s: string) => s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);

/** A small horizontal bar chart of GPU-seconds per channel and per user, as SVG (usageChart renders it). */
export function usageChartSvg(channels: { label: string; value: number }[], users: { label: string; value: number }[], title: string): string {
  const width = 640;
  const rowH = 22;
  const sections = [{ name: 'Channels', rows: channels.slice(0, TOP) }, { name: 'Users', rows: users.slice(0, TOP) }];
  const max = Math.max(1e-9, ...sections.flatMap((s) => s.rows.map((r) => r.value)));
  let y = 34;
  const parts = [`<text x="12" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>`];
  for (const s of sections) {
    y += 8;
    parts.push(`<text x="12" y="${y + 12}" font-size="13" font-weight="bold">${s.name}</text>`);
    y += rowH;
    if (s.rows.length === 0) {
      parts.push(`<text x="24" y="${y + 12}" font-size="12" fill="#666">none</text>`);
      y += rowH;
    }
    for (const r of s.rows) {
      const bar = Math.max(1, Math.round((r.value / max) * 330));
      parts.push(
        `<text x="24" y="${y + 14}" font-size="12">${escapeXml(clipText(r.label, 28, ''))}</text>`,
        `<rect x="230" y="${y + 3}" width="${bar}" height="14" fill="#5865f2"/>`,
        `<text x="${236 + bar}" y="${y + 14}" font-size="12">${escapeXml(num(r.value))} s</text>`,
      );
      y += rowH;
    }
  }
  const height = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif"><rect width="100%" height="100%" fill="#ffffff"/>${parts.join('')}</svg>`;
}

/** usageChartSvg rendered to PNG by sharp. */
export async function usageChart(channels: { label: string; value: number }[], users: { label: string; value: number }[], title: string): Promise<Uint8Array> {
  return new Uint8Array(await sharp(Buffer.from(usageChartSvg(channels, users, title))).png().toBuffer());
}

export async function usageCommand(inv: Invocation, deps: UsageDeps): Promise<Reply> {
  const input = inv.input;
  if (input.command !== 'usage') throw new Error(`not a usage command: ${input.command}`);
  requireAdmin(inv, 'see GPU usage');
  const maxDays = deps.config.usage.retainDays;
  // A week by default, or every day kept when fewer are (a default the admin did not type must not be refused).
  const days = input.days ?? defaultReportDays(maxDays);
  if (!Number.isInteger(days) || days < 1 || days > maxDays) throw new UserError('bad_request', `days must be a whole number from 1 to ${maxDays}.`);
  const d = inv.destination;
  const wsPrefix = `${d.platform}:${workspaceOf(d)}:`;
  const { channels, users } = await deps.gate.usage.report(days, wsPrefix);
  const own = channelKey(d);
  const channelId = (key: string) => key.slice(wsPrefix.length);
  const names = await deps.displayNames?.(d, { channels: channels.slice(0, TOP).map((r) => channelId(r.id)), users: users.slice(0, TOP).map((r) => r.id) });
  const named = (map: ReadonlyMap<string, string> | undefined, id: string) => {
    const name = map?.get(id);
    return name === undefined ? undefined : cleanName(name) || undefined;
  };
  const channelLabel = (key: string) => {
    const name = named(names?.channels, channelId(key));
    if (key === own) return name ? `#${name} (here)` : 'this channel';
    return name ? `#${name}` : d.platform === 'discord' ? `#${channelId(key)}` : channelId(key);
  };
  const userLabel = (id: string) => {
    const name = named(names?.users, id);
    return name ? `@${name}` : d.platform === 'discord' ? `@${id}` : id;
  };
  const period = days === 1 ? 'today (UTC)' : `the last ${days} days (UTC, today included)`;
  const total = channels.reduce((a, r) => a + r.gpuSeconds, 0);
  const text = [
    `GPU usage in this ${workspaceWord(d)} over ${period}: ${num(total)} GPU-seconds.`,
    ...table('Top channels', channels, channelLabel),
    ...table('Top users', users, userLabel),
  ].join('\n');
  const png = await usageChart(
    channels.map((r) => ({ label: channelLabel(r.id), value: r.gpuSeconds })),
    users.map((r) => ({ label: userLabel(r.id), value: r.gpuSeconds })),
    `GPU-seconds, ${days === 1 ? 'today' : `last ${days} days`}`,
  );
  return { kind: 'text', text, private: true, image: { png, name: `usage-${days}d.png`, altText: `Bar chart of GPU-seconds per channel and per user over ${period}` } };
}
