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
 * With the daemon's reset_tcp setting (CUT_ESTABLISHED), a dropped TCP segment is also reported
 * to the daemon through a ring buffer (segments), with the numbers that the daemon's resets to
 * both ends need, so a banned address's connections end at their next segment instead of
 * retransmitting into the drop. Resets, fragments, IPv4 options and IPv6 extension headers are
 * only dropped. The resets are not built here: in the generic hook a segment may still await its
 * checksum (CHECKSUM_PARTIAL), and on a device without a link header the hook would misread a
 * rewritten frame; the stack gets both right.
 *
 * Anything that is not IPv4 or IPv6, or too short to hold its addresses, passes.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct btw_settings);
} BTW_MAP_SETTINGS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BTW_SEGMENTS_BYTES);
} BTW_MAP_SEGMENTS SEC(".maps");

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

static __always_inline bool resetting(void)
{
	__u32 zero = 0;
	struct btw_settings *wanted = bpf_map_lookup_elem(&BTW_MAP_SETTINGS, &zero);
	return wanted && wanted->reset_tcp;
}

/*
 * Reports a dropped TCP segment to the daemon, which answers it with resets through the stack
 * (a raw socket: right checksums whatever the offload state, and routing for any kind of device).
 * Counted only when the ring took it; a full ring loses the report, never the drop.
 */
static __always_inline void report(__u32 slot, const struct tcphdr *segment, __u32 length, const void *source, const void *destination, const __u32 address_bytes)
{
	struct btw_segment event = {
		.family = address_bytes == 4 ? 4 : 6,
		.flags = ((const __u8 *)segment)[13],
		.source_port = segment->source,
		.destination_port = segment->dest,
		.seq = segment->seq,
		.ack = segment->ack_seq,
		.length = length,
	};
	__builtin_memcpy(event.source, source, address_bytes);
	__builtin_memcpy(event.destination, destination, address_bytes);
	if (bpf_ringbuf_output(&BTW_MAP_SEGMENTS, &event, sizeof(event), 0) != 0)
		return;
	__u32 key = slot;
	struct btw_drops *counter = bpf_map_lookup_elem(&BTW_MAP_DROPS, &key);
	if (counter)
		counter->resets++;
}

/* A banned IPv4 packet: dropped, and reported when it is a TCP segment the daemon may answer. */
static __always_inline int banned_packet4(struct xdp_md *ctx, struct iphdr *ip, void *end)
{
	struct tcphdr *segment = (void *)(ip + 1);
	if (resetting() && ip->protocol == IPPROTO_TCP && ip->ihl == 5 && (ip->frag_off & bpf_htons(0x3fff)) == 0 && (void *)(segment + 1) <= end && !segment->rst && segment->doff >= 5) {
		__u32 total = bpf_ntohs(ip->tot_len);
		__u32 headers = sizeof(*ip) + segment->doff * 4;
		report(BTW_DROPS_V4, segment, total > headers ? total - headers : 0, &ip->saddr, &ip->daddr, 4);
	}
	return drop(ctx, BTW_DROPS_V4);
}

/* The same for IPv6: a TCP segment right after the fixed header (no extension headers). */
static __always_inline int banned_packet6(struct xdp_md *ctx, struct ipv6hdr *ip6, void *end)
{
	struct tcphdr *segment = (void *)(ip6 + 1);
	if (resetting() && ip6->nexthdr == IPPROTO_TCP && (void *)(segment + 1) <= end && !segment->rst && segment->doff >= 5) {
		__u32 payload = bpf_ntohs(ip6->payload_len);
		__u32 header = segment->doff * 4;
		report(BTW_DROPS_V6, segment, payload > header ? payload - header : 0, &ip6->saddr, &ip6->daddr, 16);
	}
	return drop(ctx, BTW_DROPS_V6);
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
			return banned_packet4(ctx, ip, end);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		if (banned6(&ip6->saddr) || banned6(&ip6->daddr))
			return banned_packet6(ctx, ip6, end);
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
