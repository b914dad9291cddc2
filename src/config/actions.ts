/**
 * What happens to BitTorrent: `drop` it (and ban proven peers), `throttle` it to RATE per local
 * host (nothing banned), or `monitor` it (decide and log, enforce nothing: MONITOR_ONLY's new name).
 * Its own module: the rules file reads it, and config.ts sizes tables with the detectors, which
 * read the rules file, so neither may wait on the other's evaluation.
 */
export const ACTIONS = ['drop', 'throttle', 'monitor'] as const;
export type Action = (typeof ACTIONS)[number];
