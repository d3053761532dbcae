//! The wgpu path beyond one driver: the fused step on a second Vulkan implementation
//! (SwiftShader, Google's CPU driver, shipped in Debian's `chromium` package and chosen by
//! its ICD file), and the wgpu runs under the Khronos validation layer with synchronization
//! validation. Each runs the `trainer` binary in a subprocess with the loader's variables
//! set (cubecl creates its wgpu instance with default flags, so `WGPU_VALIDATION` would do
//! nothing). Without SwiftShader or the layer the tests say they are skipped, unless
//! `TRAINER_REQUIRE_SWIFTSHADER=1` / `TRAINER_REQUIRE_VALIDATION=1` (CI sets both).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{data_dir, missing, result, run, text, trainer};

/// Training flags of a small real run (3 epochs of 10,000 images and the test on 2,000).
const SMALL: &[&str] = &[
    "--epochs",
    "3",
    "--train-limit",
    "10000",
    "--valid-size",
    "1000",
    "--test-limit",
    "2000",
];

/// SwiftShader's ICD file, or `None` (said) where it is not installed and not required.
fn swiftshader() -> Option<PathBuf> {
    let given = std::env::var_os("TRAINER_SWIFTSHADER_ICD").map(PathBuf::from);
    let known = [
        "/usr/lib/chromium/vk_swiftshader_icd.json",
        "/usr/lib64/chromium/vk_swiftshader_icd.json",
    ];
    let found = given
        .into_iter()
        .chain(known.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    if found.is_none() {
        missing(
            "no SwiftShader Vulkan ICD (Debian's chromium package ships one)",
            "TRAINER_REQUIRE_SWIFTSHADER",
        );
    }
    found
}

/// `trainer ARGS` on wgpu through the Vulkan driver of `icd`, logging as JSON.
fn on_driver(icd: &Path, out: &Path, args: &[&str]) -> Output {
    let mut cmd = trainer(&["--backend", "wgpu", "--wgpu-api", "vulkan", "--out"]);
    cmd.arg(out)
        .args(args)
        .args(["--log-format", "json"])
        .env("VK_ICD_FILENAMES", icd)
        // The driver's only adapter, whatever the caller chose for the other tests.
        .env_remove("TRAINER_WGPU_DEVICE")
        .env("TRAINER_DATA_DIR", data_dir());
    run(&mut cmd)
}

/// The adapter a run's log names.
fn adapter(out: &Output) -> String {
    text(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["adapter"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The fused MLP on SwiftShader learns as on flex (every epoch's validation loss within
/// 0.2 %, the test accuracy within 0.3 points, as lavapipe must), and the CNN's fused step
/// gives flex's test loss (1e-3); the log names SwiftShader's adapter.
#[test]
fn the_fused_step_runs_on_swiftshader_as_on_the_cpu() {
    let Some(icd) = swiftshader() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let gpu = on_driver(&icd, &tmp.path().join("mlp-gpu"), SMALL);
    assert!(gpu.status.success(), "{}", text(&gpu.stderr));
    let name = adapter(&gpu);
    assert!(name.contains("SwiftShader"), "adapter {name:?}");
    eprintln!("fused MLP on {name}");
    assert!(
        !text(&gpu.stderr).contains("generic training step"),
        "the fused step ran"
    );
    let mut flex = trainer(&["--backend", "flex", "--out"]);
    flex.arg(tmp.path().join("mlp-cpu"))
        .args(SMALL)
        .env("TRAINER_DATA_DIR", data_dir());
    let cpu = run(&mut flex);
    assert!(cpu.status.success(), "{}", text(&cpu.stderr));
    let losses = |dir: &str| -> Vec<f64> {
        std::fs::read_to_string(tmp.path().join(dir).join("history.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["valid"]["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    for (epoch, (g, c)) in losses("mlp-gpu").iter().zip(losses("mlp-cpu")).enumerate() {
        assert!(
            (g - c).abs() <= 0.002 * c,
            "epoch {}: SwiftShader {g}, flex {c}",
            epoch + 1
        );
    }
    let (ag, ac) = (result(&gpu, "test_acc"), result(&cpu, "test_acc"));
    assert!(
        (ag - ac).abs() <= 0.003,
        "test accuracy SwiftShader {ag}, flex {ac}"
    );

    let tiny = [
        "--model",
        "cnn",
        "--epochs",
        "1",
        "--train-limit",
        "300",
        "--valid-size",
        "100",
        "--test-limit",
        "100",
    ];
    let gpu = on_driver(&icd, &tmp.path().join("cnn-gpu"), &tiny);
    assert!(gpu.status.success(), "{}", text(&gpu.stderr));
    let mut flex = trainer(&["--backend", "flex", "--out"]);
    flex.arg(tmp.path().join("cnn-cpu"))
        .args(tiny)
        .env("TRAINER_DATA_DIR", data_dir());
    let cpu = run(&mut flex);
    let (lg, lc) = (result(&gpu, "test_loss"), result(&cpu, "test_loss"));
    assert!(
        (lg - lc).abs() < 1e-3,
        "CNN test loss SwiftShader {lg}, flex {lc}"
    );
}

/// Whether the Khronos validation layer is installed, or says the test is skipped.
fn validation_layer() -> bool {
    let found = [
        "/usr/share/vulkan/explicit_layer.d",
        "/etc/vulkan/explicit_layer.d",
    ]
    .iter()
    .any(|d| {
        Path::new(d)
            .join("VkLayer_khronos_validation.json")
            .is_file()
    });
    if !found {
        missing(
            "no Khronos validation layer (Debian: apt-get install vulkan-validationlayers)",
            "TRAINER_REQUIRE_VALIDATION",
        );
    }
    found
}

/// The wgpu runs — the fused MLP with dropout and shifts, the fused CNN, and burn's generic
/// step fed by the gather kernel — on lavapipe under the validation layer with
/// synchronization validation: the loader reports the layer inserted, and the layer reports
/// nothing (it writes to stdout, where only the result line may be).
#[test]
fn the_wgpu_runs_are_clean_under_the_validation_layer() {
    if !crate::cli::wgpu_tests_run() || !validation_layer() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let runs = [
        (
            "mlp",
            "--augment 1 --dropout 0.2 --epochs 1 --train-limit 2000 --valid-size 500 --test-limit 500",
        ),
        (
            "cnn",
            "--model cnn --epochs 1 --train-limit 300 --valid-size 100 --test-limit 100",
        ),
        (
            "generic",
            "--step generic --epochs 1 --train-limit 256 --valid-size 64 --test-limit 64",
        ),
    ];
    for (name, args) in runs {
        let mut cmd = trainer(&[
            "--backend",
            "wgpu",
            "--wgpu-api",
            "vulkan",
            "--quiet",
            "--out",
        ]);
        cmd.arg(tmp.path().join(name))
            .args(args.split(' '))
            .env("TRAINER_DATA_DIR", data_dir())
            .env("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation")
            .env(
                "VK_LAYER_ENABLES",
                "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT",
            )
            .env("VK_LOADER_DEBUG", "layer");
        let started = std::time::Instant::now();
        let out = run(&mut cmd);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains("Insert instance layer \"VK_LAYER_KHRONOS_validation\""),
            "{name}: the loader did not insert the validation layer: {stderr}"
        );
        let reported: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.starts_with("test_loss="))
            .collect();
        assert!(
            reported.is_empty(),
            "{name}: the validation layer reported:\n{}",
            reported.join("\n")
        );
        for word in [
            "Validation Error",
            "Validation Warning",
            "VUID-",
            "SYNC-HAZARD",
        ] {
            assert!(!stderr.contains(word), "{name}: {word} in {stderr}");
        }
        eprintln!(
            "{name} under the validation layer: clean in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Lavapipe's ICD file (Mesa's Vulkan on the CPU), or `None` (said) where it is not installed
/// and wgpu is not required.
fn lavapipe() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/share/vulkan/icd.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("lvp_icd"))
        });
    if found.is_none() {
        missing(
            "no lavapipe Vulkan ICD (Debian's mesa-vulkan-drivers)",
            "TRAINER_REQUIRE_WGPU",
        );
    }
    found
}

/// `scripts/gpu_check`, as a person with a GPU runs it (here `--quick`, one fused test), on
/// the two software drivers at once: one report with both adapters, each passing the fused
/// test, wgpu = flex for the MLP and the CNN with the adapter named by the run's own log,
/// and the benchmark's dispatches per step (4 for the MLP, 15 for the CNN).
#[test]
fn gpu_check_reports_on_every_adapter() {
    let (Some(swiftshader), Some(lavapipe)) = (swiftshader(), lavapipe()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report.md");
    let binary = crate::support::trainer_binary();
    // The tests gpu_check runs are built in the target directory this test runs from.
    let target = binary
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} has no target directory", binary.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = std::process::Command::new(root.join("scripts/gpu_check"));
    cmd.args([
        "--api",
        "vulkan",
        "--quick",
        "--tests",
        "gpu::fused::tests::a_fused_training_step_takes_a_few_dispatches",
        "--trainer",
    ])
    .arg(&binary)
    .arg("--data-dir")
    .arg(data_dir())
    .arg("--out")
    .arg(&report)
    .current_dir(tmp.path())
    .env(
        "VK_ICD_FILENAMES",
        format!("{}:{}", swiftshader.display(), lavapipe.display()),
    )
    .env("CARGO_TARGET_DIR", target)
    .env("XDG_RUNTIME_DIR", "/tmp")
    .env_remove("TRAINER_WGPU_DEVICE");
    let started = std::time::Instant::now();
    let out = run(&mut cmd);
    let text_of = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        out.status.success(),
        "gpu_check failed: {}\n{text_of}",
        text(&out.stderr)
    );
    eprintln!("gpu_check on two adapters: {:.0?}", started.elapsed());
    let sections: Vec<&str> = text_of.split("\n## Adapter ").skip(1).collect();
    assert_eq!(sections.len(), 2, "{text_of}");
    for (section, driver) in sections.iter().zip(["SwiftShader", "llvmpipe"]) {
        assert!(section.contains(driver), "{section}");
        assert!(section.contains("**1 passed**"), "{section}");
        assert!(
            section.contains(&format!("adapter the run logged: {driver}")),
            "{section}"
        );
        assert_eq!(
            section.matches("**within the bounds**").count(),
            2,
            "{section}"
        );
        assert!(section.contains("4 dispatches/step"), "{section}");
        assert!(section.contains("15 dispatches/step"), "{section}");
    }
    assert_eq!(
        text_of.matches("| pass | pass | pass |").count(),
        2,
        "{text_of}"
    );
}
