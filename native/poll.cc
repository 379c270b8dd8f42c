// Waiting for descriptors: FdWatcher reports readiness on the event loop (uv_poll), poll()
// blocks the calling thread (the Sync forms of multiproc's blocking calls).
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cstring>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"

namespace mp {
namespace {

constexpr int kReadable = 1;
constexpr int kWritable = 2;

// new FdWatcher(fd, cb): cb(err, events) runs on the loop each time fd is ready for the events
// given to start(). The watcher keeps itself alive while started; close() releases the handle.
class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher", {
      InstanceMethod<&FdWatcher::Start>("start"),
      InstanceMethod<&FdWatcher::Stop>("stop"),
      InstanceMethod<&FdWatcher::Close>("close"),
      InstanceMethod<&FdWatcher::RefHandle>("ref"),
      InstanceMethod<&FdWatcher::UnrefHandle>("unref"),
    });
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    fd_ = ArgInt32(info, 0, "fd");
    if (info.Length() < 2 || !info[1].IsFunction()) ThrowType(env, "Expected a function for \"callback\"");
    cb_ = Napi::Persistent(info[1].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    handle_ = new uv_poll_t;
    int r = uv_poll_init(loop, handle_, fd_);
    if (r != 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env, -r, "uv_poll_init");
    }
    handle_->data = this;
    async_ = std::make_unique<Napi::AsyncContext>(env, "multiproc:FdWatcher");
  }

  ~FdWatcher() override {
    // Only reached once closed (a live handle holds a strong reference to this object).
    if (handle_ != nullptr) {
      handle_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    }
  }

 private:
  void Start(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr) ThrowClosed(info.Env());
    int events = ArgInt32(info, 0, "events");
    int uv_events = ((events & kReadable) ? UV_READABLE : 0) | ((events & kWritable) ? UV_WRITABLE : 0);
    int r = uv_poll_start(handle_, uv_events, OnPoll);
    if (r != 0) ThrowErrno(info.Env(), -r, "uv_poll_start");
    if (!active_) {
      Ref();
      active_ = true;
    }
  }

  void Stop(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr) return;
    uv_poll_stop(handle_);
    Deactivate();
  }

  void Close(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
    Deactivate();
  }

  void RefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
  }

  void UnrefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
  }

  void Deactivate() {
    if (active_) {
      active_ = false;
      Unref();
    }
  }

  [[noreturn]] static void ThrowClosed(Napi::Env env) {
    Napi::Error e = Napi::Error::New(env, "FdWatcher is closed");
    e.Set("code", Napi::String::New(env, "ERR_MULTIPROC_CLOSED"));
    throw e;
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<FdWatcher*>(handle->data);
    if (self == nullptr) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    Napi::Value err = env.Null();
    int out = 0;
    if (status < 0) {
      err = ErrnoError(env, -status, "poll").Value();
    } else {
      if (events & UV_READABLE) out |= kReadable;
      if (events & UV_WRITABLE) out |= kWritable;
      if (events & UV_DISCONNECT) out |= kReadable;
    }
    try {
      self->cb_.MakeCallback(env.Global(), {err, Napi::Number::New(env, out)}, *self->async_);
    } catch (const Napi::Error& e) {
      // An exception thrown by the callback is the process's uncaught exception.
      if (!InUnwind()) napi_fatal_exception(env, e.Value());
    }
  }

  int fd_ = -1;
  uv_poll_t* handle_ = nullptr;
  bool active_ = false;
  Napi::FunctionReference cb_;
  std::unique_ptr<Napi::AsyncContext> async_;
};

double NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// poll(fds, events, ms) -> revents per fd (1 readable/hang-up/error, 2 writable); ms < 0 waits
// for ever. EINTR is retried with the time that is left.
Napi::Value Poll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsArray()) ThrowType(env, "Expected arrays for \"fds\" and \"events\"");
  Napi::Array fds = info[0].As<Napi::Array>();
  Napi::Array evs = info[1].As<Napi::Array>();
  double ms = ArgNumber(info, 2, "ms");
  std::vector<struct pollfd> p(fds.Length());
  for (uint32_t i = 0; i < fds.Length(); i++) {
    p[i].fd = fds.Get(i).As<Napi::Number>().Int32Value();
    int e = i < evs.Length() ? evs.Get(i).As<Napi::Number>().Int32Value() : kReadable;
    p[i].events = static_cast<short>(((e & kReadable) ? POLLIN : 0) | ((e & kWritable) ? POLLOUT : 0));
  }
  double deadline = ms < 0 ? -1 : NowMs() + ms;
  int r;
  for (;;) {
    int timeout = -1;
    if (deadline >= 0) {
      double left = deadline - NowMs();
      timeout = left <= 0 ? 0 : static_cast<int>(left + 0.999);
    }
    r = poll(p.data(), p.size(), timeout);
    if (r >= 0 || errno != EINTR) break;
  }
  if (r < 0) ThrowErrno(env, errno, "poll");
  Napi::Array out = Napi::Array::New(env, p.size());
  for (uint32_t i = 0; i < p.size(); i++) {
    int re = 0;
    if (p[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) re |= kReadable;
    if (p[i].revents & POLLOUT) re |= kWritable;
    if (p[i].revents & POLLNVAL) re |= 4;  // not an open descriptor
    out.Set(i, re);
  }
  return out;
}

// Unix stream sockets by path for the forkserver, which never runs the event loop while it
// serves, and whose clients connect from synchronous code. Every fd is close-on-exec.

// A close-on-exec AF_UNIX stream socket, non-blocking if asked.
int UnixSocket(bool nonblocking) {
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
  return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
#else
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd >= 0) {
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (nonblocking) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  return fd;
#endif
}

bool FillUnixAddress(const std::string& path, struct sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr->sun_path) return false;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// unixListen(path, backlog) -> fd: a listening socket bound to `path`, non-blocking (accept()
// after a poll() never waits for a client that went away).
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  int backlog = ArgInt32(info, 1, "backlog");
  struct sockaddr_un addr;
  if (!FillUnixAddress(path, &addr)) ThrowErrno(env, ENAMETOOLONG, "bind", &path);
  int fd = UnixSocket(true);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, "bind", &path);
  }
  if (listen(fd, backlog) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, "listen", &path);
  }
  return Napi::Number::New(env, fd);
}

// unixConnect(path) -> fd: a connected, blocking socket.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  struct sockaddr_un addr;
  if (!FillUnixAddress(path, &addr)) ThrowErrno(env, ENAMETOOLONG, "connect", &path);
  int fd = UnixSocket(false);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    if (e == EINTR) {
      // The connection goes on in the background: wait for its outcome.
      struct pollfd p = {fd, POLLOUT, 0};
      socklen_t len = sizeof e;
      if (RetryEintr([&] { return ::poll(&p, 1, -1); }) < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
    }
    if (e != 0) {
      close(fd);
      ThrowErrno(env, e, "connect", &path);
    }
  }
  return Napi::Number::New(env, fd);
}

// unixAccept(fd) -> fd | null: the next connection (a blocking socket), or null when none is
// pending.
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = ArgInt32(info, 0, "fd");
#ifdef __linux__
  int fd = RetryEintr([&] { return accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC); });
#else
  int fd = RetryEintr([&] { return accept(lfd, nullptr, nullptr); });
#endif
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return env.Null();
    ThrowErrno(env, errno, "accept");
  }
#ifndef __linux__
  // BSDs hand the listener's O_NONBLOCK down to the accepted socket.
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
#endif
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitPoll(Napi::Env env, Napi::Object exports) {
  exports.Set("FdWatcher", FdWatcher::Define(env));
  exports.Set("poll", Napi::Function::New(env, Poll, "poll"));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
}

}  // namespace mp
