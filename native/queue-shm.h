/*
 * The memory btwall-queue (the broker that owns the NFQUEUE socket) shares with the Node addon.
 * One header for both sides, as xdp-tools' common_kern_user.h is for kernel and user space.
 *
 * The broker receives a batch of packets straight into a slot's buffers and marks the slot READY;
 * Node takes it (TAKEN), writes a verdict per packet, and marks it ANSWERED; the broker sends the
 * verdicts and frees the slot. Each hand-over is announced with a btq_notice on a SOCK_SEQPACKET
 * socketpair; a notice only wakes the other side up, the slot states are what counts (the broker
 * settles every ANSWERED slot it finds, so a notice lost on a full socket loses nothing).
 *
 * A slot not answered by its deadline is accepted by the broker. One still READY goes back to FREE
 * (Node never saw it); one Node holds (TAKEN) becomes ABANDONED, and the broker does not refill it
 * until Node lets go of it (its late answer moves it to FREE), so a late handler never reads
 * packets of another batch.
 */
#ifndef BTWALL_QUEUE_SHM_H
#define BTWALL_QUEUE_SHM_H

#include <stdint.h>

#define BTQ_MAGIC 0x31515442u /* "BTQ1" */
#define BTQ_SLOTS 8
#define BTQ_BATCH 64
/* Room around each packet for the netlink and nfqueue headers the kernel puts before it. */
#define BTQ_HEADROOM 512

enum btq_slot_state {
  BTQ_FREE = 0,     /* the broker's: empty, or being filled */
  BTQ_READY = 1,    /* filled, announced to Node */
  BTQ_TAKEN = 2,    /* Node is deciding */
  BTQ_ANSWERED = 3, /* Node wrote the verdicts */
  BTQ_ABANDONED = 4, /* accepted by the watchdog while Node held it: Node's until it answers */
};

/* Verdict values: the kernel's NF_DROP, NF_ACCEPT and NF_REPEAT (the packet runs through the hook
   again, carrying the mark the verdict set, so a rule can save it into the connection mark). */
#define BTQ_DROP 0
#define BTQ_ACCEPT 1
#define BTQ_REPEAT 4

struct btq_packet {
  uint32_t id;          /* nfqueue packet id */
  uint32_t offset;      /* of the network-layer packet, from the start of the shared memory */
  uint32_t length;      /* bytes copied */
  uint32_t orig_length; /* bytes on the wire (more than length when the copy range cut it) */
  uint32_t indev;       /* ifindex, 0 when none */
  uint32_t outdev;
  uint16_t hw_protocol; /* ethertype, network order as the kernel gives it */
  uint8_t hook;         /* NF_INET_* hook */
  uint8_t reserved;
  uint32_t mark; /* the packet's mark as queued: a verdict's mark changes only the mask's bits */
};

struct btq_slot {
  uint32_t state; /* enum btq_slot_state, changed with atomic compare-and-swap only */
  uint32_t seq;   /* batch number; a notice names slot and seq */
  uint32_t count;
  uint32_t reserved;
  uint64_t deadline_ns; /* CLOCK_MONOTONIC; the broker's alone */
  struct btq_packet packets[BTQ_BATCH];
  uint8_t verdicts[BTQ_BATCH];   /* BTQ_DROP / BTQ_ACCEPT / BTQ_REPEAT, written by Node */
  uint32_t marks[BTQ_BATCH];     /* packet mark bits to set under connmark_mask, 0 = leave */
  uint32_t connmarks[BTQ_BATCH]; /* connection mark bits to set under connmark_mask, 0 = leave */
};

/* Counters only the broker writes; Node reads them for its stats. */
struct btq_counters {
  uint64_t packets;           /* handed to Node */
  uint64_t batches;
  uint64_t verdicts;          /* packets Node decided in time, their verdicts sent */
  uint64_t watchdog_accepted; /* accepted by the broker because Node was late or not listening */
  uint64_t enobufs;           /* the kernel could not deliver to us: packets it dropped or failed open */
  uint64_t send_errors;       /* verdict sends the kernel refused (the packets are accepted instead) */
  uint64_t abandoned;         /* batches the watchdog accepted while Node held them (ABANDONED) */
};

struct btq_header {
  uint32_t magic;
  uint32_t slots;
  uint32_t batch;
  uint32_t packet_bytes;  /* one packet buffer: copy range + BTQ_HEADROOM, rounded to 64 */
  uint32_t data_offset;   /* of the first packet buffer */
  uint32_t connmark_mask;
  uint32_t broker_ready;  /* set by the broker once the queue is bound */
  uint32_t reserved;
  struct btq_counters counters;
  struct btq_slot slot[BTQ_SLOTS];
};

/* What travels on the socketpair, both ways. */
struct btq_notice {
  uint32_t slot;
  uint32_t seq;
};

static inline uint32_t btq_packet_bytes(uint32_t copy_range) {
  return (copy_range + BTQ_HEADROOM + 63u) & ~63u;
}

static inline uint32_t btq_data_offset(void) {
  return (uint32_t)((sizeof(struct btq_header) + 4095u) & ~(size_t)4095u);
}

static inline uint64_t btq_shm_bytes(uint32_t copy_range) {
  return (uint64_t)btq_data_offset() + (uint64_t)BTQ_SLOTS * BTQ_BATCH * btq_packet_bytes(copy_range);
}

#endif
