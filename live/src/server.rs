//! The HTTP API and the web page (docs/LIVE.md has the contract).
//!
//! axum on a current-thread tokio runtime in a thread of its own: the job keeps its own
//! thread, and the server only reads the shared [`LiveGraph`] and forwards parameter changes.

use crate::assets;
use crate::state::{LiveEvent, LiveGraph, ParamsView};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flowgraph_config::parse_duration_ns;
use flowgraph_pipeline::{GroupBy, IpFilter, Params};
use flowgraph_schema::EventTime;
use futures_util::stream::{self, Stream};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

/// A parameter change for the job's thread, and where to send its answer (the event time the
/// change takes effect at, or why the job refused it).
#[derive(Debug)]
pub struct ParamsRequest {
    /// The complete new parameters.
    pub params: Params,
    /// The job's answer.
    pub reply: oneshot::Sender<Result<EventTime, String>>,
}

/// A question for the job's thread: how is this address named, and why.
#[derive(Debug)]
pub struct ExplainRequest {
    /// The address.
    pub addr: std::net::IpAddr,
    /// The job's answer.
    pub reply: oneshot::Sender<flowgraph_pipeline::NameExplanation>,
}

/// What the HTTP server asks of an in-process job.
#[derive(Debug)]
pub enum JobRequest {
    /// Change the parameters.
    Params(ParamsRequest),
    /// Explain an address's name.
    Explain(ExplainRequest),
}

/// Whether `PUT /api/params` can change the query (and `GET /api/explain` ask the job).
#[derive(Debug, Clone)]
pub enum ParamsControl {
    /// The job runs in this process and takes requests through this channel.
    Editable(crossbeam_channel::Sender<JobRequest>),
    /// The job runs elsewhere; the text says where its parameters are set.
    ReadOnly(String),
}

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Required as `Authorization: Bearer TOKEN` on the API and metrics when set.
    pub token: Option<String>,
    /// The job's longest allowed window (ns), to check a change before sending it.
    pub max_window_ns: u64,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Off loopback without a token.
    #[error(
        "--listen {0}: serving beyond this host needs a token (--token or FLOWGRAPH_UI_TOKEN), or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    /// An empty token would let anyone in.
    #[error("--token: must not be empty")]
    EmptyToken,
    /// Binding failed.
    #[error("--listen {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Where it listens (the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
struct App {
    live: Arc<LiveGraph>,
    control: ParamsControl,
    token: Option<Arc<str>>,
    max_window_ns: u64,
    metrics: PrometheusHandle,
}

/// Binds `config.listen` and serves the live view from a thread of its own.
pub fn start(
    live: Arc<LiveGraph>,
    control: ParamsControl,
    config: ServerConfig,
    metrics: PrometheusHandle,
) -> Result<Server, ServeError> {
    match &config.token {
        Some(token) if token.is_empty() => return Err(ServeError::EmptyToken),
        None if !config.listen.ip().is_loopback() => return Err(ServeError::TokenRequired(config.listen)),
        _ => {}
    }
    let bind = |source| ServeError::Bind { addr: config.listen, source };
    let listener = TcpListener::bind(config.listen).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let app = App { live, control, token: config.token.map(Arc::from), max_window_ns: config.max_window_ns, metrics };
    let router = router(app);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(bind)?;
    let thread = std::thread::Builder::new()
        .name("flowgraph-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return tracing::error!(%addr, error = %e, "live view: listener setup failed"),
                };
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(%addr, error = %e, "live view: server failed");
                }
            })
        })
        .map_err(bind)?;
    Ok(Server { addr, shutdown: Some(shutdown), thread: Some(thread) })
}

fn router(app: App) -> Router {
    let protected = Router::new()
        .route("/api/graph", get(graph))
        .route("/api/params", get(get_params).put(put_params))
        .route("/api/stream", get(stream_events))
        .route("/api/explain/{addr}", get(explain))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", assets::INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", assets::APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", assets::APP_CSS) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// A JSON error that names the field (or header, or "body") it is about.
fn error(status: StatusCode, field: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    metrics::counter!("flowgraph_ui_errors_total", "status" => status.as_u16().to_string()).increment(1);
    (status, Json(json!({ "error": message, "field": field }))).into_response()
}

async fn require_token(State(app): State<App>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else { return next.run(request).await };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq::constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => error(StatusCode::UNAUTHORIZED, "authorization", "authorization: the bearer token is wrong"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "authorization",
            "authorization: this server needs `Authorization: Bearer TOKEN` (open the page as /#token=TOKEN)",
        ),
    }
}

async fn graph(State(app): State<App>) -> Response {
    json_text(app.live.snapshot_json())
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn params_document(app: &App, params: &Params) -> serde_json::Value {
    let view = ParamsView::from(params);
    json!({
        "ips": view.ips,
        "window": view.window,
        "group_by": view.group_by,
        "group_by_choices": GroupBy::ALL.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "editable": matches!(app.control, ParamsControl::Editable(_)),
    })
}

async fn get_params(State(app): State<App>) -> Response {
    Json(params_document(&app, &app.live.params())).into_response()
}

/// `GET /api/explain/ADDR`: which source names the address, since when, and the others.
async fn explain(State(app): State<App>, axum::extract::Path(addr): axum::extract::Path<String>) -> Response {
    let addr: std::net::IpAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(_) => return error(StatusCode::BAD_REQUEST, "addr", format!("addr: {addr:?} is not an IP address")),
    };
    let sender = match &app.control {
        ParamsControl::Editable(sender) => sender.clone(),
        ParamsControl::ReadOnly(why) => {
            return error(StatusCode::CONFLICT, "explain", format!("explain: the job is not in this process ({why})"))
        }
    };
    let (reply, answer) = oneshot::channel();
    if sender.send(JobRequest::Explain(ExplainRequest { addr, reply })).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "explain", "explain: the job has stopped");
    }
    match answer.await {
        Ok(explanation) => Json(explanation).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "explain", "explain: the job has stopped"),
    }
}

async fn put_params(State(app): State<App>, body: Bytes) -> Response {
    let sender = match &app.control {
        ParamsControl::Editable(sender) => sender.clone(),
        ParamsControl::ReadOnly(why) => return error(StatusCode::CONFLICT, "params", format!("params: {why}")),
    };
    let params = match parse_change(&app.live.params(), &body, app.max_window_ns) {
        Ok(params) => params,
        Err((field, message)) => return error(StatusCode::BAD_REQUEST, &field, message),
    };
    let (reply, answer) = oneshot::channel();
    if sender.send(JobRequest::Params(ParamsRequest { params: params.clone(), reply })).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "params", "params: the job has stopped");
    }
    match answer.await {
        Ok(Ok(effective_from)) => {
            let mut document = params_document(&app, &params);
            document["effective_from"] = json!(effective_from);
            Json(document).into_response()
        }
        Ok(Err(message)) => {
            let field = message.split(':').next().unwrap_or("params").to_string();
            error(StatusCode::BAD_REQUEST, &field, message)
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "params", "params: the job has stopped"),
    }
}

/// The parameters after applying a `PUT /api/params` body to `current`; errors name the field.
pub fn parse_change(current: &Params, body: &[u8], max_window_ns: u64) -> Result<Params, (String, String)> {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        ("body".to_string(), format!("body: not a JSON object such as {{\"group_by\":\"service\"}}: {e}"))
    })?;
    let mut params = current.clone();
    for (field, value) in fields {
        let bad = |message: String| (field.clone(), format!("{field}: {message}"));
        let Some(text) = value.as_str() else {
            return Err(bad(format!("must be a string, not {value}")));
        };
        match field.as_str() {
            "ips" => params.ips = IpFilter::parse_list(text).map_err(bad)?,
            "window" => params.window_ns = parse_duration_ns("window", text).map_err(|e| bad(e.message))?,
            "group_by" => params.group_by = text.parse().map_err(bad)?,
            _ => return Err(bad("unknown parameter; the parameters are ips, window and group_by".into())),
        }
    }
    params.validate(max_window_ns).map_err(|message| {
        let field = message.split(':').next().unwrap_or("params").to_string();
        (field, message)
    })?;
    Ok(params)
}

async fn stream_events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (snapshot, receiver) = app.live.subscribe();
    metrics::counter!("flowgraph_ui_streams_opened_total").increment(1);
    let first = Some(Event::default().event("snapshot").data(snapshot));
    let events = stream::unfold((app.live, first, receiver), |(live, first, mut receiver)| async move {
        if let Some(event) = first {
            return Some((Ok(event), (live, None, receiver)));
        }
        let event = match receiver.recv().await {
            Ok(LiveEvent::Delta(delta)) => Event::default().event("delta").data(&*delta),
            Ok(LiveEvent::Params(params)) => Event::default().event("params").data(&*params),
            Ok(LiveEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind (or the graph was replaced): start again from a snapshot, which
                // loses nothing since the client replaces its whole state with it.
                metrics::counter!("flowgraph_ui_stream_resyncs_total").increment(1);
                let (snapshot, fresh) = live.subscribe();
                receiver = fresh;
                Event::default().event("snapshot").data(snapshot)
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (live, None, receiver)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive"))
}

async fn readyz(State(app): State<App>) -> Response {
    match app.live.readiness() {
        Ok(()) => "ready".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    metrics::gauge!("flowgraph_ui_streams").set(app.live.streams() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}
