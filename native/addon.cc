// multiproc's native addon: the system calls Node lacks (see lib/posix.ts for the typed surface).
#include "addon.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  mp::InitProcess(env, exports);
  mp::InitPoll(env, exports);
  mp::InitSemaphore(env, exports);
  mp::InitShm(env, exports);
  mp::InitFdpass(env, exports);
  mp::InitFutex(env, exports);
  mp::InitSocket(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(multiproc, Init)
