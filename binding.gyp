{
  # Built by node-gyp (npm install, npm run prebuild). CMakeLists.txt builds the same sources with
  # the same flags through cmake-js (npm run build:cmake); keep the two lists in step.
  "targets": [
    {
      "target_name": "multiproc",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/process.cc",
        "native/poll.cc",
        "native/semaphore.cc",
        "native/shm.cc",
        "native/fdpass.cc",
        "native/futex.cc",
        "native/socket.cc",
        "native/child-platform.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2", "-fvisibility=hidden", "-fstack-protector-strong", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lpthread"],
      "conditions": [
        ["OS=='linux'", { "libraries": ["-lrt"] }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
            "OTHER_CPLUSPLUSFLAGS": ["-fstack-protector-strong", "-Wall", "-Wextra", "-Wno-unused-parameter"]
          }
        }]
      ]
    }
  ]
}
