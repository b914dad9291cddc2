/**
 * The policy's settings from the configuration and from facts about the host it runs on (its own
 * addresses, its resolvers), which the daemon gathers and a scan has none of.
 */
import { CidrSet, PRIVATE_CIDRS } from '../config/cidr.js';
import type { Cidr, Config } from '../config/config.js';
import type { ExemptList, PolicySettings } from './policy.js';

/** Addresses no ban may name: they are nobody's, everybody's, or this host's own. */
const SPECIAL_USE_CIDRS: readonly Cidr[] = [
  { family: 4, address: '0.0.0.0', prefix: 8 },
  { family: 4, address: '127.0.0.0', prefix: 8 },
  { family: 4, address: '169.254.0.0', prefix: 16 },
  { family: 4, address: '224.0.0.0', prefix: 4 },
  { family: 4, address: '240.0.0.0', prefix: 4 },
  { family: 6, address: '::', prefix: 127 },
  { family: 6, address: 'fe80::', prefix: 10 },
  { family: 6, address: 'ff00::', prefix: 8 },
];

/** What the daemon knows of its host; a scan of a capture knows none of it. */
export interface HostFacts {
  /** The gateway's own addresses. */
  ownAddresses: readonly Cidr[];
  /** The resolvers in /etc/resolv.conf. */
  resolvers: readonly Cidr[];
}

export const NO_HOST_FACTS: HostFacts = { ownAddresses: [], resolvers: [] };

/** The exempt lists, each labelled for the reasons the detection log gives. */
export function exemptLists(config: Config, host: HostFacts): ExemptList[] {
  return [
    { label: 'ALLOW_CIDRS', cidrs: new CidrSet(config.allowCidrs) },
    { label: 'BAN_EXEMPT', cidrs: new CidrSet(config.banExempt) },
    { label: 'a resolver in /etc/resolv.conf', cidrs: new CidrSet(host.resolvers) },
    { label: "one of the gateway's own addresses", cidrs: new CidrSet(host.ownAddresses) },
    { label: 'loopback, link-local, multicast or unspecified', cidrs: new CidrSet(SPECIAL_USE_CIDRS) },
  ];
}

/**
 * What a ban decided elsewhere (a fleet's Local API) may never name here: the exempt lists, and
 * the gateway's own users unless BAN_LOCAL, as for the policy's own bans.
 */
export function decisionNeverBan(config: Config, host: HostFacts): ExemptList[] {
  const lists = exemptLists(config, host);
  if (!config.banLocal) lists.unshift({ label: `LOCAL_CIDRS (the gateway's users; BAN_LOCAL=false)`, cidrs: new CidrSet(localCidrs(config)) });
  return lists;
}

/** Without LOCAL_CIDRS, the private, CGNAT, ULA and link-local ranges are where a gateway's users are. */
export function localCidrs(config: Config): readonly Cidr[] {
  return config.localCidrs.length > 0 ? config.localCidrs : PRIVATE_CIDRS;
}

export function policySettings(config: Config, host: HostFacts): PolicySettings {
  return {
    action: config.action,
    cutEstablished: config.cutEstablished,
    banDurationS: config.banDurationS,
    local: new CidrSet(localCidrs(config)),
    banLocal: config.banLocal,
    exempt: exemptLists(config, host),
    banRatePerMinute: config.banRatePerMinute,
  };
}

/**
 * Whether a banned address's connections are reset as well as dropped (the XDP program reports
 * their TCP segments, the cutter answers them): CUT_ESTABLISHED's, under ACTION=drop only.
 */
export function resetsBannedTcp(config: Config): boolean {
  return config.action === 'drop' && config.cutEstablished;
}
