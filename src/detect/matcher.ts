/**
 * Multi-pattern byte matching (Aho–Corasick), so a detector finds any of many byte strings in
 * one pass over a payload. The automaton is built once, at load time, into typed arrays: the goto
 * function with the failure links folded in (a DFA over byte classes), the pattern each state
 * completes, and the dictionary links to shorter patterns ending at the same place. Matching
 * reads those arrays by index and allocates nothing.
 *
 * A state is handled as the offset of its row in the DFA table, and an entry that leads to a state
 * where some pattern ends holds that offset complemented (negative): the inner loop is one table
 * read and a sign test per byte, about twice as fast as looking the state's output up apart.
 */

/** The DFA's start state, before any byte. */
export const START_STATE = 0;
/** States times byte classes must stay below this: a state must fit the 3 bytes a detector keeps of it. */
export const MAX_TABLE_SIZE = 1 << 24;

export interface MatcherOptions {
  /** Compare ASCII letters without regard to case (patterns and input alike). */
  caseInsensitive?: boolean;
}

/** Matches found by `ByteMatcher.scan`, in a caller-owned fixed-size buffer. */
export class MatchList {
  /** Pattern ids and the offset just past each match, in the order found. */
  readonly ids: Int32Array;
  readonly ends: Int32Array;
  count = 0;

  constructor(readonly capacity: number) {
    this.ids = new Int32Array(capacity);
    this.ends = new Int32Array(capacity);
  }
}

export class ByteMatcher {
  readonly patternCount: number;
  readonly stateCount: number;
  /** Offset just past the match that `firstMatch` last returned. */
  matchEnd = -1;

  /** Byte value to alphabet class: bytes that occur in no pattern share class 0. */
  private readonly classOf: Uint16Array;
  private readonly classCount: number;
  /** Entry state + class: the next state's row offset, complemented when a pattern ends there. */
  private readonly delta: Int32Array;
  /** By state number (row offset / classCount): id of the pattern that is exactly the path to the state, or -1. */
  private readonly terminal: Int32Array;
  /** By state number: nearest state along the failure chain (a proper suffix) that is terminal, or -1. */
  private readonly dictionaryLink: Int32Array;
  /** By state number: longest pattern ending at the state (its own, else its dictionary link's), or -1. */
  private readonly longest: Int32Array;
  private readonly lengths: Int32Array;

  /** Pattern i gets id i; a repeated pattern answers with its first id. Patterns must not be empty. */
  constructor(patterns: readonly Uint8Array[], options: MatcherOptions = {}) {
    const fold = options.caseInsensitive === true;
    this.patternCount = patterns.length;
    this.lengths = Int32Array.from(patterns, (p) => p.length);
    this.classOf = new Uint16Array(256);
    let classCount = 1;
    for (const pattern of patterns) {
      if (pattern.length === 0) throw new RangeError('a pattern must not be empty');
      for (const byte of pattern) {
        const key = fold ? lowerAscii(byte) : byte;
        if (this.classOf[key] === 0) this.classOf[key] = classCount++;
      }
    }
    if (fold) for (let upper = 0x41; upper <= 0x5a; upper++) this.classOf[upper] = this.classOf[upper | 0x20];
    this.classCount = classCount;

    // The trie: states are numbered in insertion order; -1 is "no edge" until the links fill it.
    const maxStates = 1 + this.lengths.reduce((sum, n) => sum + n, 0);
    const delta = new Int32Array(maxStates * classCount).fill(-1);
    const terminal = new Int32Array(maxStates).fill(-1);
    let states = 1;
    patterns.forEach((pattern, id) => {
      let state = START_STATE;
      for (const byte of pattern) {
        const edge = state * classCount + this.classOf[byte];
        if (delta[edge] < 0) delta[edge] = states++;
        state = delta[edge];
      }
      if (terminal[state] < 0) terminal[state] = id;
    });

    // Breadth first: a state's failure link is known before its children's.
    const fail = new Int32Array(states);
    const dictionaryLink = new Int32Array(states).fill(-1);
    const queue = new Int32Array(states);
    let head = 0;
    let tail = 0;
    for (let c = 0; c < classCount; c++) {
      const child = delta[c];
      if (child < 0) delta[c] = START_STATE;
      else queue[tail++] = child;
    }
    while (head < tail) {
      const state = queue[head++];
      const failState = fail[state];
      dictionaryLink[state] = terminal[failState] >= 0 ? failState : dictionaryLink[failState];
      for (let c = 0; c < classCount; c++) {
        const edge = state * classCount + c;
        const fallback = delta[failState * classCount + c];
        if (delta[edge] < 0) delta[edge] = fallback;
        else {
          fail[delta[edge]] = fallback;
          queue[tail++] = delta[edge];
        }
      }
    }

    if (states * classCount > MAX_TABLE_SIZE) throw new RangeError(`too many patterns: ${states} states of ${classCount} byte classes exceed ${MAX_TABLE_SIZE} entries`);
    this.stateCount = states;
    this.terminal = terminal.slice(0, states);
    this.dictionaryLink = dictionaryLink;
    this.longest = Int32Array.from(this.terminal, (own, state) => (own >= 0 ? own : dictionaryLink[state] >= 0 ? this.terminal[dictionaryLink[state]] : -1));
    this.delta = Int32Array.from(delta.subarray(0, states * classCount), (target) => (this.longest[target] >= 0 ? ~(target * classCount) : target * classCount));
  }

  patternLength(id: number): number {
    return this.lengths[id];
  }

  /** The state after reading `byte` in `state` (streaming across packets: keep the state, feed on). */
  next(state: number, byte: number): number {
    const entry = this.delta[state + this.classOf[byte]];
    return entry < 0 ? ~entry : entry;
  }

  /** Id of the longest pattern that ends at `state` (just after the byte that led there), or -1. */
  matchAt(state: number): number {
    return this.longest[state / this.classCount];
  }

  /**
   * Id of the match in buf[start, end) that ends first (the longest of those ending there), or
   * -1; `matchEnd` is then the offset just past it.
   */
  firstMatch(buf: Uint8Array, start: number, end: number): number {
    const delta = this.delta;
    const classOf = this.classOf;
    let state = START_STATE;
    for (let i = start; i < end; i++) {
      state = delta[state + classOf[buf[i]]];
      if (state < 0) {
        this.matchEnd = i + 1;
        return this.longest[~state / this.classCount];
      }
    }
    return -1;
  }

  /**
   * Every match in buf[start, end) into `out`, by end offset, the longest first at each end,
   * until `out` is full. Returns how many it holds.
   */
  scan(buf: Uint8Array, start: number, end: number, out: MatchList): number {
    const delta = this.delta;
    const classOf = this.classOf;
    const classCount = this.classCount;
    const terminal = this.terminal;
    const dictionaryLink = this.dictionaryLink;
    let count = 0;
    let state = START_STATE;
    for (let i = start; i < end && count < out.capacity; i++) {
      state = delta[state + classOf[buf[i]]];
      if (state >= 0) continue;
      state = ~state;
      const number = state / classCount;
      let found = terminal[number] >= 0 ? number : dictionaryLink[number];
      while (found >= 0 && count < out.capacity) {
        out.ids[count] = terminal[found];
        out.ends[count] = i + 1;
        count++;
        found = dictionaryLink[found];
      }
    }
    out.count = count;
    return count;
  }
}

function lowerAscii(byte: number): number {
  return byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte;
}
