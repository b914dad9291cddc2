// The XDP ban side of the addon (native/xdp.cc), registered next to the queue channel.
#ifndef BTWALL_NATIVE_XDP_H
#define BTWALL_NATIVE_XDP_H

#include <napi.h>

// Adds `xdp` (XdpObject, BpfMap, the helpers and the shared layout) to the addon's exports.
void InitXdp(Napi::Env env, Napi::Object exports);

#endif
