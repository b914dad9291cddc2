/** Text forms of binary addresses, for output only: never on the per-packet path. */

export function formatIPv4(bytes: Uint8Array, off = 0): string {
  return `${bytes[off]}.${bytes[off + 1]}.${bytes[off + 2]}.${bytes[off + 3]}`;
}

/** RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups as "::" (the first on a tie). */
export function formatIPv6(bytes: Uint8Array, off = 0): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[off + i * 2] << 8) | bytes[off + i * 2 + 1]);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

export function formatAddress(family: number, bytes: Uint8Array, off = 0): string {
  return family === 4 ? formatIPv4(bytes, off) : formatIPv6(bytes, off);
}
