// Node-style system errors for the multiproc addon.
//
// Every failing system call is reported through ErrnoError(), which builds an Error shaped like
// the ones Node core throws: message "ENOENT: no such file or directory, sem_open '/mp-x'" and
// properties errno (negative, as in Node), code, syscall and, when a name is involved, path.
#pragma once

#include <napi.h>

#include <cerrno>
#include <string>

namespace mp {

// The Error object for errno `err` raised by `syscall` (optionally about `path`).
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string* path = nullptr);

// Throws ErrnoError(env, err, syscall, path) as a C++ exception (node-addon-api converts it).
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall,
                             const std::string* path = nullptr);

// TypeError / RangeError naming the argument, in the project's one message template.
[[noreturn]] void ThrowType(Napi::Env env, const std::string& message);
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& message);

// Argument helpers: read info[i] or throw a TypeError naming `name`.
int32_t ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t ArgInt64(const Napi::CallbackInfo& info, size_t i, const char* name);
double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
bool ArgIsMissing(const Napi::CallbackInfo& info, size_t i);  // absent, undefined or null

// Retries `call` while it fails with EINTR; returns its last result.
template <typename F>
auto RetryEintr(F call) -> decltype(call()) {
  decltype(call()) r;
  do {
    r = call();
  } while (r == -1 && errno == EINTR);
  return r;
}

}  // namespace mp
