// Passing file descriptors between processes: AF_UNIX socketpair and SCM_RIGHTS messages
// (CPython's multiprocessing.reduction.sendfds/recvfds).
#include "addon.h"
#include "errors.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <memory>
#include <vector>

namespace mp {

namespace {

constexpr size_t kMaxFds = 253;             // SCM_MAX_FD: the most one message may carry
constexpr size_t kMaxData = 64 * 1024;      // bytes recvFds reads in one call

// Room for one SCM_RIGHTS message of kMaxFds descriptors, aligned for cmsghdr.
union ControlBuffer {
  struct cmsghdr align;
  char bytes[CMSG_SPACE(sizeof(int) * kMaxFds)];
};

int ArgSock(const Napi::CallbackInfo& info, size_t i) {
  int32_t fd = ArgInt32(info, i, "sock");
  if (fd < 0) ThrowRange(info.Env(), "Expected a non-negative integer for \"sock\" but received " + std::to_string(fd));
  return fd;
}

// Blocks until `fd` is ready for `events` (a socket the caller made non-blocking).
void WaitReady(Napi::Env env, int fd, short events, const char* syscall) {
  struct pollfd p = {fd, events, 0};
  if (RetryEintr([&] { return ::poll(&p, 1, -1); }) == -1) ThrowErrno(env, errno, syscall);
}

// socketpair() -> [a, b]: connected AF_UNIX stream sockets, blocking, close-on-exec.
Napi::Value Socketpair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) ThrowErrno(env, errno, "socketpair");
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(uint32_t{0}, Napi::Number::New(env, sv[0]));
  result.Set(uint32_t{1}, Napi::Number::New(env, sv[1]));
  return result;
}

// sendFds(sock, fds, data | undefined): one sendmsg carrying every fd (SCM_RIGHTS) with the first
// bytes of `data` (default a single 0 byte); the rest of `data` follows without descriptors.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgSock(info, 0);
  if (info.Length() < 2 || !info[1].IsArray()) ThrowType(env, "Expected an array of fds for \"fds\"");
  Napi::Array arr = info[1].As<Napi::Array>();
  if (arr.Length() > kMaxFds) {
    ThrowRange(env, "Expected at most " + std::to_string(kMaxFds) + " fds for \"fds\" but received " +
                        std::to_string(arr.Length()));
  }
  std::vector<int> fds(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!v.IsNumber() || d < 0 || d > 2147483647 || d != static_cast<double>(static_cast<int>(d))) {
      ThrowType(env, "Expected a non-negative integer for \"fds[" + std::to_string(i) + "]\"");
    }
    fds[i] = static_cast<int>(d);
  }

  static const uint8_t zero = 0;
  const uint8_t* data = &zero;
  size_t length = 1;
  if (!ArgIsMissing(info, 2)) {
    if (!info[2].IsBuffer()) ThrowType(env, "Expected a Buffer for \"data\"");
    Napi::Buffer<uint8_t> buf = info[2].As<Napi::Buffer<uint8_t>>();
    data = buf.Data();
    length = buf.Length();
    if (length == 0) ThrowRange(env, "Expected a non-empty Buffer for \"data\" (the descriptors travel with data)");
  }

  ControlBuffer control;
  std::memset(&control, 0, sizeof control);
  size_t sent = 0;
  bool fdsSent = fds.empty();
  while (sent < length) {
    struct iovec iov = {const_cast<uint8_t*>(data) + sent, length - sent};
    struct msghdr msg;
    std::memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fdsSent) {
      msg.msg_control = control.bytes;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = RetryEintr([&] { return ::sendmsg(sock, &msg, MSG_NOSIGNAL); });
    if (n == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        WaitReady(env, sock, POLLOUT, "sendmsg");
        continue;
      }
      ThrowErrno(env, errno, "sendmsg");
    }
    fdsSent = true;  // the descriptors travel with the first byte that went out
    sent += static_cast<size_t>(n);
  }
  return env.Undefined();
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
}

// recvFds(sock, maxFds) -> { fds, data }: one recvmsg (up to 64 KiB of data); descriptors arrive
// close-on-exec; any beyond maxFds are closed. End of stream gives { fds: [], data: <empty> }.
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgSock(info, 0);
  int32_t maxFds = ArgInt32(info, 1, "maxFds");
  if (maxFds < 0 || static_cast<size_t>(maxFds) > kMaxFds) {
    ThrowRange(env, "Expected an integer between 0 and " + std::to_string(kMaxFds) +
                        " for \"maxFds\" but received " + std::to_string(maxFds));
  }

  // Not zero-filled: only the bytes that arrive are written (and only their pages touched, which
  // matters in a fork child, where each first write to a page costs a copy of it).
  std::unique_ptr<uint8_t[]> data(new uint8_t[kMaxData]);
  ControlBuffer control;
  struct iovec iov = {data.get(), kMaxData};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.bytes;
  msg.msg_controllen = sizeof control.bytes;
  ssize_t n = RetryEintr([&] { return ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); });
  if (n == -1) ThrowErrno(env, errno, "recvmsg");

  std::vector<int> fds;
  for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(cmsg);
    for (size_t i = 0; i < count; i++) {
      int fd;
      std::memcpy(&fd, p + i * sizeof(int), sizeof fd);
      fds.push_back(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    CloseAll(fds);
    Napi::Error e = Napi::Error::New(
        env, "recvFds: the control message was truncated (MSG_CTRUNC); the descriptors that arrived were closed");
    e.Set("code", Napi::String::New(env, "ERR_MSG_CTRUNC"));
    e.Set("syscall", Napi::String::New(env, "recvmsg"));
    throw e;
  }
  if (fds.size() > static_cast<size_t>(maxFds)) {
    CloseAll(std::vector<int>(fds.begin() + maxFds, fds.end()));
    fds.resize(static_cast<size_t>(maxFds));
  }

  try {
    Napi::Array out = Napi::Array::New(env, fds.size());
    for (uint32_t i = 0; i < fds.size(); i++) out.Set(i, Napi::Number::New(env, fds[i]));
    Napi::Object result = Napi::Object::New(env);
    result.Set("fds", out);
    result.Set("data", Napi::Buffer<uint8_t>::Copy(env, data.get(), static_cast<size_t>(n)));
    return result;
  } catch (...) {
    CloseAll(fds);  // nobody will ever see them
    throw;
  }
}

}  // namespace

void InitFdpass(Napi::Env env, Napi::Object exports) {
  exports.Set("socketpair", Napi::Function::New(env, Socketpair, "socketpair"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
}

}  // namespace mp
