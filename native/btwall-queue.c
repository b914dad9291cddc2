/*
 * btwall-queue: owns one NFQUEUE and hands its packets to btwall's JavaScript in batches through
 * shared memory (queue-shm.h). It is a process of its own so that a stalled or stopped JavaScript
 * process (GC pause, SIGSTOP, a bug) cannot hold traffic: every batch not answered by its deadline
 * is accepted here. When btwall goes away the socketpair closes, this process exits, the queue is
 * unbound, and --queue-bypass lets traffic pass.
 *
 * usage: btwall-queue QUEUE COPY_RANGE MAXLEN RCVBUF TIMEOUT_MS FLAGS CONNMARK_MASK COALESCE_US
 *   FLAGS: letters, o = FAIL_OPEN, g = GSO, - = none. fd 3: the socketpair, fd 4: the shared memory.
 * The caller (src/queue/) validates the arguments; this only checks what would make it misbehave.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#include "queue-shm.h"

#define NOTICE_FD 3
#define SHM_FD 4

/*
 * Interrupt coalescing, as NAPI does it: each hand-over to Node costs two wake-ups and a few
 * system calls whatever it carries, so under load a small batch waits a little for more. A queue
 * counts as loaded when its last batch was read less than two waits ago: packets that come further
 * apart are read at once, as a wait would add latency and gather nothing.
 */
#define COALESCE_BELOW (BTQ_BATCH / 4)

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

struct broker {
  struct mnl_socket *nl;
  int nl_fd;
  uint32_t queue;
  uint64_t timeout_ns;
  uint64_t coalesce_ns;     /* 0: never wait */
  uint64_t last_receive_ns; /* when the last batch was read */
  uint32_t last_count;      /* packets it held */
  char *base; /* the shared memory */
  struct btq_header *shm;
  uint32_t next_seq;
  uint32_t next_slot;
  struct mmsghdr msgs[BTQ_BATCH];
  struct iovec iov[BTQ_BATCH];
  char send_buf[BTQ_BATCH * 256];
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t load_state(struct btq_slot *slot) { return __atomic_load_n(&slot->state, __ATOMIC_ACQUIRE); }

static int swap_state(struct btq_slot *slot, uint32_t from, uint32_t to) {
  return __atomic_compare_exchange_n(&slot->state, &from, to, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void die(const char *what) {
  fprintf(stderr, "btwall-queue: %s: %s\n", what, strerror(errno));
  exit(2);
}

/*
 * Sends one configuration message and waits for the kernel's answer: it reports a refusal (queue
 * already bound by another process, no permission) only as a later error message, not on sendto.
 * Packet messages that arrive meanwhile are for no one yet (the rules come after us) and are skipped.
 */
static void send_config(struct broker *b, struct nlmsghdr *nlh, const char *what) {
  static uint32_t seq;
  char buf[MNL_SOCKET_BUFFER_SIZE];
  nlh->nlmsg_flags |= NLM_F_ACK;
  nlh->nlmsg_seq = ++seq;
  if (mnl_socket_sendto(b->nl, nlh, nlh->nlmsg_len) < 0) die(what);
  for (;;) {
    ssize_t got = mnl_socket_recvfrom(b->nl, buf, sizeof buf);
    if (got < 0) {
      if (errno == EINTR || errno == ENOBUFS) continue;
      die(what);
    }
    int len = (int)got;
    for (const struct nlmsghdr *m = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_type != NLMSG_ERROR || m->nlmsg_seq != seq) continue;
      const struct nlmsgerr *err = mnl_nlmsg_get_payload(m);
      if (err->error == 0) return;
      errno = -err->error;
      die(what);
    }
  }
}

static void open_queue(struct broker *b, uint32_t copy_range, uint32_t maxlen, int rcvbuf, uint32_t flags) {
  char buf[MNL_SOCKET_BUFFER_SIZE];
  b->nl = mnl_socket_open(NETLINK_NETFILTER);
  if (!b->nl) die("netlink socket");
  if (mnl_socket_bind(b->nl, 0, MNL_SOCKET_AUTOPID) < 0) die("netlink bind");
  b->nl_fd = mnl_socket_get_fd(b->nl);
  if (setsockopt(b->nl_fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) die("SO_RCVBUFFORCE");
  struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, b->queue);
  nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
  send_config(b, nlh, "bind queue");
  nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, b->queue);
  nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, (int)copy_range);
  nfq_nlmsg_cfg_put_qmaxlen(nlh, maxlen);
  mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
  mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO));
  send_config(b, nlh, "configure queue");
}

static void close_queue(struct broker *b) {
  char buf[MNL_SOCKET_BUFFER_SIZE];
  struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, b->queue);
  nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_UNBIND);
  mnl_socket_sendto(b->nl, nlh, nlh->nlmsg_len);
  mnl_socket_close(b->nl);
}

/* Sends to the kernel; a refusal is counted, and the caller fails open. Returns 0 when sent. */
static int send_nl(struct broker *b, const void *buf, size_t len) {
  if (mnl_socket_sendto(b->nl, buf, len) >= 0) return 0;
  b->shm->counters.send_errors++;
  return -1;
}

/* An accept is the fail-open answer already: when the kernel refuses it, it is tried once more. */
static void send_accept(struct broker *b, const struct nlmsghdr *nlh) {
  if (send_nl(b, nlh, nlh->nlmsg_len) < 0) send_nl(b, nlh, nlh->nlmsg_len);
}

/* One VERDICT_BATCH: `verdict` for every packet queued up to `max_id`. */
static int send_batch_verdict(struct broker *b, uint32_t max_id, uint32_t verdict) {
  struct nlmsghdr *nlh = nfq_nlmsg_put(b->send_buf, NFQNL_MSG_VERDICT_BATCH, b->queue);
  nfq_nlmsg_verdict_put(nlh, max_id, (int)verdict);
  return send_nl(b, nlh, nlh->nlmsg_len);
}

/* Sends one verdict message per packet of the slot, all in one sendto. */
static int send_each(struct broker *b, struct btq_slot *slot, int use_answers) {
  struct mnl_nlmsg_batch *batch = mnl_nlmsg_batch_start(b->send_buf, sizeof b->send_buf);
  for (uint32_t i = 0; i < slot->count; i++) {
    struct nlmsghdr *nlh = nfq_nlmsg_put(mnl_nlmsg_batch_current(batch), NFQNL_MSG_VERDICT, b->queue);
    nfq_nlmsg_verdict_put(nlh, slot->packets[i].id, use_answers ? slot->verdicts[i] : NF_ACCEPT);
    if (use_answers && slot->marks[i]) {
      uint32_t mask = b->shm->connmark_mask;
      nfq_nlmsg_verdict_put_mark(nlh, (slot->packets[i].mark & ~mask) | (slot->marks[i] & mask));
    }
    if (use_answers && slot->connmarks[i]) {
      struct nlattr *ct = mnl_attr_nest_start(nlh, NFQA_CT);
      mnl_attr_put_u32(nlh, CTA_MARK, htonl(slot->connmarks[i]));
      mnl_attr_put_u32(nlh, CTA_MARK_MASK, htonl(b->shm->connmark_mask));
      mnl_attr_nest_end(nlh, ct);
    }
    mnl_nlmsg_batch_next(batch);
  }
  int sent = send_nl(b, mnl_nlmsg_batch_head(batch), mnl_nlmsg_batch_size(batch));
  mnl_nlmsg_batch_stop(batch);
  return sent;
}

/* The kernel hands packets out in id order, and compares ids modulo 2^32: the last is the highest. */
static uint32_t last_id(const struct btq_slot *slot) { return slot->packets[slot->count - 1].id; }

/*
 * Accepts the slot's packets: the watchdog's verdict, and what a refused verdict falls back to (a
 * packet without a verdict stays queued for good). If even this is refused, one VERDICT_BATCH, the
 * smallest message, accepts up to the slot's last id, failing open for lower ids other slots hold.
 */
static void accept_slot(struct broker *b, struct btq_slot *slot) {
  if (send_each(b, slot, 0) < 0) send_batch_verdict(b, last_id(slot), NF_ACCEPT);
}

/* Whether a slot in this state has packets the kernel still holds for a verdict of ours. */
static int awaits_verdict(uint32_t state) { return state == BTQ_READY || state == BTQ_TAKEN || state == BTQ_ANSWERED; }

/*
 * Whether a slot other than `self` has packets waiting with ids up to `max_id`, which a VERDICT_BATCH
 * would settle too. An ANSWERED slot counts: its answers are not sent yet.
 */
static int lower_pending(struct broker *b, struct btq_slot *self, uint32_t max_id) {
  for (uint32_t s = 0; s < BTQ_SLOTS; s++) {
    struct btq_slot *slot = &b->shm->slot[s];
    if (slot != self && awaits_verdict(load_state(slot)) && (int32_t)(slot->packets[0].id - max_id) <= 0) return 1;
  }
  return 0;
}

/* Node's answers: one VERDICT_BATCH when they are all alike and no lower id waits, else one each. */
static void send_answers(struct broker *b, struct btq_slot *slot) {
  int alike = 1;
  for (uint32_t i = 0; i < slot->count; i++) {
    if (slot->verdicts[i] != slot->verdicts[0] || slot->marks[i] || slot->connmarks[i]) alike = 0;
  }
  uint32_t max_id = last_id(slot);
  int sent = alike && !lower_pending(b, slot, max_id) ? send_batch_verdict(b, max_id, slot->verdicts[0]) : send_each(b, slot, 1);
  if (sent == 0) b->shm->counters.verdicts += slot->count;
  else accept_slot(b, slot);
}

/*
 * Does what the slot states say, whatever notices came: sends every ANSWERED slot's verdicts (its
 * notice may be lost or unread), and accepts every slot past its deadline that Node has not
 * answered: a READY one goes back to FREE, a TAKEN one becomes ABANDONED, since Node may still be
 * reading it. Returns how many slots Node changed under it; the next call sees their new state.
 */
static int settle(struct broker *b, uint64_t now) {
  int raced = 0;
  for (uint32_t s = 0; s < BTQ_SLOTS; s++) {
    struct btq_slot *slot = &b->shm->slot[s];
    uint32_t state = load_state(slot);
    if (state == BTQ_ANSWERED) {
      if (swap_state(slot, BTQ_ANSWERED, BTQ_FREE)) send_answers(b, slot);
      continue;
    }
    if ((state != BTQ_READY && state != BTQ_TAKEN) || slot->deadline_ns > now) continue;
    if (!swap_state(slot, state, state == BTQ_READY ? BTQ_FREE : BTQ_ABANDONED)) {
      raced++; /* Node took or answered it just now */
      continue;
    }
    if (state == BTQ_TAKEN) b->shm->counters.abandoned++;
    accept_slot(b, slot);
    b->shm->counters.watchdog_accepted += slot->count;
  }
  return raced;
}

/* Milliseconds until the earliest deadline, or -1 when nothing waits. */
static int poll_timeout(struct broker *b, uint64_t now) {
  uint64_t earliest = UINT64_MAX;
  for (uint32_t s = 0; s < BTQ_SLOTS; s++) {
    struct btq_slot *slot = &b->shm->slot[s];
    if (awaits_verdict(load_state(slot)) && slot->deadline_ns < earliest) earliest = slot->deadline_ns;
  }
  if (earliest == UINT64_MAX) return -1;
  return earliest <= now ? 0 : (int)((earliest - now + 999999u) / 1000000u);
}

/* An ABANDONED slot is not free: Node may still be reading it. */
static int free_slot(struct broker *b) {
  for (uint32_t i = 0; i < BTQ_SLOTS; i++) {
    uint32_t s = (b->next_slot + i) % BTQ_SLOTS;
    if (load_state(&b->shm->slot[s]) == BTQ_FREE) return (int)s;
  }
  return -1;
}

/* Reads Node's notices, which only wake us up (settle() reads the states); returns 0 when Node has gone. */
static int drain_notices(void) {
  for (;;) {
    struct btq_notice notice;
    ssize_t got = recv(NOTICE_FD, &notice, sizeof notice, MSG_DONTWAIT);
    if (got == 0) return 0;
    if (got < 0) return errno == EAGAIN || errno == EINTR;
  }
}

/* Copies one nfqueue packet message's facts into the slot; returns 0 when it is not a packet. */
static int take_packet(struct broker *b, const struct nlmsghdr *nlh, struct btq_packet *packet) {
  struct nlattr *attr[NFQA_MAX + 1] = {0};
  if (nlh->nlmsg_type == NLMSG_ERROR) {
    const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
    if (err->error) b->shm->counters.send_errors++;
    return 0;
  }
  if (nlh->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) return 0;
  if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR]) return 0;
  const struct nfqnl_msg_packet_hdr *hdr = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
  memset(packet, 0, sizeof *packet);
  packet->id = ntohl(hdr->packet_id);
  packet->hw_protocol = hdr->hw_protocol;
  packet->hook = hdr->hook;
  if (attr[NFQA_PAYLOAD]) {
    packet->offset = (uint32_t)((char *)mnl_attr_get_payload(attr[NFQA_PAYLOAD]) - b->base);
    packet->length = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
  }
  packet->orig_length = attr[NFQA_CAP_LEN] ? ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN])) : packet->length;
  if (attr[NFQA_MARK]) packet->mark = ntohl(mnl_attr_get_u32(attr[NFQA_MARK]));
  if (attr[NFQA_IFINDEX_INDEV]) packet->indev = ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_INDEV]));
  if (attr[NFQA_IFINDEX_OUTDEV]) packet->outdev = ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_OUTDEV]));
  return 1;
}

/* Receives up to a batch of queued packets into BTQ_BATCH packet buffers, without waiting; returns how many datagrams. */
static int receive_into(struct broker *b, char *buffers) {
  for (int i = 0; i < BTQ_BATCH; i++) {
    b->iov[i].iov_base = buffers + (size_t)i * b->shm->packet_bytes;
    b->iov[i].iov_len = b->shm->packet_bytes;
    memset(&b->msgs[i].msg_hdr, 0, sizeof b->msgs[i].msg_hdr);
    b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
    b->msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int n = recvmmsg(b->nl_fd, b->msgs, BTQ_BATCH, MSG_DONTWAIT, NULL);
  if (n < 0 && errno == ENOBUFS) b->shm->counters.enobufs++;
  return n;
}

/* Receives up to a batch of packets straight into a free slot and announces it to Node. */
static void receive_batch(struct broker *b, int s, uint64_t now) {
  struct btq_slot *slot = &b->shm->slot[s];
  int n = receive_into(b, b->base + b->shm->data_offset + (size_t)s * BTQ_BATCH * b->shm->packet_bytes);
  if (n <= 0) return;
  uint32_t count = 0;
  for (int i = 0; i < n; i++) {
    const struct nlmsghdr *nlh = b->iov[i].iov_base;
    int len = (int)b->msgs[i].msg_len;
    /* A datagram carries one packet message in practice; one more than the batch holds is accepted at once. */
    for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
      struct btq_packet packet;
      if (!take_packet(b, nlh, &packet)) continue;
      if (count < BTQ_BATCH) {
        slot->packets[count++] = packet;
      } else {
        struct nlmsghdr *v = nfq_nlmsg_put(b->send_buf, NFQNL_MSG_VERDICT, b->queue);
        nfq_nlmsg_verdict_put(v, packet.id, NF_ACCEPT);
        send_accept(b, v);
        b->shm->counters.watchdog_accepted++;
      }
    }
  }
  b->last_count = count;
  b->last_receive_ns = now;
  if (count == 0) return;
  for (uint32_t i = 0; i < count; i++) {
    slot->verdicts[i] = BTQ_ACCEPT;
    slot->marks[i] = 0;
    slot->connmarks[i] = 0;
  }
  slot->count = count;
  slot->seq = b->next_seq++;
  slot->deadline_ns = now + b->timeout_ns;
  b->next_slot = (uint32_t)(s + 1) % BTQ_SLOTS;
  __atomic_store_n(&slot->state, BTQ_READY, __ATOMIC_RELEASE);
  b->shm->counters.packets += count;
  b->shm->counters.batches++;
  struct btq_notice notice = {(uint32_t)s, slot->seq};
  /* A full socket means Node is not reading: don't make the packets wait for it. */
  if (send(NOTICE_FD, &notice, sizeof notice, MSG_DONTWAIT) != (ssize_t)sizeof notice && swap_state(slot, BTQ_READY, BTQ_FREE)) {
    accept_slot(b, slot);
    b->shm->counters.watchdog_accepted += count;
  }
}

/* Under load, gives a small batch the coalescing time to fill before it is read (see COALESCE_BELOW). */
static void coalesce(const struct broker *b, uint64_t now) {
  if (b->coalesce_ns == 0 || b->last_count >= COALESCE_BELOW || now - b->last_receive_ns >= 2 * b->coalesce_ns) return;
  struct timespec pause = {0, (long)b->coalesce_ns};
  nanosleep(&pause, NULL);
}

/*
 * Accepts what the kernel already delivered to the socket but nobody read: unbinding would drop
 * it (the kernel flushes a queue's packets with NF_DROP). No slot waits for a verdict by now, so
 * one VERDICT_BATCH up to the last id read covers exactly these packets. They are read into
 * buffers of our own: an ABANDONED slot's are still Node's to read.
 */
static void accept_backlog(struct broker *b) {
  char *buffers = malloc((size_t)BTQ_BATCH * b->shm->packet_bytes);
  if (!buffers) return;
  int n;
  while ((n = receive_into(b, buffers)) > 0) {
    uint32_t count = 0;
    uint32_t last = 0;
    for (int i = 0; i < n; i++) {
      const struct nlmsghdr *nlh = b->iov[i].iov_base;
      int len = (int)b->msgs[i].msg_len;
      for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
        struct btq_packet packet;
        if (!take_packet(b, nlh, &packet)) continue;
        last = packet.id;
        count++;
      }
    }
    if (count == 0) continue;
    struct nlmsghdr *v = nfq_nlmsg_put(b->send_buf, NFQNL_MSG_VERDICT_BATCH, b->queue);
    nfq_nlmsg_verdict_put(v, last, NF_ACCEPT);
    send_accept(b, v);
    b->shm->counters.watchdog_accepted += count;
  }
  free(buffers);
}

static uint32_t parse_u32(const char *text, const char *what, uint32_t max) {
  char *end;
  errno = 0;
  unsigned long value = strtoul(text, &end, 0);
  if (errno || *end || value > max) {
    fprintf(stderr, "btwall-queue: bad %s: %s\n", what, text);
    exit(64);
  }
  return (uint32_t)value;
}

int main(int argc, char **argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: btwall-queue QUEUE COPY_RANGE MAXLEN RCVBUF TIMEOUT_MS FLAGS CONNMARK_MASK COALESCE_US (fd 3 socket, fd 4 memory)\n");
    return 64;
  }
  struct broker *b = calloc(1, sizeof *b);
  if (!b) die("calloc");
  b->queue = parse_u32(argv[1], "queue", 65535);
  uint32_t copy_range = parse_u32(argv[2], "copy range", 65535);
  uint32_t maxlen = parse_u32(argv[3], "maxlen", 1u << 20);
  int rcvbuf = (int)parse_u32(argv[4], "rcvbuf", 1u << 30);
  b->timeout_ns = (uint64_t)parse_u32(argv[5], "timeout", 600000) * 1000000u;
  uint32_t flags = (strchr(argv[6], 'o') ? NFQA_CFG_F_FAIL_OPEN : 0) | (strchr(argv[6], 'g') ? NFQA_CFG_F_GSO : 0);
  uint32_t connmark_mask = parse_u32(argv[7], "connmark mask", UINT32_MAX);
  b->coalesce_ns = (uint64_t)parse_u32(argv[8], "coalesce", 999999) * 1000u;

  /*
   * SIGTERM and SIGINT get in only while ppoll waits: one that comes after the loop checked
   * `stopping` stays pending and ends the wait at once, instead of being handled before poll.
   */
  sigset_t stop_signals, waiting;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, &waiting);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct stat st;
  if (fstat(SHM_FD, &st) < 0) die("shared memory fd");
  if ((uint64_t)st.st_size != btq_shm_bytes(copy_range)) {
    fprintf(stderr, "btwall-queue: shared memory is %lld bytes, copy range %u needs %llu\n", (long long)st.st_size, copy_range,
            (unsigned long long)btq_shm_bytes(copy_range));
    return 64;
  }
  b->base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, SHM_FD, 0);
  if (b->base == MAP_FAILED) die("mmap");
  b->shm = (struct btq_header *)b->base;
  if (b->shm->magic != BTQ_MAGIC || b->shm->packet_bytes != btq_packet_bytes(copy_range)) {
    fprintf(stderr, "btwall-queue: shared memory not laid out for this version\n");
    return 64;
  }
  b->shm->connmark_mask = connmark_mask;
  b->next_seq = 1;

  open_queue(b, copy_range, maxlen, rcvbuf, flags);
  __atomic_store_n(&b->shm->broker_ready, 1, __ATOMIC_RELEASE);
  struct btq_notice ready = {UINT32_MAX, 0};
  if (send(NOTICE_FD, &ready, sizeof ready, 0) != (ssize_t)sizeof ready) die("announce");

  while (!stopping) {
    uint64_t now = now_ns();
    settle(b, now);
    int s = free_slot(b);
    struct pollfd fds[2] = {{NOTICE_FD, POLLIN, 0}, {b->nl_fd, s >= 0 ? POLLIN : 0, 0}};
    int timeout = poll_timeout(b, now);
    struct timespec wait = {timeout / 1000, (long)(timeout % 1000) * 1000000L};
    if (ppoll(fds, 2, timeout < 0 ? NULL : &wait, &waiting) < 0) {
      if (errno == EINTR) continue;
      die("ppoll");
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && !drain_notices()) break;
    if (s >= 0 && (fds[1].revents & POLLIN)) {
      coalesce(b, now_ns());
      receive_batch(b, s, now_ns());
    }
    if (fds[1].revents & POLLERR) {
      /* ENOBUFS is reported as a socket error: count it, clear it, go on. */
      int error = 0;
      socklen_t len = sizeof error;
      getsockopt(b->nl_fd, SOL_SOCKET, SO_ERROR, &error, &len);
      if (error == ENOBUFS) b->shm->counters.enobufs++;
    }
  }
  /* Answers already given still count; whatever else waits is accepted: stopping must not drop traffic. */
  drain_notices();
  while (settle(b, UINT64_MAX) > 0) {
  }
  accept_backlog(b);
  close_queue(b);
  return 0;
}
