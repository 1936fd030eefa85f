//! Mixed precision: running a closure under CUDA autocast in bfloat16.
//!
//! `tch::autocast` switches CUDA autocast on but leaves its dtype at libtorch's default,
//! float16; [`autocast_bf16`] sets bfloat16 for the duration of the closure (through the
//! shim `csrc/autocast.cpp`) and restores the previous dtype afterwards. Without a CUDA
//! device, as `tch::autocast`, it just runs the closure in full precision.

extern "C" {
    fn dspec_set_cuda_autocast_dtype(scalar_type: i8) -> i8;
}

/// c10::ScalarType::BFloat16.
const BFLOAT16: i8 = 15;

/// Runs `f` under CUDA autocast with bfloat16 as the low-precision dtype. Inputs and
/// parameters keep their dtype; autocast-eligible ops (matmuls, convolutions, attention)
/// compute in bfloat16 on CUDA tensors. Nested calls are allowed.
pub fn autocast_bf16<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: the shim only reads and writes libtorch's thread-local autocast dtype.
    let prev = unsafe { dspec_set_cuda_autocast_dtype(BFLOAT16) };
    let out = tch::autocast(true, f);
    // SAFETY: as above; restores the dtype read before.
    unsafe { dspec_set_cuda_autocast_dtype(prev) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn runs_the_closure_and_restores_the_dtype() {
        // Half = 5: libtorch's default CUDA autocast dtype.
        let before = unsafe { dspec_set_cuda_autocast_dtype(5) };
        let y = autocast_bf16(|| {
            let inside = unsafe { dspec_set_cuda_autocast_dtype(BFLOAT16) };
            assert_eq!(inside, BFLOAT16);
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).matmul(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))
        });
        // On CPU tensors nothing is cast.
        assert_eq!(y.kind(), Kind::Float);
        assert_eq!(unsafe { dspec_set_cuda_autocast_dtype(before) }, 5);
    }
}
