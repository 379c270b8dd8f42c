#include "addon.h"
#include "errors.h"

namespace mp {

void InitShm(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace mp
