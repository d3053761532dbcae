//! `trainer predict`: the class of each picture (by name), and the top probabilities; each
//! picture prepared as the model's data was.

use super::Error;
use crate::backend;
use crate::data::pictures::{self, ImageError};
use crate::interop;
use crate::plan::PredictPlan;
use crate::training::probabilities;

/// Classifies every picture `args` names; a picture that cannot be read is reported and the
/// others are still answered.
pub(super) fn predict(args: &PredictPlan) -> Result<String, Error> {
    let device = backend::open(args.device.request(None, false))?;
    let loaded = interop::load_model(&args.model, &device.device)?;
    let (model, data) = (&loaded.model, &loaded.data);
    let mut lines = Vec::new();
    let mut failed = 0;
    for path in &args.images {
        match pictures::load_for(path, data) {
            Ok(pixels) => {
                let probs = probabilities(model, pixels, &device.device)?;
                let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(args.top);
                let name = |d: usize| data.name(d);
                lines.push(if args.json {
                    serde_json::json!({
                        "file": path,
                        "digit": ranked[0].0,
                        "class": name(ranked[0].0),
                        "probability": ranked[0].1,
                        "top": ranked.iter().map(|(d, p)| serde_json::json!({"digit": d, "class": name(*d), "probability": p})).collect::<Vec<_>>(),
                    })
                    .to_string()
                } else {
                    let top: Vec<String> =
                        ranked.iter().map(|(d, p)| format!("{} {p:.4}", name(*d))).collect();
                    format!("{}: {} (top: {})", path.display(), name(ranked[0].0), top.join(", "))
                });
            }
            Err(e) => {
                failed += 1;
                report_image_error(&e, args.json, &mut lines);
            }
        }
    }
    if failed > 0 {
        // The answers still go to stdout before the failure is reported.
        println!("{}", lines.join("\n"));
        return Err(Error::Images(failed));
    }
    Ok(lines.join("\n"))
}

/// Reports a picture that could not be read: on stderr, and as a JSON line with `--json`.
fn report_image_error(e: &ImageError, json: bool, lines: &mut Vec<String>) {
    if json {
        lines.push(serde_json::json!({"file": e.path(), "error": e.to_string()}).to_string());
    }
    eprintln!("error: {e}");
}
