//! `trainer serve`: one local page over the runs and sweeps under some directories — the runs
//! table, live curves — served from the binary over HTTP (axum on tokio). Read-only: nothing
//! under the directories is written, created or locked ([`catalog`] reads them).
//!
//! Safety: loopback unless told otherwise; with a token, every request must carry it
//! (`?token=` or `Authorization: Bearer`); on loopback, a request must name a loopback host
//! (a web page elsewhere cannot reach the server through DNS rebinding); run ids that leave a
//! directory are refused; at most [`MAX_STREAMS`] live streams at once.

pub mod catalog;
pub mod classify;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::interrupts::Interrupts;
use catalog::{Catalog, LookupError};
use classify::{Classifier, ClassifyError};

/// Live streams (a page's curves) served at once; more are refused with 503.
pub const MAX_STREAMS: usize = 64;

/// The largest picture the page may post (a drawing pad's PNG is a few KiB); larger: 413.
pub const MAX_PICTURE_BYTES: usize = 1 << 20;

/// How often a watched run's files are looked at: a new epoch reaches the page within this
/// much of its history line (and the page's own drawing).
const POLL: Duration = Duration::from_millis(250);

/// What `trainer serve` is to do.
#[derive(Debug, Clone)]
pub struct ServePlan {
    /// The directories whose runs and sweeps are shown.
    pub roots: Vec<PathBuf>,
    /// Where to listen.
    pub addr: SocketAddr,
    /// The token every request must carry, if any.
    pub token: Option<String>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be listened on.
    #[error("--host {}/--port {}: cannot listen there: {source}", .addr.ip(), .addr.port())]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or the connection loop failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What every request handler shares.
struct App {
    catalog: Catalog,
    token: Option<String>,
    loopback: bool,
    streams: Arc<Semaphore>,
    classifier: Classifier,
    interrupts: Interrupts,
}

/// Serves until interrupted; prints `serving http://ADDR/` on stdout once listening (with
/// the port the system gave for `--port 0`).
pub fn serve(plan: &ServePlan, interrupts: &Interrupts) -> Result<String, ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(plan.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: plan.addr,
                source,
            })?;
        let addr = listener.local_addr()?;
        let loopback = addr.ip().is_loopback();
        if !loopback {
            warn!(
                "listening on {} beyond this machine: anyone who can reach it sees the runs{}",
                addr.ip(),
                if plan.token.is_some() {
                    " (with the token)"
                } else {
                    "; set --token to require one"
                }
            );
        }
        let app = Arc::new(App {
            catalog: Catalog::new(&plan.roots),
            token: plan.token.clone(),
            loopback,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            classifier: Classifier::start(),
            interrupts: interrupts.clone(),
        });
        let roots: Vec<String> = plan.roots.iter().map(|r| r.display().to_string()).collect();
        info!(dirs = %roots.join(", "), "serving the runs under");
        announce(&format!("serving http://{addr}/"));
        let stop = interrupts.clone();
        axum::serve(listener, router(app))
            .with_graceful_shutdown(async move {
                while !stop.requested() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await?;
        Ok("stopped serving".to_string())
    })
}

/// The line a user (or a test) reads the address from, flushed at once.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout does not stop the server: it is also in the log.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    info!("{line}");
}

/// The routes, behind the guard.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/runs", get(runs))
        .route("/api/run", get(run))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .route("/api/program", get(program))
        .route("/api/mistakes", get(mistakes))
        .route(
            "/api/classify",
            post(classify).layer(DefaultBodyLimit::max(MAX_PICTURE_BYTES)),
        )
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// A refusal, as JSON `{"error": …}` with its status.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<LookupError> for Refusal {
    fn from(e: LookupError) -> Self {
        let status = match e {
            LookupError::BadId(_) => StatusCode::BAD_REQUEST,
            LookupError::NoRun(_) => StatusCode::NOT_FOUND,
        };
        Refusal(status, e.to_string())
    }
}

/// Checks the host a request names (on loopback) and the token (when set).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if app.loopback && !names_loopback(req.headers()) {
        return Refusal(
            StatusCode::FORBIDDEN,
            "the request's Host is not this machine's loopback address".into(),
        )
        .into_response();
    }
    if let Some(token) = &app.token {
        let query: HashMap<String, String> = Query::try_from_uri(req.uri())
            .map(|Query(q)| q)
            .unwrap_or_default();
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = query.get("token").map(String::as_str).or(bearer);
        if !given.is_some_and(|g| same_secret(g, token)) {
            return Refusal(
                StatusCode::UNAUTHORIZED,
                "this server needs its token: open the address it printed with ?token=…".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Whether the Host header names a loopback address (`localhost`, `127.x.y.z`, `[::1]`).
fn names_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // Without the port: `[::1]:8080`, `localhost:8080`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The page: HTML, style and script in one file, nothing fetched from elsewhere.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

/// Runs blocking file reads off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `GET /api/runs`: every run and sweep.
async fn runs(State(app): State<Arc<App>>) -> Response {
    let listing = blocking(move || app.catalog.list()).await;
    axum::Json(listing).into_response()
}

/// The `run` a request names.
#[derive(Debug, Deserialize)]
struct RunQuery {
    run: String,
    #[serde(default)]
    from: usize,
}

/// `GET /api/run?run=ID`: one run's summary.
async fn run(State(app): State<Arc<App>>, Query(q): Query<RunQuery>) -> Response {
    match blocking(move || app.catalog.summary_of(&q.run)).await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(e) => Refusal::from(e).into_response(),
    }
}

/// `GET /api/history?run=ID`: one run's epochs so far.
async fn history(State(app): State<Arc<App>>, Query(q): Query<RunQuery>) -> Response {
    let result = blocking(move || {
        let dir = app.catalog.resolve(&q.run)?;
        Ok::<_, LookupError>(app.catalog.history(&dir))
    })
    .await;
    match result {
        Ok(history) => axum::Json(history).into_response(),
        Err(e) => Refusal::from(e).into_response(),
    }
}

/// `GET /api/events?run=ID&from=N`: a server-sent event `epoch` for each epoch of the run
/// from the N-th (0-based; `Last-Event-ID` on a reconnection) as its history gains it, and
/// `state` with the run's summary whenever its state or test result changes.
async fn events(
    State(app): State<Arc<App>>,
    Query(q): Query<RunQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} live streams are open already"),
        )
        .into_response();
    };
    let id = q.run.clone();
    let resolved = {
        let app = app.clone();
        let id = id.clone();
        blocking(move || app.catalog.resolve(&id)).await
    };
    let dir = match resolved {
        Ok(dir) => dir,
        Err(e) => return Refusal::from(e).into_response(),
    };
    // An epoch's event id is its number: a reconnecting page asks for the ones after it.
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(q.from, |seen| seen.max(q.from));
    let stream = watch(app, id, dir, from, permit);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The model file the run `id` classifies with.
async fn model_of(app: &Arc<App>, id: String) -> Result<PathBuf, Refusal> {
    let app = app.clone();
    let model = blocking(move || {
        let dir = app.catalog.resolve(&id)?;
        Ok::<_, LookupError>(catalog::model_of(&crate::run::RunDir::at(&dir)))
    })
    .await;
    match model {
        Ok(Some(model)) => Ok(model),
        Ok(None) => Err(Refusal(
            StatusCode::CONFLICT,
            "the run has no model yet".into(),
        )),
        Err(e) => Err(Refusal::from(e)),
    }
}

/// A classifier's failure as a refusal.
impl From<ClassifyError> for Refusal {
    fn from(e: ClassifyError) -> Self {
        let status = match e {
            ClassifyError::Picture(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ClassifyError::Model(_) => StatusCode::CONFLICT,
            ClassifyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ClassifyError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal(status, e.to_string())
    }
}

/// `GET /api/program?run=ID`: the run's model as WebGPU kernels and buffers (see
/// [`crate::gpu::fused::WebProgram`]); 409 when the fused kernels do not take the model.
async fn program(State(app): State<Arc<App>>, Query(q): Query<RunQuery>) -> Response {
    let model = match model_of(&app, q.run).await {
        Ok(model) => model,
        Err(refusal) => return refusal.into_response(),
    };
    match app.classifier.program(model).await {
        Ok(json) => (
            [(header::CONTENT_TYPE, "application/json")],
            json.as_str().to_owned(),
        )
            .into_response(),
        Err(e) => Refusal::from(e).into_response(),
    }
}

/// Pictures of one confusion cell answered at most.
const CELL_PICTURES: usize = 60;

/// A run, and optionally one cell of its confusion matrix.
#[derive(Debug, Deserialize)]
struct MistakesQuery {
    run: String,
    #[serde(rename = "true")]
    truth: Option<usize>,
    predicted: Option<usize>,
}

/// `GET /api/mistakes?run=ID`: the confusion matrix of the run's model over the run's test
/// set; with `&true=T&predicted=P`, that cell's test pictures, most confident first (at most
/// [`CELL_PICTURES`]). The pass is made once per model file.
async fn mistakes(State(app): State<Arc<App>>, Query(q): Query<MistakesQuery>) -> Response {
    let found = {
        let (app, id) = (app.clone(), q.run.clone());
        blocking(move || {
            let dir = app.catalog.resolve(&id).map_err(Refusal::from)?;
            let run = crate::run::RunDir::at(&dir);
            let config = run
                .read_config()
                .map_err(|e| Refusal(StatusCode::CONFLICT, e.to_string()))?;
            let model = catalog::model_of(&run)
                .ok_or_else(|| Refusal(StatusCode::CONFLICT, "the run has no model yet".into()))?;
            Ok::<_, Refusal>((model, config))
        })
        .await
    };
    let (model, config) = match found {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let recorded = config.data.as_ref();
    let request = crate::data::DataRequest {
        path: config.data_dir.clone(),
        format: recorded.map(|d| d.format),
        image_size: recorded.and_then(|d| d.image_size),
        channels: recorded.and_then(|d| d.channels),
        skip_bad: recorded.is_some_and(|d| d.skip_bad),
    };
    let sizes = crate::data::SplitSizes {
        valid: Some(config.recipe.valid_size),
        test: config.recipe.test_size,
    };
    let pass = match app
        .classifier
        .test_pass(model.clone(), request, sizes, config.recipe.test_limit)
        .await
    {
        Ok(pass) => pass,
        Err(e) => return Refusal::from(e).into_response(),
    };
    let shape = pass.test.shape;
    let Some((truth, predicted)) = q.truth.zip(q.predicted) else {
        return axum::Json(serde_json::json!({
            "model": model.file_name().map(|n| n.to_string_lossy().into_owned()),
            "classes": pass.classes,
            "counts": pass.counts,
            "images": pass.test.len(),
            "shape": [shape.channels, shape.height, shape.width],
        }))
        .into_response();
    };
    let mut cell: Vec<usize> = (0..pass.test.len())
        .filter(|&i| usize::from(pass.test.labels()[i]) == truth && pass.predicted[i] == predicted)
        .collect();
    cell.sort_by(|&a, &b| pass.confidence[b].total_cmp(&pass.confidence[a]));
    let total = cell.len();
    let pictures: Vec<_> = cell
        .into_iter()
        .take(CELL_PICTURES)
        .map(|i| {
            serde_json::json!({
                "index": i,
                "label": pass.test.labels()[i],
                "predicted": pass.predicted[i],
                "probability": pass.confidence[i],
                "pixels": pass.test.image(i),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "true": truth,
        "predicted": predicted,
        "total": total,
        "shape": [shape.channels, shape.height, shape.width],
        "pictures": pictures,
    }))
    .into_response()
}

/// `POST /api/classify?run=ID`, an image file as the body: the picture as the run's model
/// takes it and its class probabilities, by the server's classifier.
async fn classify(State(app): State<Arc<App>>, Query(q): Query<RunQuery>, body: Bytes) -> Response {
    let model = match model_of(&app, q.run).await {
        Ok(model) => model,
        Err(refusal) => return refusal.into_response(),
    };
    match app.classifier.classify(model, body.to_vec()).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => Refusal::from(e).into_response(),
    }
}

/// What a watch has sent so far.
struct Watch {
    app: Arc<App>,
    id: String,
    dir: PathBuf,
    next: usize,
    last: Option<String>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The event stream of one run: new epochs, then state changes, polling its files; ends when
/// the server is stopped.
fn watch(
    app: Arc<App>,
    id: String,
    dir: PathBuf,
    from: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = Watch {
        app,
        id,
        dir,
        next: from,
        last: None,
        _permit: permit,
    };
    futures_util::stream::unfold(start, |mut w| async move {
        loop {
            if w.app.interrupts.requested() {
                return None;
            }
            let (app, dir, id) = (w.app.clone(), w.dir.clone(), w.id.clone());
            let (history, summary) =
                blocking(move || (app.catalog.history(&dir), app.catalog.summary_of(&id).ok()))
                    .await;
            if let Some(record) = history.get(w.next) {
                w.next += 1;
                let event = Event::default()
                    .event("epoch")
                    .id(w.next.to_string())
                    .json_data(record)
                    .unwrap_or_default();
                return Some((Ok(event), w));
            }
            // The state, sent when it changes (after the epochs that led to it).
            if let Some(summary) = summary
                && let Ok(text) = serde_json::to_string(&summary)
                && w.last.as_ref() != Some(&text)
            {
                w.last = Some(text.clone());
                let event = Event::default().event("state").data(text);
                return Some((Ok(event), w));
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only loopback names pass the host check.
    #[test]
    fn the_host_must_be_loopback() {
        let check = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            names_loopback(&headers)
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "127.1.2.3",
        ] {
            assert!(check(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1",
            "[::2]:80",
            "localhost.evil:80",
            "",
        ] {
            assert!(!check(bad), "{bad}");
        }
        assert!(!names_loopback(&HeaderMap::new()), "no Host at all");
    }

    /// Tokens match exactly.
    #[test]
    fn tokens_match_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }
}
