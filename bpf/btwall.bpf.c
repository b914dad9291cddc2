// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * btwall's XDP ban fast path: drops every packet whose source or destination address is banned,
 * in the driver, before netfilter, conntrack or the queue see it. Userspace (src/bans/xdp.ts)
 * bans the peers a detector proved; expired entries pass, and are deleted here, lazily, once
 * their escalation window (forget_ns) is over too.
 *
 * Two entry points share one parser: btwall_eth for devices with an Ethernet header (VLAN and
 * QinQ tags skipped), btwall_l3 for devices whose frames start at the IP header (WireGuard, tun,
 * PPP, GRE/IPIP). The daemon attaches the one that matches the device's ARPHRD type, so the
 * choice costs nothing per packet: the link kind is a constant the compiler folds away.
 *
 * Anything that is not IPv4 or IPv6, or too short to hold its addresses, passes.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "btwall.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BTW_BAN_CAPACITY);
	__type(key, __u32);
	__type(value, struct btw_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BTW_MAP_BAN4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BTW_BAN_CAPACITY);
	__type(key, struct in6_addr);
	__type(value, struct btw_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BTW_MAP_BAN6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BTW_DROPS_SLOTS);
	__type(key, __u32);
	__type(value, struct btw_drops);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BTW_MAP_DROPS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BTW_OWN_CAPACITY);
	__type(key, __u32);
	__type(value, __u8);
} BTW_MAP_OWN4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BTW_OWN_CAPACITY);
	__type(key, struct in6_addr);
	__type(value, __u8);
} BTW_MAP_OWN6 SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* Addresses that are never banned, whatever the map says: loopback, link-local, the gateway's own. */
static __always_inline bool never_banned4(const __u32 *addr)
{
	const __u8 *a = (const __u8 *)addr;
	if (a[0] == 127 || (a[0] == 169 && a[1] == 254))
		return true;
	return bpf_map_lookup_elem(&BTW_MAP_OWN4, addr) != NULL;
}

static __always_inline bool never_banned6(const struct in6_addr *addr)
{
	const __u32 *w = addr->in6_u.u6_addr32;
	if ((w[0] | w[1] | w[2]) == 0 && w[3] == bpf_htonl(1))
		return true;
	if (addr->in6_u.u6_addr8[0] == 0xfe && (addr->in6_u.u6_addr8[1] & 0xc0) == 0x80)
		return true;
	return bpf_map_lookup_elem(&BTW_MAP_OWN6, addr) != NULL;
}

/* The clock is read only on a hit: unlisted traffic pays one lookup per address and nothing else. */
static __always_inline bool banned4(const __u32 *addr)
{
	struct btw_ban *ban = bpf_map_lookup_elem(&BTW_MAP_BAN4, addr);
	if (!ban)
		return false;
	__u64 now = bpf_ktime_get_boot_ns();
	if (now >= ban->expires_ns) {
		if (now >= ban->forget_ns)
			bpf_map_delete_elem(&BTW_MAP_BAN4, addr);
		return false;
	}
	return !never_banned4(addr);
}

static __always_inline bool banned6(const struct in6_addr *addr)
{
	struct btw_ban *ban = bpf_map_lookup_elem(&BTW_MAP_BAN6, addr);
	if (!ban)
		return false;
	__u64 now = bpf_ktime_get_boot_ns();
	if (now >= ban->expires_ns) {
		if (now >= ban->forget_ns)
			bpf_map_delete_elem(&BTW_MAP_BAN6, addr);
		return false;
	}
	return !never_banned6(addr);
}

static __always_inline int drop(struct xdp_md *ctx, __u32 slot)
{
	struct btw_drops *counter = bpf_map_lookup_elem(&BTW_MAP_DROPS, &slot);
	if (counter) {
		counter->packets++;
		counter->bytes += ctx->data_end - ctx->data;
	}
	return XDP_DROP;
}

static __always_inline int filter(struct xdp_md *ctx, const bool ethernet)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	void *l3 = data;
	__be16 proto;

	if (ethernet) {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > end)
			return XDP_PASS;
		proto = eth->h_proto;
		l3 = eth + 1;
		/* Up to two tags: 802.1Q, or 802.1ad outer + 802.1Q inner (QinQ). */
#pragma unroll
		for (int i = 0; i < 2; i++) {
			if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
				break;
			struct vlan_hdr *vlan = l3;
			if ((void *)(vlan + 1) > end)
				return XDP_PASS;
			proto = vlan->encapsulated_proto;
			l3 = vlan + 1;
		}
	} else {
		/* No link header: the IP version nibble says the family. */
		__u8 *first = data;
		if ((void *)(first + 1) > end)
			return XDP_PASS;
		__u8 version = *first >> 4;
		proto = version == 4 ? bpf_htons(ETH_P_IP) : version == 6 ? bpf_htons(ETH_P_IPV6) : 0;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		if (banned4(&ip->saddr) || banned4(&ip->daddr))
			return drop(ctx, BTW_DROPS_V4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		if (banned6(&ip6->saddr) || banned6(&ip6->daddr))
			return drop(ctx, BTW_DROPS_V6);
	}
	return XDP_PASS;
}

SEC("xdp")
int BTW_PROG_ETHERNET(struct xdp_md *ctx)
{
	return filter(ctx, true);
}

SEC("xdp")
int BTW_PROG_L3(struct xdp_md *ctx)
{
	return filter(ctx, false);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
