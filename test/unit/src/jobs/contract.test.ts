// The contract's helpers that other modules key on: the workspace and channel keys (limits, fair scheduling and admin
// commands store state under them, so a change silently splits or merges channels) and the error a malformed payload
// raises (the worker logs it and fails the job without retrying, so it must name the fields).
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../../../src/errors.ts';
import { channelKey, ContractError, isNoLog, JobResult, parseContract, parseStoredJson, workspaceOf, type Destination } from '../../../../src/jobs/contract.ts';

const discord = (guildId: string | null): Destination => ({ platform: 'discord', guildId, channelId: 'c1', userId: 'u1', applicationId: 'a1' });
const slack: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
const cli: Destination = { platform: 'cli', clientId: 'k1', channelId: 'local', userId: 'me' };

describe('workspace and channel keys', () => {
  it('name the guild, the team, "dm" for a Discord DM and "local" for the CLI', () => {
    expect(workspaceOf(discord('g1'))).toBe('g1');
    expect(workspaceOf(discord(null))).toBe('dm');
    expect(workspaceOf(slack)).toBe('T1');
    expect(workspaceOf(cli)).toBe('local');
  });

  it('are platform:workspace:channel, so the same channel id on two platforms or guilds stays apart', () => {
    expect(channelKey(discord('g1'))).toBe('discord:g1:c1');
    expect(channelKey(discord(null))).toBe('discord:dm:c1');
    expect(channelKey(slack)).toBe('slack:T1:C1');
    expect(channelKey(cli)).toBe('cli:local:local');
    expect(channelKey({ ...slack, channelId: 'c1' })).not.toBe(channelKey(discord('T1')));
  });
});

describe('parseContract', () => {
  it('returns the parsed value of a payload that matches', () => {
    expect(parseContract(z.object({ a: z.number() }), { a: 1, extra: true }, 'thing')).toEqual({ a: 1 });
  });

  it('throws a ContractError naming every bad field by its dotted path, separated by "; "', () => {
    const schema = z.object({ image: z.object({ width: z.number() }), name: z.string() });
    let error: unknown;
    try {
      parseContract(schema, { image: { width: 'wide' }, name: 3 }, 'job result');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ContractError);
    expect(error).toBeInstanceOf(AppError);
    const e = error as ContractError;
    expect(e.name).toBe('ContractError');
    expect(e.code).toBe('contract');
    expect(e.message).toMatch(/^job result does not match contract v\d+: /);
    const issues = e.message.slice(e.message.indexOf(': ') + 2).split('; ');
    expect(issues).toHaveLength(2);
    expect(issues[0]).toMatch(/^image\.width: .+/);
    expect(issues[1]).toMatch(/^name: .+/);
  });

  it("takes any error code: a bot or worker of an older version reads a code added since (e.g. 'input_withheld')", () => {
    const failed = { v: 1, jobId: 'j', kind: 'vary', destination: { platform: 'cli', clientId: 'c', channelId: 'local', userId: 'u' }, status: 'failed', timingsMs: {}, finishedAt: 1 };
    const error = { code: 'a_code_from_a_later_version', message: 'Not posted.', userFacing: true, private: true };
    expect(parseContract(JobResult, { ...failed, error }, 'job result').error).toEqual(error);
  });

  it('calls a problem with the payload itself "(root)"', () => {
    expect(() => parseContract(JobResult, 'not an object', 'job result')).toThrow(/: \(root\): .+/);
  });
});

describe('isNoLog', () => {
  it("is the deployment's setting, or the channel's on Discord and Slack (the CLI has no channel to set it)", () => {
    expect(isNoLog({ noLog: false }, discord('g1'))).toBe(false);
    expect(isNoLog({ noLog: true }, discord('g1'))).toBe(true);
    expect(isNoLog({ noLog: true }, cli)).toBe(true);
    expect(isNoLog({ noLog: false }, { ...slack, noLog: true })).toBe(true);
    expect(isNoLog({ noLog: false }, { ...(discord('g1') as object), noLog: true } as Destination)).toBe(true);
    expect(isNoLog({ noLog: false }, { ...slack, noLog: false })).toBe(false);
  });
});

describe('parseStoredJson', () => {
  it('reads a value kept in Redis as JSON when it matches the schema, and ignores one that is not JSON or does not match', () => {
    const schema = z.strictObject({ n: z.number() });
    expect(parseStoredJson(schema, '{"n":1}')).toEqual({ n: 1 });
    expect(parseStoredJson(schema, '{"n":"1"}')).toBeUndefined();
    expect(parseStoredJson(schema, 'not json at all')).toBeUndefined(); // never thrown: Redis is a trust boundary too
  });
});
