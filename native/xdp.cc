// The XDP ban side of btwall's addon: libbpf (Debian's, 1.1) for the program in bpf/btwall.bpf.c
// and its maps. Like addon.cc it only does what JavaScript cannot: the syscalls. Which program a
// device gets, what may be replaced, expiry arithmetic and every option check live in
// src/bans/xdp.ts. State is per instance (worker-safe) except libbpf's log, which libbpf itself
// keeps process-wide: it is buffered here and handed to JavaScript on request, never called back.
#include "xdp.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/magic.h>
#include <net/if.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

#include "../bpf/btwall.h"
#include "errors.h"

namespace {

// ---- libbpf's log, waiting for JavaScript (the daemon's logger) ----

struct LogLine {
  libbpf_print_level level;
  std::string text;
};
std::mutex log_mutex;
std::vector<LogLine> log_lines;
bool log_debug = false;
// A verifier log can run to megabytes; the first lines say what went wrong.
constexpr size_t kMaxLogLines = 200;
constexpr int kMaxLogLineBytes = 16384;

int CollectLibbpfLog(libbpf_print_level level, const char* format, va_list args) {
  std::lock_guard<std::mutex> lock(log_mutex);
  if ((level == LIBBPF_DEBUG && !log_debug) || log_lines.size() >= kMaxLogLines) return 0;
  char text[kMaxLogLineBytes];
  int n = vsnprintf(text, sizeof text, format, args);
  if (n < 0) return 0;
  size_t length = strnlen(text, sizeof text);
  while (length > 0 && text[length - 1] == '\n') length--;
  log_lines.push_back({level, std::string(text, length)});
  return n;
}

// takeLibbpfLog() -> [{level: 'warn'|'info'|'debug', message}], emptying the buffer.
Napi::Value TakeLibbpfLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<LogLine> lines;
  {
    std::lock_guard<std::mutex> lock(log_mutex);
    lines.swap(log_lines);
  }
  Napi::Array out = Napi::Array::New(env, lines.size());
  for (size_t i = 0; i < lines.size(); i++) {
    Napi::Object line = Napi::Object::New(env);
    const char* level = lines[i].level == LIBBPF_WARN ? "warn" : lines[i].level == LIBBPF_INFO ? "info" : "debug";
    line.Set("level", level);
    line.Set("message", lines[i].text);
    out.Set(i, line);
  }
  return out;
}

// setLibbpfDebug(on): whether libbpf's debug lines are kept too.
void SetLibbpfDebug(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(log_mutex);
  log_debug = info[0].As<Napi::Boolean>().Value();
}

// ---- the loaded object: programs, maps, attachment, test runs ----

class XdpObject : public Napi::ObjectWrap<XdpObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "XdpObject",
                       {
                           InstanceMethod<&XdpObject::MapFd>("mapFd"),
                           InstanceMethod<&XdpObject::ProgramId>("programId"),
                           InstanceMethod<&XdpObject::Attach>("attach"),
                           InstanceMethod<&XdpObject::TestRun>("testRun"),
                           InstanceMethod<&XdpObject::Close>("close"),
                       });
  }

  // new XdpObject(path, pinRoot, maxEntries): opens and loads the object file. Maps declared
  // LIBBPF_PIN_BY_NAME are reused from pinRoot when pinned there (libbpf refuses a pinned map
  // whose type, sizes or capacity differ), else created and pinned; pinRoot '' = none.
  // maxEntries = {mapName: capacity} overrides the compiled-in capacities.
  explicit XdpObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<XdpObject>(info) {
    Napi::Env env = info.Env();
    std::string path = info[0].As<Napi::String>();
    std::string pin_root = info[1].As<Napi::String>();
    Napi::Object max_entries = info[2].As<Napi::Object>();
    bpf_object_open_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.sz = sizeof opts;
    if (!pin_root.empty()) opts.pin_root_path = pin_root.c_str();
    bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
    if (obj == nullptr) {
      Fail(env, "cannot open " + path, errno);
      return;
    }
    Napi::Array names = max_entries.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).As<Napi::String>();
      bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
      int err = map == nullptr ? ENOENT : -bpf_map__set_max_entries(map, max_entries.Get(name).As<Napi::Number>().Uint32Value());
      if (err != 0) {
        bpf_object__close(obj);
        Fail(env, "map " + name + " of " + path, err);
        return;
      }
    }
    int err = bpf_object__load(obj);
    if (err != 0) {
      bpf_object__close(obj);
      Fail(env, "cannot load " + path, -err);
      return;
    }
    obj_ = obj;
    napi_add_env_cleanup_hook(env, CleanupHook, this);
  }

  ~XdpObject() override { Shutdown(); }

 private:
  // The descriptor of a program by name, or -1 with a JavaScript exception pending.
  int ProgramFd(Napi::Env env, const std::string& name) {
    bpf_program* prog = obj_ == nullptr ? nullptr : bpf_object__find_program_by_name(obj_, name.c_str());
    if (prog == nullptr) {
      Fail(env, "program " + name, obj_ == nullptr ? EBADF : ENOENT);
      return -1;
    }
    return bpf_program__fd(prog);
  }

  // mapFd(name): the object's descriptor (valid until close; BpfMap dups it).
  Napi::Value MapFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>();
    bpf_map* map = obj_ == nullptr ? nullptr : bpf_object__find_map_by_name(obj_, name.c_str());
    if (map == nullptr) {
      Fail(env, "map " + name, obj_ == nullptr ? EBADF : ENOENT);
      return env.Undefined();
    }
    return Napi::Number::New(env, bpf_map__fd(map));
  }

  // programId(name): the kernel's id, as xdpQuery reports attached programs.
  Napi::Value ProgramId(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = ProgramFd(env, info[0].As<Napi::String>());
    if (fd < 0) return env.Undefined();
    bpf_prog_info prog;
    memset(&prog, 0, sizeof prog);
    uint32_t length = sizeof prog;
    if (bpf_obj_get_info_by_fd(fd, &prog, &length) != 0) {
      Fail(env, "program info", errno);
      return env.Undefined();
    }
    return Napi::Number::New(env, prog.id);
  }

  // attach(ifindex, program, modeFlags, replaceProgId): replaceProgId 0 attaches only where the
  // device has no program in that mode; otherwise it atomically replaces exactly that program.
  void Attach(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int ifindex = info[0].As<Napi::Number>().Int32Value();
    int prog_fd = ProgramFd(env, info[1].As<Napi::String>());
    uint32_t flags = info[2].As<Napi::Number>().Uint32Value();
    uint32_t replace_id = info[3].As<Napi::Number>().Uint32Value();
    if (prog_fd < 0) return;
    bpf_xdp_attach_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.sz = sizeof opts;
    int old_fd = -1;
    if (replace_id == 0) {
      flags |= XDP_FLAGS_UPDATE_IF_NOEXIST;
    } else {
      old_fd = bpf_prog_get_fd_by_id(replace_id);
      if (old_fd < 0) {
        Fail(env, "attached program " + std::to_string(replace_id), errno);
        return;
      }
      opts.old_prog_fd = old_fd;
      flags |= XDP_FLAGS_REPLACE;
    }
    int err = bpf_xdp_attach(ifindex, prog_fd, flags, &opts);
    if (old_fd >= 0) close(old_fd);
    if (err != 0) Fail(env, "attach to interface " + std::to_string(ifindex), -err);
  }

  // testRun(program, frame, repeat) -> {retval, durationNs}: BPF_PROG_TEST_RUN over one frame
  // (at least 14 bytes: the kernel's minimum); durationNs is the mean over the repetitions.
  Napi::Value TestRun(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int prog_fd = ProgramFd(env, info[0].As<Napi::String>());
    Napi::Uint8Array frame = info[1].As<Napi::Uint8Array>();
    int repeat = info[2].As<Napi::Number>().Int32Value();
    if (prog_fd < 0) return env.Undefined();
    bpf_test_run_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.sz = sizeof opts;
    opts.data_in = frame.Data();
    opts.data_size_in = (uint32_t)frame.ByteLength();
    opts.repeat = repeat;
    int err = bpf_prog_test_run_opts(prog_fd, &opts);
    if (err != 0) {
      Fail(env, "BPF_PROG_TEST_RUN", -err);
      return env.Undefined();
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("retval", Napi::Number::New(env, opts.retval));
    result.Set("durationNs", Napi::Number::New(env, opts.duration));
    return result;
  }

  // close(): programs and unpinned maps go; pinned maps and attachments stay (detach first).
  void Close(const Napi::CallbackInfo&) { Shutdown(); }

  static void CleanupHook(void* data) { static_cast<XdpObject*>(data)->Shutdown(); }

  void Shutdown() {
    if (obj_ == nullptr) return;
    napi_remove_env_cleanup_hook(Env(), CleanupHook, this);
    bpf_object__close(obj_);
    obj_ = nullptr;
  }

  bpf_object* obj_ = nullptr;
};

// ---- one map, by its own descriptor ----

bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

class BpfMap : public Napi::ObjectWrap<BpfMap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfMap",
                       {
                           InstanceMethod<&BpfMap::Info>("info"),
                           InstanceMethod<&BpfMap::Lookup>("lookup"),
                           InstanceMethod<&BpfMap::Update>("update"),
                           InstanceMethod<&BpfMap::Delete>("delete"),
                           InstanceMethod<&BpfMap::Dump>("dump"),
                           InstanceMethod<&BpfMap::DeleteKeys>("deleteKeys"),
                           InstanceMethod<&BpfMap::SumPerCpu>("sumPerCpu"),
                           InstanceMethod<&BpfMap::Close>("close"),
                       });
  }

  // new BpfMap(pinPath) opens a pinned map; new BpfMap(fd) takes a copy of an object's descriptor.
  explicit BpfMap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfMap>(info) {
    Napi::Env env = info.Env();
    std::string what;
    if (info[0].IsString()) {
      what = info[0].As<Napi::String>();
      fd_ = bpf_obj_get(what.c_str());
    } else {
      what = "map descriptor";
      fd_ = fcntl(info[0].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 0);
    }
    if (fd_ < 0) {
      Fail(env, what, errno);
      return;
    }
    memset(&info_, 0, sizeof info_);
    uint32_t length = sizeof info_;
    if (bpf_obj_get_info_by_fd(fd_, &info_, &length) != 0) {
      Fail(env, what, errno);
      close(fd_);
      fd_ = -1;
      return;
    }
    cpus_ = IsPerCpu(info_.type) ? libbpf_num_possible_cpus() : 1;
    if (cpus_ < 1) {
      Fail(env, "possible CPUs", -cpus_);
      close(fd_);
      fd_ = -1;
      return;
    }
    // The kernel copies a per-CPU value as one 8-byte-aligned slice per possible CPU.
    value_bytes_ = IsPerCpu(info_.type) ? ((info_.value_size + 7u) & ~7u) * cpus_ : info_.value_size;
    napi_add_env_cleanup_hook(env, CleanupHook, this);
  }

  ~BpfMap() override { Shutdown(); }

 private:
  // info() -> {id, name, type, keySize, valueSize, maxEntries, flags}
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("id", info_.id);
    out.Set("name", info_.name);
    out.Set("type", info_.type);
    out.Set("keySize", info_.key_size);
    out.Set("valueSize", info_.value_size);
    out.Set("maxEntries", info_.max_entries);
    out.Set("flags", info_.map_flags);
    return out;
  }

  // Whether the buffer is exactly `bytes` long: the kernel reads and writes that many.
  bool Sized(Napi::Env env, const Napi::Value& value, size_t bytes, const char* what) {
    if (fd_ < 0) {
      Fail(env, "map", EBADF);
      return false;
    }
    if (!value.IsTypedArray() || value.As<Napi::Uint8Array>().ByteLength() != bytes) {
      Napi::RangeError::New(env, std::string(what) + " must be a Uint8Array of " + std::to_string(bytes) + " bytes").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  // lookup(key, value) -> found; value is filled when found.
  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Sized(env, info[0], info_.key_size, "key") || !Sized(env, info[1], value_bytes_, "value")) return env.Undefined();
    if (bpf_map_lookup_elem(fd_, info[0].As<Napi::Uint8Array>().Data(), info[1].As<Napi::Uint8Array>().Data()) == 0) return Napi::Boolean::New(env, true);
    if (errno != ENOENT) Fail(env, "map lookup", errno);
    return Napi::Boolean::New(env, false);
  }

  // update(key, value, flags): BPF_ANY, BPF_NOEXIST or BPF_EXIST.
  void Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Sized(env, info[0], info_.key_size, "key") || !Sized(env, info[1], value_bytes_, "value")) return;
    uint64_t flags = info[2].As<Napi::Number>().Uint32Value();
    if (bpf_map_update_elem(fd_, info[0].As<Napi::Uint8Array>().Data(), info[1].As<Napi::Uint8Array>().Data(), flags) != 0) Fail(env, "map update", errno);
  }

  // delete(key) -> whether it was there.
  Napi::Value Delete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Sized(env, info[0], info_.key_size, "key")) return env.Undefined();
    if (bpf_map_delete_elem(fd_, info[0].As<Napi::Uint8Array>().Data()) == 0) return Napi::Boolean::New(env, true);
    if (errno != ENOENT) Fail(env, "map delete", errno);
    return Napi::Boolean::New(env, false);
  }

  // dump() -> {count, keys, values}: every entry, keySize and value bytes each, in a few
  // BPF_MAP_LOOKUP_BATCH calls (a sweep of a full map must not hold the event loop for long).
  Napi::Value Dump(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) {
      Fail(env, "map", EBADF);
      return env.Undefined();
    }
    const uint32_t chunk = 4096;
    const size_t key_bytes = info_.key_size;
    std::vector<uint8_t> keys, values;
    // The batch position is opaque: a bucket number for hash maps, a key for arrays.
    std::vector<uint8_t> in_batch(key_bytes + 8), out_batch(key_bytes + 8);
    size_t total = 0;
    bpf_map_batch_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.sz = sizeof opts;
    for (bool first = true;; first = false) {
      keys.resize((total + chunk) * key_bytes);
      values.resize((total + chunk) * value_bytes_);
      uint32_t count = chunk;
      int err = bpf_map_lookup_batch(fd_, first ? nullptr : in_batch.data(), out_batch.data(), keys.data() + total * key_bytes,
                                     values.data() + total * value_bytes_, &count, &opts);
      total += count;
      if (err != 0) {
        if (-err == ENOENT) break;
        Fail(env, "map dump", -err);
        return env.Undefined();
      }
      in_batch.swap(out_batch);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("count", Napi::Number::New(env, (double)total));
    out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.data(), total * key_bytes));
    out.Set("values", Napi::Buffer<uint8_t>::Copy(env, values.data(), total * value_bytes_));
    return out;
  }

  // deleteKeys(keys) -> how many were there: keys is keySize bytes per key, back to back.
  Napi::Value DeleteKeys(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint8Array keys = info[0].As<Napi::Uint8Array>();
    if (fd_ < 0 || keys.ByteLength() % info_.key_size != 0) {
      Napi::RangeError::New(env, "keys must be whole keys of an open map").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint32_t deleted = 0;
    for (size_t off = 0; off < keys.ByteLength(); off += info_.key_size) {
      if (bpf_map_delete_elem(fd_, keys.Data() + off) == 0) {
        deleted++;
      } else if (errno != ENOENT) {
        Fail(env, "map delete", errno);
        return env.Undefined();
      }
    }
    return Napi::Number::New(env, deleted);
  }

  // sumPerCpu() -> Float64Array: for each slot of a per-CPU array, each 8-byte word of its value
  // summed over the possible CPUs (slot-major).
  Napi::Value SumPerCpu(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0 || info_.type != BPF_MAP_TYPE_PERCPU_ARRAY || info_.value_size % 8 != 0) {
      Napi::TypeError::New(env, "sumPerCpu needs an open per-CPU array of 8-byte words").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const uint32_t words = info_.value_size / 8;
    Napi::Float64Array sums = Napi::Float64Array::New(env, (size_t)info_.max_entries * words);
    std::vector<uint64_t> value(value_bytes_ / 8);
    for (uint32_t slot = 0; slot < info_.max_entries; slot++) {
      if (bpf_map_lookup_elem(fd_, &slot, value.data()) != 0) {
        Fail(env, "per-CPU read", errno);
        return env.Undefined();
      }
      for (uint32_t word = 0; word < words; word++) {
        uint64_t sum = 0;
        for (int cpu = 0; cpu < cpus_; cpu++) sum += value[(size_t)cpu * words + word];
        sums[(size_t)slot * words + word] = (double)sum;
      }
    }
    return sums;
  }

  void Close(const Napi::CallbackInfo&) { Shutdown(); }

  static void CleanupHook(void* data) { static_cast<BpfMap*>(data)->Shutdown(); }

  void Shutdown() {
    if (fd_ < 0) return;
    napi_remove_env_cleanup_hook(Env(), CleanupHook, this);
    close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
  int cpus_ = 1;
  size_t value_bytes_ = 0;
  bpf_map_info info_;
};

// ---- the system around it ----

// bootTimeNs() -> bigint: CLOCK_BOOTTIME, the clock bpf_ktime_get_boot_ns reads.
Napi::Value BootTimeNs(const Napi::CallbackInfo& info) {
  timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return Napi::BigInt::New(info.Env(), (uint64_t)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec));
}

// linkInfo(name) -> {index, type} (type: ARPHRD_*), or null when this network namespace has no such device.
Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  ifreq req;
  memset(&req, 0, sizeof req);
  if (name.size() >= sizeof req.ifr_name) return env.Null();
  memcpy(req.ifr_name, name.data(), name.size());
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    Fail(env, "socket", errno);
    return env.Undefined();
  }
  int err = ioctl(sock, SIOCGIFINDEX, &req) == 0 ? 0 : errno;
  int index = req.ifr_ifindex;
  if (err == 0 && ioctl(sock, SIOCGIFHWADDR, &req) != 0) err = errno;
  close(sock);
  if (err == ENODEV) return env.Null();
  if (err != 0) {
    Fail(env, "interface " + name, err);
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("index", index);
  out.Set("type", req.ifr_hwaddr.sa_family);
  return out;
}

// interfaces() -> [{name, index}]: every device of this network namespace.
Napi::Value Interfaces(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct if_nameindex* list = if_nameindex();
  if (list == nullptr) {
    Fail(env, "if_nameindex", errno);
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env);
  for (uint32_t i = 0; list[i].if_index != 0; i++) {
    Napi::Object item = Napi::Object::New(env);
    item.Set("name", list[i].if_name);
    item.Set("index", list[i].if_index);
    out.Set(i, item);
  }
  if_freenameindex(list);
  return out;
}

// xdpDetach(ifindex, modeFlags, progId): removes that program, and only if it is the one attached.
void XdpDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = info[0].As<Napi::Number>().Int32Value();
  uint32_t flags = info[1].As<Napi::Number>().Uint32Value();
  uint32_t prog_id = info[2].As<Napi::Number>().Uint32Value();
  int prog_fd = bpf_prog_get_fd_by_id(prog_id);
  if (prog_fd < 0) {
    Fail(env, "program " + std::to_string(prog_id), errno);
    return;
  }
  bpf_xdp_attach_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.old_prog_fd = prog_fd;
  int err = bpf_xdp_detach(ifindex, flags | XDP_FLAGS_REPLACE, &opts);
  close(prog_fd);
  if (err != 0) Fail(env, "detach from interface " + std::to_string(ifindex), -err);
}

// xdpQuery(ifindex) -> {generic, native, offload}: the XDP program id attached in each mode, 0 = none.
Napi::Value XdpQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_xdp_query_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  int err = bpf_xdp_query(info[0].As<Napi::Number>().Int32Value(), 0, &opts);
  if (err != 0) {
    Fail(env, "XDP query", -err);
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("generic", opts.skb_prog_id);
  out.Set("native", opts.drv_prog_id);
  out.Set("offload", opts.hw_prog_id);
  return out;
}

// progInfo(id) -> {name, mapIds} of a loaded program, or null when it is gone.
Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = bpf_prog_get_fd_by_id(info[0].As<Napi::Number>().Uint32Value());
  if (fd < 0) {
    if (errno == ENOENT) return env.Null();
    Fail(env, "program", errno);
    return env.Undefined();
  }
  bpf_prog_info prog;
  memset(&prog, 0, sizeof prog);
  uint32_t length = sizeof prog;
  int err = bpf_obj_get_info_by_fd(fd, &prog, &length) == 0 ? 0 : errno;
  std::vector<uint32_t> map_ids(prog.nr_map_ids);
  if (err == 0 && !map_ids.empty()) {
    uint32_t count = prog.nr_map_ids;
    memset(&prog, 0, sizeof prog);
    prog.nr_map_ids = count;
    prog.map_ids = (uint64_t)(uintptr_t)map_ids.data();
    length = sizeof prog;
    if (bpf_obj_get_info_by_fd(fd, &prog, &length) != 0) err = errno;
    map_ids.resize(std::min(count, prog.nr_map_ids));
  }
  close(fd);
  if (err != 0) {
    Fail(env, "program info", err);
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("name", prog.name);
  Napi::Array ids = Napi::Array::New(env, map_ids.size());
  for (size_t i = 0; i < map_ids.size(); i++) ids.Set(i, map_ids[i]);
  out.Set("mapIds", ids);
  return out;
}

// The kernel's netdev generic netlink family (linux/netdev.h, kernel 6.3+; Debian 12's headers
// predate it): a device's xdp-features say which XDP modes its driver supports.
constexpr uint8_t kNetdevCmdDevGet = 1;
constexpr uint16_t kNetdevAttrIfindex = 1;
constexpr uint16_t kNetdevAttrXdpFeatures = 3;

struct GenlRequest {
  nlmsghdr header;
  genlmsghdr genl;
  char attrs[64];
};

// Appends one attribute to the request.
void PutAttr(GenlRequest& request, uint16_t type, const void* data, uint16_t length) {
  nlattr* attr = reinterpret_cast<nlattr*>(reinterpret_cast<char*>(&request) + NLMSG_ALIGN(request.header.nlmsg_len));
  attr->nla_type = type;
  attr->nla_len = NLA_HDRLEN + length;
  memcpy(reinterpret_cast<char*>(attr) + NLA_HDRLEN, data, length);
  request.header.nlmsg_len = NLMSG_ALIGN(request.header.nlmsg_len) + NLA_ALIGN(attr->nla_len);
}

// Sends one request and reads its answer; returns 0, or the errno (the kernel's or the socket's).
int GenlCall(int sock, GenlRequest& request, char* answer, size_t size, ssize_t* got) {
  if (send(sock, &request, request.header.nlmsg_len, 0) < 0) return errno;
  *got = recv(sock, answer, size, 0);
  if (*got < 0) return errno;
  const nlmsghdr* reply = reinterpret_cast<const nlmsghdr*>(answer);
  if (*got < (ssize_t)sizeof *reply || !NLMSG_OK(reply, (size_t)*got)) return EPROTO;
  if (reply->nlmsg_type == NLMSG_ERROR) return -static_cast<const nlmsgerr*>(NLMSG_DATA(reply))->error;
  return 0;
}

// The payload of attribute `type` in a generic netlink answer, or nullptr.
const nlattr* FindAttr(const char* answer, ssize_t got, uint16_t type) {
  const nlmsghdr* reply = reinterpret_cast<const nlmsghdr*>(answer);
  int left = (int)std::min<ssize_t>(got, reply->nlmsg_len) - NLMSG_HDRLEN - GENL_HDRLEN;
  const nlattr* attr = reinterpret_cast<const nlattr*>(answer + NLMSG_HDRLEN + GENL_HDRLEN);
  while (left >= NLA_HDRLEN && attr->nla_len >= NLA_HDRLEN && attr->nla_len <= left) {
    if ((attr->nla_type & NLA_TYPE_MASK) == type) return attr;
    left -= NLA_ALIGN(attr->nla_len);
    attr = reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(attr) + NLA_ALIGN(attr->nla_len));
  }
  return nullptr;
}

// xdpFeatures(ifindex) -> the device's NETDEV_XDP_ACT_* bits (a number), or null when this kernel
// cannot say (no netdev family). Reads only: nothing is attached or loaded.
Napi::Value XdpFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex = info[0].As<Napi::Number>().Uint32Value();
  int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
  if (sock < 0) {
    Fail(env, "generic netlink socket", errno);
    return env.Undefined();
  }
  timeval timeout = {2, 0};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  char answer[8192];
  ssize_t got = 0;
  GenlRequest request;
  memset(&request, 0, sizeof request);
  request.header = {NLMSG_LENGTH(GENL_HDRLEN), GENL_ID_CTRL, NLM_F_REQUEST, 1, 0};
  request.genl = {CTRL_CMD_GETFAMILY, 1, 0};
  PutAttr(request, CTRL_ATTR_FAMILY_NAME, "netdev", sizeof "netdev");
  int err = GenlCall(sock, request, answer, sizeof answer, &got);
  const nlattr* family = err == 0 ? FindAttr(answer, got, CTRL_ATTR_FAMILY_ID) : nullptr;
  if (err == ENOENT || (err == 0 && family == nullptr)) {
    close(sock);
    return env.Null();
  }
  if (err == 0) {
    uint16_t id;
    memcpy(&id, reinterpret_cast<const char*>(family) + NLA_HDRLEN, sizeof id);
    memset(&request, 0, sizeof request);
    request.header = {NLMSG_LENGTH(GENL_HDRLEN), id, NLM_F_REQUEST, 2, 0};
    request.genl = {kNetdevCmdDevGet, 1, 0};
    PutAttr(request, kNetdevAttrIfindex, &ifindex, sizeof ifindex);
    err = GenlCall(sock, request, answer, sizeof answer, &got);
  }
  close(sock);
  if (err != 0) {
    Fail(env, "xdp-features of interface " + std::to_string(ifindex), err);
    return env.Undefined();
  }
  const nlattr* features = FindAttr(answer, got, kNetdevAttrXdpFeatures);
  if (features == nullptr || features->nla_len < NLA_HDRLEN + sizeof(uint64_t)) return env.Null();
  uint64_t bits;
  memcpy(&bits, reinterpret_cast<const char*>(features) + NLA_HDRLEN, sizeof bits);
  return Napi::Number::New(env, (double)bits);
}

// isBpffs(path) -> whether path is on a bpf filesystem (false when it does not exist).
Napi::Value IsBpffs(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>();
  struct statfs fs;
  return Napi::Boolean::New(info.Env(), statfs(path.c_str(), &fs) == 0 && (unsigned long)fs.f_type == BPF_FS_MAGIC);
}

// A BPF ring buffer read from JavaScript: consume() takes every record waiting, of the
// fixed size given, back to back in one Buffer (empty when there is none). Per instance.
class BpfRing : public Napi::ObjectWrap<BpfRing> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfRing", {InstanceMethod<&BpfRing::Consume>("consume"), InstanceMethod<&BpfRing::Close>("close")});
  }

  // new BpfRing(mapFd, recordBytes)
  explicit BpfRing(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfRing>(info) {
    record_bytes_ = info[1].As<Napi::Number>().Uint32Value();
    ring_ = ring_buffer__new(info[0].As<Napi::Number>().Int32Value(), Take, this, nullptr);
    if (ring_ == nullptr) Fail(info.Env(), "ring buffer", errno);
  }

  ~BpfRing() { Shutdown(); }

 private:
  static int Take(void* self, void* data, size_t size) {
    auto* ring = static_cast<BpfRing*>(self);
    // A record of another size is not ours to read: skipped.
    if (size == ring->record_bytes_) ring->taken_.insert(ring->taken_.end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
    return 0;
  }

  Napi::Value Consume(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    taken_.clear();
    if (ring_ != nullptr && ring_buffer__consume(ring_) < 0) {
      Fail(env, "ring buffer consume", errno);
      return env.Undefined();
    }
    return Napi::Buffer<uint8_t>::Copy(env, taken_.data(), taken_.size());
  }

  void Close(const Napi::CallbackInfo&) { Shutdown(); }

  void Shutdown() {
    if (ring_ != nullptr) ring_buffer__free(ring_);
    ring_ = nullptr;
  }

  ring_buffer* ring_ = nullptr;
  size_t record_bytes_ = 0;
  std::vector<uint8_t> taken_;
};

// mountBpffs(path): mount -t bpf bpf path (root only, mode 0700).
void MountBpffs(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>();
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0) Fail(info.Env(), "mount bpffs on " + path, errno);
}

// The shared header's names and layouts, so TypeScript reads them from one place: bpf/btwall.h.
Napi::Object Layout(Napi::Env env) {
  Napi::Object layout = Napi::Object::New(env);
  auto set = [&](const char* name, double value) { layout.Set(name, Napi::Number::New(env, value)); };
  layout.Set("programEthernet", BTW_NAME(BTW_PROG_ETHERNET));
  layout.Set("programL3", BTW_NAME(BTW_PROG_L3));
  layout.Set("mapBan4", BTW_NAME(BTW_MAP_BAN4));
  layout.Set("mapBan6", BTW_NAME(BTW_MAP_BAN6));
  layout.Set("mapDrops", BTW_NAME(BTW_MAP_DROPS));
  layout.Set("mapOwn4", BTW_NAME(BTW_MAP_OWN4));
  layout.Set("mapOwn6", BTW_NAME(BTW_MAP_OWN6));
  layout.Set("mapSettings", BTW_NAME(BTW_MAP_SETTINGS));
  layout.Set("mapSegments", BTW_NAME(BTW_MAP_SEGMENTS));
  set("ownCapacity", BTW_OWN_CAPACITY);
  set("banBytes", sizeof(btw_ban));
  set("banExpires", offsetof(btw_ban, expires_ns));
  set("banForget", offsetof(btw_ban, forget_ns));
  set("banCount", offsetof(btw_ban, count));
  set("banRule", offsetof(btw_ban, rule));
  set("ruleBytes", BTW_RULE_BYTES);
  set("dropsBytes", sizeof(btw_drops));
  set("dropsPackets", offsetof(btw_drops, packets));
  set("dropsBytesField", offsetof(btw_drops, bytes));
  set("dropsResets", offsetof(btw_drops, resets));
  set("settingsBytes", sizeof(btw_settings));
  set("settingsResetTcp", offsetof(btw_settings, reset_tcp));
  set("segmentBytes", sizeof(btw_segment));
  set("segmentFamily", offsetof(btw_segment, family));
  set("segmentFlags", offsetof(btw_segment, flags));
  set("segmentSourcePort", offsetof(btw_segment, source_port));
  set("segmentDestinationPort", offsetof(btw_segment, destination_port));
  set("segmentSeq", offsetof(btw_segment, seq));
  set("segmentAck", offsetof(btw_segment, ack));
  set("segmentLength", offsetof(btw_segment, length));
  set("segmentSource", offsetof(btw_segment, source));
  set("segmentDestination", offsetof(btw_segment, destination));
  set("dropsV4", BTW_DROPS_V4);
  set("dropsV6", BTW_DROPS_V6);
  set("dropsSlots", BTW_DROPS_SLOTS);
  set("mapTypeLruHash", BPF_MAP_TYPE_LRU_HASH);
  set("mapTypeHash", BPF_MAP_TYPE_HASH);
  set("mapTypePercpuArray", BPF_MAP_TYPE_PERCPU_ARRAY);
  set("updateAny", BPF_ANY);
  set("modeGeneric", XDP_FLAGS_SKB_MODE);
  set("modeNative", XDP_FLAGS_DRV_MODE);
  set("modeOffload", XDP_FLAGS_HW_MODE);
  set("xdpPass", XDP_PASS);
  set("xdpDrop", XDP_DROP);
  return layout;
}

}  // namespace

void InitXdp(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(CollectLibbpfLog);
  Napi::Object xdp = Napi::Object::New(env);
  xdp.Set("XdpObject", XdpObject::Define(env));
  xdp.Set("BpfMap", BpfMap::Define(env));
  xdp.Set("BpfRing", BpfRing::Define(env));
  xdp.Set("takeLibbpfLog", Napi::Function::New<TakeLibbpfLog>(env, "takeLibbpfLog"));
  xdp.Set("setLibbpfDebug", Napi::Function::New<SetLibbpfDebug>(env, "setLibbpfDebug"));
  xdp.Set("bootTimeNs", Napi::Function::New<BootTimeNs>(env, "bootTimeNs"));
  xdp.Set("linkInfo", Napi::Function::New<LinkInfo>(env, "linkInfo"));
  xdp.Set("interfaces", Napi::Function::New<Interfaces>(env, "interfaces"));
  xdp.Set("xdpDetach", Napi::Function::New<XdpDetach>(env, "xdpDetach"));
  xdp.Set("xdpQuery", Napi::Function::New<XdpQuery>(env, "xdpQuery"));
  xdp.Set("progInfo", Napi::Function::New<ProgInfo>(env, "progInfo"));
  xdp.Set("xdpFeatures", Napi::Function::New<XdpFeatures>(env, "xdpFeatures"));
  xdp.Set("isBpffs", Napi::Function::New<IsBpffs>(env, "isBpffs"));
  xdp.Set("mountBpffs", Napi::Function::New<MountBpffs>(env, "mountBpffs"));
  xdp.Set("layout", Layout(env));
  exports.Set("xdp", xdp);
}
