#include "addon.h"
#include "errors.h"

namespace mp {

void InitPoll(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace mp
