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
 * With the daemon's reset_tcp setting (CUT_ESTABLISHED), a dropped TCP segment is answered with
 * a reset to its sender, built in place of the segment and sent back out of the device (XDP_TX):
 * the local client and the banned peer both learn at their next segment that the connection is
 * gone, instead of retransmitting into a black hole. Resets, fragments, IPv4 options and IPv6
 * extension headers are only dropped.
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

/* Counts a dropped packet (before a reset takes its place) and whether a reset answers it. */
static __always_inline void count(struct xdp_md *ctx, __u32 slot, bool reset)
{
	struct btw_drops *counter = bpf_map_lookup_elem(&BTW_MAP_DROPS, &slot);
	if (counter) {
		counter->packets++;
		counter->bytes += bpf_xdp_get_buff_len(ctx);
		counter->resets += reset;
	}
}

static __always_inline int drop(struct xdp_md *ctx, __u32 slot)
{
	count(ctx, slot, false);
	return XDP_DROP;
}

static __always_inline bool resetting(void)
{
	__u32 zero = 0;
	struct btw_settings *wanted = bpf_map_lookup_elem(&BTW_MAP_SETTINGS, &zero);
	return wanted && wanted->reset_tcp;
}

/* The one's-complement sum of `words` 16-bit words of stack memory, added to `sum`. */
static __always_inline __u32 sum_words(const void *from, const int words, __u32 sum)
{
	const __u16 *word = from;
#pragma unroll
	for (int i = 0; i < words; i++)
		sum += word[i];
	return sum;
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * The reset that answers `segment` (RFC 9293 3.10.7.1): to a segment with ACK, sequence number
 * its acknowledgment; to one without, sequence 0 and ACK of all the segment occupied.
 */
static __always_inline void reset_for(const struct tcphdr *segment, __u32 length, struct tcphdr *reset)
{
	__builtin_memset(reset, 0, sizeof(*reset));
	reset->source = segment->dest;
	reset->dest = segment->source;
	reset->doff = 5;
	reset->rst = 1;
	if (segment->ack) {
		reset->seq = segment->ack_seq;
	} else {
		reset->ack = 1;
		reset->ack_seq = bpf_htonl(bpf_ntohl(segment->seq) + length + segment->syn + segment->fin);
	}
}

/*
 * Replaces the frame by the link header it came with (addresses swapped), `ip` (l3_bytes) and
 * `reset`, and sends it back out of the device.
 */
static __always_inline int send_reset(struct xdp_md *ctx, __u32 l3_offset, const void *ip, const __u32 l3_bytes, const struct tcphdr *reset, const bool ethernet)
{
	int length = l3_offset + l3_bytes + sizeof(*reset);
	if (bpf_xdp_adjust_tail(ctx, length - (int)bpf_xdp_get_buff_len(ctx)) != 0)
		return XDP_DROP;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* Ethernet, two VLAN tags at most: a bound the verifier can see. */
	if (l3_offset > sizeof(struct ethhdr) + 2 * sizeof(struct vlan_hdr))
		return XDP_DROP;
	void *l3 = data + l3_offset;
	if (l3 + l3_bytes + sizeof(*reset) > end)
		return XDP_DROP;
	if (ethernet) {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > end)
			return XDP_DROP;
		__u8 source[ETH_ALEN];
		__builtin_memcpy(source, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, source, ETH_ALEN);
	}
	__builtin_memcpy(l3, ip, l3_bytes);
	__builtin_memcpy(l3 + l3_bytes, reset, sizeof(*reset));
	return XDP_TX;
}

/* A banned IPv4 packet: dropped, or answered with a reset when it is a TCP segment that may be. */
static __always_inline int banned_packet4(struct xdp_md *ctx, void *data, struct iphdr *ip, void *end, const bool ethernet)
{
	struct tcphdr *segment = (void *)(ip + 1);
	if (!resetting() || ip->protocol != IPPROTO_TCP || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) != 0 || (void *)(segment + 1) > end || segment->rst || segment->doff < 5)
		return drop(ctx, BTW_DROPS_V4);
	__u32 total = bpf_ntohs(ip->tot_len);
	__u32 headers = sizeof(*ip) + segment->doff * 4;
	struct iphdr reply = {
		.version = 4,
		.ihl = 5,
		.tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct tcphdr)),
		.frag_off = bpf_htons(0x4000), /* DF */
		.ttl = 64,
		.protocol = IPPROTO_TCP,
		.saddr = ip->daddr,
		.daddr = ip->saddr,
	};
	reply.check = fold(sum_words(&reply, sizeof(reply) / 2, 0));
	struct tcphdr reset;
	reset_for(segment, total > headers ? total - headers : 0, &reset);
	__u32 pseudo = sum_words(&reply.saddr, 4, 0) + bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(struct tcphdr));
	reset.check = fold(sum_words(&reset, sizeof(reset) / 2, pseudo));
	count(ctx, BTW_DROPS_V4, true);
	return send_reset(ctx, (void *)ip - data, &reply, sizeof(reply), &reset, ethernet);
}

/* The same for IPv6: a TCP segment right after the fixed header (no extension headers). */
static __always_inline int banned_packet6(struct xdp_md *ctx, void *data, struct ipv6hdr *ip6, void *end, const bool ethernet)
{
	struct tcphdr *segment = (void *)(ip6 + 1);
	if (!resetting() || ip6->nexthdr != IPPROTO_TCP || (void *)(segment + 1) > end || segment->rst || segment->doff < 5)
		return drop(ctx, BTW_DROPS_V6);
	__u32 payload = bpf_ntohs(ip6->payload_len);
	__u32 header = segment->doff * 4;
	struct ipv6hdr reply = {
		.version = 6,
		.payload_len = bpf_htons(sizeof(struct tcphdr)),
		.nexthdr = IPPROTO_TCP,
		.hop_limit = 64,
		.saddr = ip6->daddr,
		.daddr = ip6->saddr,
	};
	struct tcphdr reset;
	reset_for(segment, payload > header ? payload - header : 0, &reset);
	__u32 pseudo = sum_words(&reply.saddr, 16, 0) + bpf_htons(sizeof(struct tcphdr)) + bpf_htons(IPPROTO_TCP);
	reset.check = fold(sum_words(&reset, sizeof(reset) / 2, pseudo));
	count(ctx, BTW_DROPS_V6, true);
	return send_reset(ctx, (void *)ip6 - data, &reply, sizeof(reply), &reset, ethernet);
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
			return banned_packet4(ctx, data, ip, end, ethernet);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		if (banned6(&ip6->saddr) || banned6(&ip6->daddr))
			return banned_packet6(ctx, data, ip6, end, ethernet);
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
