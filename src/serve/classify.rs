//! The server's classifier: a picture posted by the page (its drawing pad's canvas) prepared
//! by the function `predict` uses and classified by a run's model on the CPU, on one thread of
//! its own behind a bounded queue — bounded work, whatever the number of clients. Models are
//! loaded once per model file (the last 8 used kept), and each one's WebGPU program made once (reloaded when the file is replaced; kept as they were when a
//! replacement cannot be read).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};

use std::sync::Arc;

use serde::Serialize;

use crate::backend::{BackendKind, DeviceRequest, WgpuApi};
use crate::data::pictures::{ImageError, prepare_bytes};
use crate::data::{DataRequest, Split, SplitSizes};
use crate::gpu::fused::web_program;
use crate::interop::{self, Loaded};
use crate::training::{class_probabilities, probabilities};

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

/// What a request asks of the classifier thread.
enum Work {
    /// Classify a picture (an image file's bytes).
    Classify(Vec<u8>),
    /// The model's forward kernels and parameters for the page's WebGPU.
    Program,
    /// The model's pass over the run's test set (read as `request` and `sizes` say, the
    /// first `limit` pictures).
    Mistakes {
        request: DataRequest,
        sizes: SplitSizes,
        limit: Option<usize>,
    },
}

/// What the classifier thread answers.
enum Reply {
    /// A picture classified.
    Answer(Answer),
    /// A model's program, as JSON.
    Program(Arc<String>),
    /// A model's test pass.
    Mistakes(Arc<TestPass>),
}

/// A model's pass over its run's test set, each picture's prediction kept: what the
/// mistakes view shows (the confusion matrix, and each cell's pictures).
#[derive(Debug)]
pub struct TestPass {
    /// The test pictures.
    pub test: Split,
    /// The class names.
    pub classes: Vec<String>,
    /// Each picture's predicted class.
    pub predicted: Vec<usize>,
    /// Each picture's probability of its predicted class.
    pub confidence: Vec<f32>,
    /// `counts[true][predicted]`.
    pub counts: Vec<Vec<u32>>,
}

/// Test pictures per forward pass of a [`TestPass`].
const PASS_ROWS: usize = 1000;

/// One request to the classifier thread.
struct Job {
    model: PathBuf,
    work: Work,
    reply: tokio::sync::oneshot::Sender<Result<Reply, ClassifyError>>,
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
                let answer = match (&device, &job.work) {
                    (Ok(device), Work::Classify(picture)) => {
                        classify(&mut models, &job.model, picture, device).map(Reply::Answer)
                    }
                    (Ok(device), Work::Program) => {
                        program(&mut models, &job.model, device).map(Reply::Program)
                    }
                    (Ok(device), Work::Mistakes { .. }) => {
                        test_pass(&mut models, &job.model, &job.work, device).map(Reply::Mistakes)
                    }
                    (Err(e), _) => Err(ClassifyError::Failed(e.to_string())),
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
        match self.ask(model, Work::Classify(picture)).await? {
            Reply::Answer(answer) => Ok(answer),
            _ => Err(ClassifyError::Failed("another answer for a picture".into())),
        }
    }

    /// The WebGPU program of the model in `model` (JSON of a
    /// [`crate::gpu::fused::WebProgram`]), made once per model file.
    pub async fn program(&self, model: PathBuf) -> Result<Arc<String>, ClassifyError> {
        match self.ask(model, Work::Program).await? {
            Reply::Program(program) => Ok(program),
            _ => Err(ClassifyError::Failed("another answer for a program".into())),
        }
    }

    /// The test pass of the model in `model` over the test set `request` and `sizes` name
    /// (its first `limit` pictures), made once per model file.
    pub async fn test_pass(
        &self,
        model: PathBuf,
        request: DataRequest,
        sizes: SplitSizes,
        limit: Option<usize>,
    ) -> Result<Arc<TestPass>, ClassifyError> {
        let work = Work::Mistakes {
            request,
            sizes,
            limit,
        };
        match self.ask(model, work).await? {
            Reply::Mistakes(pass) => Ok(pass),
            _ => Err(ClassifyError::Failed(
                "another answer for a test pass".into(),
            )),
        }
    }

    /// Queues `work` on `model` and waits for its reply.
    async fn ask(&self, model: PathBuf, work: Work) -> Result<Reply, ClassifyError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job { model, work, reply };
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

/// A model loaded, and its WebGPU program and test pass once asked for.
struct Model {
    loaded: Loaded,
    program: Option<Result<Arc<String>, String>>,
    mistakes: Option<Result<Arc<TestPass>, String>>,
}

/// Models kept loaded at most (with their programs and test passes); the least recently used
/// goes first.
const MAX_MODELS: usize = 8;

/// The models loaded so far, by file, with the stamp of the file each was read from and
/// when each was last used.
#[derive(Default)]
struct Models {
    loaded: HashMap<PathBuf, (super::catalog::Stamp, Model, u64)>,
    uses: u64,
}

impl Models {
    /// The model in `path`: loaded again when the file changed, the last one read when the
    /// new file cannot be read.
    fn get(
        &mut self,
        path: &Path,
        device: &burn::tensor::Device,
    ) -> Result<&mut Model, ClassifyError> {
        self.uses += 1;
        let stamp = super::catalog::stamp(&[path.to_path_buf()]);
        let fresh = self
            .loaded
            .get(path)
            .is_some_and(|(seen, _, _)| *seen == stamp);
        if !fresh {
            match interop::load_model(path, device) {
                Ok(loaded) => {
                    let model = Model {
                        loaded,
                        program: None,
                        mistakes: None,
                    };
                    if !self.loaded.contains_key(path) && self.loaded.len() >= MAX_MODELS {
                        let oldest = self
                            .loaded
                            .iter()
                            .min_by_key(|(_, (_, _, used))| *used)
                            .map(|(p, _)| p.clone());
                        if let Some(oldest) = oldest {
                            self.loaded.remove(&oldest);
                        }
                    }
                    self.loaded
                        .insert(path.to_path_buf(), (stamp, model, self.uses));
                }
                Err(e) if !self.loaded.contains_key(path) => {
                    return Err(ClassifyError::Model(e.to_string()));
                }
                Err(_) => {}
            }
        }
        let uses = self.uses;
        self.loaded
            .get_mut(path)
            .map(|(_, model, used)| {
                *used = uses;
                model
            })
            .ok_or_else(|| ClassifyError::Model(format!("{}: no model", path.display())))
    }
}

/// The WebGPU program of a model, made once.
fn program(
    models: &mut Models,
    model: &Path,
    device: &burn::tensor::Device,
) -> Result<Arc<String>, ClassifyError> {
    let model = models.get(model, device)?;
    let loaded = &model.loaded;
    let program = model.program.get_or_insert_with(|| {
        web_program(&loaded.model, loaded.data.shape)
            .and_then(|p| serde_json::to_string(&p).map_err(|e| e.to_string()))
            .map(Arc::new)
    });
    program
        .clone()
        .map_err(|why| ClassifyError::Model(format!("no WebGPU program for this model: {why}")))
}

/// A model's test pass, made once.
fn test_pass(
    models: &mut Models,
    model: &Path,
    work: &Work,
    device: &burn::tensor::Device,
) -> Result<Arc<TestPass>, ClassifyError> {
    let Work::Mistakes {
        request,
        sizes,
        limit,
    } = work
    else {
        return Err(ClassifyError::Failed("not a test pass".into()));
    };
    let model = models.get(model, device)?;
    let loaded = &model.loaded;
    let pass = model.mistakes.get_or_insert_with(|| {
        let data = crate::data::load(request, *sizes).map_err(|e| e.to_string())?;
        let test = match limit {
            Some(n) => data.test.slice(0..(*n).min(data.test.len())),
            None => data.test,
        };
        // Its own buffers: a window would keep the whole data set (a drawn split shares the
        // training images' buffer) alive for as long as the pass is kept.
        let test = Split::new(test.images().to_vec(), test.labels().to_vec(), test.shape)
            .map_err(|e| e.to_string())?;
        let classes = loaded.data.classes.len();
        let (mut predicted, mut confidence) = (Vec::new(), Vec::new());
        let pixels = test.shape.pixels();
        for start in (0..test.len()).step_by(PASS_ROWS) {
            let rows = PASS_ROWS.min(test.len() - start);
            let input: Vec<f32> = (start..start + rows)
                .flat_map(|i| test.image(i).iter().map(|&b| f32::from(b) / 255.0))
                .collect();
            debug_assert_eq!(input.len(), rows * pixels);
            let probabilities = class_probabilities(&loaded.model, input, rows, device)
                .map_err(|e| e.to_string())?;
            for row in probabilities.chunks(classes) {
                let (best, p) = row
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |a, (c, &p)| if p > a.1 { (c, p) } else { a });
                predicted.push(best);
                confidence.push(p);
            }
        }
        let mut counts = vec![vec![0u32; classes]; classes];
        for (&label, &p) in test.labels().iter().zip(&predicted) {
            if let Some(cell) = counts
                .get_mut(usize::from(label))
                .and_then(|r| r.get_mut(p))
            {
                *cell += 1;
            }
        }
        Ok(Arc::new(TestPass {
            classes: (0..classes).map(|c| loaded.data.name(c)).collect(),
            test,
            predicted,
            confidence,
            counts,
        }))
    });
    pass.clone()
        .map_err(|why| ClassifyError::Model(format!("the run's test set: {why}")))
}

/// Prepares and classifies one picture.
fn classify(
    models: &mut Models,
    model: &Path,
    picture: &[u8],
    device: &burn::tensor::Device,
) -> Result<Answer, ClassifyError> {
    let loaded = &models.get(model, device)?.loaded;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataInfo;
    use crate::model::{Architecture, Model as Network};

    /// At most [`MAX_MODELS`] stay loaded, the least recently used leaving first; a model
    /// file replaced by one that cannot be read keeps the model last read, and a file never
    /// read that cannot be read is an error.
    #[test]
    fn models_are_kept_within_bounds_and_as_last_read() {
        let tmp = tempfile::tempdir().unwrap();
        let device = burn::tensor::Device::flex();
        let info = DataInfo::mnist();
        let paths: Vec<PathBuf> = (0..=MAX_MODELS)
            .map(|i| {
                let path = tmp.path().join(format!("{i}.model"));
                let net = Network::new(Architecture::Mlp, &[4], &info, i as u64, &device).unwrap();
                crate::checkpoint::save_model(&net, &info, &path).unwrap();
                path
            })
            .collect();
        let mut models = Models::default();
        for path in &paths[..MAX_MODELS] {
            models.get(path, &device).unwrap();
        }
        // The first is used again: the second is now the least recently used.
        models.get(&paths[0], &device).unwrap();
        models.get(&paths[MAX_MODELS], &device).unwrap();
        assert_eq!(models.loaded.len(), MAX_MODELS);
        assert!(models.loaded.contains_key(&paths[0]));
        assert!(!models.loaded.contains_key(&paths[1]));
        std::fs::write(&paths[0], b"not a model any more").unwrap();
        assert!(
            models.get(&paths[0], &device).is_ok(),
            "the model as last read"
        );
        std::fs::write(&paths[1], b"never a model").unwrap();
        assert!(matches!(
            models.get(&paths[1], &device),
            Err(ClassifyError::Model(_))
        ));
    }
}
