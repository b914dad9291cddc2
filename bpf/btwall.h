/*
 * What the XDP ban program (btwall.bpf.c) and the addon (native/xdp.cc) share: program and map
 * names, key and value layouts. One header for both sides, as xdp-tools' common_kern_user.h is.
 *
 * Keys are addresses as they appear in the packet (network byte order): 4 bytes for IPv4, 16 for
 * IPv6. A ban's expiry is on CLOCK_BOOTTIME (bpf_ktime_get_boot_ns in the program,
 * clock_gettime(CLOCK_BOOTTIME) in the addon), so a suspended machine does not stretch bans.
 */
#ifndef BTWALL_XDP_H
#define BTWALL_XDP_H

#include <linux/types.h>

/* Entry points, one per kind of device: with an Ethernet header, or none (WireGuard, tun, PPP, GRE). */
#define BTW_PROG_ETHERNET btwall_eth
#define BTW_PROG_L3 btwall_l3

/* Maps. ban4, ban6 and drops are pinned by name under the pin directory; own4/own6 are the
 * gateway's own addresses, refilled by each daemon, so they are not pinned. */
#define BTW_MAP_BAN4 ban4
#define BTW_MAP_BAN6 ban6
#define BTW_MAP_DROPS drops
#define BTW_MAP_OWN4 own4
#define BTW_MAP_OWN6 own6
/* The daemon's settings for the program (not pinned: each daemon writes its own after loading). */
#define BTW_MAP_SETTINGS settings
/* Dropped TCP segments of banned addresses, reported to the daemon to be answered with resets (a ring buffer). */
#define BTW_MAP_SEGMENTS segments

#define BTW_STRINGIFY(x) #x
/* A map or program name above as a string, for the addon. */
#define BTW_NAME(x) BTW_STRINGIFY(x)

/* Capacity compiled in; the addon sets the configured one before loading. */
#define BTW_BAN_CAPACITY 131072
#define BTW_OWN_CAPACITY 1024

#define BTW_RULE_BYTES 24
/* The segments ring: 4096 reports of 56 bytes (and their 8-byte headers) before the daemon reads it. */
#define BTW_SEGMENTS_BYTES (256 * 1024)

/* Value of ban4 and ban6. After expires_ns the entry passes but is kept until forget_ns, so that
 * a ban again within BAN_ESCALATION's window finds the count and escalates. */
struct btw_ban {
	__u64 expires_ns;            /* CLOCK_BOOTTIME; at or after it the entry passes */
	__u64 forget_ns;             /* CLOCK_BOOTTIME; at or after it the entry is deleted */
	__u32 count;                 /* bans of this address in a row, each within the window of the last (userspace only) */
	__u32 reserved;
	char rule[BTW_RULE_BYTES];   /* the rule that proved the peer, NUL-padded (userspace only) */
};

/* Value of drops (a per-CPU array): what the program dropped, per family, and of it the TCP
 * segments reported to the daemon to be answered with resets. */
struct btw_drops {
	__u64 packets;
	__u64 bytes;
	__u64 resets;
};

/* A record of segments: a dropped TCP segment, its fields as on the wire (network byte order). */
struct btw_segment {
	__u8 family;                 /* 4 or 6 */
	__u8 flags;                  /* the TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10...) */
	__be16 source_port;
	__be16 destination_port;
	__u16 reserved;
	__be32 seq;
	__be32 ack;
	__u32 length;                /* payload bytes (host byte order) */
	__u8 source[16];             /* IPv4: the first 4 bytes */
	__u8 destination[16];
};

/* Value of settings' one entry. */
struct btw_settings {
	/* Nonzero: a dropped TCP segment (not itself a reset) is reported in segments, for the daemon
	 * to reset both ends of it (CUT_ESTABLISHED). */
	__u32 reset_tcp;
	__u32 reserved;
};

enum btw_drops_slot {
	BTW_DROPS_V4 = 0,
	BTW_DROPS_V6 = 1,
	BTW_DROPS_SLOTS = 2,
};

#endif
