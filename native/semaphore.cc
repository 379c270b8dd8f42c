// NamedSemaphore: POSIX named semaphores (sem_open) for the multiproc addon.
//
// The synchronous calls (wait, tryWait, timedWait, post, getValue) are the system calls with
// EINTR retried. waitAsync() never touches libuv's threadpool: each pending wait gets a thread
// of its own that waits in slices of at most kSliceMs, checking a cancel flag between slices,
// and reports back once through a ThreadSafeFunction. A unit acquired by a wait that was
// cancelled in the meantime is posted back, so cancelling never loses a unit.
//
// Lifetime: the sem_t lives in a SemHandle shared by the JS object and by every waiter thread;
// close() drops the object's share (cancelling its pending waits) and sem_close runs when the
// last waiter has finished. Waiter threads are joined, never detached: by the loop when their
// report arrives, or by an environment cleanup hook that cancels and joins every one that is
// left before the environment (its ThreadSafeFunctions, and in a worker the addon's code itself,
// which Node unloads) goes away.
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#define MP_HAVE_SEM_CLOCKWAIT 1
#elif !defined(__APPLE__)
#define MP_HAVE_SEM_TIMEDWAIT 1
#endif

namespace mp {

namespace {

constexpr int64_t kForever = INT64_MAX;
constexpr int64_t kNsPerMs = 1000000;
constexpr int64_t kSliceNs = 50 * kNsPerMs;  // longest a waiter thread sleeps between cancel checks

#if defined(MP_HAVE_SEM_CLOCKWAIT)
constexpr const char* kTimedWaitSyscall = "sem_clockwait";
#elif defined(MP_HAVE_SEM_TIMEDWAIT)
constexpr const char* kTimedWaitSyscall = "sem_timedwait";
#else
constexpr const char* kTimedWaitSyscall = "sem_trywait";
#endif

int64_t NowNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

timespec ToTimespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

// The CLOCK_MONOTONIC deadline `ms` from now; kForever for a negative, infinite or huge ms.
int64_t DeadlineAfter(double ms) {
  if (!(ms >= 0) || ms > 1e12) return kForever;  // 1e12 ms is some 31 years
  return NowNs(CLOCK_MONOTONIC) + static_cast<int64_t>(ms * kNsPerMs);
}

// Waits on `sem` until the CLOCK_MONOTONIC `deadline`: 0 when decremented, else -1 with errno
// (ETIMEDOUT, EINTR, ...). Tries to decrement even when the deadline has passed.
int SemWaitUntil(sem_t* sem, int64_t deadline) {
#if defined(MP_HAVE_SEM_CLOCKWAIT)
  timespec ts = ToTimespec(deadline);
  return sem_clockwait(sem, CLOCK_MONOTONIC, &ts);
#elif defined(MP_HAVE_SEM_TIMEDWAIT)
  int64_t remaining = std::max<int64_t>(0, deadline - NowNs(CLOCK_MONOTONIC));
  timespec ts = ToTimespec(NowNs(CLOCK_REALTIME) + remaining);
  return sem_timedwait(sem, &ts);
#else
  // macOS has no sem_timedwait: poll with a growing sleep, as CPython does there.
  int64_t delay = 20000;  // 20 us
  for (;;) {
    if (sem_trywait(sem) == 0) return 0;
    if (errno != EAGAIN) return -1;
    int64_t remaining = deadline - NowNs(CLOCK_MONOTONIC);
    if (remaining <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    timespec ts = ToTimespec(std::min({delay, remaining, 20 * kNsPerMs}));
    nanosleep(&ts, nullptr);
    delay *= 2;
  }
#endif
}

int64_t SemValueMax() {
  long v = sysconf(_SC_SEM_VALUE_MAX);
  return v > 0 ? v : SEM_VALUE_MAX;
}

// An open sem_t, shared by the JS object and its waiter threads; sem_close when the last goes.
struct SemHandle {
  SemHandle(sem_t* s, std::string n) : sem(s), name(std::move(n)) {}
  ~SemHandle() { sem_close(sem); }
  SemHandle(const SemHandle&) = delete;
  SemHandle& operator=(const SemHandle&) = delete;
  sem_t* const sem;
  const std::string name;
};

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

struct SemWaiter;
void DeliverWaitResult(Napi::Env env, Napi::Function cb, std::nullptr_t*, std::shared_ptr<SemWaiter>* msg);
using WaitTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, std::shared_ptr<SemWaiter>, DeliverWaitResult>;

enum class Outcome { kAcquired, kTimedOut, kCancelled, kError };

// One pending waitAsync.
struct SemWaiter {
  std::shared_ptr<SemHandle> handle;
  WaitTsfn tsfn;
  int64_t deadline = kForever;
  pthread_t thread{};
  pid_t pid = 0;                       // the process that started the thread (see fork)
  std::atomic<bool> cancelled{false};  // set by cancel(), close() or the cleanup hook
  bool settled = false;                // main thread only: the callback has run
  bool joined = false;                 // main thread only: the thread needs no join any more
  // Written by the waiter thread before its one call into the loop.
  Outcome outcome = Outcome::kError;
  int err = 0;

  // Main thread: stop waiting; the loop is no longer kept alive for this wait.
  void Cancel(Napi::Env env) {
    if (settled || cancelled.exchange(true)) return;
    tsfn.Unref(env);
  }
};

// Main thread: waits for the waiter thread to end (it has sent its report, or is about to).
// A thread started by another process (a parent before fork) does not exist here.
void JoinWaiterThread(SemWaiter* w) {
  if (w->joined) return;
  w->joined = true;
  if (w->pid == getpid()) pthread_join(w->thread, nullptr);
}

// The waiter threads of one environment, so that its cleanup hook can end them. Main thread only.
class WaiterThreads {
 public:
  void Add(std::shared_ptr<SemWaiter> w) {
    live_.erase(std::remove_if(live_.begin(), live_.end(), [](const std::shared_ptr<SemWaiter>& x) { return x->joined; }),
                live_.end());
    live_.push_back(std::move(w));
  }
  void CancelAndJoinAll() {
    for (const std::shared_ptr<SemWaiter>& w : live_) w->cancelled.store(true);
    for (const std::shared_ptr<SemWaiter>& w : live_) JoinWaiterThread(w.get());
    live_.clear();
  }

 private:
  std::vector<std::shared_ptr<SemWaiter>> live_;
};

// Per-environment state, freed by the cleanup hook.
struct EnvData {
  Napi::FunctionReference constructor;
  std::shared_ptr<WaiterThreads> threads = std::make_shared<WaiterThreads>();
};

struct ThreadArgs {
  std::shared_ptr<SemWaiter> waiter;
  std::shared_ptr<SemHandle> handle;
};

void* WaiterThread(void* arg) {
  std::unique_ptr<ThreadArgs> args(static_cast<ThreadArgs*>(arg));
  SemWaiter* w = args->waiter.get();
  sem_t* sem = args->handle->sem;

  Outcome outcome;
  int err = 0;
  for (;;) {
    if (w->cancelled.load()) {
      outcome = Outcome::kCancelled;
      break;
    }
    int64_t now = NowNs(CLOCK_MONOTONIC);
    int64_t slice_end = w->deadline - now > kSliceNs ? now + kSliceNs : w->deadline;
    if (SemWaitUntil(sem, slice_end) == 0) {
      outcome = Outcome::kAcquired;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == ETIMEDOUT) {
      if (w->deadline != kForever && NowNs(CLOCK_MONOTONIC) >= w->deadline) {
        outcome = Outcome::kTimedOut;
        break;
      }
      continue;
    }
    outcome = Outcome::kError;
    err = errno;
    break;
  }
  if (outcome == Outcome::kAcquired && w->cancelled.load()) {
    sem_post(sem);  // cancelled while we were acquiring: give the unit back
    outcome = Outcome::kCancelled;
  }
  w->outcome = outcome;
  w->err = err;

  auto* msg = new std::shared_ptr<SemWaiter>(args->waiter);
  if (w->tsfn.NonBlockingCall(msg) == napi_ok) {
    w->tsfn.Release();
  } else {
    // The environment is going away (napi_closing): nobody will hear of this wait.
    delete msg;
    if (outcome == Outcome::kAcquired) sem_post(sem);
  }
  return nullptr;
}

// On the loop (or with a null env while the environment is torn down): the one report of a wait.
void DeliverWaitResult(Napi::Env env, Napi::Function cb, std::nullptr_t*, std::shared_ptr<SemWaiter>* msg) {
  std::shared_ptr<SemWaiter> w = std::move(*msg);
  delete msg;
  JoinWaiterThread(w.get());
  std::shared_ptr<SemHandle> handle = std::move(w->handle);
  Outcome outcome = w->outcome;
  if (outcome == Outcome::kAcquired && w->cancelled.load()) {
    // cancel() (or close()) ran after the thread acquired: the caller will not own the unit.
    sem_post(handle->sem);
    outcome = Outcome::kCancelled;
  }
  if (static_cast<napi_env>(env) == nullptr) {
    if (outcome == Outcome::kAcquired) sem_post(handle->sem);
    return;
  }
  w->settled = true;
  bool delivered = CallIntoJs(env, [&] {
    if (outcome == Outcome::kError) {
      cb.Call({ErrnoError(env, w->err, kTimedWaitSyscall, &handle->name).Value()});
    } else {
      cb.Call({env.Null(), Napi::Boolean::New(env, outcome == Outcome::kAcquired)});
    }
  });
  if (!delivered && outcome == Outcome::kAcquired) sem_post(handle->sem);  // nobody got the unit
}

[[noreturn]] void ThrowClosed(Napi::Env env, const std::string& name) {
  Napi::Error e = Napi::Error::New(env, "The semaphore '" + name + "' is closed");
  e.Set("code", Napi::String::New(env, "ERR_SEMAPHORE_CLOSED"));
  throw e;
}

class NamedSemaphore : public Napi::ObjectWrap<NamedSemaphore> {
 public:
  static Napi::Function Define(Napi::Env env, EnvData* data) {
    return DefineClass(env, "NamedSemaphore",
                       {
                           StaticMethod<&NamedSemaphore::Open>("open", napi_default, data),
                           StaticMethod<&NamedSemaphore::Unlink>("unlink", napi_default, data),
                           StaticValue("SEM_VALUE_MAX", Napi::Number::New(env, static_cast<double>(SemValueMax())),
                                       napi_enumerable),
                           InstanceAccessor<&NamedSemaphore::GetName>("name"),
                           InstanceAccessor<&NamedSemaphore::GetClosed>("closed"),
                           InstanceMethod<&NamedSemaphore::Wait>("wait"),
                           InstanceMethod<&NamedSemaphore::TryWait>("tryWait"),
                           InstanceMethod<&NamedSemaphore::TimedWait>("timedWait"),
                           InstanceMethod<&NamedSemaphore::WaitAsync>("waitAsync"),
                           InstanceMethod<&NamedSemaphore::Post>("post"),
                           InstanceMethod<&NamedSemaphore::GetValue>("getValue"),
                           InstanceMethod<&NamedSemaphore::Close>("close"),
                       },
                       data);
  }

  // Only open() constructs: it passes the opened handle through an External.
  struct Opened {
    std::shared_ptr<SemHandle> handle;
    std::shared_ptr<WaiterThreads> threads;
  };

  explicit NamedSemaphore(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NamedSemaphore>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowType(info.Env(), "NamedSemaphore cannot be constructed directly: use NamedSemaphore.open()");
    }
    Opened* opened = info[0].As<Napi::External<Opened>>().Data();
    handle_ = std::move(opened->handle);
    threads_ = std::move(opened->threads);
    name_ = handle_->name;
  }

  // Dropping handle_ closes the semaphore unless waiter threads still use it. Pending waits
  // go on: the JS object may be collected while a waitAsync promise is still pending.
  ~NamedSemaphore() override = default;

 private:
  static Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto* data = static_cast<EnvData*>(info.Data());
    std::string name = ArgString(info, 0, "name");
    bool create = info[1].ToBoolean();
    bool exclusive = info[2].ToBoolean();
    int32_t mode = ArgInt32(info, 3, "mode");
    int64_t value = ArgInt64(info, 4, "value");
    if (value < 0 || value > SemValueMax()) {
      ThrowRange(env, "Expected an integer between 0 and " + std::to_string(SemValueMax()) +
                          " for \"value\" but received " + std::to_string(value) + " of type number");
    }
    int flags = (create ? O_CREAT : 0) | (create && exclusive ? O_EXCL : 0);
    sem_t* sem;
    do {
      sem = sem_open(name.c_str(), flags, static_cast<mode_t>(mode), static_cast<unsigned>(value));
    } while (sem == SEM_FAILED && errno == EINTR);
    if (sem == SEM_FAILED) ThrowErrno(env, errno, "sem_open", &name);
    Opened opened{std::make_shared<SemHandle>(sem, name), data->threads};
    return data->constructor.New({Napi::External<Opened>::New(env, &opened)});
  }

  static Napi::Value Unlink(const Napi::CallbackInfo& info) {
    std::string name = ArgString(info, 0, "name");
    if (RetryEintr([&] { return sem_unlink(name.c_str()); }) == -1) ThrowErrno(info.Env(), errno, "sem_unlink", &name);
    return info.Env().Undefined();
  }

  Napi::Value GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
  Napi::Value GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !handle_); }

  sem_t* Sem(Napi::Env env) {
    if (!handle_) ThrowClosed(env, name_);
    return handle_->sem;
  }

  Napi::Value Wait(const Napi::CallbackInfo& info) {
    sem_t* sem = Sem(info.Env());
    if (RetryEintr([&] { return sem_wait(sem); }) == -1) ThrowErrno(info.Env(), errno, "sem_wait", &name_);
    return info.Env().Undefined();
  }

  Napi::Value TryWait(const Napi::CallbackInfo& info) {
    sem_t* sem = Sem(info.Env());
    if (RetryEintr([&] { return sem_trywait(sem); }) == 0) return Napi::Boolean::New(info.Env(), true);
    if (errno == EAGAIN) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), errno, "sem_trywait", &name_);
  }

  Napi::Value TimedWait(const Napi::CallbackInfo& info) {
    sem_t* sem = Sem(info.Env());
    double ms = ArgNumber(info, 0, "ms");
    int64_t deadline = DeadlineAfter(ms);
    int r;
    if (deadline == kForever) {
      r = RetryEintr([&] { return sem_wait(sem); });
      if (r == -1) ThrowErrno(info.Env(), errno, "sem_wait", &name_);
      return Napi::Boolean::New(info.Env(), true);
    }
    // The deadline is absolute, so a retry after EINTR waits only for the time that remains.
    r = RetryEintr([&] { return SemWaitUntil(sem, deadline); });
    if (r == 0) return Napi::Boolean::New(info.Env(), true);
    if (errno == ETIMEDOUT) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), errno, kTimedWaitSyscall, &name_);
  }

  // waitAsync(ms | undefined, cb) -> cancel(): see the comment at the top of the file.
  Napi::Value WaitAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Sem(env);
    double ms = ArgIsMissing(info, 0) ? -1 : ArgNumber(info, 0, "ms");
    if (!ArgIsMissing(info, 0) && !(ms >= 0)) {
      ThrowRange(env, "Expected a non-negative number of milliseconds for \"ms\" but received " +
                          info[0].ToString().Utf8Value() + " of type number");
    }
    if (info.Length() < 2 || !info[1].IsFunction()) {
      ThrowType(env, "Expected a function for \"cb\" but received " +
                         (info.Length() < 2 ? std::string("undefined") : std::string("a non-function")));
    }

    auto w = std::make_shared<SemWaiter>();
    w->handle = handle_;
    w->deadline = DeadlineAfter(ms);
    w->pid = getpid();
    w->tsfn = WaitTsfn::New(env, info[1].As<Napi::Function>(), "multiproc.NamedSemaphore.waitAsync", 0, 1);

    auto* args = new ThreadArgs{w, handle_};
    int rc = StartThread(&w->thread, args);
    if (rc != 0) {
      delete args;
      w->settled = w->joined = true;
      w->tsfn.Release();
      ThrowErrno(env, rc, "pthread_create", &name_);
    }
    threads_->Add(w);

    waiters_.erase(std::remove_if(waiters_.begin(), waiters_.end(),
                                  [](const std::weak_ptr<SemWaiter>& p) { return p.expired(); }),
                   waiters_.end());
    waiters_.push_back(w);
    return Napi::Function::New(env, [w](const Napi::CallbackInfo& ci) { w->Cancel(ci.Env()); }, "cancel");
  }

  static int StartThread(pthread_t* thread, ThreadArgs* args) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    size_t stack = 256 * 1024;
#ifdef PTHREAD_STACK_MIN
    stack = std::max<size_t>(stack, PTHREAD_STACK_MIN);
#endif
    pthread_attr_setstacksize(&attr, stack);
    int rc = pthread_create(thread, &attr, WaiterThread, args);
    pthread_attr_destroy(&attr);
    return rc;
  }

  Napi::Value Post(const Napi::CallbackInfo& info) {
    sem_t* sem = Sem(info.Env());
    if (sem_post(sem) == -1) ThrowErrno(info.Env(), errno, "sem_post", &name_);
    return info.Env().Undefined();
  }

  Napi::Value GetValue(const Napi::CallbackInfo& info) {
    sem_t* sem = Sem(info.Env());
    int value = 0;
    if (sem_getvalue(sem, &value) == -1) ThrowErrno(info.Env(), errno, "sem_getvalue", &name_);
    return Napi::Number::New(info.Env(), value);
  }

  // Idempotent. Pending waits are cancelled (they report false); the sem_t is closed once the
  // last waiter thread lets go of it.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    for (const std::weak_ptr<SemWaiter>& p : waiters_) {
      if (std::shared_ptr<SemWaiter> w = p.lock()) w->Cancel(info.Env());
    }
    waiters_.clear();
    handle_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<SemHandle> handle_;  // null once closed
  std::shared_ptr<WaiterThreads> threads_;
  std::string name_;
  std::vector<std::weak_ptr<SemWaiter>> waiters_;  // pending waitAsync calls, for close()
};

}  // namespace

void InitSemaphore(Napi::Env env, Napi::Object exports) {
  auto* data = new EnvData();
  Napi::Function cls = NamedSemaphore::Define(env, data);
  data->constructor = Napi::Persistent(cls);
  exports.Set("NamedSemaphore", cls);
  env.AddCleanupHook([data] {
    data->threads->CancelAndJoinAll();
    delete data;
  });
}

}  // namespace mp
