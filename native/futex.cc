// futexWait / futexWake / futexWaitAsync on an Int32Array element, for the multiproc addon.
//
// The futexes are shared ones (no FUTEX_PRIVATE_FLAG), so they work across processes on
// MAP_SHARED memory (shm_open + mmap, or an anonymous shared mapping inherited through fork).
//
// futexWaitAsync waits on a dedicated thread (never libuv's threadpool) and reports back through
// a ThreadSafeFunction. The thread is joined by the loop when its report arrives, or by an
// environment cleanup hook that interrupts and joins every thread left (in a worker, Node
// unloads the addon's code after that hook, so no thread may outlive it). Cancelling it is precise where futex_waitv(2) exists (Linux 5.16+): the
// thread waits on the user's word and on a private cancel word at once, and cancel() wakes only
// the latter. Elsewhere the thread waits in slices of at most 50 ms and cancel() also wakes the
// user's word with FUTEX_WAKE, so other waiters on that word may see a spurious wake-up ('ok'),
// which futex semantics allow: a woken waiter must re-check the value anyway.
#include "addon.h"
#include "errors.h"

#if defined(__linux__)

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#if defined(SYS_futex_waitv)
#define MP_HAVE_FUTEX_WAITV 1
#include <linux/time_types.h>
#endif

namespace mp {

namespace {

constexpr int64_t kForever = INT64_MAX;
constexpr int64_t kNsPerMs = 1000000;
constexpr int64_t kSliceNs = 50 * kNsPerMs;  // fallback: longest sleep between cancel checks

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The CLOCK_MONOTONIC deadline `ms` from now; kForever for a negative, infinite or huge ms.
int64_t DeadlineAfter(double ms) {
  if (!(ms >= 0) || ms > 1e12) return kForever;  // 1e12 ms is some 31 years
  return NowNs() + static_cast<int64_t>(ms * kNsPerMs);
}

timespec ToTimespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

long FutexWaitFor(int32_t* addr, int32_t expected, int64_t relative_ns) {
  timespec ts = ToTimespec(std::max<int64_t>(0, relative_ns));
  return syscall(SYS_futex, addr, FUTEX_WAIT, expected, relative_ns == kForever ? nullptr : &ts, nullptr, 0);
}

long FutexWake(int32_t* addr, int count, bool is_private = false) {
  return syscall(SYS_futex, addr, is_private ? FUTEX_WAKE_PRIVATE : FUTEX_WAKE, count, nullptr, nullptr, 0);
}

enum class Result { kOk, kNotEqual, kTimedOut, kError };

const char* ResultName(Result r) {
  switch (r) {
    case Result::kOk: return "ok";
    case Result::kNotEqual: return "not-equal";
    default: return "timed-out";
  }
}

// FUTEX_WAIT until woken or `deadline`, retrying EINTR with the time that remains. EAGAIN on a
// retry means the value changed while we were out of the kernel: a wake-up, so 'ok'. `cancelled`
// (may be null) is checked between slices of at most `slice` ns.
Result FutexWaitUntil(int32_t* addr, int32_t expected, int64_t deadline, int64_t slice,
                      const std::atomic<bool>* cancelled, int* err) {
  for (bool first = true;; first = false) {
    if (cancelled != nullptr && cancelled->load()) return Result::kTimedOut;
    int64_t remaining = deadline == kForever ? kForever : deadline - NowNs();
    bool last = remaining <= slice;
    if (FutexWaitFor(addr, expected, std::min(remaining, slice)) == 0) {
      // Woken; by cancel() itself when it has set the flag (see Interrupt()).
      return cancelled != nullptr && cancelled->load() ? Result::kTimedOut : Result::kOk;
    }
    switch (errno) {
      case EAGAIN: return first ? Result::kNotEqual : Result::kOk;
      case ETIMEDOUT:
        if (last) return Result::kTimedOut;
        break;
      case EINTR: break;
      default: *err = errno; return Result::kError;
    }
  }
}

// Reads (arr, index) and returns the address of arr[index]. TypeScript checks the types; what it
// cannot check (a detached buffer, a misaligned address) is a RangeError here.
int32_t* FutexAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowType(env, "Expected an Int32Array for \"arr\"");
  }
  Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
  int64_t index = ArgInt64(info, 1, "index");
  int64_t length = static_cast<int64_t>(arr.ElementLength());
  if (length == 0) ThrowRange(env, "Expected a non-empty Int32Array for \"arr\" (is its buffer detached?)");
  if (index < 0 || index >= length) {
    ThrowRange(env, "Expected an integer between 0 and " + std::to_string(length - 1) +
                        " for \"index\" but received " + std::to_string(index) + " of type number");
  }
  int32_t* addr = arr.Data() + index;
  if (reinterpret_cast<uintptr_t>(addr) % alignof(int32_t) != 0) {
    ThrowRange(env, "Expected a 4-byte aligned Int32Array for \"arr\" but its memory is misaligned");
  }
  return addr;
}

double ArgMs(const Napi::CallbackInfo& info, size_t i) {
  return ArgIsMissing(info, i) ? -1 : ArgNumber(info, i, "ms");
}

// futexWait(arr, index, expected, ms) -> 'ok' | 'not-equal' | 'timed-out'; ms < 0: forever.
Napi::Value FutexWaitSync(const Napi::CallbackInfo& info) {
  int32_t* addr = FutexAddress(info);
  int32_t expected = ArgInt32(info, 2, "expected");
  int64_t deadline = DeadlineAfter(ArgMs(info, 3));
  int err = 0;
  Result r = FutexWaitUntil(addr, expected, deadline, kForever, nullptr, &err);
  if (r == Result::kError) ThrowErrno(info.Env(), err, "futex");
  return Napi::String::New(info.Env(), ResultName(r));
}

// futexWake(arr, index, count) -> number of waiters woken.
Napi::Value FutexWakeSync(const Napi::CallbackInfo& info) {
  int32_t* addr = FutexAddress(info);
  int32_t count = ArgInt32(info, 2, "count");
  if (count < 0) ThrowRange(info.Env(), "Expected a non-negative integer for \"count\" but received " +
                                            std::to_string(count) + " of type number");
  long woken = FutexWake(addr, count);
  if (woken == -1) ThrowErrno(info.Env(), errno, "futex");
  return Napi::Number::New(info.Env(), static_cast<double>(woken));
}

// ---- futexWaitAsync -------------------------------------------------------------------------

// Runs `call`, which calls into JS from a ThreadSafeFunction callback. An exception thrown by
// the JS callback is thrown again so that Node reports it as uncaught. When the environment is
// shutting down and can no longer run JS, napi_throw fails as well: returns false (not delivered)
// instead of letting the exception escape, which would abort the process.
template <typename F>
bool CallIntoJs(Napi::Env env, F call) {
  try {
    call();
    return true;
  } catch (const Napi::Error& e) {
    return !e.IsEmpty() && napi_throw(env, e.Value()) == napi_ok;
  }
}

struct FutexWaiter;
void DeliverFutexResult(Napi::Env env, Napi::Function cb, std::nullptr_t*, std::shared_ptr<FutexWaiter>* msg);
using FutexTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, std::shared_ptr<FutexWaiter>, DeliverFutexResult>;

// 0: not known yet, 1: futex_waitv works, -1: it does not (old kernel, seccomp): use slices.
std::atomic<int> g_waitv_support{0};

struct FutexWaiter {
  int32_t* addr = nullptr;
  int32_t expected = 0;
  int64_t deadline = kForever;
  pthread_t thread{};
  pid_t pid = 0;                       // the process that started the thread (see fork)
  FutexTsfn tsfn;
  Napi::ObjectReference keep;          // main thread: keeps the array's memory alive
  bool settled = false;                // main thread only: the callback has run
  bool joined = false;                 // main thread only: the thread needs no join any more
  std::atomic<bool> cancelled{false};
  std::atomic<bool> sliced{false};     // the thread waits in slices (no futex_waitv)
  alignas(4) uint32_t cancel_word = 0;  // futex_waitv's second word: 1 once cancelled
  // Written by the waiter thread before its one call into the loop.
  Result result = Result::kError;
  int err = 0;

  // Any thread: make the waiting thread give up now.
  void Interrupt() {
    cancelled.store(true);
    __atomic_store_n(&cancel_word, 1u, __ATOMIC_SEQ_CST);
    FutexWake(reinterpret_cast<int32_t*>(&cancel_word), 1, true);
    // Without futex_waitv, the only way to shorten the slice is to wake the user's word too.
    if (sliced.load()) FutexWake(addr, INT_MAX);
  }

  // Main thread: cancel(); the loop is no longer kept alive for this wait.
  void Cancel(Napi::Env env) {
    if (settled || cancelled.load()) return;
    Interrupt();
    tsfn.Unref(env);
  }
};

// Main thread: waits for the waiter thread to end (it has sent its report, or is about to).
// A thread started by another process (a parent before fork) does not exist here.
void JoinWaiterThread(FutexWaiter* w) {
  if (w->joined) return;
  w->joined = true;
  if (w->pid == getpid()) pthread_join(w->thread, nullptr);
}

// The waiter threads of one environment, so that its cleanup hook can end them. Main thread only.
class FutexThreads {
 public:
  void Add(std::shared_ptr<FutexWaiter> w) {
    live_.erase(std::remove_if(live_.begin(), live_.end(), [](const std::shared_ptr<FutexWaiter>& x) { return x->joined; }),
                live_.end());
    live_.push_back(std::move(w));
  }
  void InterruptAndJoinAll() {
    pid_t self = getpid();
    for (const std::shared_ptr<FutexWaiter>& w : live_) {
      if (!w->joined && w->pid == self) w->Interrupt();
    }
    for (const std::shared_ptr<FutexWaiter>& w : live_) JoinWaiterThread(w.get());
    live_.clear();
  }

 private:
  std::vector<std::shared_ptr<FutexWaiter>> live_;
};

#if defined(MP_HAVE_FUTEX_WAITV)
// One futex_waitv on the user's word and the cancel word. Returns kError with *err = ENOSYS when
// the kernel (or a seccomp filter) does not offer futex_waitv.
Result WaitvUntil(FutexWaiter* w, int* err) {
  struct futex_waitv waiters[2] = {};
  waiters[0].val = static_cast<uint32_t>(w->expected);
  waiters[0].uaddr = reinterpret_cast<uintptr_t>(w->addr);
  waiters[0].flags = FUTEX_32;  // shared: works across processes
  waiters[1].val = 0;
  waiters[1].uaddr = reinterpret_cast<uintptr_t>(&w->cancel_word);
  waiters[1].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
  struct __kernel_timespec ts = {};
  if (w->deadline != kForever) {
    ts.tv_sec = w->deadline / 1000000000;
    ts.tv_nsec = w->deadline % 1000000000;
  }
  for (bool first = true;; first = false) {
    long r = syscall(SYS_futex_waitv, waiters, 2, 0, w->deadline == kForever ? nullptr : &ts, CLOCK_MONOTONIC);
    bool cancelled = __atomic_load_n(&w->cancel_word, __ATOMIC_SEQ_CST) != 0;
    if (r >= 0) return r == 0 ? Result::kOk : Result::kTimedOut;  // 1: the cancel word
    switch (errno) {
      case EAGAIN:
        if (cancelled) return Result::kTimedOut;
        return first ? Result::kNotEqual : Result::kOk;
      case ETIMEDOUT: return Result::kTimedOut;
      case EINTR: break;
      case ENOSYS:
      case EPERM:  // what seccomp filters that do not know futex_waitv answer
        if (first && g_waitv_support.load() != 1) {
          *err = ENOSYS;
          return Result::kError;
        }
        *err = errno;
        return Result::kError;
      default:
        *err = errno;
        return Result::kError;
    }
  }
}
#endif

void* FutexWaiterThread(void* arg) {
  std::unique_ptr<std::shared_ptr<FutexWaiter>> owner(static_cast<std::shared_ptr<FutexWaiter>*>(arg));
  FutexWaiter* w = owner->get();
  int err = 0;
  Result result = Result::kError;
  bool done = false;
#if defined(MP_HAVE_FUTEX_WAITV)
  if (g_waitv_support.load() >= 0) {
    result = WaitvUntil(w, &err);
    if (result == Result::kError && err == ENOSYS) {
      g_waitv_support.store(-1);
    } else {
      if (result != Result::kError) g_waitv_support.store(1);
      done = true;
    }
  }
#endif
  if (!done) {
    w->sliced.store(true);  // from here Interrupt() also wakes the user's word
    result = FutexWaitUntil(w->addr, w->expected, w->deadline, kSliceNs, &w->cancelled, &err);
  }
  w->result = result;
  w->err = err;

  auto* msg = new std::shared_ptr<FutexWaiter>(*owner);
  if (w->tsfn.NonBlockingCall(msg) == napi_ok) {
    w->tsfn.Release();
  } else {
    delete msg;                  // the environment is going away (napi_closing) ...
    w->keep.SuppressDestruct();  // ... and takes its references with it
  }
  return nullptr;
}

void DeliverFutexResult(Napi::Env env, Napi::Function cb, std::nullptr_t*, std::shared_ptr<FutexWaiter>* msg) {
  std::shared_ptr<FutexWaiter> w = std::move(*msg);
  delete msg;
  JoinWaiterThread(w.get());
  if (static_cast<napi_env>(env) == nullptr) {
    w->keep.SuppressDestruct();  // torn down with the environment
    return;
  }
  w->settled = true;
  w->keep.Reset();
  CallIntoJs(env, [&] {
    if (w->result == Result::kError) {
      cb.Call({ErrnoError(env, w->err, "futex").Value()});
    } else {
      cb.Call({env.Null(), Napi::String::New(env, ResultName(w->result))});
    }
  });
}

int StartThread(pthread_t* thread, void* (*fn)(void*), void* arg) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  size_t stack = 256 * 1024;
#ifdef PTHREAD_STACK_MIN
  stack = std::max<size_t>(stack, PTHREAD_STACK_MIN);
#endif
  pthread_attr_setstacksize(&attr, stack);
  int rc = pthread_create(thread, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  return rc;
}

// futexWaitAsync(arr, index, expected, ms, cb) -> cancel(). cb(null, 'ok' | 'not-equal' |
// 'timed-out') once; a cancelled wait reports 'timed-out'. ms < 0 or undefined: forever.
Napi::Value FutexWaitAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* threads = static_cast<FutexThreads*>(info.Data());
  int32_t* addr = FutexAddress(info);
  int32_t expected = ArgInt32(info, 2, "expected");
  double ms = ArgMs(info, 3);
  if (info.Length() < 5 || !info[4].IsFunction()) ThrowType(env, "Expected a function for \"cb\"");

  auto w = std::make_shared<FutexWaiter>();
  w->addr = addr;
  w->expected = expected;
  w->deadline = DeadlineAfter(ms);
  w->pid = getpid();
  w->keep = Napi::Persistent(info[0].As<Napi::Object>());
  w->tsfn = FutexTsfn::New(env, info[4].As<Napi::Function>(), "multiproc.futexWaitAsync", 0, 1);

  auto* arg = new std::shared_ptr<FutexWaiter>(w);
  int rc = StartThread(&w->thread, FutexWaiterThread, arg);
  if (rc != 0) {
    delete arg;
    w->settled = w->joined = true;
    w->keep.Reset();
    w->tsfn.Release();
    ThrowErrno(env, rc, "pthread_create");
  }
  threads->Add(w);
  return Napi::Function::New(env, [w](const Napi::CallbackInfo& ci) { w->Cancel(ci.Env()); }, "cancel");
}

}  // namespace

void InitFutex(Napi::Env env, Napi::Object exports) {
  // MULTIPROC_NO_FUTEX_WAITV=1 forces the sliced fallback (for tests of that path).
  const char* no_waitv = std::getenv("MULTIPROC_NO_FUTEX_WAITV");
  if (no_waitv != nullptr && no_waitv[0] == '1') g_waitv_support.store(-1);

  auto* threads = new FutexThreads();
  exports.Set("futexWait", Napi::Function::New(env, FutexWaitSync, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWakeSync, "futexWake"));
  exports.Set("futexWaitAsync", Napi::Function::New(env, FutexWaitAsync, "futexWaitAsync", threads));
  env.AddCleanupHook([threads] {
    threads->InterruptAndJoinAll();
    delete threads;
  });
}

}  // namespace mp

#else  // futexes are Linux's: elsewhere the functions exist and fail with ENOSYS

namespace mp {

namespace {
Napi::Value NoFutex(const Napi::CallbackInfo& info) { ThrowErrno(info.Env(), ENOSYS, "futex"); }
}  // namespace

void InitFutex(Napi::Env env, Napi::Object exports) {
  for (const char* name : {"futexWait", "futexWake", "futexWaitAsync"}) {
    exports.Set(name, Napi::Function::New(env, NoFutex, name));
  }
}

}  // namespace mp

#endif
