#include "addon.h"
#include "errors.h"

namespace mp {

void InitProcess(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace mp
