// Errors thrown to JavaScript the way node's own are, shared by the addon's parts.
#ifndef BTWALL_NATIVE_ERRORS_H
#define BTWALL_NATIVE_ERRORS_H

#include <napi.h>

#include <cstring>
#include <string>

// An Error carrying errno as `errno` and its name as `code` (EPERM, ENODEV...), like node's own.
inline void Fail(Napi::Env env, const std::string& what, int err) {
  Napi::Error error = Napi::Error::New(env, what + ": " + strerror(err));
  error.Set("errno", Napi::Number::New(env, err));
  const char* name = strerrorname_np(err);
  error.Set("code", Napi::String::New(env, name != nullptr ? name : "EUNKNOWN"));
  error.ThrowAsJavaScriptException();
}

#endif
