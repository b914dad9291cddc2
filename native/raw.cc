// Raw IP sockets: whole packets built in JavaScript (TCP resets that cut a connection, from either
// end's address) sent as they are. Root only (CAP_NET_RAW).
#include "raw.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"

namespace {

// sendIpPacket(family, destination bytes, packet): the packet, IP header included, to its destination.
void SendIpPacket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = info[0].As<Napi::Number>().Int32Value();
  Napi::Uint8Array destination = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array packet = info[2].As<Napi::Uint8Array>();
  // IPPROTO_RAW: the header is the caller's (IP_HDRINCL for IPv4; IPv6 takes it as given too).
  int sock = socket(family == 4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (sock < 0) return Fail(env, "raw socket", errno);
  sockaddr_storage to;
  memset(&to, 0, sizeof to);
  socklen_t length;
  if (family == 4) {
    auto* in = reinterpret_cast<sockaddr_in*>(&to);
    in->sin_family = AF_INET;
    memcpy(&in->sin_addr, destination.Data(), 4);
    length = sizeof *in;
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&to);
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, destination.Data(), 16);
    length = sizeof *in6;
  }
  ssize_t sent = sendto(sock, packet.Data(), packet.ByteLength(), 0, reinterpret_cast<sockaddr*>(&to), length);
  int err = errno;
  close(sock);
  if (sent < 0) Fail(env, "send raw packet", err);
}

}  // namespace

void InitRaw(Napi::Env env, Napi::Object exports) {
  exports.Set("sendIpPacket", Napi::Function::New<SendIpPacket>(env, "sendIpPacket"));
}
