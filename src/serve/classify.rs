//! The server's classifier: a picture posted by the page (its drawing pad's canvas) prepared
//! by the function `predict` uses and classified by a run's model on the CPU, on one thread of
//! its own behind a bounded queue — bounded work, whatever the number of clients. Models are
//! loaded once per model file (reloaded when the file is replaced; kept as they were when a
//! replacement cannot be read).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde::Serialize;

use crate::backend::{BackendKind, DeviceRequest, WgpuApi};
use crate::data::pictures::{ImageError, prepare_bytes};
use crate::interop::{self, Loaded};
use crate::training::probabilities;

/// Requests waiting for the classifier at most; more are refused at once (503).
pub const QUEUE: usize = 256;

/// What the page gets back.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The picture as the network's input: channels × height × width values in [0, 1].
    pub pixels: Vec<f32>,
    /// The input's shape: channels, height, width.
    pub shape: [usize; 3],
    /// Each class's probability.
    pub probabilities: Vec<f32>,
    /// The class names, label order.
    pub classes: Vec<String>,
    /// Where the probabilities were computed.
    pub ran: &'static str,
}

/// Why a picture was not classified.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The picture could not be read or holds nothing.
    #[error(transparent)]
    Picture(#[from] ImageError),
    /// The run has no model file to classify with yet, or it cannot be read.
    #[error("{0}")]
    Model(String),
    /// The classifier is busy with as many requests as it queues.
    #[error("the classifier has {QUEUE} requests waiting; try again")]
    Busy,
    /// The CPU device or the forward pass failed.
    #[error("classifying failed: {0}")]
    Failed(String),
}

/// One request to the classifier thread.
struct Job {
    model: PathBuf,
    picture: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<Result<Answer, ClassifyError>>,
}

/// The handle requests are sent through.
#[derive(Debug, Clone)]
pub struct Classifier {
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({})", self.model.display())
    }
}

impl Classifier {
    /// Starts the classifier's thread (it ends with the last handle).
    pub fn start() -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        std::thread::spawn(move || {
            let device = crate::backend::init(DeviceRequest {
                backend: BackendKind::Flex,
                api: WgpuApi::Auto,
                index: None,
                batched: false,
            })
            .map(|d| d.device);
            let mut models = Models::default();
            for job in queue {
                let answer = match &device {
                    Ok(device) => classify(&mut models, &job.model, &job.picture, device),
                    Err(e) => Err(ClassifyError::Failed(e.to_string())),
                };
                // The page may have gone meanwhile.
                let _ = job.reply.send(answer);
            }
        });
        Self { jobs }
    }

    /// Classifies `picture` (an image file's bytes) with the model in `model`.
    pub async fn classify(
        &self,
        model: PathBuf,
        picture: Vec<u8>,
    ) -> Result<Answer, ClassifyError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            model,
            picture,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ClassifyError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(ClassifyError::Failed("the classifier stopped".into()));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ClassifyError::Failed("the classifier stopped".into())))
    }
}

/// The models loaded so far, by file, with the stamp of the file each was read from.
#[derive(Default)]
struct Models(HashMap<PathBuf, (super::catalog::Stamp, Loaded)>);

impl Models {
    /// The model in `path`: loaded again when the file changed, the last one read when the
    /// new file cannot be read.
    fn get(
        &mut self,
        path: &Path,
        device: &burn::tensor::Device,
    ) -> Result<&Loaded, ClassifyError> {
        let stamp = super::catalog::stamp(&[path.to_path_buf()]);
        let fresh = self.0.get(path).is_some_and(|(seen, _)| *seen == stamp);
        if !fresh {
            match interop::load_model(path, device) {
                Ok(loaded) => {
                    self.0.insert(path.to_path_buf(), (stamp, loaded));
                }
                Err(e) if !self.0.contains_key(path) => {
                    return Err(ClassifyError::Model(e.to_string()));
                }
                Err(_) => {}
            }
        }
        self.0
            .get(path)
            .map(|(_, loaded)| loaded)
            .ok_or_else(|| ClassifyError::Model(format!("{}: no model", path.display())))
    }
}

/// Prepares and classifies one picture.
fn classify(
    models: &mut Models,
    model: &Path,
    picture: &[u8],
    device: &burn::tensor::Device,
) -> Result<Answer, ClassifyError> {
    let loaded = models.get(model, device)?;
    let pixels = prepare_bytes(picture, Path::new("the picture sent"), &loaded.data)?;
    let probabilities = probabilities(&loaded.model, pixels.clone(), device)
        .map_err(|e| ClassifyError::Failed(e.to_string()))?;
    let shape = loaded.data.shape;
    Ok(Answer {
        pixels,
        shape: [shape.channels, shape.height, shape.width],
        probabilities,
        classes: (0..loaded.data.classes.len())
            .map(|c| loaded.data.name(c))
            .collect(),
        ran: "server",
    })
}
