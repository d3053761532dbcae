//! Results read back from the device to the host: each read waits for the work that
//! computed them, and reports its failure.

use burn::tensor::{Int, Tensor};

/// Why results could not be read back from the device.
#[derive(Debug, thiserror::Error)]
#[error("reading results back from the device: {0}")]
pub struct ReadError(String);

impl ReadError {
    /// A read-back failure described by `why`.
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

/// A float tensor's values, read back to the host (one device sync). A failure of the work
/// that computed them (a GPU out of memory, say) is reported here.
pub fn read_floats<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, ReadError> {
    tensor
        .try_into_data()
        .map_err(|e| ReadError(format!("{e}")))?
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| ReadError(format!("{e:?}")))
}

/// An integer tensor's values, read back to the host (one device sync).
pub fn read_ints<const D: usize>(tensor: Tensor<D, Int>) -> Result<Vec<i64>, ReadError> {
    tensor
        .try_into_data()
        .map_err(|e| ReadError(format!("{e}")))?
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| ReadError(format!("{e:?}")))
}
