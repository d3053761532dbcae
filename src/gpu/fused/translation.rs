//! Every kernel the fused step, the fused evaluation and the gather generate, for a fixed
//! matrix of networks, image shapes (MNIST's, colour 32 × 32) and batches, through naga's validator and its SPIR-V (then `spirv-val`),
//! MSL (Metal) and HLSL (DX12) writers: what a workstation's driver receives, checked without
//! its GPU. The `naga` command-line tool is used (naga-cli at wgpu's naga version, installed by
//! `.ci/run`), not naga's writer features, so that `cargo build` and `cargo test` build one
//! naga. Without `naga` or `spirv-val` the test says it is skipped, unless
//! `TRAINER_REQUIRE_NAGA=1` (CI).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::layout::Variant;
use crate::data::{DataInfo, ImageShape};
use crate::flat::param_meta;
use crate::gpu::gather::{ImageLayout, gather_source};
use crate::model::{Architecture, Model};
use crate::test_support::{missing, runs};

/// The tools, or `None` (said) when one is missing and CI does not require them.
fn tools() -> Option<(String, String)> {
    let naga = std::env::var("TRAINER_NAGA").unwrap_or_else(|_| "naga".into());
    if runs(&naga, "--version") && runs("spirv-val", "--version") {
        return Some((naga, "spirv-val".into()));
    }
    missing(
        "no naga (cargo install naga-cli --version 30.0.1) or spirv-val (apt-get install spirv-tools)",
        "TRAINER_REQUIRE_NAGA",
    );
    None
}

/// Every distinct kernel source of the matrix, by a name that says where it comes from.
fn kernel_sources() -> BTreeMap<String, String> {
    let device = burn::tensor::Device::flex();
    let mnist = DataInfo::mnist();
    let mut sources = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |name: String, source: String| {
        if seen.insert(source.clone()) {
            sources.insert(name, source);
        }
    };
    let networks: Vec<(Architecture, Vec<usize>)> = vec![
        (Architecture::Mlp, vec![]),
        (Architecture::Mlp, vec![30, 10]),
        (Architecture::Mlp, vec![256]),
        (Architecture::Mlp, vec![256, 256, 256]),
        (Architecture::Cnn, vec![]),
    ];
    let count = 60_000;
    let colour = ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    for shape in [ImageShape::MNIST, colour] {
        let data = DataInfo {
            shape,
            ..mnist.clone()
        };
        let images = ImageLayout::of(shape, count).unwrap_or_else(|| unreachable!());
        for (architecture, hidden) in &networks {
            let model = Model::new(*architecture, hidden, &data, 42, &device).unwrap();
            let meta = param_meta(&model);
            for batch in [1, 32, 256, 4096] {
                for dropout in [false, true] {
                    let variant = Variant::new(&meta, batch, count, dropout, images).unwrap();
                    let tag = format!(
                        "{architecture:?}{hidden:?}-{}x{}x{}-b{batch}-d{}",
                        shape.channels,
                        shape.height,
                        shape.width,
                        u8::from(dropout)
                    );
                    let variant = std::sync::Arc::new(variant);
                    for kernel in super::kernels(&variant) {
                        add(
                            format!("{tag}-{kernel:?}"),
                            super::kernel_source(&variant, kernel),
                        );
                    }
                }
                add(
                    format!(
                        "gather-{}x{}x{}-b{batch}",
                        shape.channels, shape.height, shape.width
                    ),
                    gather_source(batch, count, images),
                );
            }
        }
    }
    sources
}

/// Runs `program` with `args`; its complaint (empty when it succeeded).
fn complaint(program: &str, args: &[&Path]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => String::new(),
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => e.to_string(),
    }
}

/// Every generated kernel validates in naga and translates to SPIR-V (which `spirv-val`
/// accepts for Vulkan 1.1), MSL and HLSL; a failure names the kernel and the backend's
/// message.
#[test]
fn every_kernel_translates_for_every_backend() {
    let Some((naga, spirv_val)) = tools() else {
        return;
    };
    let sources = kernel_sources();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, source) in &sources {
        let name = name.replace(['[', ']', ',', ' '], "_");
        let wgsl = dir.path().join(format!("{name}.wgsl"));
        std::fs::write(&wgsl, source).unwrap();
        let outputs = ["spv", "metal", "hlsl"].map(|ext| dir.path().join(format!("{name}.{ext}")));
        let mut args = vec![wgsl.as_path()];
        args.extend(outputs.iter().map(|p| p.as_path()));
        let said = complaint(&naga, &args);
        if !said.is_empty() {
            failures.push(format!("{name}: naga: {said}"));
            continue;
        }
        for output in &outputs {
            let written = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
            assert!(written > 0, "{name}: naga wrote no {}", output.display());
        }
        let target = [Path::new("--target-env"), Path::new("vulkan1.1")];
        let said = complaint(&spirv_val, &[target[0], target[1], &outputs[0]]);
        if !said.is_empty() {
            failures.push(format!("{name}: spirv-val: {said}"));
        }
    }
    let most = sources
        .iter()
        .map(|(name, source)| (super::workgroup_bytes(source), name.clone()))
        .max()
        .unwrap_or_default();
    eprintln!("most workgroup memory: {} bytes ({})", most.0, most.1);
    eprintln!(
        "{} distinct kernel sources validated and written as SPIR-V, MSL and HLSL",
        sources.len()
    );
    assert!(sources.len() > 50, "only {} kernels", sources.len());
    assert!(
        most.0 <= 16 << 10,
        "past WebGPU's 16 KiB of workgroup memory: {most:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
