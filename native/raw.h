// The raw IP side of the addon (native/raw.cc).
#ifndef BTWALL_NATIVE_RAW_H
#define BTWALL_NATIVE_RAW_H

#include <napi.h>

// Adds sendIpPacket to the addon's exports.
void InitRaw(Napi::Env env, Napi::Object exports);

#endif
