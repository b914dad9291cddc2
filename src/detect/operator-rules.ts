import type { OperatorRule } from '../rules/file.js';
import { MAX_RULE_PACKETS } from '../rules/file.js';
import { IPPROTO_TCP } from '../packet/packet.js';
import { ByteRegex } from './byte-regex.js';
import { GIVE_UP, MATCH, MORE, OVER_TCP, OVER_UDP, STRENGTH_EXACT, STRENGTH_HEURISTIC, type Detector, type InspectContext } from './detector.js';
import { ByteMatcher, MatchList } from './matcher.js';

/** Matches one scan pass keeps before it resumes: enough for any payload a rule file makes sense for. */
export const MATCH_LIST_CAPACITY = 64;
const DIRECTION_ANY = 2;

/**
 * An operator's rules, compiled: every byte pattern into the Aho–Corasick matcher the built-in
 * signatures use (one for exact bytes, one folding ASCII case), each regex into its own NFA.
 * Built once per load; matching reads these arrays and allocates nothing.
 */
export class CompiledRules {
  readonly rules: readonly OperatorRule[];
  /** Bytes of a payload any pattern looks into. */
  readonly scanBytes: number;
  readonly matchers: readonly { matcher: ByteMatcher; uses: PatternUses }[];
  /** Regexes in rule order, with the rule each belongs to and its reach. */
  readonly regexes: readonly ByteRegex[];
  readonly regexRule: Int32Array;
  readonly regexWithin: Int32Array;
  /** Per rule: OVER_TCP/OVER_UDP, the direction (0, 1, DIRECTION_ANY), payload packets looked at. */
  readonly transports: Uint8Array;
  readonly directions: Uint8Array;
  readonly packets: Uint8Array;
  /** Payload packets per direction after which no rule looks any more. */
  readonly maxPackets: number;

  constructor(rules: readonly OperatorRule[]) {
    this.rules = rules;
    this.transports = Uint8Array.from(rules, (r) => (r.transport === 'tcp' ? OVER_TCP : r.transport === 'udp' ? OVER_UDP : OVER_TCP | OVER_UDP));
    this.directions = Uint8Array.from(rules, (r) => (r.direction === 'initiator' ? 0 : r.direction === 'responder' ? 1 : DIRECTION_ANY));
    this.packets = Uint8Array.from(rules, (r) => r.packets);
    this.maxPackets = rules.reduce((max, r) => Math.max(max, r.packets), 0);
    const matchers: { matcher: ByteMatcher; uses: PatternUses }[] = [];
    for (const ignoreCase of [false, true]) {
      const uses = new PatternUses(rules, ignoreCase);
      if (uses.patterns.length > 0) matchers.push({ matcher: new ByteMatcher(uses.patterns, { caseInsensitive: ignoreCase }), uses });
    }
    this.matchers = matchers;
    const regexes: { regex: ByteRegex; rule: number; within: number }[] = [];
    rules.forEach((rule, r) => {
      for (const p of rule.patterns) if (p.kind === 'regex') regexes.push({ regex: new ByteRegex(p.source, { caseInsensitive: p.ignoreCase }), rule: r, within: p.within });
    });
    this.regexes = regexes.map((x) => x.regex);
    this.regexRule = Int32Array.from(regexes, (x) => x.rule);
    this.regexWithin = Int32Array.from(regexes, (x) => x.within);
    this.scanBytes = rules.reduce((max, r) => r.patterns.reduce((m, p) => Math.max(m, p.within), max), 0);
  }

  /** Whether rule `r` looks at a packet of this transport, direction and index within it. */
  applies(r: number, transport: number, dir: number, dirIndex: number): boolean {
    return (this.transports[r] & transport) !== 0 && (this.directions[r] === DIRECTION_ANY || this.directions[r] === dir) && dirIndex < this.packets[r];
  }

  /**
   * The lowest-numbered rule that matches the payload buf[start, start + length) of a packet of
   * this transport (OVER_*), direction and index among its direction's payload packets; or -1.
   * `found` is the caller's scratch list.
   */
  firstMatch(buf: Uint8Array, start: number, length: number, transport: number, dir: number, dirIndex: number, found: MatchList): number {
    const end = start + Math.min(length, this.scanBytes);
    let best = -1;
    for (let m = 0; m < this.matchers.length; m++) {
      const { matcher, uses } = this.matchers[m];
      let from = start;
      for (;;) {
        const count = matcher.scan(buf, from, end, found);
        for (let k = 0; k < count; k++) {
          const id = found.ids[k];
          const matchEnd = found.ends[k] - start;
          const matchStart = matchEnd - matcher.patternLength(id);
          for (let u = uses.useStart[id]; u < uses.useStart[id + 1]; u++) {
            const rule = uses.useRule[u];
            if (best >= 0 && rule >= best) break;
            const offset = uses.useOffset[u];
            if (offset >= 0 ? matchStart !== offset : matchEnd > uses.useWithin[u]) continue;
            if (this.applies(rule, transport, dir, dirIndex)) best = rule;
          }
        }
        if (count < found.capacity) break;
        // The list filled up: go on from just before the last match, so none that ends later is missed.
        from = Math.max(from + 1, found.ends[count - 1] - uses.longest + 1);
      }
    }
    for (let x = 0; x < this.regexes.length; x++) {
      const rule = this.regexRule[x];
      if (best >= 0 && rule >= best) break;
      if (!this.applies(rule, transport, dir, dirIndex)) continue;
      if (this.regexes[x].test(buf, start, start + Math.min(length, this.regexWithin[x]))) best = rule;
    }
    return best;
  }
}

/**
 * The distinct byte strings of one case mode, and where each is used: a string several rules (or
 * one rule twice) use is one matcher pattern with several uses, each with its own rule and place.
 */
class PatternUses {
  readonly patterns: Uint8Array[] = [];
  /** Per pattern id: its uses are useRule[useStart[id] .. useStart[id + 1]). */
  readonly useStart: Int32Array;
  readonly useRule: Int32Array;
  /** Per use: the offset the pattern must start at (-1: any), and the end it must not pass. */
  readonly useOffset: Int32Array;
  readonly useWithin: Int32Array;
  readonly longest: number;

  constructor(rules: readonly OperatorRule[], ignoreCase: boolean) {
    const ids = new Map<string, number>();
    const uses: { id: number; rule: number; offset: number; within: number }[] = [];
    rules.forEach((rule, r) => {
      for (const p of rule.patterns) {
        if (p.kind !== 'bytes' || p.ignoreCase !== ignoreCase) continue;
        const key = Buffer.from(ignoreCase ? p.bytes.map((b) => (b >= 0x41 && b <= 0x5a ? b | 0x20 : b)) : p.bytes).toString('hex');
        let id = ids.get(key);
        if (id === undefined) {
          id = this.patterns.length;
          ids.set(key, id);
          this.patterns.push(p.bytes);
        }
        uses.push({ id, rule: r, offset: p.offset ?? -1, within: p.within });
      }
    });
    uses.sort((a, b) => a.id - b.id || a.rule - b.rule);
    this.useStart = new Int32Array(this.patterns.length + 1);
    for (const use of uses) this.useStart[use.id + 1]++;
    for (let i = 0; i < this.patterns.length; i++) this.useStart[i + 1] += this.useStart[i];
    this.useRule = Int32Array.from(uses, (u) => u.rule);
    this.useOffset = Int32Array.from(uses, (u) => u.offset);
    this.useWithin = Int32Array.from(uses, (u) => u.within);
    this.longest = this.patterns.reduce((max, p) => Math.max(max, p.length), 0);
  }
}

/**
 * RULES_FILE's rules as one detector, in the registry after the protocol detectors: the first rule
 * (in file order) any of whose patterns matches a payload packet it looks at names the flow. Its
 * evidence is `exact` for a rule the operator marked mayBan (the policy still bans only on proof
 * over an exchange no one can forge), `heuristic` otherwise. The per-flow state keeps the matched
 * rule's index, read back at the same packet for the policy (the rule's name and action); a reload
 * (SIGHUP) swaps the compiled rules between packets, and a flow decided before keeps its decision.
 */
export class OperatorRulesDetector implements Detector {
  readonly name = 'operator-rule';
  readonly transports = OVER_TCP | OVER_UDP;
  readonly budget = 2 * MAX_RULE_PACKETS;
  /** The matched rule's index + 1, little-endian 16 bits. */
  readonly stateBytes = 2;
  readonly strength = STRENGTH_HEURISTIC;
  readonly producerIsPeer = true;
  private compiled: CompiledRules;
  private readonly found = new MatchList(MATCH_LIST_CAPACITY);

  constructor(rules: readonly OperatorRule[]) {
    this.compiled = new CompiledRules(rules);
  }

  get rules(): readonly OperatorRule[] {
    return this.compiled.rules;
  }

  /** Puts a new rule set in force (a reload). */
  setRules(rules: readonly OperatorRule[]): void {
    this.compiled = new CompiledRules(rules);
  }

  /** The rule that matched a flow at the packet just inspected, from its state bytes; null if none did. */
  matched(state: Uint8Array, stateOff: number): OperatorRule | null {
    const index = (state[stateOff] | (state[stateOff + 1] << 8)) - 1;
    return index >= 0 && index < this.compiled.rules.length ? this.compiled.rules[index] : null;
  }

  inspect(ctx: InspectContext): number {
    const c = this.compiled;
    if (c.rules.length === 0) return GIVE_UP;
    const pkt = ctx.pkt;
    const transport = pkt.l4 === IPPROTO_TCP ? OVER_TCP : OVER_UDP;
    const best = c.firstMatch(pkt.buf, pkt.payloadOff, pkt.payloadLen, transport, ctx.dir, ctx.dirIndex, this.found);
    if (best >= 0) {
      const state = ctx.state;
      state[ctx.stateOff] = (best + 1) & 0xff;
      state[ctx.stateOff + 1] = (best + 1) >> 8;
      ctx.strength = c.rules[best].mayBan ? STRENGTH_EXACT : STRENGTH_HEURISTIC;
      return MATCH;
    }
    // Given up once every rule has seen its packets in both directions.
    const otherDirection = ctx.flowIndex - ctx.dirIndex;
    return ctx.dirIndex + 1 >= c.maxPackets && otherDirection >= c.maxPackets ? GIVE_UP : MORE;
  }
}
