// Types of stryker.config.mjs for test/mutation/run.ts, which reads its group names (tsconfig has no allowJs).
export declare const groups: Record<string, string[]>;
declare const config: Record<string, unknown>;
export default config;
