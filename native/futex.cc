#include "addon.h"
#include "errors.h"

namespace mp {

void InitFutex(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace mp
