// Worker threads for a forked child.
//
// A forked child has only the thread that called fork(). Node's platform still believes it has
// its worker threads, so every task V8 posts to them in the child (a concurrent TurboFan
// compilation, a parallel scavenge or marking job) sits in a queue no thread pops: JavaScript
// in the child never gets optimized code (hot code measured ~4x slower than in the parent) and
// GC helpers never run.
//
// The fix: in the child, the platform object's dispatch of the "run on a worker thread" calls is
// redirected to a small pool of threads the child starts itself. The platform is a C++ object
// reached through its vtable; the child gets a copy of that vtable (in its own heap) in which
// the four worker-thread entries point here, and the platform object's vtable pointer is set to
// the copy. Everything else (foreground tasks, clocks, tracing, jobs, which post through these
// entries) is Node's own code. The slot numbers come from v8-platform.h through
// pointer-to-member values (Itanium C++ ABI: 1 + the slot's byte offset), so they follow the
// headers the addon is built against, which are Node's own.
//
// A child that forks again quiesces the pool first (no task queued or running, every thread
// waiting on the pool's condvar, the pool's mutex held across the fork); the grandchild then
// starts from a fresh pool: the old one's threads do not exist there, and its mutex and condvar
// are never touched again.
#include <node.h>
#include <v8-platform.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "addon.h"

namespace mp {
namespace {

struct Pool {
  std::mutex mu;
  std::condition_variable work;  // a task is ready, or the earliest delayed task changed
  std::condition_variable idle;  // nothing queued and nothing running
  std::deque<std::unique_ptr<v8::Task>> ready;
  std::multimap<std::chrono::steady_clock::time_point, std::unique_ptr<v8::Task>> delayed;
  int size = 1;      // threads to run
  int started = 0;   // threads started
  int running = 0;   // tasks being run
  uint64_t tasks = 0;
};

Pool* g_pool = nullptr;
int g_pool_size = 0;  // set by ChildPlatformSetSize; 0: one less than the platform's threads
void** g_vtable = nullptr;  // the child's copy of the platform's vtable (entries after the header)

void WorkerMain(Pool* p) {
  std::unique_lock<std::mutex> lock(p->mu);
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    while (!p->delayed.empty() && p->delayed.begin()->first <= now) {
      p->ready.push_back(std::move(p->delayed.begin()->second));
      p->delayed.erase(p->delayed.begin());
    }
    if (!p->ready.empty()) {
      std::unique_ptr<v8::Task> task = std::move(p->ready.front());
      p->ready.pop_front();
      p->running++;
      lock.unlock();
      task->Run();
      task.reset();
      lock.lock();
      p->running--;
      p->tasks++;
      if (p->running == 0 && p->ready.empty()) p->idle.notify_all();
      continue;
    }
    if (p->delayed.empty()) p->work.wait(lock);
    else p->work.wait_until(lock, p->delayed.begin()->first);
  }
}

void Post(std::unique_ptr<v8::Task> task, double delay_seconds) {
  Pool* p = g_pool;
  std::lock_guard<std::mutex> lock(p->mu);
  if (delay_seconds > 0) {
    auto due = std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(delay_seconds));
    p->delayed.emplace(due, std::move(task));
    p->work.notify_all();  // a sleeping thread may need to wake earlier
  } else {
    p->ready.push_back(std::move(task));
    p->work.notify_one();
  }
  // Threads start on first use: a child that never posts a worker task stays single-threaded.
  while (p->started < p->size) {
    std::thread(WorkerMain, p).detach();
    p->started++;
  }
}

// The replacements, with the ABI of the member functions they stand for: `this` first, a
// std::unique_ptr by value passed as a pointer to the caller's temporary (which the caller
// destroys), so a free function with the same parameter list is call-compatible.
void CallOnWorkerThread(v8::Platform*, std::unique_ptr<v8::Task> task) { Post(std::move(task), 0); }
void CallDelayedOnWorkerThread(v8::Platform*, std::unique_ptr<v8::Task> task, double delay) { Post(std::move(task), delay); }

// The vtable slot of a virtual member function, from its pointer-to-member representation.
template <typename F>
ptrdiff_t SlotOf(F member) {
  struct Rep { ptrdiff_t ptr; ptrdiff_t adj; } rep;
  static_assert(sizeof(F) == sizeof(Rep), "unexpected pointer-to-member layout");
  std::memcpy(&rep, &member, sizeof rep);
  if ((rep.ptr & 1) == 0) return -1;  // not virtual
  return (rep.ptr - 1) / static_cast<ptrdiff_t>(sizeof(void*));
}

bool PatchVtable(node::MultiIsolatePlatform* platform) {
  const ptrdiff_t slots[] = {
      SlotOf(&v8::Platform::CallOnWorkerThread),
      SlotOf(&v8::Platform::CallBlockingTaskOnWorkerThread),
      SlotOf(&v8::Platform::CallLowPriorityTaskOnWorkerThread),
      SlotOf(&v8::Platform::CallDelayedOnWorkerThread),
  };
  ptrdiff_t last = 0;
  for (ptrdiff_t s : slots) {
    if (s < 0) return false;
    if (s > last) last = s;
  }
  // MultiIsolatePlatform's own virtuals follow v8::Platform's; copy them and a margin for
  // NodePlatform's (the copy is only read for the slots the object's class really has).
  const ptrdiff_t count = std::max(last, SlotOf(&node::MultiIsolatePlatform::AddIsolateFinishedCallback)) + 16;
  void** original = *reinterpret_cast<void***>(platform);
  // Two header words sit before the address points at: offset-to-top and the type info.
  void** block = new void*[count + 2];
  std::memcpy(block, original - 2, sizeof(void*) * (count + 2));
  void** copy = block + 2;
  copy[slots[0]] = reinterpret_cast<void*>(&CallOnWorkerThread);
  copy[slots[1]] = reinterpret_cast<void*>(&CallOnWorkerThread);
  copy[slots[2]] = reinterpret_cast<void*>(&CallOnWorkerThread);
  copy[slots[3]] = reinterpret_cast<void*>(&CallDelayedOnWorkerThread);
  *reinterpret_cast<void***>(platform) = copy;
  g_vtable = copy;
  return true;
}

}  // namespace

bool ChildPlatformAdopt(node::MultiIsolatePlatform* platform) {
  if (platform == nullptr) return false;
  // Node 20 counts its delayed-task scheduler thread among its worker threads.
  int n = g_pool_size > 0 ? g_pool_size : platform->NumberOfWorkerThreads() - 1;
  // A fresh pool: an inherited one's threads are gone, and its locks belong to the parent.
  g_pool = new Pool();
  g_pool->size = n < 1 ? 1 : n;
  if (g_vtable == nullptr && !PatchVtable(platform)) return false;
  return true;
}

bool ChildPlatformQuiesce(int timeout_ms) {
  if (g_pool == nullptr) return true;
  std::unique_lock<std::mutex> lock(g_pool->mu);
  bool quiet = g_pool->idle.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                     [] { return g_pool->ready.empty() && g_pool->running == 0; });
  lock.release();  // held across the fork; ChildPlatformResume() unlocks it in the parent
  return quiet;
}

void ChildPlatformResume() {
  if (g_pool != nullptr) g_pool->mu.unlock();
}

bool ChildPlatformActive() { return g_vtable != nullptr; }

uint64_t ChildPlatformTasks() { return g_pool != nullptr ? g_pool->tasks : 0; }

void ChildPlatformSetSize(int threads) { g_pool_size = threads; }

}  // namespace mp
