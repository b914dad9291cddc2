// btwall's N-API addon: the Node side of a queue channel to btwall-queue (see queue-shm.h).
// It only does what JavaScript cannot: create the shared memory and the SOCK_SEQPACKET
// socketpair, wait for the broker's notices on the event loop, and hand slots over with atomic
// compare-and-swap. Options are validated in src/queue/; state is per instance (worker-safe).
#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "notify.h"
#include "queue-shm.h"
#include "raw.h"
#include "xdp.h"

namespace {

Napi::Error SystemError(Napi::Env env, const char* what) {
  return Napi::Error::New(env, std::string(what) + ": " + strerror(errno));
}

void Unmap(Napi::Env, void* memory, size_t* bytes) {
  munmap(memory, *bytes);
  delete bytes;
}

class QueueChannel : public Napi::ObjectWrap<QueueChannel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "QueueChannel",
                       {
                           InstanceMethod<&QueueChannel::BrokerFds>("brokerFds"),
                           InstanceMethod<&QueueChannel::ReleaseBrokerFds>("releaseBrokerFds"),
                           InstanceMethod<&QueueChannel::Memory>("memory"),
                           InstanceMethod<&QueueChannel::Start>("start"),
                           InstanceMethod<&QueueChannel::Next>("next"),
                           InstanceMethod<&QueueChannel::Answer>("answer"),
                           InstanceMethod<&QueueChannel::Close>("close"),
                       });
  }

  // new QueueChannel(copyRange)
  explicit QueueChannel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<QueueChannel>(info) {
    Napi::Env env = info.Env();
    uint32_t copy_range = info[0].As<Napi::Number>().Uint32Value();
    bytes_ = btq_shm_bytes(copy_range);
    int memfd = memfd_create("btwall-queue", MFD_CLOEXEC);
    if (memfd < 0) {
      SystemError(env, "memfd_create").ThrowAsJavaScriptException();
      return;
    }
    if (ftruncate(memfd, (off_t)bytes_) < 0) {
      SystemError(env, "ftruncate").ThrowAsJavaScriptException();
      close(memfd);
      return;
    }
    void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (memory == MAP_FAILED) {
      SystemError(env, "mmap").ThrowAsJavaScriptException();
      close(memfd);
      return;
    }
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0) {
      SystemError(env, "socketpair").ThrowAsJavaScriptException();
      munmap(memory, bytes_);
      close(memfd);
      return;
    }
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    sock_ = fds[0];
    broker_sock_ = fds[1];
    broker_mem_ = memfd;
    shm_ = static_cast<btq_header*>(memory);
    shm_->magic = BTQ_MAGIC;
    shm_->slots = BTQ_SLOTS;
    shm_->batch = BTQ_BATCH;
    shm_->packet_bytes = btq_packet_bytes(copy_range);
    shm_->data_offset = btq_data_offset();
    // The ArrayBuffer owns the mapping: it is unmapped only when JavaScript can no longer see it.
    memory_.Reset(Napi::ArrayBuffer::New(env, memory, bytes_, Unmap, new size_t(bytes_)), 1);
    napi_add_env_cleanup_hook(env, CleanupHook, this);
  }

  ~QueueChannel() override { Shutdown(); }

 private:
  // [socket, memory]: the broker's ends, for child_process.spawn's stdio (fd 3 and 4 in the child).
  Napi::Value BrokerFds(const Napi::CallbackInfo& info) {
    Napi::Array fds = Napi::Array::New(info.Env(), 2);
    fds.Set(0u, Napi::Number::New(info.Env(), broker_sock_));
    fds.Set(1u, Napi::Number::New(info.Env(), broker_mem_));
    return fds;
  }

  // After spawn: the broker has its copies; ours would keep the socket open if it died.
  void ReleaseBrokerFds(const Napi::CallbackInfo&) {
    CloseFd(broker_sock_);
    CloseFd(broker_mem_);
  }

  Napi::Value Memory(const Napi::CallbackInfo&) { return memory_.Value(); }

  // start(onReadable): onReadable() is called on the event loop whenever notices are waiting.
  void Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (poll_ != nullptr || sock_ < 0) {
      Napi::Error::New(env, "queue channel already started or closed").ThrowAsJavaScriptException();
      return;
    }
    on_readable_.Reset(info[0].As<Napi::Function>(), 1);
    context_ = std::make_unique<Napi::AsyncContext>(env, "btwall:queue");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new uv_poll_t;
    poll_->data = this;
    if (uv_poll_init(loop, poll_, sock_) != 0 || uv_poll_start(poll_, UV_READABLE | UV_DISCONNECT, OnPoll) != 0) {
      delete poll_;
      poll_ = nullptr;
      Napi::Error::New(env, "cannot watch the queue socket").ThrowAsJavaScriptException();
    }
  }

  // next(): the slot Node now holds (>= 0), -1 when no notice waits, -2 once the broker is gone.
  // The broker's first notice (slot = UINT32_MAX) says it is bound; it yields -3.
  Napi::Value Next(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    for (;;) {
      btq_notice notice;
      ssize_t got = sock_ < 0 ? 0 : recv(sock_, &notice, sizeof notice, MSG_DONTWAIT);
      if (got == 0) return Napi::Number::New(env, -2);
      if (got < 0) {
        if (errno == EINTR) continue;
        return Napi::Number::New(env, errno == EAGAIN ? -1 : -2);
      }
      if (got != sizeof notice) continue;
      if (notice.slot == UINT32_MAX) return Napi::Number::New(env, -3);
      if (notice.slot >= BTQ_SLOTS) continue;
      btq_slot& slot = shm_->slot[notice.slot];
      uint32_t expected = BTQ_READY;
      // A stale notice may win a slot the broker refilled since: the batch in it is ours all the
      // same, and its own notice, when it comes, finds the slot taken.
      // The broker filled it with every verdict accept, unmarked; no one else writes it until we answer.
      if (!__atomic_compare_exchange_n(&slot.state, &expected, (uint32_t)BTQ_TAKEN, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
      return Napi::Number::New(env, notice.slot);
    }
  }

  // answer(slot): hands the verdicts written into the slot back; false when the watchdog was first
  // (it accepted the batch and left the slot ABANDONED to us: this lets the broker refill it).
  Napi::Value Answer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t index = info[0].As<Napi::Number>().Uint32Value();
    if (shm_ == nullptr) return Napi::Boolean::New(env, false);
    if (index >= BTQ_SLOTS) {
      Napi::RangeError::New(env, "slot out of range").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    btq_slot& slot = shm_->slot[index];
    uint32_t expected = BTQ_TAKEN;
    bool in_time = __atomic_compare_exchange_n(&slot.state, &expected, (uint32_t)BTQ_ANSWERED, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    expected = BTQ_ABANDONED;
    bool released = !in_time && __atomic_compare_exchange_n(&slot.state, &expected, (uint32_t)BTQ_FREE, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    if (in_time || released) {
      btq_notice notice = {index, slot.seq};
      // Only a wake-up: the broker settles by the slot states, so a notice lost on a full socket
      // (the broker has others to read then) or a gone broker costs nothing.
      send(sock_, &notice, sizeof notice, MSG_DONTWAIT);
    }
    return Napi::Boolean::New(env, in_time);
  }

  void Close(const Napi::CallbackInfo&) { Shutdown(); }

  static void OnPoll(uv_poll_t* handle, int, int) {
    auto* self = static_cast<QueueChannel*>(handle->data);
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    self->on_readable_.MakeCallback(self->Value(), {}, *self->context_);
    if (env.IsExceptionPending()) {
      Napi::Error error = env.GetAndClearPendingException();
      napi_fatal_exception(env, error.Value());
    }
  }

  static void CleanupHook(void* data) { static_cast<QueueChannel*>(data)->Shutdown(); }

  void CloseFd(int& fd) {
    if (fd >= 0) close(fd);
    fd = -1;
  }

  void Shutdown() {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    if (shm_ != nullptr) {
      napi_remove_env_cleanup_hook(Env(), CleanupHook, this);
      shm_ = nullptr;
    }
    // The callback's closure holds the channel and its memory: let them be collected.
    on_readable_.Reset();
    CloseFd(sock_);
    CloseFd(broker_sock_);
    CloseFd(broker_mem_);
  }

  size_t bytes_ = 0;
  btq_header* shm_ = nullptr;
  int sock_ = -1;
  int broker_sock_ = -1;
  int broker_mem_ = -1;
  uv_poll_t* poll_ = nullptr;
  Napi::Reference<Napi::ArrayBuffer> memory_;
  Napi::FunctionReference on_readable_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

// Where things are in the shared memory, so TypeScript reads one layout: this header's.
Napi::Object Layout(Napi::Env env) {
  Napi::Object layout = Napi::Object::New(env);
  auto set = [&](const char* name, size_t value) { layout.Set(name, Napi::Number::New(env, (double)value)); };
  set("slots", BTQ_SLOTS);
  set("batch", BTQ_BATCH);
  set("slotsOffset", offsetof(btq_header, slot));
  set("slotBytes", sizeof(btq_slot));
  set("slotCount", offsetof(btq_slot, count));
  set("slotPackets", offsetof(btq_slot, packets));
  set("slotVerdicts", offsetof(btq_slot, verdicts));
  set("slotMarks", offsetof(btq_slot, marks));
  set("slotConnmarks", offsetof(btq_slot, connmarks));
  set("packetBytes", sizeof(btq_packet));
  set("packetOffset", offsetof(btq_packet, offset));
  set("packetLength", offsetof(btq_packet, length));
  set("packetOrigLength", offsetof(btq_packet, orig_length));
  set("packetIndev", offsetof(btq_packet, indev));
  set("packetOutdev", offsetof(btq_packet, outdev));
  set("packetHook", offsetof(btq_packet, hook));
  set("countersOffset", offsetof(btq_header, counters));
  set("counterPackets", offsetof(btq_counters, packets));
  set("counterBatches", offsetof(btq_counters, batches));
  set("counterVerdicts", offsetof(btq_counters, verdicts));
  set("counterWatchdogAccepted", offsetof(btq_counters, watchdog_accepted));
  set("counterEnobufs", offsetof(btq_counters, enobufs));
  set("counterSendErrors", offsetof(btq_counters, send_errors));
  set("counterAbandoned", offsetof(btq_counters, abandoned));
  set("countersBytes", sizeof(btq_counters));
  set("brokerReady", offsetof(btq_header, broker_ready));
  set("drop", BTQ_DROP);
  set("accept", BTQ_ACCEPT);
  set("repeat", BTQ_REPEAT);
  return layout;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("QueueChannel", QueueChannel::Define(env));
  exports.Set("layout", Layout(env));
  InitXdp(env, exports);
  InitRaw(env, exports);
  InitNotify(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(btwall, Init)
