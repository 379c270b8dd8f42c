// Processes: a fork() that is safe in a multithreaded Node 20 process, waitpid, kill, _exit,
// pidfds and posix_spawn.
//
// Why fork() needs more than the system call (measured in ../shared/FORK.md):
//  * Node's Linux build marks the whole V8 heap MADV_DONTFORK: a plain child has no heap.
//  * The platform's worker threads sleep on a glibc condvar. In the child they are gone but still
//    counted in the condvar's groups, so the first task V8 posts there blocks for ever unless
//    every worker re-parked in one group just before the fork ("normalize").
//  * Node's exit path joins threads that do not exist in the child, and a loop that runs dry
//    drains tasks that no thread will run: the child must leave through _exit().
//  * Without uv_loop_fork() the child shares the parent's epoll instance.
#include <fcntl.h>
#include <node.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <v8.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"

extern char** environ;

namespace mp {
namespace {

double NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// ---- process-wide fork state (fork is only allowed on the main thread) ----

struct ForkState {
  bool in_child = false;          // this process is a fork() child (of any depth)
  int exit_code = 0;              // exit code for the env-cleanup hook (natural exit)
  bool cleanup_hook_added = false;
  napi_env env = nullptr;
  // forkIsolated: the entry to call from a clean loop turn in the child.
  Napi::FunctionReference* entry = nullptr;
  uv_idle_t* entry_idle = nullptr;
  // Last fork's timings (ms) and facts, for forkStats().
  double t_quiesce = 0, t_park = 0, t_dofork = 0, t_fork = 0;
  int ranges = 0;
  bool normalized = false, parked = false;
  bool own_workers = false;  // this child runs V8's worker tasks on its own threads
};
ForkState g_fork;
bool g_unwound = false;  // unwindStack() ran in this isolated child and its entry has not run yet

// The platform's worker threads run barrier tasks until all of them are awake at once.
struct Barrier {
  std::atomic<int> started{0};
  std::atomic<int> finished{0};
  std::atomic<bool> release{false};
};

class BarrierTask : public v8::Task {
 public:
  explicit BarrierTask(std::shared_ptr<Barrier> b) : b_(std::move(b)) {}
  void Run() override {
    b_->started.fetch_add(1);
    double t0 = NowMs();
    while (!b_->release.load() && NowMs() - t0 < 200) sched_yield();
    b_->finished.fetch_add(1);
  }

 private:
  std::shared_ptr<Barrier> b_;
};

node::MultiIsolatePlatform* Platform(v8::Isolate* isolate) {
  node::Environment* env = node::GetCurrentEnvironment(isolate->GetCurrentContext());
  return env != nullptr ? node::GetMultiIsolatePlatform(env) : nullptr;
}

// Step 2 of the recipe: no V8 task queued or running, then every worker thread wakes once and
// re-parks, so that in the child all the dead waiters sit in one glibc condvar group that a
// later pthread_cond_signal does not wait for.
bool Normalize(v8::Isolate* isolate) {
  node::MultiIsolatePlatform* p = Platform(isolate);
  if (p == nullptr) return false;
  p->DrainTasks(isolate);
  // Node 20 counts its delayed-task scheduler thread in NumberOfWorkerThreads(): only n - 1
  // threads take worker tasks, so n tasks are posted and n - 1 must run at the same time.
  int n = p->NumberOfWorkerThreads();
  if (n <= 1) return true;
  auto b = std::make_shared<Barrier>();
  for (int i = 0; i < n; i++) p->CallOnWorkerThread(std::make_unique<BarrierTask>(b));
  double t0 = NowMs();
  while (b->started.load() < n - 1 && NowMs() - t0 < 200) sched_yield();
  bool ok = b->started.load() >= n - 1;
  b->release.store(true);
  while (b->finished.load() < n && NowMs() - t0 < 400) sched_yield();
  return ok;
}

// True when every thread but the caller is blocked in a system call that holds no user-space
// lock (futex, epoll, read, poll...), judged from /proc/self/task/*/syscall.
bool OthersParked() {
  pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return true;
  bool ok = true;
  struct dirent* e;
  while ((e = readdir(d)) != nullptr) {
    if (e->d_name[0] == '.') continue;
    pid_t tid = atoi(e->d_name);
    if (tid == self) continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buf[64] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    if (buf[0] < '0' || buf[0] > '9') {  // "running" or -1: not in a system call
      ok = false;
      break;
    }
    long nr = atol(buf);
#ifdef __x86_64__
    if (nr != SYS_futex && nr != SYS_epoll_wait && nr != SYS_epoll_pwait && nr != SYS_read &&
        nr != SYS_poll && nr != SYS_ppoll && nr != SYS_pselect6 && nr != SYS_select &&
        nr != SYS_nanosleep && nr != SYS_clock_nanosleep && nr != SYS_wait4 && nr != SYS_recvmsg &&
        nr != SYS_accept && nr != SYS_accept4 && nr != 441 /* epoll_pwait2 */) {
#else
    if (nr != SYS_futex && nr != SYS_epoll_pwait && nr != SYS_read && nr != SYS_ppoll &&
        nr != SYS_pselect6 && nr != SYS_clock_nanosleep && nr != SYS_wait4 && nr != SYS_recvmsg &&
        nr != SYS_accept4) {
#endif
      ok = false;
      break;
    }
  }
  closedir(d);
  return ok;
}

// Step 3: wait (at most 50 ms) until no other thread is inside a critical section.
bool WaitParked() {
  double t0 = NowMs();
  while (!OthersParked()) {
    if (NowMs() - t0 > 50) return false;
    struct timespec ts{0, 50000};
    nanosleep(&ts, nullptr);
  }
  return true;
}

// Calls fn(lo, hi, perms) for every private anonymous mapping of this process (no file, no
// [name]): the V8 heap, its code range, malloc'd and mmap'd ArrayBuffer stores. /proc/self/maps
// is cheap to read, unlike smaps.
template <typename Fn>
int ForEachAnonymousMapping(Fn fn) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  std::string s;
  char buf[1 << 16];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  close(fd);
  int count = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t eol = s.find('\n', pos);
    if (eol == std::string::npos) eol = s.size();
    unsigned long lo, hi, off, inode;
    char perms[8], dev[16];
    int consumed = 0;
    if (sscanf(s.c_str() + pos, "%lx-%lx %7s %lx %15s %lu %n", &lo, &hi, perms, &off, dev, &inode, &consumed) >= 6) {
      size_t name_at = pos + static_cast<size_t>(consumed);
      bool anonymous = inode == 0 && (name_at >= eol || s[name_at] == '\n');
      if (anonymous && perms[3] == 'p') {
        fn(lo, hi, perms);
        count++;
      }
    }
    pos = eol + 1;
  }
  return count;
}

// Step 1: MADV_DOFORK on every anonymous private mapping (the V8 heap and code range are among
// them, marked MADV_DONTFORK by V8); marking a mapping that was not DONTFORK is a no-op.
int DoforkAnonymous() {
  int count = ForEachAnonymousMapping([](unsigned long lo, unsigned long hi, const char*) {
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DOFORK);
  });
  return count < 0 ? 0 : count;
}

// setSignalBlocked(signo, blocked): blocks or unblocks one signal for the calling (main) thread.
// A fork child inherits the mask: a prefork worker is forked with SIGTERM blocked and unblocks
// it once its handler is installed, so a SIGTERM sent while it starts is held, not fatal.
Napi::Value SetSignalBlocked(const Napi::CallbackInfo& info) {
  int sig = ArgInt32(info, 0, "signal");
  if (sig < 1 || sig > 64) ThrowRange(info.Env(), "Expected an integer between 1 and 64 for \"signal\" but received " + std::to_string(sig));
  bool block = info.Length() > 1 && info[1].ToBoolean().Value();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  int r = pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, nullptr);
  if (r != 0) ThrowErrno(info.Env(), r, "pthread_sigmask");
  return info.Env().Undefined();
}

// prefaultInherited(): reads one byte of every resident page of this process's private
// anonymous memory, and returns { pages, ms }. For a fork child that is about to serve: the
// first touch of each page it inherited costs a fault of its own (measured on the development
// VM: about 5 us a page, 250 ms for a 200 MiB table, and MADV_POPULATE_READ does not avoid it),
// which would otherwise land on its first requests. Reading does not copy a page: the memory
// stays shared copy-on-write. Pages the parent never touched (mincore: not resident) are
// skipped, so no zero page is mapped in.
Napi::Value PrefaultInherited(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double t0 = NowMs();
  const long page = sysconf(_SC_PAGESIZE);
  double pages = 0;
  std::vector<unsigned char> resident;
  unsigned char sum = 0;
  int mappings = ForEachAnonymousMapping([&](unsigned long lo, unsigned long hi, const char* perms) {
    if (perms[0] != 'r') return;
    size_t n = (hi - lo) / static_cast<unsigned long>(page);
    resident.assign(n, 0);
    if (mincore(reinterpret_cast<void*>(lo), hi - lo, resident.data()) != 0) return;
    for (size_t i = 0; i < n; i++) {
      if ((resident[i] & 1) == 0) continue;
      sum ^= *reinterpret_cast<volatile const unsigned char*>(lo + i * static_cast<unsigned long>(page));
      pages++;
    }
  });
  if (mappings < 0) {
    const std::string maps = "/proc/self/maps";
    ThrowErrno(env, errno, "open", &maps);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pages", pages);
  o.Set("ms", NowMs() - t0);
  o.Set("checksum", static_cast<double>(sum));  // keeps the reads from being optimized away
  return o;
}

// ---- the child's way out: never through Node's platform shutdown ----

void CleanupHookExit(void*) {
  // Runs in FreeEnvironment() after 'exit' was emitted, before the platform is torn down.
  if (g_fork.in_child) {
    fflush(nullptr);
    _exit(g_fork.exit_code);
  }
}

void InstallChildExitHooks(napi_env env) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  node::Environment* nenv = node::GetCurrentEnvironment(isolate->GetCurrentContext());
  if (nenv != nullptr) {
    node::SetProcessExitHandler(nenv, [](node::Environment*, int code) {
      fflush(nullptr);
      _exit(code);
    });
  }
  if (!g_fork.cleanup_hook_added) {  // the flag is inherited by grandchildren with the hook
    napi_add_env_cleanup_hook(env, CleanupHookExit, nullptr);
    g_fork.cleanup_hook_added = true;
  }
}

// A socket that never becomes readable and swallows writes: dup2'ed over descriptors of the
// parent's handles that must go deaf in an isolated child.
int DeadFd() {
  static int dead = -1;
  if (dead < 0) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0) {
      dead = sv[0];  // sv[1] stays open (and silent) so that sv[0] never sees EOF
    }
  }
  return dead;
}

struct WalkCtx {
  std::vector<int> keep;
  std::vector<int> close_now;  // closed in the child first thing after the fork
};

bool Keep(const WalkCtx* ctx, int fd) {
  for (int k : ctx->keep) {
    if (k == fd) return true;
  }
  return false;
}

// Makes every I/O handle inherited from the parent inert in an isolated child: nothing the
// parent was reading, accepting or watching is read, accepted or reported here.
void QuietHandle(uv_handle_t* h, void* arg) {
  const WalkCtx* ctx = static_cast<const WalkCtx*>(arg);
  if (uv_is_closing(h)) return;
  uv_os_fd_t fd = -1;
  switch (h->type) {
    case UV_TCP:
    case UV_NAMED_PIPE:
    case UV_TTY: {
      uv_stream_t* s = reinterpret_cast<uv_stream_t*>(h);
      if (uv_fileno(h, &fd) != 0) fd = -1;
      if (uv_is_active(h) && s->connection_cb == nullptr) uv_read_stop(s);
      if (fd > 2 && !Keep(ctx, fd) && DeadFd() >= 0) dup2(DeadFd(), fd);
      break;
    }
    case UV_UDP:
      uv_udp_recv_stop(reinterpret_cast<uv_udp_t*>(h));
      break;
    case UV_POLL:
      if (uv_fileno(h, &fd) == 0 && Keep(ctx, fd)) break;
      uv_poll_stop(reinterpret_cast<uv_poll_t*>(h));
      break;
    case UV_FS_EVENT:
      uv_fs_event_stop(reinterpret_cast<uv_fs_event_t*>(h));
      break;
    case UV_FS_POLL:
      uv_fs_poll_stop(reinterpret_cast<uv_fs_poll_t*>(h));
      break;
    default:
      break;
  }
}

// stdout/stderr on a pipe: give the child its own blocking open file description of the same
// pipe (the O_NONBLOCK flag lives on the description, which the parent shares), so every write
// completes before the child's _exit() and none is lost.
void BlockingStdio() {
  for (int fd = 1; fd <= 2; fd++) {
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) continue;
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int nfd = open(path, O_WRONLY | O_CLOEXEC);
    if (nfd < 0) continue;
    dup2(nfd, fd);  // dup2 clears FD_CLOEXEC on fd
    close(nfd);
  }
}

void OnEntryIdle(uv_idle_t* idle) {
  g_unwound = false;
  uv_idle_stop(idle);
  uv_close(reinterpret_cast<uv_handle_t*>(idle), [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
  g_fork.entry_idle = nullptr;
  Napi::Env env(g_fork.env);
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate->IsExecutionTerminating()) isolate->CancelTerminateExecution();
  Napi::HandleScope scope(env);
  Napi::FunctionReference* entry = g_fork.entry;
  g_fork.entry = nullptr;
  if (entry == nullptr) return;
  Napi::Function fn = entry->Value();
  delete entry;
  try {
    Napi::AsyncContext ctx(env, "multiproc:child");
    fn.MakeCallback(env.Global(), {}, ctx);
  } catch (const Napi::Error& e) {
    // A grandchild forked from inside the entry unwinds through here: not an error.
    if (InUnwind()) return;
    // The entry reports its own errors; anything escaping it ends the child.
    fprintf(stderr, "multiproc: child bootstrap failed: %s\n", e.Message().c_str());
    fflush(nullptr);
    _exit(1);
  }
}

// watchDryLoop(cb): in a forked child, calls cb(streak) from a check handle each time the loop
// has nothing of the child's own left to do (no active handles, no requests beyond those the
// parent left in flight at the fork, which never complete here); streak counts the consecutive
// dry turns. The child must then end itself: letting Node's loop run dry would drain platform
// tasks that no thread will ever run, and the parent's stale requests would keep a plain loop
// blocked in epoll for ever. While dry, an idle handle keeps the poll phase from blocking.
struct DryWatch {
  uv_prepare_t prepare;
  uv_check_t check;
  uv_idle_t idle;
  bool idle_on = false;
  unsigned base_reqs = 0;
  int streak = 0;
  Napi::FunctionReference cb;
  std::unique_ptr<Napi::AsyncContext> ctx;
};
DryWatch* g_dry = nullptr;
unsigned g_base_reqs = 0;  // the parent's requests in flight at the fork (set in the child)

bool LoopDry(uv_loop_t* loop) {
  unsigned own = g_dry->idle_on ? 1 : 0;
  if (loop->active_handles > own || loop->active_reqs.count > g_dry->base_reqs) return false;
  if (loop->closing_handles != nullptr) return false;
  return loop->pending_queue.next == &loop->pending_queue;
}

void SetIdle(bool on) {
  if (on == g_dry->idle_on) return;
  g_dry->idle_on = on;
  if (on) uv_idle_start(&g_dry->idle, [](uv_idle_t*) {});
  else uv_idle_stop(&g_dry->idle);
}

void OnDryPrepare(uv_prepare_t* h) { SetIdle(LoopDry(h->loop)); }

void OnDryCheck(uv_check_t* h) {
  if (!LoopDry(h->loop)) {
    g_dry->streak = 0;
    return;
  }
  g_dry->streak++;
  SetIdle(true);
  Napi::Env env = g_dry->cb.Env();
  Napi::HandleScope scope(env);
  try {
    g_dry->cb.MakeCallback(env.Global(), {Napi::Number::New(env, g_dry->streak)}, *g_dry->ctx);
  } catch (const Napi::Error& e) {
    if (!InUnwind()) napi_fatal_exception(env, e.Value());
  }
}

// Everything fork() does; `isolated` selects what the child does after the system call.
pid_t DoFork(const Napi::CallbackInfo& info, bool isolated, const WalkCtx* walk) {
  Napi::Env env = info.Env();
  if (static_cast<pid_t>(syscall(SYS_gettid)) != getpid()) {
    Napi::Error e = Napi::Error::New(env, "fork() can only be called on the main thread");
    e.Set("code", Napi::String::New(env, "ERR_MULTIPROC_FORK_THREAD"));
    throw e;
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);

  double t0 = NowMs();
  // A forked child has no platform worker threads: draining would wait for ever there, and
  // its condvar groups were normalized before it was born.
  // A forked child's worker tasks run on its own pool (child-platform.cc): drain what the
  // platform holds, then hold the pool idle across the fork.
  if (g_fork.in_child) {
    node::MultiIsolatePlatform* p = Platform(isolate);
    if (p != nullptr) p->DrainTasks(isolate);
    g_fork.normalized = ChildPlatformQuiesce(200);
  } else {
    g_fork.normalized = Normalize(isolate);
  }
  double t1 = NowMs();
  g_fork.ranges = DoforkAnonymous();
  double t2 = NowMs();

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  uv_mutex_lock(&loop->wq_mutex);  // no threadpool thread may hold it at the fork
  g_fork.parked = g_fork.in_child ? true : WaitParked();
  double t3 = NowMs();
  pid_t pid = fork();
  int err = errno;
  if (pid != 0) {
    uv_mutex_unlock(&loop->wq_mutex);
    if (g_fork.in_child) ChildPlatformResume();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    g_fork.t_quiesce = t1 - t0;
    g_fork.t_dofork = t2 - t1;
    g_fork.t_park = t3 - t2;
    g_fork.t_fork = NowMs() - t3;
    if (pid < 0) ThrowErrno(env, err, "fork");
    return pid;
  }

  // ---- child ----
  // Descriptors the child must not hold even briefly (a peer waits for their end-of-file).
  if (walk != nullptr) {
    for (int fd : walk->close_now) close(fd);
  }
  g_fork.in_child = true;
  g_fork.own_workers = ChildPlatformAdopt(Platform(isolate));
  g_fork.env = env;
  g_base_reqs = loop->active_reqs.count;
  if (g_dry != nullptr) {  // a watch inherited from a forked parent
    uv_prepare_stop(&g_dry->prepare);
    uv_check_stop(&g_dry->check);
    SetIdle(false);
  }
  uv_mutex_init(&loop->wq_mutex);
  int r = uv_loop_fork(loop);
  if (r != 0) {
    fprintf(stderr, "multiproc: uv_loop_fork failed in the child: %s\n", uv_strerror(r));
    _exit(70);
  }
  // Work the parent's threadpool finished but its loop had not yet collected would run the
  // parent's callbacks here: drop it. (libuv forgets the queued, unfinished work by itself.)
  loop->wq.next = &loop->wq;
  loop->wq.prev = &loop->wq;
  InstallChildExitHooks(env);
  if (isolated) {
    uv_walk(loop, QuietHandle, const_cast<WalkCtx*>(walk));
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
      dup2(devnull, 0);
      close(devnull);
    }
    BlockingStdio();
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return 0;
}

Napi::Value Fork(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), DoFork(info, false, nullptr));
}

// forkIsolated(entry, keepFds?, closeFds?): fork; in the child, close closeFds at once, unwind the
// caller's whole JavaScript stack (and the microtasks the parent had queued), make the parent's
// I/O handles inert, and call entry() from a fresh turn of the event loop. Returns the pid in the
// parent, 0 in the child (where the caller must reset its state and call unwindStack()).
Napi::Value ForkIsolated(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) ThrowType(env, "Expected a function for \"entry\"");
  WalkCtx walk;
  if (info.Length() > 1 && info[1].IsArray()) {
    Napi::Array keep = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < keep.Length(); i++) walk.keep.push_back(keep.Get(i).As<Napi::Number>().Int32Value());
  }
  if (info.Length() > 2 && info[2].IsArray()) {
    Napi::Array fds = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < fds.Length(); i++) {
      Napi::Value v = fds.Get(i);
      if (!v.IsNumber()) ThrowType(env, "Expected an array of fds for \"closeFds\"");
      walk.close_now.push_back(v.As<Napi::Number>().Int32Value());
    }
  }
  // Prepare everything that allocates before the fork.
  auto* entry = new Napi::FunctionReference(Napi::Persistent(info[0].As<Napi::Function>()));
  pid_t pid = DoFork(info, true, &walk);
  if (pid != 0) {
    delete entry;
    return Napi::Number::New(env, pid);
  }
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  g_fork.entry = entry;
  g_fork.entry_idle = new uv_idle_t;
  uv_idle_init(loop, g_fork.entry_idle);
  uv_idle_start(g_fork.entry_idle, OnEntryIdle);
  return Napi::Number::New(env, 0);
}

// unwindStack(): in an isolated child, after the JavaScript side has reset what it must, throw
// away the caller's whole JavaScript stack (an uncatchable termination: no catch or finally of
// the parent's code runs) and every microtask the parent had queued. The caller must then call
// any function, which is where the unwinding starts; the loop then calls the child's entry.
// When the fork happened inside a microtask, the termination ends inside V8's microtask loop,
// which then discards the queue; the caller of that checkpoint is Node's own code, which must go
// on normally (a termination left pending would make every later call into JavaScript fail, and
// Node's timer loop retries such calls for ever). Cancel it as soon as the checkpoint completes.
bool g_unwinding = false;        // a termination is on its way through the parent's frames
bool g_own_checkpoint = false;   // UnwindStack's own checkpoint is running

void OnMicrotasksCompleted(v8::Isolate* isolate, void*) {
  if (!g_unwinding || g_own_checkpoint) return;
  // When JavaScript called the checkpoint (Node's processTicksAndRejections), the termination
  // must go on unwinding it; V8 clears it by itself once no JavaScript frame is left.
  if (v8::StackTrace::CurrentStackTrace(isolate, 1)->GetFrameCount() > 0) return;
  g_unwinding = false;
  if (isolate->IsExecutionTerminating()) isolate->CancelTerminateExecution();
}

Napi::Value UnwindStack(const Napi::CallbackInfo& info) {
  if (!g_fork.in_child || g_fork.entry == nullptr) {
    Napi::Error e = Napi::Error::New(info.Env(), "unwindStack() is only for a child of forkIsolated()");
    e.Set("code", Napi::String::New(info.Env(), "ERR_MULTIPROC_NOT_ISOLATED_CHILD"));
    throw e;
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::MicrotaskQueue* queue = isolate->GetCurrentContext()->GetMicrotaskQueue();
  static bool registered = false;
  if (!registered && queue != nullptr) {
    queue->AddMicrotasksCompletedCallback(OnMicrotasksCompleted, nullptr);
    registered = true;
  }
  g_unwinding = queue != nullptr && queue->IsRunningMicrotasks();
  g_unwound = true;
  isolate->TerminateExecution();
  // With the termination pending, a checkpoint discards every queued microtask: the parent's
  // promise continuations must not run in the child. (When the fork happens inside a microtask
  // this is a no-op, and the running checkpoint discards them as the termination unwinds it.)
  g_own_checkpoint = true;
  isolate->PerformMicrotaskCheckpoint();
  g_own_checkpoint = false;
  return info.Env().Undefined();
}

Napi::Value ForkStats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("quiesceMs", g_fork.t_quiesce);
  o.Set("madviseMs", g_fork.t_dofork);
  o.Set("parkMs", g_fork.t_park);
  o.Set("forkMs", g_fork.t_fork);
  o.Set("ranges", g_fork.ranges);
  o.Set("normalized", g_fork.normalized);
  o.Set("parked", g_fork.parked);
  o.Set("inChild", g_fork.in_child);
  o.Set("ownWorkers", g_fork.own_workers);
  o.Set("workerTasks", Napi::Number::New(info.Env(), static_cast<double>(ChildPlatformTasks())));
  return o;
}

// platformWorkerThreads(): the worker threads of this process's platform as Node 20 counts them
// (its delayed-task scheduler included); a fork child's pool gets one less.
Napi::Value PlatformWorkerThreads(const Napi::CallbackInfo& info) {
  node::MultiIsolatePlatform* p = Platform(v8::Isolate::GetCurrent());
  return Napi::Number::New(info.Env(), p != nullptr ? p->NumberOfWorkerThreads() : 0);
}

// setChildPoolSize(n): the threads of the pool every later fork child of this process starts for
// V8's worker tasks (child-platform.cc), whatever this process's own platform has (the forkserver
// runs with one worker thread: fewer to park at each fork; its children get the program's count).
Napi::Value SetChildPoolSize(const Napi::CallbackInfo& info) {
  int32_t n = ArgInt32(info, 0, "threads");
  if (n < 0 || n > 256) ThrowRange(info.Env(), "Expected an integer between 0 and 256 for \"threads\"");
  ChildPlatformSetSize(n);
  return info.Env().Undefined();
}

Napi::Value WatchDryLoop(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) ThrowType(env, "Expected a function for \"callback\"");
  if (g_dry == nullptr) {
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    g_dry = new DryWatch;
    uv_prepare_init(loop, &g_dry->prepare);
    uv_check_init(loop, &g_dry->check);
    uv_idle_init(loop, &g_dry->idle);
    uv_unref(reinterpret_cast<uv_handle_t*>(&g_dry->prepare));
    uv_unref(reinterpret_cast<uv_handle_t*>(&g_dry->check));
  }
  g_dry->base_reqs = g_base_reqs;
  g_dry->streak = 0;
  g_dry->cb = Napi::Persistent(info[0].As<Napi::Function>());
  g_dry->ctx = std::make_unique<Napi::AsyncContext>(env, "multiproc:dryloop");
  uv_prepare_start(&g_dry->prepare, OnDryPrepare);
  uv_check_start(&g_dry->check, OnDryCheck);
  return env.Undefined();
}

// setExitCode(code): the exit code the env-cleanup hook uses when a forked child's loop ends.
Napi::Value SetExitCode(const Napi::CallbackInfo& info) {
  g_fork.exit_code = ArgInt32(info, 0, "code");
  return info.Env().Undefined();
}

Napi::Value WaitPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgInt32(info, 0, "pid");
  int flags = ArgIsMissing(info, 1) ? 0 : ArgInt32(info, 1, "flags");
  int status = 0;
  pid_t r = RetryEintr([&] { return waitpid(pid, &status, flags); });
  if (r < 0) ThrowErrno(env, errno, "waitpid");
  if (r == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", r);
  o.Set("exitCode", WIFEXITED(status) ? Napi::Value(Napi::Number::New(env, WEXITSTATUS(status))) : env.Null());
  o.Set("signal", WIFSIGNALED(status) ? Napi::Value(Napi::Number::New(env, WTERMSIG(status))) : env.Null());
  return o;
}

Napi::Value Exit(const Napi::CallbackInfo& info) {
  int code = ArgInt32(info, 0, "code");
  fflush(nullptr);
  _exit(code);
}

Napi::Value Kill(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt32(info, 0, "pid");
  int sig = ArgInt32(info, 1, "signal");
  if (kill(pid, sig) != 0) ThrowErrno(info.Env(), errno, "kill");
  return info.Env().Undefined();
}

// setPdeathsig(sig, parentPid): ask the kernel to send `sig` to this process when its parent
// dies (Linux); if the parent is already gone (it died before the call), raise it now.
Napi::Value SetPdeathsig(const Napi::CallbackInfo& info) {
  int sig = ArgInt32(info, 0, "signal");
  pid_t expected = ArgInt32(info, 1, "parentPid");
#ifdef __linux__
  if (prctl(PR_SET_PDEATHSIG, sig) != 0) ThrowErrno(info.Env(), errno, "prctl");
  if (getppid() != expected) raise(sig);
#else
  (void)sig;
  (void)expected;
#endif
  return info.Env().Undefined();
}

// getrandom(n): n bytes from the kernel's CSPRNG (cheap in a fresh child, unlike OpenSSL, which
// reseeds itself after a fork on first use).
Napi::Value GetRandom(const Napi::CallbackInfo& info) {
  int32_t n = ArgInt32(info, 0, "size");
  if (n < 0 || n > 256) ThrowRange(info.Env(), "Expected an integer between 0 and 256 for \"size\"");
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(info.Env(), static_cast<size_t>(n));
  size_t got = 0;
  while (got < static_cast<size_t>(n)) {
#ifdef SYS_getrandom
    ssize_t r = syscall(SYS_getrandom, buf.Data() + got, static_cast<size_t>(n) - got, 0);
#else
    ssize_t r = -1;
    errno = ENOSYS;
#endif
    if (r < 0) {
      if (errno == EINTR) continue;
      ThrowErrno(info.Env(), errno, "getrandom");
    }
    got += static_cast<size_t>(r);
  }
  return buf;
}

Napi::Value GetPid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), getpid()); }
Napi::Value GetPpid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), getppid()); }

Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt32(info, 0, "pid");
#ifdef SYS_pidfd_open
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) ThrowErrno(info.Env(), errno, "pidfd_open");
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return Napi::Number::New(info.Env(), fd);
#else
  ThrowErrno(info.Env(), ENOSYS, "pidfd_open");
#endif
}

std::vector<std::string> StringArray(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsArray()) ThrowType(info.Env(), std::string("Expected an array of strings for \"") + name + "\"");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    if (!v.IsString()) ThrowType(info.Env(), std::string("Expected an array of strings for \"") + name + "\"");
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// spawn(file, argv, env, fdMap): posix_spawn with child fd i = parent fd fdMap[i] (-1: closed),
// default signal dispositions and an empty signal mask. Every other descriptor is left to its
// close-on-exec flag (Node and multiproc open everything close-on-exec).
Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = ArgString(info, 0, "file");
  std::vector<std::string> argv = StringArray(info, 1, "argv");
  std::vector<std::string> envv = StringArray(info, 2, "env");
  if (info.Length() < 4 || !info[3].IsArray()) ThrowType(env, "Expected an array of fds for \"fdMap\"");
  Napi::Array map = info[3].As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t k = 0; k < map.Length(); k++) fds.push_back(map.Get(k).As<Napi::Number>().Int32Value());

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // Move the sources out of the way first so that dup2 into low numbers cannot clobber them.
  int base = static_cast<int>(fds.size()) + 3;
  std::vector<int> temp(fds.size(), -1);
  for (size_t i = 0; i < fds.size(); i++) {
    if (fds[i] < 0) continue;
    temp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, base + 64);
    if (temp[i] < 0) {
      int e = errno;
      for (int t : temp) if (t >= 0) close(t);
      posix_spawn_file_actions_destroy(&fa);
      ThrowErrno(env, e, "fcntl");
    }
  }
  for (size_t i = 0; i < fds.size(); i++) {
    if (temp[i] >= 0) posix_spawn_file_actions_adddup2(&fa, temp[i], static_cast<int>(i));
    else posix_spawn_file_actions_addclose(&fa, static_cast<int>(i));
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> cargv = CStrings(argv);
  std::vector<char*> cenv = CStrings(envv);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, file.c_str(), &fa, &attr, cargv.data(), cenv.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  for (int t : temp) if (t >= 0) close(t);
  if (rc != 0) ThrowErrno(env, rc, "posix_spawn", &file);
  return Napi::Number::New(env, pid);
}

Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) ThrowErrno(info.Env(), errno, "pipe");
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, fds[0]);
  a.Set(1u, fds[1]);
  return a;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  // close() is not retried on EINTR: on Linux the descriptor is gone either way.
  if (close(fd) != 0 && errno != EINTR) ThrowErrno(info.Env(), errno, "close");
  return info.Env().Undefined();
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  bool on = info.Length() > 1 && info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) ThrowErrno(info.Env(), errno, "fcntl");
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (fcntl(fd, F_SETFD, flags) != 0) ThrowErrno(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

}  // namespace

bool InUnwind() { return g_unwound; }

void InitProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("fork", Napi::Function::New(env, Fork, "fork"));
  exports.Set("forkIsolated", Napi::Function::New(env, ForkIsolated, "forkIsolated"));
  exports.Set("unwindStack", Napi::Function::New(env, UnwindStack, "unwindStack"));
  exports.Set("forkStats", Napi::Function::New(env, ForkStats, "forkStats"));
  exports.Set("platformWorkerThreads", Napi::Function::New(env, PlatformWorkerThreads, "platformWorkerThreads"));
  exports.Set("setChildPoolSize", Napi::Function::New(env, SetChildPoolSize, "setChildPoolSize"));
  exports.Set("setSignalBlocked", Napi::Function::New(env, SetSignalBlocked, "setSignalBlocked"));
  exports.Set("prefaultInherited", Napi::Function::New(env, PrefaultInherited, "prefaultInherited"));
  exports.Set("watchDryLoop", Napi::Function::New(env, WatchDryLoop, "watchDryLoop"));
  exports.Set("setExitCode", Napi::Function::New(env, SetExitCode, "setExitCode"));
  exports.Set("waitpid", Napi::Function::New(env, WaitPid, "waitpid"));
  exports.Set("WNOHANG", Napi::Number::New(env, WNOHANG));
  exports.Set("_exit", Napi::Function::New(env, Exit, "_exit"));
  exports.Set("kill", Napi::Function::New(env, Kill, "kill"));
  exports.Set("setPdeathsig", Napi::Function::New(env, SetPdeathsig, "setPdeathsig"));
  exports.Set("getrandom", Napi::Function::New(env, GetRandom, "getrandom"));
  exports.Set("getpid", Napi::Function::New(env, GetPid, "getpid"));
  exports.Set("getppid", Napi::Function::New(env, GetPpid, "getppid"));
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn"));
  exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
}

}  // namespace mp
