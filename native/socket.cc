// Raw descriptors for lib/connection.ts: non-blocking reads and writes that report "would block"
// as -1 instead of an exception (fs.readSync would throw EAGAIN, which costs more than the read),
// blocking forms that wait with poll(), SCM_RIGHTS on frames, and the socket calls of Listener and
// Client (socket, bind, listen, accept, connect, getsockname) for AF_UNIX and AF_INET.
//
// Every call retries EINTR. Descriptors made here are close-on-exec.
#include "addon.h"
#include "errors.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace mp {

namespace {

constexpr size_t kMaxFds = 253;  // SCM_MAX_FD

union ControlBuffer {
  struct cmsghdr align;
  char bytes[CMSG_SPACE(sizeof(int) * kMaxFds)];
};

int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  int32_t fd = ArgInt32(info, i, "fd");
  if (fd < 0) ThrowRange(info.Env(), "Expected a non-negative integer for \"fd\" but received " + std::to_string(fd));
  return fd;
}

// A byte range of a Buffer argument: buf, offset, length (checked against the Buffer's size).
struct Span {
  uint8_t* data = nullptr;
  size_t length = 0;
};

Span ArgSpan(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBuffer()) ThrowType(info.Env(), std::string("Expected a Buffer for \"") + name + "\"");
  Napi::Buffer<uint8_t> b = info[i].As<Napi::Buffer<uint8_t>>();
  return Span{b.Data(), b.Length()};
}

Span ArgRange(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Span s = ArgSpan(info, i, name);
  int64_t off = ArgInt64(info, i + 1, "offset");
  int64_t len = ArgInt64(info, i + 2, "length");
  if (off < 0 || len < 0 || static_cast<uint64_t>(off) + static_cast<uint64_t>(len) > s.length) {
    ThrowRange(info.Env(), "Expected \"offset\" and \"length\" within the Buffer");
  }
  return Span{s.data + off, static_cast<size_t>(len)};
}

// Cuts iov[0..n) down to its first `limit` bytes; returns the new count.
int LimitIov(struct iovec* iov, int n, size_t limit) {
  size_t left = limit;
  for (int k = 0; k < n; k++) {
    if (iov[k].iov_len >= left) {
      iov[k].iov_len = left;
      return left > 0 ? k + 1 : k;
    }
    left -= iov[k].iov_len;
  }
  return n;
}

// head ++ body (body optional), minus the first `skip` bytes, and (limit > 0) at most `limit`
// bytes: one record of a SOCK_SEQPACKET frame.
int MakeIov(const Napi::CallbackInfo& info, size_t i, struct iovec iov[2], size_t limit = 0) {
  Span head = ArgSpan(info, i, "head");
  Span body;
  if (!ArgIsMissing(info, i + 1)) body = ArgSpan(info, i + 1, "body");
  int64_t skip = ArgInt64(info, i + 2, "skip");
  if (skip < 0 || static_cast<uint64_t>(skip) > head.length + body.length) ThrowRange(info.Env(), "Expected \"skip\" within the message");
  int n = 0;
  size_t s = static_cast<size_t>(skip);
  if (s < head.length) {
    iov[n++] = {head.data + s, head.length - s};
    s = 0;
  } else {
    s -= head.length;
  }
  if (s < body.length) iov[n++] = {body.data + s, body.length - s};
  return limit > 0 ? LimitIov(iov, n, limit) : n;
}

bool WouldBlock(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

void WaitFor(Napi::Env env, int fd, short events, const char* syscall) {
  struct pollfd p = {fd, events, 0};
  if (RetryEintr([&] { return ::poll(&p, 1, -1); }) == -1) ThrowErrno(env, errno, syscall);
}

// writev() for pipes; sendmsg() for sockets, never raising SIGPIPE, and with MSG_DONTWAIT when
// the call must not block whatever the descriptor's O_NONBLOCK flag says.
ssize_t DoWrite(int fd, bool sock, bool dontwait, struct iovec* iov, int n) {
  if (!sock) return RetryEintr([&] { return ::writev(fd, iov, n); });
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  int flags = MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0);
  return RetryEintr([&] { return ::sendmsg(fd, &msg, flags); });
}

// fdSetNonblock(fd, on): sets or clears O_NONBLOCK (on the open file description).
Napi::Value FdSetNonblock(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool on = info.Length() > 1 && info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFL);
  if (flags == -1) ThrowErrno(info.Env(), errno, "fcntl");
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (want != flags && fcntl(fd, F_SETFL, want) == -1) ThrowErrno(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

// fdKind(fd) -> 'stream' | 'seqpacket' (sockets), 'socket' (another socket type), 'fifo' or
// 'other' (throws EBADF for a closed descriptor).
Napi::Value FdKind(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  struct stat st;
  if (fstat(fd, &st) == -1) ThrowErrno(info.Env(), errno, "fstat");
  const char* kind = S_ISFIFO(st.st_mode) ? "fifo" : "other";
  if (S_ISSOCK(st.st_mode)) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1) ThrowErrno(info.Env(), errno, "getsockopt");
    kind = type == SOCK_STREAM ? "stream" : type == SOCK_SEQPACKET ? "seqpacket" : "socket";
  }
  return Napi::String::New(info.Env(), kind);
}

// fdDup(fd) -> a close-on-exec duplicate.
Napi::Value FdDup(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d == -1) ThrowErrno(info.Env(), errno, "dup");
  return Napi::Number::New(info.Env(), d);
}

// One read. Sockets use recvmsg() (with MSG_DONTWAIT when the call must not block, else
// MSG_WAITALL), pushing the descriptors that arrive (close-on-exec) onto fdsOut when given;
// other descriptors use read(). Returns the syscall's result (errno set on -1).
ssize_t ReadOnce(const Napi::CallbackInfo& info, int fd, bool sock, bool dontwait, uint8_t* data, size_t length,
                 Napi::Array* fdsOut) {
  if (!sock) return RetryEintr([&] { return ::read(fd, data, length); });
  ControlBuffer control;
  struct iovec iov = {data, length};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fdsOut != nullptr) {
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
  }
  int flags = MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : MSG_WAITALL);
  ssize_t r = RetryEintr([&] { return ::recvmsg(fd, &msg, flags); });
  if (r == -1) return r;
  Napi::Env env = info.Env();
  if (msg.msg_flags & MSG_TRUNC) {
    // A record longer than the buffer (SOCK_SEQPACKET): its end is lost.
    Napi::Error e = Napi::Error::New(env, "recvmsg: a record was longer than the message it belongs to (MSG_TRUNC)");
    e.Set("code", Napi::String::New(env, "ERR_MULTIPROC_BAD_RECORD"));
    e.Set("syscall", Napi::String::New(env, "recvmsg"));
    throw e;
  }
  if (fdsOut == nullptr) return r;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t k = 0; k < count; k++) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + k * sizeof(int), sizeof got);
      fdsOut->Set(fdsOut->Length(), Napi::Number::New(env, got));
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    Napi::Error e = Napi::Error::New(env, "recvmsg: descriptors were lost (MSG_CTRUNC)");
    e.Set("code", Napi::String::New(env, "ERR_MSG_CTRUNC"));
    e.Set("syscall", Napi::String::New(env, "recvmsg"));
    throw e;
  }
  return r;
}

Napi::Array* OptFdsOut(const Napi::CallbackInfo& info, size_t i, Napi::Array* storage) {
  if (ArgIsMissing(info, i)) return nullptr;
  if (!info[i].IsArray()) ThrowType(info.Env(), "Expected an array for \"fdsOut\"");
  *storage = info[i].As<Napi::Array>();
  return storage;
}

// fdRead(fd, isSocket, buf, offset, length, fdsOut?) -> bytes read, 0 at end of file, -1 if it
// would block. Never blocks (MSG_DONTWAIT on sockets; pipes are O_NONBLOCK). With fdsOut
// (sockets), descriptors passed with the bytes are pushed onto it.
Napi::Value FdRead(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool sock = info[1].ToBoolean().Value();
  Span s = ArgRange(info, 2, "buf");
  Napi::Array storage;
  Napi::Array* out = OptFdsOut(info, 5, &storage);
  ssize_t r = ReadOnce(info, fd, sock, true, s.data, s.length, out);
  if (r == -1) {
    if (WouldBlock(errno)) return Napi::Number::New(info.Env(), -1);
    ThrowErrno(info.Env(), errno, sock ? "recvmsg" : "read");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

// fdReadFull(fd, isSocket, buf, offset, length, fdsOut?) -> bytes read: all of them, or fewer at
// end of file. Blocks in the syscall, or in poll() when the descriptor is non-blocking.
Napi::Value FdReadFull(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool sock = info[1].ToBoolean().Value();
  Span s = ArgRange(info, 2, "buf");
  Napi::Array storage;
  Napi::Array* out = OptFdsOut(info, 5, &storage);
  size_t got = 0;
  while (got < s.length) {
    ssize_t r = ReadOnce(info, fd, sock, false, s.data + got, s.length - got, out);
    if (r == 0) break;
    if (r == -1) {
      if (!WouldBlock(errno)) ThrowErrno(info.Env(), errno, sock ? "recvmsg" : "read");
      WaitFor(info.Env(), fd, POLLIN, "poll");
      continue;
    }
    got += static_cast<size_t>(r);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(got));
}

// fdWrite(fd, isSocket, head, body?, skip, limit?) -> bytes written (of head ++ body past skip,
// at most `limit` when given: one record), or -1 if nothing could be written without blocking.
// Never blocks.
Napi::Value FdWrite(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool sock = info[1].ToBoolean().Value();
  int64_t limit = ArgIsMissing(info, 5) ? 0 : ArgInt64(info, 5, "limit");
  struct iovec iov[2];
  int n = MakeIov(info, 2, iov, static_cast<size_t>(limit > 0 ? limit : 0));
  if (n == 0) return Napi::Number::New(info.Env(), 0);
  ssize_t r = DoWrite(fd, sock, true, iov, n);
  if (r == -1) {
    if (WouldBlock(errno)) return Napi::Number::New(info.Env(), -1);
    ThrowErrno(info.Env(), errno, sock ? "sendmsg" : "write");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

// fdWriteFull(fd, isSocket, head, body?, skip, firstRecord?, record?): writes all of head ++ body
// past skip, blocking in the syscall, or in poll() when the descriptor is non-blocking. With
// record sizes (SOCK_SEQPACKET), each write is one record: the first at most firstRecord bytes,
// the others at most `record`.
Napi::Value FdWriteFull(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool sock = info[1].ToBoolean().Value();
  int64_t firstRecord = ArgIsMissing(info, 5) ? 0 : ArgInt64(info, 5, "firstRecord");
  int64_t record = ArgIsMissing(info, 6) ? 0 : ArgInt64(info, 6, "record");
  struct iovec iov[2];
  int n = MakeIov(info, 2, iov);
  int first = 0;
  bool firstWrite = true;
  while (first < n) {
    struct iovec part[2];
    int count = n - first;
    std::memcpy(part, iov + first, sizeof(struct iovec) * count);
    int64_t limit = firstWrite ? firstRecord : record;
    if (limit > 0) count = LimitIov(part, count, static_cast<size_t>(limit));
    ssize_t r = DoWrite(fd, sock, false, part, count);
    if (r == -1) {
      if (!WouldBlock(errno)) ThrowErrno(info.Env(), errno, sock ? "sendmsg" : "write");
      WaitFor(info.Env(), fd, POLLOUT, "poll");
      continue;
    }
    firstWrite = false;
    size_t left = static_cast<size_t>(r);
    while (first < n && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < n) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return info.Env().Undefined();
}

// fdReadRecord(fd, buf, offset, length, fdsOut?) -> bytes of one record (SOCK_SEQPACKET), 0 at
// end of file; blocks (in poll() when the descriptor is non-blocking). A record longer than
// `length` throws ERR_MULTIPROC_BAD_RECORD.
Napi::Value FdReadRecord(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  Span s = ArgRange(info, 1, "buf");
  Napi::Array storage;
  Napi::Array* out = OptFdsOut(info, 4, &storage);
  for (;;) {
    ssize_t r = ReadOnce(info, fd, true, false, s.data, s.length, out);
    if (r >= 0) return Napi::Number::New(info.Env(), static_cast<double>(r));
    if (!WouldBlock(errno)) ThrowErrno(info.Env(), errno, "recvmsg");
    WaitFor(info.Env(), fd, POLLIN, "poll");
  }
}

// sockPair(type) -> [a, b]: connected AF_UNIX sockets of type 'stream' or 'seqpacket', blocking
// and close-on-exec.
Napi::Value SockPair(const Napi::CallbackInfo& info) {
  std::string type = ArgString(info, 0, "type");
  int t = type == "seqpacket" ? SOCK_SEQPACKET : SOCK_STREAM;
  int sv[2];
  if (::socketpair(AF_UNIX, t | SOCK_CLOEXEC, 0, sv) == -1) ThrowErrno(info.Env(), errno, "socketpair");
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(uint32_t{0}, Napi::Number::New(info.Env(), sv[0]));
  out.Set(uint32_t{1}, Napi::Number::New(info.Env(), sv[1]));
  return out;
}

// sockSendBuffer(fd) -> SO_SNDBUF (the kernel's figure, which bounds a SOCK_SEQPACKET record).
Napi::Value SockSendBuffer(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int size = 0;
  socklen_t len = sizeof size;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) == -1) ThrowErrno(info.Env(), errno, "getsockopt");
  return Napi::Number::New(info.Env(), size);
}

std::vector<int> ArgFds(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsArray()) ThrowType(info.Env(), "Expected an array of fds for \"fds\"");
  Napi::Array arr = info[i].As<Napi::Array>();
  if (arr.Length() == 0 || arr.Length() > kMaxFds) {
    ThrowRange(info.Env(), "Expected between 1 and " + std::to_string(kMaxFds) + " fds for \"fds\" but received " +
                               std::to_string(arr.Length()));
  }
  std::vector<int> fds(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    int32_t fd = v.IsNumber() ? v.As<Napi::Number>().Int32Value() : -1;
    if (fd < 0) ThrowType(info.Env(), "Expected a non-negative integer for \"fds[" + std::to_string(k) + "]\"");
    fds[k] = fd;
  }
  return fds;
}

// sockSendFds(fd, head, body?, fds, dontwait, limit?) -> bytes written or -1 (would block): one
// sendmsg of head ++ body (at most `limit` bytes: one record) carrying `fds` (SCM_RIGHTS) with
// its first byte. The caller writes the rest.
Napi::Value SockSendFds(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  struct iovec iov[2];
  // skip is always 0 here: the descriptors travel with the first byte.
  if (info.Length() < 4) ThrowType(info.Env(), "Expected (fd, head, body, fds)");
  Span head = ArgSpan(info, 1, "head");
  Span body;
  if (!ArgIsMissing(info, 2)) body = ArgSpan(info, 2, "body");
  int n = 0;
  if (head.length) iov[n++] = {head.data, head.length};
  if (body.length) iov[n++] = {body.data, body.length};
  if (n == 0) ThrowRange(info.Env(), "Expected at least one byte to carry the descriptors");
  int64_t limit = ArgIsMissing(info, 5) ? 0 : ArgInt64(info, 5, "limit");
  if (limit > 0) n = LimitIov(iov, n, static_cast<size_t>(limit));
  std::vector<int> fds = ArgFds(info, 3);
  ControlBuffer control;
  std::memset(&control, 0, sizeof control);
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  msg.msg_control = control.bytes;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  int flags = MSG_NOSIGNAL | (info.Length() > 4 && info[4].ToBoolean().Value() ? MSG_DONTWAIT : 0);
  ssize_t r = RetryEintr([&] { return ::sendmsg(fd, &msg, flags); });
  if (r == -1) {
    if (WouldBlock(errno)) return Napi::Number::New(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "sendmsg");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

// ---------------------------------------------------------------------------------------------
// Sockets for Listener and Client.

int FamilyOf(const Napi::CallbackInfo& info, size_t i) {
  std::string f = ArgString(info, i, "family");
  if (f == "AF_UNIX") return AF_UNIX;
  if (f == "AF_INET") return AF_INET;
  ThrowRange(info.Env(), "Expected one of 'AF_UNIX', 'AF_INET' for \"family\" but received '" + f + "'");
}

// A sockaddr from (family, address...): AF_UNIX takes a Buffer (a leading 0 byte names a Linux
// abstract socket, whose length is exact); AF_INET takes a dotted IPv4 string and a port.
struct Address {
  struct sockaddr_storage ss;
  socklen_t len;
  std::string text;
};

Address ArgAddress(const Napi::CallbackInfo& info, int family, size_t i) {
  Address a;
  std::memset(&a.ss, 0, sizeof a.ss);
  if (family == AF_UNIX) {
    Span p = ArgSpan(info, i, "path");
    auto* un = reinterpret_cast<struct sockaddr_un*>(&a.ss);
    un->sun_family = AF_UNIX;
    a.text.assign(reinterpret_cast<char*>(p.data), p.length);
    if (p.length == 0 || p.length >= sizeof un->sun_path) ThrowErrno(info.Env(), ENAMETOOLONG, "bind", &a.text);
    std::memcpy(un->sun_path, p.data, p.length);
    // An abstract name is exactly its bytes; a path is NUL-terminated.
    a.len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + p.length + (p.data[0] == 0 ? 0 : 1));
  } else {
    std::string host = ArgString(info, i, "host");
    int32_t port = ArgInt32(info, i + 1, "port");
    if (port < 0 || port > 65535) ThrowRange(info.Env(), "Expected an integer between 0 and 65535 for \"port\" but received " + std::to_string(port));
    auto* in = reinterpret_cast<struct sockaddr_in*>(&a.ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &in->sin_addr) != 1) {
      ThrowType(info.Env(), "Expected an IPv4 address for \"host\" but received '" + host + "'");
    }
    a.len = sizeof(struct sockaddr_in);
    a.text = host + ":" + std::to_string(port);
  }
  return a;
}

Napi::Value AddressValue(Napi::Env env, const struct sockaddr_storage& ss, socklen_t len) {
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const struct sockaddr_in*>(&ss);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(uint32_t{0}, Napi::String::New(env, host));
    out.Set(uint32_t{1}, Napi::Number::New(env, ntohs(in->sin_port)));
    return out;
  }
  if (ss.ss_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const struct sockaddr_un*>(&ss);
    size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > 0 && un->sun_path[0] != 0) n = strnlen(un->sun_path, n);  // a path: up to its NUL
    return Napi::Buffer<char>::Copy(env, un->sun_path, n);
  }
  return env.Null();
}

// sockCreate(family, type = 'stream') -> fd: a non-blocking (for listen and connect),
// close-on-exec stream socket, or a SOCK_SEQPACKET one ('seqpacket', AF_UNIX only).
Napi::Value SockCreate(const Napi::CallbackInfo& info) {
  int family = FamilyOf(info, 0);
  int type = SOCK_STREAM;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    std::string t = ArgString(info, 1, "type");
    if (t == "seqpacket" && family == AF_UNIX) type = SOCK_SEQPACKET;
    else if (t != "stream") ThrowType(info.Env(), "The \"type\" argument must be 'stream', or 'seqpacket' for AF_UNIX");
  }
  int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd == -1) ThrowErrno(info.Env(), errno, "socket");
  if (family == AF_INET) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return Napi::Number::New(info.Env(), fd);
}

// sockBind(fd, family, address...): SO_REUSEADDR for AF_INET (as CPython), then bind().
Napi::Value SockBind(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int family = FamilyOf(info, 1);
  Address a = ArgAddress(info, family, 2);
  if (family == AF_INET) {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (::bind(fd, reinterpret_cast<struct sockaddr*>(&a.ss), a.len) == -1) ThrowErrno(info.Env(), errno, "bind", &a.text);
  return info.Env().Undefined();
}

Napi::Value SockListen(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int backlog = ArgInt32(info, 1, "backlog");
  if (::listen(fd, backlog) == -1) ThrowErrno(info.Env(), errno, "listen");
  return info.Env().Undefined();
}

// sockAccept(fd) -> { fd, peer } | null when no connection is pending. The new socket is
// blocking (as a socketpair's: the Sync forms block in the syscall) and close-on-exec.
Napi::Value SockAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = ArgFd(info, 0);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int fd = RetryEintr([&] { return ::accept4(lfd, reinterpret_cast<struct sockaddr*>(&ss), &len, SOCK_CLOEXEC); });
  if (fd == -1) {
    if (WouldBlock(errno) || errno == ECONNABORTED) return env.Null();
    ThrowErrno(env, errno, "accept");
  }
  if (ss.ss_family == AF_INET) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("peer", AddressValue(env, ss, len));
  return out;
}

// sockConnect(fd, family, address...) -> true when connected, false when in progress (wait
// for writability, then sockConnectResult).
Napi::Value SockConnect(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int family = FamilyOf(info, 1);
  Address a = ArgAddress(info, family, 2);
  int r = ::connect(fd, reinterpret_cast<struct sockaddr*>(&a.ss), a.len);
  if (r == 0) return Napi::Boolean::New(info.Env(), true);
  if (errno == EINPROGRESS || errno == EINTR) return Napi::Boolean::New(info.Env(), false);
  // A Unix socket whose backlog is full says EAGAIN: report it as Node would.
  ThrowErrno(info.Env(), errno, "connect", &a.text);
}

// sockConnectResult(fd, description): throws the error of a finished non-blocking connect.
Napi::Value SockConnectResult(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  std::string text = ArgString(info, 1, "description");
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) err = errno;
  if (err != 0) ThrowErrno(info.Env(), err, "connect", &text);
  return info.Env().Undefined();
}

// sockName(fd) / sockPeerName(fd) -> [host, port] for AF_INET, a Buffer (path or abstract
// name) for AF_UNIX.
Napi::Value SockName(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  std::memset(&ss, 0, sizeof ss);
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) == -1) ThrowErrno(info.Env(), errno, "getsockname");
  return AddressValue(info.Env(), ss, len);
}

Napi::Value SockPeerName(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  std::memset(&ss, 0, sizeof ss);
  if (getpeername(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) == -1) ThrowErrno(info.Env(), errno, "getpeername");
  return AddressValue(info.Env(), ss, len);
}

// sockSetBuffers(fd, bytes): SO_SNDBUF and SO_RCVBUF (the kernel caps them at wmem_max/rmem_max).
Napi::Value SockSetBuffers(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int32_t size = ArgInt32(info, 1, "bytes");
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  return info.Env().Undefined();
}

// resolveIPv4(host) -> dotted address: getaddrinfo (blocking, as CPython's Listener does).
Napi::Value ResolveIPv4(const Napi::CallbackInfo& info) {
  std::string host = ArgString(info, 0, "host");
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  int r = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (r != 0 || res == nullptr) {
    Napi::Error e = Napi::Error::New(info.Env(), std::string("getaddrinfo ENOTFOUND ") + host + " (" + gai_strerror(r) + ")");
    e.Set("code", Napi::String::New(info.Env(), "ENOTFOUND"));
    e.Set("syscall", Napi::String::New(info.Env(), "getaddrinfo"));
    e.Set("hostname", Napi::String::New(info.Env(), host));
    throw e;
  }
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in*>(res->ai_addr)->sin_addr, text, sizeof text);
  freeaddrinfo(res);
  return Napi::String::New(info.Env(), text);
}

}  // namespace

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("fdSetNonblock", Napi::Function::New(env, FdSetNonblock, "fdSetNonblock"));
  exports.Set("fdKind", Napi::Function::New(env, FdKind, "fdKind"));
  exports.Set("fdDup", Napi::Function::New(env, FdDup, "fdDup"));
  exports.Set("fdRead", Napi::Function::New(env, FdRead, "fdRead"));
  exports.Set("fdReadFull", Napi::Function::New(env, FdReadFull, "fdReadFull"));
  exports.Set("fdWrite", Napi::Function::New(env, FdWrite, "fdWrite"));
  exports.Set("fdWriteFull", Napi::Function::New(env, FdWriteFull, "fdWriteFull"));
  exports.Set("fdReadRecord", Napi::Function::New(env, FdReadRecord, "fdReadRecord"));
  exports.Set("sockPair", Napi::Function::New(env, SockPair, "sockPair"));
  exports.Set("sockSendBuffer", Napi::Function::New(env, SockSendBuffer, "sockSendBuffer"));
  exports.Set("sockSendFds", Napi::Function::New(env, SockSendFds, "sockSendFds"));
  exports.Set("sockCreate", Napi::Function::New(env, SockCreate, "sockCreate"));
  exports.Set("sockBind", Napi::Function::New(env, SockBind, "sockBind"));
  exports.Set("sockListen", Napi::Function::New(env, SockListen, "sockListen"));
  exports.Set("sockAccept", Napi::Function::New(env, SockAccept, "sockAccept"));
  exports.Set("sockConnect", Napi::Function::New(env, SockConnect, "sockConnect"));
  exports.Set("sockConnectResult", Napi::Function::New(env, SockConnectResult, "sockConnectResult"));
  exports.Set("sockName", Napi::Function::New(env, SockName, "sockName"));
  exports.Set("sockPeerName", Napi::Function::New(env, SockPeerName, "sockPeerName"));
  exports.Set("sockSetBuffers", Napi::Function::New(env, SockSetBuffers, "sockSetBuffers"));
  exports.Set("resolveIPv4", Napi::Function::New(env, ResolveIPv4, "resolveIPv4"));
}

}  // namespace mp
