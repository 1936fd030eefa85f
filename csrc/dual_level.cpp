// Entering and leaving a libtorch forward-mode AD level from Rust.
//
// libtorch exports these two functions (torch/csrc/autograd/forward_grad.cpp) but tch
// does not bind them. They are declared here rather than by including the torch
// headers, which keeps this file a one-second compile. Exceptions never cross into
// Rust: each entry point catches them and returns a status with the message.
#include <cstdint>
#include <cstring>
#include <exception>

namespace torch {
namespace autograd {
namespace forward_ad {
uint64_t enter_dual_level();
void exit_dual_level(uint64_t level);
}  // namespace forward_ad
}  // namespace autograd
}  // namespace torch

static void copy_message(const char* msg, char* buf, size_t len) {
  if (len == 0) return;
  std::strncpy(buf, msg, len - 1);
  buf[len - 1] = '\0';
}

extern "C" int dspec_enter_dual_level(uint64_t* level, char* err, size_t err_len) {
  try {
    *level = torch::autograd::forward_ad::enter_dual_level();
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, err_len);
  } catch (...) {
    copy_message("unknown C++ exception", err, err_len);
  }
  return 1;
}

extern "C" int dspec_exit_dual_level(uint64_t level, char* err, size_t err_len) {
  try {
    torch::autograd::forward_ad::exit_dual_level(level);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, err_len);
  } catch (...) {
    copy_message("unknown C++ exception", err, err_len);
  }
  return 1;
}
