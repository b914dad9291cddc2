/**
 * Regular expressions over payload bytes, for operator rules (RULES_FILE): compiled once into a
 * Thompson NFA in typed arrays and run over at most the first N bytes of a packet by a state-set
 * simulation that allocates nothing and never backtracks (no payload becomes a string, and no
 * expression takes more than states × bytes steps).
 *
 * The syntax is the part of JavaScript's that l7-filter and RouterOS L7 patterns use: literals,
 * `.`, classes `[a-z\x00]` and `[^...]`, escapes `\xHH \d \w \s \D \W \S \t \r \n \0` and escaped
 * punctuation, groups `(...)` and `(?:...)`, alternation `|`, quantifiers `* + ? {m} {m,} {m,n}`,
 * and the anchors `^` (the payload's first byte) and `$` (the end of the scanned bytes). A
 * character stands for the byte of its code, so it must be below 256.
 */

const NODE_SET = 0;
const NODE_SPLIT = 1;
const NODE_JUMP = 2;
const NODE_START = 3;
const NODE_END = 4;
const NODE_MATCH = 5;

/** The most states a compiled expression may have, and the most a repeat may count. */
const MAX_STATES = 4096;
const MAX_REPEAT = 64;

export class RegexSyntaxError extends Error {}

/** A parsed expression: a tree the compiler turns into NFA states. */
type Ast =
  | { kind: 'set'; bytes: Uint8Array }
  | { kind: 'start' }
  | { kind: 'end' }
  | { kind: 'empty' }
  | { kind: 'concat'; items: Ast[] }
  | { kind: 'alt'; items: Ast[] }
  | { kind: 'repeat'; item: Ast; min: number; max: number };

function byteSet(fill = false): Uint8Array {
  return new Uint8Array(256).fill(fill ? 1 : 0);
}

function addRange(set: Uint8Array, from: number, to: number): void {
  for (let b = from; b <= to; b++) set[b] = 1;
}

const DIGITS = (() => {
  const s = byteSet();
  addRange(s, 0x30, 0x39);
  return s;
})();
const WORD = (() => {
  const s = byteSet();
  addRange(s, 0x30, 0x39);
  addRange(s, 0x41, 0x5a);
  addRange(s, 0x61, 0x7a);
  s[0x5f] = 1;
  return s;
})();
const SPACE = (() => {
  const s = byteSet();
  for (const b of [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20]) s[b] = 1;
  return s;
})();

function negate(set: Uint8Array): Uint8Array {
  return Uint8Array.from(set, (v) => 1 - v);
}

class Parser {
  private pos = 0;

  constructor(
    private readonly source: string,
    /** Case-insensitive: every letter stands for both its cases, folded before a class is negated. */
    private readonly fold: boolean,
  ) {}

  parse(): Ast {
    const ast = this.alternation();
    if (this.pos < this.source.length) this.fail(`unexpected ${JSON.stringify(this.source[this.pos])}`);
    return ast;
  }

  private fail(message: string): never {
    throw new RegexSyntaxError(`${message} at character ${this.pos + 1} of the regex`);
  }

  private peek(): string | undefined {
    return this.source[this.pos];
  }

  private alternation(): Ast {
    const items = [this.concatenation()];
    while (this.peek() === '|') {
      this.pos++;
      items.push(this.concatenation());
    }
    return items.length === 1 ? items[0] : { kind: 'alt', items };
  }

  private concatenation(): Ast {
    const items: Ast[] = [];
    while (this.pos < this.source.length && this.peek() !== '|' && this.peek() !== ')') items.push(this.quantified());
    if (items.length === 0) return { kind: 'empty' };
    return items.length === 1 ? items[0] : { kind: 'concat', items };
  }

  private quantified(): Ast {
    const item = this.atom();
    const c = this.peek();
    let min: number;
    let max: number;
    if (c === '*') [min, max] = [0, Infinity];
    else if (c === '+') [min, max] = [1, Infinity];
    else if (c === '?') [min, max] = [0, 1];
    else if (c === '{' && /^\{\d+(,\d*)?\}/.test(this.source.slice(this.pos))) {
      const [, low, comma, high] = /^\{(\d+)(,(\d*))?\}/.exec(this.source.slice(this.pos))!;
      min = Number(low);
      max = comma === undefined ? min : high === '' ? Infinity : Number(high);
      if (min > max) this.fail('a repeat {m,n} needs m <= n');
      if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) this.fail(`a repeat may count at most ${MAX_REPEAT}`);
      this.pos += /^\{[^}]*\}/.exec(this.source.slice(this.pos))![0].length - 1;
    } else return item;
    this.pos++;
    // A lazy marker changes nothing when only whether there is a match counts.
    if (this.peek() === '?') this.pos++;
    if (item.kind === 'start' || item.kind === 'end') this.fail('an anchor cannot be repeated');
    return { kind: 'repeat', item, min, max };
  }

  private atom(): Ast {
    const c = this.source[this.pos++];
    switch (c) {
      case '(': {
        if (this.source.startsWith('?:', this.pos)) this.pos += 2;
        else if (this.peek() === '?') this.fail('only (?:...) groups are supported (no lookaround or named groups)');
        const inner = this.alternation();
        if (this.peek() !== ')') this.fail('unclosed (');
        this.pos++;
        return inner;
      }
      case ')':
        this.fail('unmatched )');
        break;
      case '[':
        return { kind: 'set', bytes: this.characterClass() };
      case '.':
        return { kind: 'set', bytes: byteSet(true) };
      case '^':
        return { kind: 'start' };
      case '$':
        return { kind: 'end' };
      case '\\':
        return { kind: 'set', bytes: this.escape(false) };
      case '*':
      case '+':
      case '?':
        this.fail(`nothing to repeat before ${c}`);
        break;
    }
    return { kind: 'set', bytes: this.single(c) };
  }

  private single(c: string): Uint8Array {
    const code = c.charCodeAt(0);
    if (code > 0xff) this.fail(`${JSON.stringify(c)} is not a byte (write \\xHH escapes for bytes)`);
    const set = byteSet();
    set[code] = 1;
    return this.fold ? foldCase(set) : set;
  }

  /** After a backslash: the set it stands for. */
  private escape(inClass: boolean): Uint8Array {
    const c = this.source[this.pos++];
    if (c === undefined) this.fail('a regex cannot end with \\');
    switch (c) {
      case 'x': {
        const hex = this.source.slice(this.pos, this.pos + 2);
        if (!/^[0-9a-fA-F]{2}$/.test(hex)) this.fail('\\x needs two hex digits');
        this.pos += 2;
        return this.single(String.fromCharCode(parseInt(hex, 16)));
      }
      case 'd':
        return DIGITS.slice();
      case 'D':
        return negate(DIGITS);
      case 'w':
        return WORD.slice();
      case 'W':
        return negate(WORD);
      case 's':
        return SPACE.slice();
      case 'S':
        return negate(SPACE);
      case 't':
        return this.single('\t');
      case 'r':
        return this.single('\r');
      case 'n':
        return this.single('\n');
      case '0':
        return this.single('\0');
    }
    if (/[a-zA-Z0-9]/.test(c) && !(inClass && c === 'b')) this.fail(`unknown escape \\${c}`);
    return this.single(c);
  }

  private characterClass(): Uint8Array {
    const set = byteSet();
    const negated = this.peek() === '^';
    if (negated) this.pos++;
    let first = true;
    while (this.peek() !== ']' || first) {
      if (this.pos >= this.source.length) this.fail('unclosed [');
      first = false;
      const low = this.classMember();
      if (this.peek() === '-' && this.source[this.pos + 1] !== ']' && this.pos + 1 < this.source.length) {
        this.pos++;
        const high = this.classMember();
        const from = low.indexOf(1);
        const to = high.indexOf(1);
        if (low.reduce((a, b) => a + b, 0) !== 1 || high.reduce((a, b) => a + b, 0) !== 1 || from > to) this.fail('a class range must go from a lower byte to a higher one');
        addRange(set, from, to);
      } else for (let b = 0; b < 256; b++) set[b] |= low[b];
    }
    this.pos++;
    const folded = this.fold ? foldCase(set) : set;
    return negated ? negate(folded) : folded;
  }

  private classMember(): Uint8Array {
    const c = this.source[this.pos++];
    return c === '\\' ? this.escape(true) : this.single(c);
  }
}

/** A compiled expression; `test` is safe to call per packet. */
export class ByteRegex {
  readonly stateCount: number;
  /** Whether the expression is anchored at the payload's first byte on every path (then only offset 0 starts a match). */
  readonly anchored: boolean;
  /** Whether any input at all can match (false for an empty class on every path, or `x^`, `$x`). */
  readonly satisfiable: boolean;
  private readonly kind: Uint8Array;
  private readonly out1: Int32Array;
  private readonly out2: Int32Array;
  /** 256 bytes per state: whether a SET state accepts the byte. */
  private readonly sets: Uint8Array;
  private readonly start: number;
  /** The simulation's two state lists, the closure stack, and each state's last generation. */
  private readonly current: Int32Array;
  private readonly next: Int32Array;
  private readonly stack: Int32Array;
  private readonly seen: Int32Array;
  private generation = 0;

  constructor(source: string, options: { caseInsensitive?: boolean } = {}) {
    const ast = new Parser(source, options.caseInsensitive === true).parse();
    const kind: number[] = [];
    const out1: number[] = [];
    const out2: number[] = [];
    const sets: Uint8Array[] = [];
    const add = (k: number, set: Uint8Array | null = null): number => {
      if (kind.length >= MAX_STATES) throw new RegexSyntaxError(`the regex needs more than ${MAX_STATES} states`);
      kind.push(k);
      out1.push(-1);
      out2.push(-1);
      sets.push(set ?? EMPTY_SET);
      return kind.length - 1;
    };
    /** Compiles `node` to a fragment: its entry state and the states whose open exits continue after it. */
    const compile = (node: Ast): { entry: number; exits: [number, 1 | 2][] } => {
      switch (node.kind) {
        case 'set': {
          const s = add(NODE_SET, node.bytes);
          return { entry: s, exits: [[s, 1]] };
        }
        case 'start':
        case 'end':
        case 'empty': {
          const s = add(node.kind === 'start' ? NODE_START : node.kind === 'end' ? NODE_END : NODE_JUMP);
          return { entry: s, exits: [[s, 1]] };
        }
        case 'concat': {
          const parts = node.items.map(compile);
          for (let i = 0; i + 1 < parts.length; i++) patch(parts[i].exits, parts[i + 1].entry);
          return { entry: parts[0].entry, exits: parts[parts.length - 1].exits };
        }
        case 'alt': {
          const parts = node.items.map(compile);
          let entry = parts[parts.length - 1].entry;
          for (let i = parts.length - 2; i >= 0; i--) {
            const split = add(NODE_SPLIT);
            out1[split] = parts[i].entry;
            out2[split] = entry;
            entry = split;
          }
          return { entry, exits: parts.flatMap((p) => p.exits) };
        }
        case 'repeat': {
          const { item, min, max } = node;
          const parts: { entry: number; exits: [number, 1 | 2][] }[] = [];
          for (let i = 0; i < min; i++) parts.push(compile(item));
          if (max === Infinity) {
            // x*: a split that loops back through x or leaves.
            const split = add(NODE_SPLIT);
            const body = compile(item);
            out1[split] = body.entry;
            patch(body.exits, split);
            parts.push({ entry: split, exits: [[split, 2]] });
          } else {
            for (let i = min; i < max; i++) {
              const split = add(NODE_SPLIT);
              const body = compile(item);
              out1[split] = body.entry;
              parts.push({ entry: split, exits: [...body.exits, [split, 2]] });
            }
          }
          if (parts.length === 0) return compile({ kind: 'empty' });
          for (let i = 0; i + 1 < parts.length; i++) patch(parts[i].exits, parts[i + 1].entry);
          return { entry: parts[0].entry, exits: parts[parts.length - 1].exits };
        }
      }
    };
    const patch = (exits: [number, 1 | 2][], to: number) => {
      for (const [state, which] of exits) (which === 1 ? out1 : out2)[state] = to;
    };
    const fragment = compile(ast);
    patch(fragment.exits, add(NODE_MATCH));
    this.start = fragment.entry;
    this.stateCount = kind.length;
    this.kind = Uint8Array.from(kind);
    this.out1 = Int32Array.from(out1);
    this.out2 = Int32Array.from(out2);
    this.sets = new Uint8Array(kind.length * 256);
    sets.forEach((set, i) => this.sets.set(set, i * 256));
    this.current = new Int32Array(kind.length + 1);
    this.next = new Int32Array(kind.length + 1);
    this.stack = new Int32Array(kind.length * 2 + 2);
    this.seen = new Int32Array(kind.length);
    this.anchored = startsAnchored(ast);
    this.satisfiable = this.reachesMatch();
  }

  /**
   * Whether MATCH is reachable through states that can each be passed: a SET with some byte, `^`
   * only before any byte is read, `$` only when none is read after it.
   */
  private reachesMatch(): boolean {
    // (state, whether a byte has been read, whether `$` has been passed): at most 4 visits per state.
    const visited = new Uint8Array(this.stateCount * 4);
    const stack: [number, number, number][] = [[this.start, 0, 0]];
    while (stack.length > 0) {
      const [s, read, ended] = stack.pop()!;
      if (s < 0 || visited[s * 4 + read * 2 + ended]) continue;
      visited[s * 4 + read * 2 + ended] = 1;
      switch (this.kind[s]) {
        case NODE_MATCH:
          return true;
        case NODE_SET:
          if (!ended && this.sets.subarray(s * 256, s * 256 + 256).includes(1)) stack.push([this.out1[s], 1, 0]);
          break;
        case NODE_SPLIT:
          stack.push([this.out1[s], read, ended], [this.out2[s], read, ended]);
          break;
        case NODE_JUMP:
          stack.push([this.out1[s], read, ended]);
          break;
        case NODE_START:
          if (!read) stack.push([this.out1[s], read, ended]);
          break;
        case NODE_END:
          stack.push([this.out1[s], read, 1]);
          break;
      }
    }
    return false;
  }

  /** Whether the expression matches anywhere in buf[start, end) (`^` is `start`, `$` is `end`). */
  test(buf: Uint8Array, start: number, end: number): boolean {
    // The two lists swap at each byte (no copy, no view made).
    let current = this.current;
    let next = this.next;
    this.step();
    let count = this.closure(current, 0, this.start, start, start, end);
    if (count < 0) return true;
    for (let i = start; i < end; i++) {
      const byte = buf[i];
      this.step();
      let nextCount = 0;
      for (let k = 0; k < count; k++) {
        const s = current[k];
        if (this.sets[s * 256 + byte] === 0) continue;
        nextCount = this.closure(next, nextCount, this.out1[s], i + 1, start, end);
        if (nextCount < 0) return true;
      }
      // Unanchored: a match may also start at the next byte.
      if (!this.anchored) {
        nextCount = this.closure(next, nextCount, this.start, i + 1, start, end);
        if (nextCount < 0) return true;
      }
      if (nextCount === 0) return false;
      const swap = current;
      current = next;
      next = swap;
      count = nextCount;
    }
    return false;
  }

  /** A new generation: every state unseen again (the marks start over before they overflow). */
  private step(): void {
    if (++this.generation === 0x7fffffff) {
      this.seen.fill(0);
      this.generation = 1;
    }
  }

  /**
   * Adds the SET states reachable from `state` without reading a byte, at position `at`, to
   * `list` (from `count`); returns the new count, or -1 when MATCH is reachable.
   */
  private closure(list: Int32Array, count: number, state: number, at: number, start: number, end: number): number {
    const stack = this.stack;
    const seen = this.seen;
    const generation = this.generation;
    let top = 0;
    stack[top++] = state;
    while (top > 0) {
      const s = stack[--top];
      if (s < 0 || seen[s] === generation) continue;
      seen[s] = generation;
      switch (this.kind[s]) {
        case NODE_MATCH:
          return -1;
        case NODE_SET:
          list[count++] = s;
          break;
        case NODE_SPLIT:
          stack[top++] = this.out2[s];
          stack[top++] = this.out1[s];
          break;
        case NODE_JUMP:
          stack[top++] = this.out1[s];
          break;
        case NODE_START:
          if (at === start) stack[top++] = this.out1[s];
          break;
        case NODE_END:
          if (at === end) stack[top++] = this.out1[s];
          break;
      }
    }
    return count;
  }
}

const EMPTY_SET = new Uint8Array(256);

function foldCase(set: Uint8Array): Uint8Array {
  const folded = set.slice();
  for (let upper = 0x41; upper <= 0x5a; upper++) {
    if (set[upper] || set[upper | 0x20]) folded[upper] = folded[upper | 0x20] = 1;
  }
  return folded;
}

/** Whether every way through the expression starts with `^`. */
function startsAnchored(ast: Ast): boolean {
  switch (ast.kind) {
    case 'start':
      return true;
    case 'concat':
      return startsAnchored(ast.items[0]);
    case 'alt':
      return ast.items.every(startsAnchored);
    case 'repeat':
      return ast.min > 0 && startsAnchored(ast.item);
    default:
      return false;
  }
}
