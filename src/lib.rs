//! `trainer`: a GPU-accelerated trainer for handwritten-digit recognition on burn.
//!
//! It reproduces the article's Keras MLP on MNIST (784-30-10-10, Adam, 30 epochs) with the
//! backend chosen at run time: wgpu on a GPU, ndarray or flex on the CPU; and keeps what a
//! run makes: checkpoints, history, plots, model files.

// The helpers the unit tests share with the integration tests (`tests/it/support.rs`) name
// this crate `trainer`, as the integration tests do.
#[cfg(test)]
extern crate self as trainer;

pub mod backend;
mod batch;
pub mod checkpoint;
pub mod cli;
pub mod commands;
mod conv_block;
mod cpu;
pub mod data;
mod files;
mod flat;
mod gpu;
mod host;
pub mod interop;
mod interrupts;
mod loader;
mod logging;
mod metrics;
pub mod model;

pub mod plan;
mod plot;
mod product;
mod recipe;
mod rng;
mod run;
mod serve;
mod session;
mod sweep;
#[cfg(test)]
#[path = "../tests/it/support.rs"]
mod test_support;
mod training;

/// The shape of the code itself.
#[cfg(test)]
mod structure {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The top-level modules each top-level module uses (`crate::name`), from the sources,
    /// unit tests (`#[cfg(test)]` sections, `tests.rs` files) left out.
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        fn walk(dir: &Path, top: Option<&str>, graph: &mut BTreeMap<String, BTreeSet<String>>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                let module = top.map_or(name.clone(), str::to_string);
                if path.is_dir() {
                    walk(&path, Some(&module), graph);
                    continue;
                }
                // The crate root, the binary, and unit-test files.
                if ["lib", "main"].contains(&module.as_str()) || name == "tests" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                let used = graph.entry(module.clone()).or_default();
                for part in code.split("crate::").skip(1) {
                    let dep: String = part
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if dep != module && !dep.is_empty() {
                        used.insert(dep);
                    }
                }
            }
        }
        let mut graph = BTreeMap::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            None,
            &mut graph,
        );
        graph
    }

    /// No two top-level modules use each other, directly or through others: the modules read
    /// as layers, each understandable from the ones below it.
    #[test]
    fn no_module_depends_on_itself_through_others() {
        let graph = uses();
        assert!(graph.len() > 10, "{graph:?}");
        for start in graph.keys() {
            // Everything reachable from `start`.
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&String> = graph[start].iter().collect();
            while let Some(m) = todo.pop() {
                assert!(m != start, "{start} uses itself through others: {graph:#?}");
                if seen.insert(m.clone()) {
                    todo.extend(graph.get(m).into_iter().flatten());
                }
            }
        }
    }
}
