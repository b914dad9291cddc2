// The datagram side of the addon (native/notify.cc).
#ifndef BTWALL_NATIVE_NOTIFY_H
#define BTWALL_NATIVE_NOTIFY_H

#include <napi.h>

// Adds sendUnixDatagram to the addon's exports.
void InitNotify(Napi::Env env, Napi::Object exports);

#endif
