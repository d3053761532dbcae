//! The CPU's own kernels for what burn's operations do slowly on small networks.

pub mod fused;
pub(crate) mod team;
