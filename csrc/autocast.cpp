// Choosing the dtype of CUDA autocast from Rust (tch's `autocast` only switches it on, and
// libtorch's default CUDA autocast dtype is float16). As in dual_level.cpp, the libtorch
// function is declared here rather than by including its headers: c10's DeviceType and
// ScalarType are `enum class ... : int8_t`, whose opaque declarations mangle the same way.
#include <cstdint>

namespace c10 {
enum class DeviceType : int8_t;
enum class ScalarType : int8_t;
}  // namespace c10

namespace at {
namespace autocast {
c10::ScalarType get_autocast_dtype(c10::DeviceType device_type);
void set_autocast_dtype(c10::DeviceType device_type, c10::ScalarType dtype);
}  // namespace autocast
}  // namespace at

// c10::DeviceType::CUDA = 1. Returns the previous dtype (a c10::ScalarType value).
// Neither function throws (they read / write a thread-local).
extern "C" int8_t dspec_set_cuda_autocast_dtype(int8_t scalar_type) {
  const auto cuda = static_cast<c10::DeviceType>(1);
  const auto prev = at::autocast::get_autocast_dtype(cuda);
  at::autocast::set_autocast_dtype(cuda, static_cast<c10::ScalarType>(scalar_type));
  return static_cast<int8_t>(prev);
}
