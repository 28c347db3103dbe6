//! A stand-in for the Kubernetes API server (no cluster exists here): an axum server on
//! loopback that replays the recorded-shape responses of `tests/fixtures/`.
//!
//! Per resource (pods, services, endpointslices, nodes) it serves, in order:
//! * list requests (`GET /api/v1/pods?limit=500`): `pods.list.1.json`, then `pods.list.2.json`,
//!   ... (the last one again once they run out);
//! * watch requests (`?watch=true&resourceVersion=RV`): `pods.watch.1.jsonl`, `.2.jsonl`, ...,
//!   newline-delimited watch events written as the API server streams them. A watch response
//!   that is not the last one ends after its events (as the API server's does at
//!   `timeoutSeconds`), so the client resumes from the last resourceVersion it saw; the last
//!   one stays open, as a live watch does.
//!
//! Every request is logged, so tests can assert that a 410 Gone really caused a relist.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The resources served, by API path and fixture file prefix.
pub const RESOURCES: [(&str, &str); 4] = [
    ("/api/v1/pods", "pods"),
    ("/api/v1/services", "services"),
    ("/apis/discovery.k8s.io/v1/endpointslices", "endpointslices"),
    ("/api/v1/nodes", "nodes"),
];

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `pods`, `services`, ...
    pub resource: String,
    /// `list` or `watch`.
    pub verb: &'static str,
    /// The `resourceVersion` query parameter, '' when absent.
    pub resource_version: String,
}

#[derive(Debug, Default)]
struct Script {
    lists: Vec<String>,
    watches: Vec<String>,
    lists_served: usize,
    watches_served: usize,
}

#[derive(Debug, Default)]
struct Shared {
    scripts: BTreeMap<String, Script>,
    log: Vec<Request>,
}

/// A running replay server.
#[derive(Debug, Clone)]
pub struct ApiServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl ApiServer {
    /// Loads `dir`'s fixtures and serves them on an ephemeral loopback port (on the current
    /// tokio runtime).
    pub async fn start(dir: &Path) -> ApiServer {
        let mut shared = Shared::default();
        for (_, resource) in RESOURCES {
            let script = Script {
                lists: numbered(dir, resource, "list", "json"),
                watches: numbered(dir, resource, "watch", "jsonl"),
                ..Default::default()
            };
            assert!(!script.lists.is_empty(), "{}: no {resource}.list.1.json", dir.display());
            shared.scripts.insert(resource.to_string(), script);
        }
        let shared = Arc::new(Mutex::new(shared));
        let mut router = Router::new();
        for (path, resource) in RESOURCES {
            router =
                router.route(path, get(move |state: State<Arc<Mutex<Shared>>>, uri: Uri| serve(state, uri, resource)));
        }
        let router = router.with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("the listener's address"));
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the replay API server failed");
        });
        ApiServer { url, shared }
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Request> {
        self.shared.lock().unwrap().log.clone()
    }

    /// A kube configuration pointing at this server (plain HTTP, no credentials).
    pub fn kube_config(&self) -> kube::Config {
        kube::Config::new(self.url.parse().expect("the server's URL is a URI"))
    }
}

/// `dir/RESOURCE.KIND.1.EXT`, `.2.`, ... as long as they exist.
fn numbered(dir: &Path, resource: &str, kind: &str, ext: &str) -> Vec<String> {
    (1..)
        .map(|n| dir.join(format!("{resource}.{kind}.{n}.{ext}")))
        .take_while(|p| p.exists())
        .map(|p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())))
        .collect()
}

async fn serve(State(shared): State<Arc<Mutex<Shared>>>, uri: Uri, resource: &'static str) -> Response {
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let mut shared = shared.lock().unwrap();
    shared.log.push(Request {
        resource: resource.to_string(),
        verb: if watch { "watch" } else { "list" },
        resource_version: query.get("resourceVersion").cloned().unwrap_or_default(),
    });
    let script = shared.scripts.get_mut(resource).expect("every route has a script");
    let json = |body: Body| {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("a valid response")
    };
    if !watch {
        let n = script.lists_served.min(script.lists.len() - 1);
        script.lists_served += 1;
        return json(Body::from(script.lists[n].clone()));
    }
    let n = script.watches_served;
    script.watches_served += 1;
    let lines: Vec<Result<Bytes, std::io::Error>> = script
        .watches
        .get(n)
        .map(|text| text.lines().map(|l| Ok(Bytes::from(format!("{l}\n")))).collect())
        .unwrap_or_default();
    if n + 1 < script.watches.len() {
        // Not the last: the stream ends, the client resumes from its last resourceVersion.
        json(Body::from_stream(stream::iter(lines)))
    } else {
        // The last (or past the last): a live watch with nothing more to say stays open.
        json(Body::from_stream(stream::iter(lines).chain(stream::pending())))
    }
}
