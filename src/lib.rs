//! `trainer`: a GPU-accelerated trainer for handwritten-digit recognition on burn.
//!
//! It reproduces the article's Keras MLP on MNIST (784-30-10-10, Adam, 30 epochs) with the
//! backend chosen at run time: wgpu on a GPU, ndarray or flex on the CPU; and keeps what a
//! run makes: checkpoints, history, plots, model files.

pub mod backend;
pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod fused;
pub mod gather;
pub mod kernels;
pub mod loader;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod predict;
pub mod recipe;
pub mod report;
pub mod rng;
pub mod session;
pub mod sweep;
pub mod train;
