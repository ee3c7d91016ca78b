// Discord-style snowflakes: (ms since 2015-01-01) << 22 | counter, 18–19 digits, strictly increasing.
// @discordjs/rest buckets routes by /\d{17,19}/ and discord.js calls BigInt(id), so fakes need real ones.
const DISCORD_EPOCH = 1_420_070_400_000n;
let counter = 0n;

export function snowflake(): string {
  counter = (counter + 1n) & 0x3fffffn;
  return String(((BigInt(Date.now()) - DISCORD_EPOCH) << 22n) | counter);
}
