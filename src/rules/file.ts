/**
 * RULES_FILE: the operator's own match rules, in JSON (no YAML: JSON needs no dependency, its
 * parser is node's own, and every editor checks it). Validated with zod; every problem names its
 * place in the file as line:column, so a broken file is fixed from the message alone.
 *
 *   { "rules": [ { "name": "l7-handshake", "transport": "tcp", "direction": "any", "packets": 2,
 *                  "match": [ { "text": "\u0013bittorrent protocol", "offset": 0, "ignoreCase": true },
 *                             { "hex": "64 31 3a 61 64 32 3a 69 64 32 30 3a", "within": 64 },
 *                             { "regex": "^get /scrape\\?info_hash=", "within": 128, "ignoreCase": true } ],
 *                  "action": "drop", "mayBan": false } ] }
 *
 * A rule matches a payload packet when any of its patterns does: bytes (hex or text) at exactly
 * `offset`, or anywhere ending within the first `within` bytes; or a regular expression (see
 * src/detect/byte-regex.ts) over the first `within` bytes. Only the first `packets` payload packets
 * of a flow in the rule's direction are looked at.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ACTIONS, type Action } from '../config/actions.js';
import { ByteRegex, RegexSyntaxError } from '../detect/byte-regex.js';

/** Bytes of a payload packet a pattern may look into (an Ethernet MTU's worth of payload). */
export const MAX_WITHIN = 1500;
/** Payload packets per direction a rule may look at. */
export const MAX_RULE_PACKETS = 8;
/** The rule name goes into the ban map's rule field (bpf/btwall.h BTW_RULE_BYTES: 23 bytes and a NUL). */
const NAME = /^[a-z0-9][a-z0-9._-]{0,22}$/;
const MAX_RULES = 256;

export interface BytesPattern {
  kind: 'bytes';
  bytes: Uint8Array;
  /** The pattern's first byte is at this offset of the payload; null: anywhere ending within `within`. */
  offset: number | null;
  within: number;
  ignoreCase: boolean;
}

export interface RegexPattern {
  kind: 'regex';
  source: string;
  within: number;
  ignoreCase: boolean;
}

export type Pattern = BytesPattern | RegexPattern;

export interface OperatorRule {
  name: string;
  transport: 'tcp' | 'udp' | 'any';
  /** Whose bytes: the flow's initiator's, its responder's, or either. */
  direction: 'initiator' | 'responder' | 'any';
  packets: number;
  patterns: Pattern[];
  action: Action;
  /** The operator vouches that a match is the protocol itself in its producer's bytes: `exact` evidence, which may ban on proof. */
  mayBan: boolean;
}

const position = { offset: z.int().min(0).max(MAX_WITHIN - 1).optional(), within: z.int().min(1).max(MAX_WITHIN).optional(), ignoreCase: z.boolean().default(false) };

const hexPattern = z.strictObject({
  hex: z
    .string()
    .transform((v) => v.replace(/[\s:]/g, ''))
    .refine((v) => /^([0-9a-fA-F]{2})+$/.test(v), 'must be pairs of hex digits (spaces and colons between them allowed)'),
  ...position,
});
const textPattern = z.strictObject({ text: z.string().min(1, 'must not be empty').refine((v) => [...v].every((c) => c.charCodeAt(0) <= 0xff), 'must be bytes: characters up to \\u00ff (use hex for others)'), ...position });
const regexPattern = z.strictObject({
  regex: z.string().min(1, 'must not be empty'),
  within: z.int().min(1).max(MAX_WITHIN),
  ignoreCase: z.boolean().default(false),
});

const ruleSchema = z.strictObject({
  name: z.string().regex(NAME, 'must be 1-23 characters: lower-case letters, digits, ".", "_" and "-", starting with a letter or digit'),
  transport: z.enum(['tcp', 'udp', 'any']).default('any'),
  direction: z.enum(['initiator', 'responder', 'any']).default('any'),
  packets: z.int().min(1).max(MAX_RULE_PACKETS).default(1),
  match: z.array(z.union([hexPattern, textPattern, regexPattern], { error: 'must be a pattern: {"hex": ...}, {"text": ...} or {"regex": ..., "within": N}' })).min(1, 'needs at least one pattern'),
  action: z.enum(ACTIONS).default('drop'),
  mayBan: z.boolean().default(false),
});

const fileSchema = z.strictObject({ rules: z.array(ruleSchema).max(MAX_RULES) });

export class RulesFileError extends Error {
  constructor(
    readonly path: string,
    readonly problems: string[],
  ) {
    super(`${path}: ${problems.length === 1 ? problems[0] : `\n${problems.map((p) => `  ${p}`).join('\n')}`}`);
  }
}

/** Reads, parses and validates a rules file; throws RulesFileError naming every problem and where. */
export function loadRulesFile(path: string): OperatorRule[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new RulesFileError(path, [`cannot read: ${(error as Error).message}`]);
  }
  return parseRules(text, path);
}

/** The rules in `text` (a file's contents; `path` names it in errors). */
export function parseRules(text: string, path: string): OperatorRule[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const message = (error as Error).message;
    const at = /position (\d+)/.exec(message);
    const where = at === null ? lineColumn(text, text.length) : lineColumn(text, Number(at[1]));
    throw new RulesFileError(path, [`${where}: not JSON: ${message.replace(/ in JSON at position \d+.*$/, '')}`]);
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const places = valuePositions(text);
    throw new RulesFileError(
      path,
      parsed.error.issues.map((issue) => {
        // An unknown key is pointed at itself, not at the object holding it.
        const unknownKey = issue.code === 'unrecognized_keys';
        const at = nearestPosition(places, unknownKey ? [...issue.path, issue.keys[0]] : issue.path, unknownKey);
        const field = issue.path.length > 0 ? issue.path.join('.') : 'the file';
        return `${lineColumn(text, at)}: ${field}: ${issue.message}`;
      }),
    );
  }
  const problems: string[] = [];
  const places = valuePositions(text);
  const seen = new Set<string>();
  const rules = parsed.data.rules.map((rule, r) => {
    const where = (...path: (string | number)[]) => lineColumn(text, nearestPosition(places, ['rules', r, ...path]));
    if (seen.has(rule.name)) problems.push(`${where('name')}: rules.${r}.name: ${JSON.stringify(rule.name)} is the name of an earlier rule`);
    seen.add(rule.name);
    const patterns = rule.match.map((m, i): Pattern => {
      if ('regex' in m) {
        try {
          new ByteRegex(m.regex, { caseInsensitive: m.ignoreCase });
        } catch (error) {
          if (!(error instanceof RegexSyntaxError)) throw error;
          problems.push(`${where('match', i, 'regex')}: rules.${r}.match.${i}.regex: ${error.message}`);
        }
        return { kind: 'regex', source: m.regex, within: m.within, ignoreCase: m.ignoreCase };
      }
      const bytes = 'hex' in m ? Uint8Array.from(Buffer.from(m.hex, 'hex')) : Uint8Array.from(Buffer.from(m.text, 'latin1'));
      if (m.offset !== undefined && m.within !== undefined) problems.push(`${where('match', i)}: rules.${r}.match.${i}: give offset or within, not both`);
      const offset = m.offset ?? null;
      const within = offset !== null ? offset + bytes.length : (m.within ?? MAX_WITHIN);
      if (bytes.length > within || within > MAX_WITHIN) {
        problems.push(`${where('match', i)}: rules.${r}.match.${i}: the ${bytes.length} bytes cannot fit ${offset !== null ? `at offset ${offset}` : `within ${within}`} of the first ${MAX_WITHIN} bytes, so it never matches`);
      }
      return { kind: 'bytes', bytes, offset, within, ignoreCase: m.ignoreCase };
    });
    return { name: rule.name, transport: rule.transport, direction: rule.direction, packets: rule.packets, patterns, action: rule.action, mayBan: rule.mayBan };
  });
  if (problems.length > 0) throw new RulesFileError(path, problems);
  return rules;
}

function lineColumn(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

/** The offset in the text of each JSON value, by its path joined with ".". The text is valid JSON. */
function valuePositions(text: string): Map<string, number> {
  const places = new Map<string, number>();
  let i = 0;
  const space = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const string = (): string => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (path: string) => {
    space();
    places.set(path, i);
    const join = (key: string | number) => (path === '' ? String(key) : `${path}.${key}`);
    if (text[i] === '{') {
      i++;
      space();
      while (text[i] !== '}') {
        space();
        const keyAt = i;
        const key = string();
        places.set(`${join(key)}#key`, keyAt);
        space();
        i++; // :
        value(join(key));
        space();
        if (text[i] === ',') i++;
        space();
      }
      i++;
    } else if (text[i] === '[') {
      i++;
      space();
      for (let n = 0; text[i] !== ']'; n++) {
        value(join(n));
        space();
        if (text[i] === ',') i++;
        space();
      }
      i++;
    } else if (text[i] === '"') string();
    else while (i < text.length && !/[\s,\]}]/.test(text[i])) i++;
  };
  value('');
  return places;
}

/** Where the value at `path` is (or its key, with `key`); for a missing one, its nearest parent's. */
function nearestPosition(places: Map<string, number>, path: readonly PropertyKey[], key = false): number {
  for (let n = path.length; n >= 0; n--) {
    const joined = path.slice(0, n).map(String).join('.');
    const at = (key && n === path.length ? places.get(`${joined}#key`) : undefined) ?? places.get(joined);
    if (at !== undefined) return at;
  }
  return 0;
}
