#include "errors.h"

#include <uv.h>

#include <cstring>

namespace mp {

namespace {

std::string DescribeValue(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return std::string(v.As<Napi::Boolean>().Value() ? "true" : "false") + " of type boolean";
    case napi_number: return v.ToString().Utf8Value() + " of type number";
    case napi_string: return "'" + v.As<Napi::String>().Utf8Value() + "' of type string";
    case napi_bigint: return "a bigint";
    case napi_symbol: return "a symbol";
    case napi_function: return "a function";
    default: return "an object";
  }
}

std::string Received(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? DescribeValue(info[i]) : std::string("undefined");
}

}  // namespace

// The symbolic name of errno `err` ("ENOENT"): libuv knows the common ones; glibc (2.32+) knows
// every one, including those libuv lacks such as ECHILD.
std::string ErrnoName(int err) {
  const char* name = uv_err_name(-err);
  if (strncmp(name, "Unknown", 7) != 0) return name;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* g = strerrorname_np(err);
  if (g != nullptr) return g;
#endif
  return "UNKNOWN";
}

// Node's wording: libuv's lower-case message where libuv knows the code, else strerror's.
std::string ErrnoText(int err) {
  const char* name = uv_err_name(-err);
  if (strncmp(name, "Unknown", 7) != 0) return uv_strerror(-err);
  std::string text = strerror(err);
  if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z' && (text.size() < 2 || text[1] < 'A' || text[1] > 'Z')) {
    text[0] = static_cast<char>(text[0] - 'A' + 'a');
  }
  return text;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string* path) {
  std::string code = ErrnoName(err);
  std::string message = code + ": " + ErrnoText(err) + ", " + syscall;
  if (path != nullptr) message += " '" + *path + "'";
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("code", Napi::String::New(env, code));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) e.Set("path", Napi::String::New(env, *path));
  return e;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string* path) {
  throw ErrnoError(env, err, syscall, path);
}

void ThrowType(Napi::Env env, const std::string& message) {
  Napi::TypeError e = Napi::TypeError::New(env, message);
  e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
  throw e;
}

void ThrowRange(Napi::Env env, const std::string& message) {
  Napi::RangeError e = Napi::RangeError::New(env, message);
  e.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  throw e;
}

bool ArgIsMissing(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsUndefined() || info[i].IsNull();
}

double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    ThrowType(info.Env(), std::string("Expected a number for \"") + name + "\" but received " + Received(info, i));
  }
  return info[i].As<Napi::Number>().DoubleValue();
}

int64_t ArgInt64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double d = ArgNumber(info, i, name);
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < -9007199254740991.0 || d > 9007199254740991.0) {
    ThrowRange(info.Env(), std::string("Expected an integer for \"") + name + "\" but received " + Received(info, i));
  }
  return static_cast<int64_t>(d);
}

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  int64_t v = ArgInt64(info, i, name);
  if (v < INT32_MIN || v > INT32_MAX) {
    ThrowRange(info.Env(), std::string("Expected a 32-bit integer for \"") + name + "\" but received " + Received(info, i));
  }
  return static_cast<int32_t>(v);
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString()) {
    ThrowType(info.Env(), std::string("Expected a string for \"") + name + "\" but received " + Received(info, i));
  }
  return info[i].As<Napi::String>().Utf8Value();
}

}  // namespace mp
