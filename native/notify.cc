// One datagram to an AF_UNIX socket: sd_notify's whole protocol (READY=1, WATCHDOG=1, STATUS=...),
// which Node's dgram module cannot speak. The address bytes come from src/ops/systemd-notify.ts,
// which validates them and turns a leading '@' into the abstract namespace's NUL.
#include "notify.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"

namespace {

// sendUnixDatagram(address bytes, message): sun_path is the address bytes as given (not NUL-ended).
void SendUnixDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array address = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array message = info[1].As<Napi::Uint8Array>();
  sockaddr_un to;
  memset(&to, 0, sizeof to);
  if (address.ByteLength() == 0 || address.ByteLength() > sizeof to.sun_path) return Fail(env, "notify socket address", ENAMETOOLONG);
  to.sun_family = AF_UNIX;
  memcpy(to.sun_path, address.Data(), address.ByteLength());
  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return Fail(env, "unix datagram socket", errno);
  socklen_t length = (socklen_t)(offsetof(sockaddr_un, sun_path) + address.ByteLength());
  ssize_t sent = sendto(sock, message.Data(), message.ByteLength(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&to), length);
  int err = errno;
  close(sock);
  if (sent < 0) Fail(env, "send to the notify socket", err);
}

}  // namespace

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sendUnixDatagram", Napi::Function::New<SendUnixDatagram>(env, "sendUnixDatagram"));
}
