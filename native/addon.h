// Module initialisers: one per native source file, each adding its functions to `exports`.
#pragma once

#include <napi.h>

namespace mp {
void InitProcess(Napi::Env env, Napi::Object exports);    // process.cc: fork, waitpid, kill, spawn...
void InitPoll(Napi::Env env, Napi::Object exports);       // poll.cc: fd watchers on the event loop, poll()
void InitSemaphore(Napi::Env env, Napi::Object exports);  // semaphore.cc: NamedSemaphore
void InitShm(Napi::Env env, Napi::Object exports);        // shm.cc: shm_open, mmap
void InitFdpass(Napi::Env env, Napi::Object exports);     // fdpass.cc: socketpair, SCM_RIGHTS
void InitFutex(Napi::Env env, Napi::Object exports);      // futex.cc: futex wait/wake on shared memory
void InitSocket(Napi::Env env, Napi::Object exports);     // socket.cc: raw fd I/O and sockets for connections
// True in an isolated fork child between unwindStack() and the child's entry: a callback that
// sees an exception then is seeing the parent's discarded stack, not an error to report.
bool InUnwind();

// child-platform.cc: worker threads for V8's tasks in a forked child (see the file).
}  // namespace mp
namespace node { class MultiIsolatePlatform; }
namespace mp {
bool ChildPlatformAdopt(node::MultiIsolatePlatform* platform);  // in a new child, at once
bool ChildPlatformQuiesce(int timeout_ms);  // before a child forks: idle pool, its lock held
void ChildPlatformResume();                 // after that fork, in the parent
bool ChildPlatformActive();
uint64_t ChildPlatformTasks();
void ChildPlatformSetSize(int threads);      // threads of a child's pool (0: from the platform)
}  // namespace mp
