//! The wgpu-only parts: the training set resident on the GPU and gathered there by a WGSL
//! kernel (`gather`), the plumbing that launches hand-written WGSL through burn's cubecl
//! client (`kernels`), and the fused training step and evaluation (`fused`). Every kernel's
//! source is in `shaders/`.

pub mod fused;
pub mod gather;
pub(crate) mod kernels;
