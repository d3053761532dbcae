//! `trainer` seen from outside, in one test binary (one link of the whole crate, as ripgrep
//! and rust-analyzer do): the binary run on real MNIST subsets and on bad input (`cli`), the
//! files other tools read (`interop`), sweeps with many workers and on a real scheduler
//! (`sweep`), the page's server (`serve`), the GPU path on more drivers (`gpu`), the
//! measuring scripts (`scripts`); `support` holds the helpers every test shares, unit tests included.
//!
//! The training tests need real MNIST in `$TRAINER_DATA_DIR` or the default data directory:
//! `python3 scripts/fetch_mnist.py` provisions it. They fail, never skip, when it is missing.

mod browser;
mod cli;
mod data;
mod gpu;
mod interop;
mod scripts;
mod serve;
mod support;
mod sweep;
