// Shared memory: shm_open / shm_unlink / ftruncate, and mmap into Buffers whose memory IS the
// mapping (CPython's _posixshmem plus the mmap module's MAP_SHARED path).
//
// A mapped Buffer owns its mapping through a heap Mapping shared by two parties: the Buffer's
// finalizer (garbage collection, environment teardown) and munmap() (explicit release, which
// detaches the ArrayBuffer first so no view can reach unmapped memory). Whichever runs first
// unmaps; the finalizer always frees the Mapping. Live mappings are registered by address so
// munmap() can find the Mapping of a Buffer; the ArrayBuffer is type-tagged so a second munmap()
// of an already detached mapping is recognised (and ignored) after its address is gone.
#include "addon.h"
#include "errors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <unordered_map>

namespace mp {

namespace {

// The largest Buffer Node 20 can make (buffer.constants.MAX_LENGTH on 64-bit); later Node versions
// allow more. Checked before creating the Buffer: a failed external-buffer creation would leave
// unclear who owns the mapping.
constexpr int64_t kMaxMapLength = int64_t{1} << 32;

// Marks ArrayBuffers whose memory is one of our mappings (survives detaching).
constexpr napi_type_tag kMappingTag = {0x6d756c746970726fULL, 0x63736d6d61707631ULL};

struct Mapping {
  void* addr;
  size_t length;
  bool unmapped;
};

std::mutex registryMutex;
std::unordered_map<void*, Mapping*> registry;  // live mappings by address

void Register(Mapping* m) {
  std::lock_guard<std::mutex> lock(registryMutex);
  registry[m->addr] = m;
}

// Removes `m` from the registry unless its address has since been reused by a newer mapping.
void Unregister(Mapping* m) {
  std::lock_guard<std::mutex> lock(registryMutex);
  auto it = registry.find(m->addr);
  if (it != registry.end() && it->second == m) registry.erase(it);
}

Mapping* Lookup(void* addr) {
  std::lock_guard<std::mutex> lock(registryMutex);
  auto it = registry.find(addr);
  return it == registry.end() ? nullptr : it->second;
}

// Unmaps `m` once and gives its size back to V8's external-memory accounting.
void Release(Napi::Env env, Mapping* m) {
  if (m->unmapped) return;
  m->unmapped = true;
  Unregister(m);
  ::munmap(m->addr, m->length);
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(m->length));
}

void FinalizeMapping(Napi::Env env, uint8_t* /*data*/, Mapping* m) {
  Release(env, m);
  delete m;
}

// Wraps a fresh mapping in a Buffer that owns it.
Napi::Buffer<uint8_t> WrapMapping(Napi::Env env, void* addr, size_t length) {
  Mapping* m = new Mapping{addr, length, false};
  Napi::Buffer<uint8_t> buf;
  try {
    buf = Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(addr), length, FinalizeMapping, m);
  } catch (...) {
    ::munmap(addr, length);
    delete m;
    throw;
  }
  Register(m);
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(length));
  buf.ArrayBuffer().TypeTag(&kMappingTag);
  return buf;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean()) {
    ThrowType(info.Env(), std::string("Expected a boolean for \"") + name + "\"");
  }
  return info[i].As<Napi::Boolean>().Value();
}

int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  int32_t fd = ArgInt32(info, i, "fd");
  if (fd < 0) ThrowRange(info.Env(), "Expected a non-negative integer for \"fd\" but received " + std::to_string(fd));
  return fd;
}

// A mapping length in [1, kMaxMapLength].
size_t ArgLength(const Napi::CallbackInfo& info, size_t i) {
  int64_t size = ArgInt64(info, i, "size");
  if (size < 1 || size > kMaxMapLength) {
    ThrowRange(info.Env(), "Expected an integer between 1 and " + std::to_string(kMaxMapLength) +
                               " for \"size\" but received " + std::to_string(size));
  }
  return static_cast<size_t>(size);
}

int64_t FstatSize(Napi::Env env, int fd) {
  struct stat st;
  if (::fstat(fd, &st) == -1) ThrowErrno(env, errno, "fstat");
  return static_cast<int64_t>(st.st_size);
}

// shmOpen(name, create, exclusive, mode, size) -> { fd, size }. size < 0: leave the size alone.
Napi::Value ShmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "name");
  bool create = ArgBool(info, 1, "create");
  bool exclusive = ArgBool(info, 2, "exclusive");
  int32_t mode = ArgInt32(info, 3, "mode");
  int64_t size = ArgInt64(info, 4, "size");
  if (name.find('\0') != std::string::npos) ThrowType(env, "Expected a name without NUL bytes for \"name\"");
  if (mode < 0 || mode > 07777) ThrowRange(env, "Expected an integer between 0 and 4095 for \"mode\" but received " + std::to_string(mode));

  // With create but not exclusive, try an exclusive create first so that we know whether this
  // call made the segment (and so may remove it again if sizing it fails).
  int fd = -1;
  bool created = false;
  const int base = O_RDWR | O_CLOEXEC;
  for (;;) {
    if (create) {
      fd = RetryEintr([&] { return ::shm_open(name.c_str(), base | O_CREAT | O_EXCL, static_cast<mode_t>(mode)); });
      if (fd != -1) { created = true; break; }
      if (errno != EEXIST || exclusive) ThrowErrno(env, errno, "shm_open", &name);
    }
    fd = RetryEintr([&] { return ::shm_open(name.c_str(), base, 0); });
    if (fd != -1) break;
    if (errno == ENOENT && create) continue;  // removed between the two opens: create it again
    ThrowErrno(env, errno, "shm_open", &name);
  }

  if (size >= 0 && RetryEintr([&] { return ::ftruncate(fd, static_cast<off_t>(size)); }) == -1) {
    int err = errno;
    ::close(fd);
    if (created) ::shm_unlink(name.c_str());
    ThrowErrno(env, err, "ftruncate", &name);
  }
  struct stat st;
  if (::fstat(fd, &st) == -1) {
    int err = errno;
    ::close(fd);
    if (created) ::shm_unlink(name.c_str());
    ThrowErrno(env, err, "fstat", &name);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("size", Napi::Number::New(env, static_cast<double>(st.st_size)));
  return result;
}

Napi::Value ShmUnlink(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  if (::shm_unlink(name.c_str()) == -1) ThrowErrno(info.Env(), errno, "shm_unlink", &name);
  return info.Env().Undefined();
}

Napi::Value FstatSizeFn(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  return Napi::Number::New(info.Env(), static_cast<double>(FstatSize(info.Env(), fd)));
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int64_t size = ArgInt64(info, 1, "size");
  if (size < 0) ThrowRange(info.Env(), "Expected a non-negative integer for \"size\" but received " + std::to_string(size));
  if (RetryEintr([&] { return ::ftruncate(fd, static_cast<off_t>(size)); }) == -1) {
    ThrowErrno(info.Env(), errno, "ftruncate");
  }
  return info.Env().Undefined();
}

// mmap(fd, size, offset) -> Buffer over a MAP_SHARED mapping of the file.
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  size_t length = ArgLength(info, 1);
  int64_t offset = ArgInt64(info, 2, "offset");
  static const int64_t page = ::sysconf(_SC_PAGESIZE);
  if (offset < 0 || offset % page != 0) {
    ThrowRange(env, "Expected a non-negative multiple of the page size (" + std::to_string(page) +
                        ") for \"offset\" but received " + std::to_string(offset));
  }
  void* addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) ThrowErrno(env, errno, "mmap");

  // Bytes past the end of a file fault with SIGBUS when touched: refuse them up front.
  struct stat st;
  if (::fstat(fd, &st) == -1) {
    int err = errno;
    ::munmap(addr, length);
    ThrowErrno(env, err, "fstat");
  }
  if (S_ISREG(st.st_mode) && offset + static_cast<int64_t>(length) > static_cast<int64_t>(st.st_size)) {
    ::munmap(addr, length);
    ThrowRange(env, "mmap: offset + size (" + std::to_string(offset) + " + " + std::to_string(length) +
                        ") is beyond the end of the file (" + std::to_string(st.st_size) + " bytes)");
  }
  return WrapMapping(env, addr, length);
}

// mmapAnonymous(size) -> Buffer over MAP_SHARED|MAP_ANONYMOUS memory (shared with later forks).
Napi::Value MmapAnonymous(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t length = ArgLength(info, 0);
  void* addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (addr == MAP_FAILED) ThrowErrno(env, errno, "mmap");
  return WrapMapping(env, addr, length);
}

// munmap(buf): detaches buf's ArrayBuffer (every view becomes empty), then unmaps. Unmapping an
// already unmapped mapping does nothing; a Buffer that mmap did not make is a TypeError.
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* notOurs = "Expected a Buffer returned by mmap() or mmapAnonymous() for \"buf\"";
  if (info.Length() < 1 || !info[0].IsTypedArray()) ThrowType(env, notOurs);
  Napi::ArrayBuffer ab = info[0].As<Napi::TypedArray>().ArrayBuffer();
  if (!ab.CheckTypeTag(&kMappingTag)) ThrowType(env, notOurs);
  if (ab.IsDetached()) return env.Undefined();
  Mapping* m = Lookup(ab.Data());
  if (m == nullptr || m->unmapped) ThrowType(env, notOurs);
  ab.Detach();
  Release(env, m);
  return env.Undefined();
}

// arenaView(buf, offset, length) -> an ArrayBuffer of its own whose memory is bytes
// [offset, offset + length) of a mapping made by mmap()/mmapAnonymous() (an arena of shared
// objects: each object gets a buffer that covers its block and nothing else). The view holds a
// reference to `buf`, so the mapping outlives every view of it; nothing here unmaps.
Napi::Value ArenaView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* notOurs = "Expected a Buffer returned by mmap() or mmapAnonymous() for \"buf\"";
  if (info.Length() < 1 || !info[0].IsBuffer()) ThrowType(env, notOurs);
  Napi::Buffer<uint8_t> buf = info[0].As<Napi::Buffer<uint8_t>>();
  Napi::ArrayBuffer ab = buf.ArrayBuffer();
  if (!ab.CheckTypeTag(&kMappingTag) || ab.IsDetached()) ThrowType(env, notOurs);
  const int64_t size = static_cast<int64_t>(buf.Length());
  int64_t offset = ArgInt64(info, 1, "offset");
  int64_t length = ArgInt64(info, 2, "length");
  if (offset < 0 || offset > size) {
    ThrowRange(env, "Expected an integer between 0 and " + std::to_string(size) + " for \"offset\" but received " + std::to_string(offset));
  }
  if (length < 0 || length > size - offset) {
    ThrowRange(env, "Expected an integer between 0 and " + std::to_string(size - offset) + " for \"length\" but received " + std::to_string(length));
  }
  using Ref = Napi::Reference<Napi::Buffer<uint8_t>>;
  Ref* ref = new Ref(Napi::Persistent(buf));
  try {
    return Napi::ArrayBuffer::New(env, buf.Data() + offset, static_cast<size_t>(length),
                                  [](Napi::Env, void*, Ref* r) { delete r; }, ref);
  } catch (...) {
    delete ref;
    throw;
  }
}

}  // namespace

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("shmOpen", Napi::Function::New(env, ShmOpen, "shmOpen"));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink, "shmUnlink"));
  exports.Set("fstatSize", Napi::Function::New(env, FstatSizeFn, "fstatSize"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("mmapAnonymous", Napi::Function::New(env, MmapAnonymous, "mmapAnonymous"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("arenaView", Napi::Function::New(env, ArenaView, "arenaView"));
}

}  // namespace mp
