// Midjourney's `--no` syntax inside a prompt: "a castle at dusk --no people, cars" → prompt "a castle at dusk",
// negative "people, cars". Used where a prompt is one free text (Discord's prompt option, the Slack command parses
// its flags itself). The negative runs to the next `--flag` or the end; several `--no` are joined with ", ".
const NO_FLAG = /(^|\s)[-\u2013\u2014]{1,2}no\s+(.*?)(?=\s[-\u2013\u2014]{1,2}[a-z]|$)/gis;

export function splitNegative(text: string): { prompt: string; negative?: string } {
  const negatives: string[] = [];
  const prompt = text.replace(NO_FLAG, (_m, lead: string, neg: string) => {
    // Stryker disable next-line MethodExpression: equivalent to `if (neg)`: the greedy \s+ leaves the capture empty, never blank
    if (neg.trim()) negatives.push(neg.trim());
    return lead;
  });
  const clean = prompt.replace(/\s+/g, ' ').trim();
  return negatives.length ? { prompt: clean, negative: negatives.join(', ') } : { prompt: clean };
}

/** The user's negative from an explicit option and/or `--no` in the prompt, joined; undefined when neither. */
export function joinNegatives(...parts: (string | null | undefined)[]): string | undefined {
  const kept = parts.map((p) => (p ?? '').trim()).filter(Boolean);
  return kept.length ? kept.join(', ') : undefined;
}
