//! A fake Kubernetes API server speaking the real list/watch protocol (JSON
//! lists with `metadata.resourceVersion`, chunked watch streams of
//! ADDED/MODIFIED/DELETED/BOOKMARK/ERROR lines, server-side apply as PATCH,
//! the `status` subresource), shared by the `kubernetes` datastore tests.
//! Tests mutate it with or without telling watchers, expire history (`410
//! Gone`), and stop and restart it on the same port (dropped connections).

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use porin_core::state::{Snapshot, StateStore};

pub type Body = BoxBody<Bytes, Infallible>;

pub const PODS: &str = "/api/v1/pods";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const ENDPOINTS: &str = "/apis/cilium.io/v2/ciliumendpoints";
/// How long a test waits for the store to converge.
pub const WAIT: Duration = Duration::from_secs(20);

/// Objects of one collection, keyed by (namespace, name); "" for cluster scope.
pub type Collection = BTreeMap<(String, String), Value>;

pub struct Watcher {
    collection: String,
    events: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
pub struct ApiState {
    pub resource_version: u64,
    pub collections: BTreeMap<String, Collection>,
    /// Events that watchers may replay: (resourceVersion, collection, line).
    history: Vec<(u64, String, Bytes)>,
    /// Watches older than this get `410 Gone`.
    oldest_watchable: BTreeMap<String, u64>,
    watchers: Vec<Watcher>,
    lists: BTreeMap<String, usize>,
}

/// A fake API server: tests mutate it with or without telling watchers.
#[derive(Clone, Default)]
pub struct FakeApi {
    pub state: Arc<Mutex<ApiState>>,
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    let field = |f: &str| meta[f].as_str().unwrap_or_default().to_owned();
    (field("namespace"), field("name"))
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn gone(resource_version: &str) -> Bytes {
    line(
        "ERROR",
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "Expired", "code": 410,
            "message": format!("too old resource version: {resource_version}"),
        }),
    )
}

impl FakeApi {
    pub fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().expect("fake api lock")
    }

    /// Adds or replaces an object; `notify` sends the event to watchers.
    pub fn upsert(&self, collection: &str, mut object: Value, notify: bool) -> Value {
        let mut state = self.state();
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&object);
        object["metadata"]["uid"] = json!(format!("uid-{}-{}", key.0, key.1));
        let previous = state
            .collections
            .entry(collection.to_owned())
            .or_default()
            .insert(key, object.clone());
        if notify {
            let kind = if previous.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            Self::notify(&mut state, collection, rv, line(kind, &object));
        }
        object
    }

    /// Removes an object; `notify` sends DELETED to watchers.
    pub fn remove(
        &self,
        collection: &str,
        namespace: &str,
        name: &str,
        notify: bool,
    ) -> Option<Value> {
        let mut state = self.state();
        state.resource_version += 1;
        let rv = state.resource_version;
        let mut object = state
            .collections
            .get_mut(collection)?
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if notify {
            Self::notify(&mut state, collection, rv, line("DELETED", &object));
        }
        Some(object)
    }

    /// Compacts history: open watches get a 410 ERROR event and end, and
    /// watches from an older resourceVersion are refused with 410.
    pub fn expire_watches(&self, collection: &str) {
        let mut state = self.state();
        let rv = state.resource_version;
        state.oldest_watchable.insert(collection.to_owned(), rv);
        state.history.retain(|(_, c, _)| c != collection);
        state.watchers.retain(|w| {
            if w.collection == collection {
                let _ = w.events.send(gone("0"));
                false
            } else {
                true
            }
        });
    }

    pub fn lists(&self, collection: &str) -> usize {
        self.state().lists.get(collection).copied().unwrap_or(0)
    }

    fn notify(state: &mut ApiState, collection: &str, rv: u64, event: Bytes) {
        state
            .history
            .push((rv, collection.to_owned(), event.clone()));
        state
            .watchers
            .retain(|w| w.collection != collection || w.events.send(event.clone()).is_ok());
    }

    fn list(&self, collection: &str) -> Value {
        self.list_in(collection, None)
    }

    /// The collection's objects, only those of `namespace` when given (a namespaced list).
    fn list_in(&self, collection: &str, namespace: Option<&str>) -> Value {
        let mut state = self.state();
        *state.lists.entry(collection.to_owned()).or_default() += 1;
        let items: Vec<Value> = state
            .collections
            .get(collection)
            .map(|c| {
                c.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "apiVersion": "v1", "kind": "List",
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        })
    }

    fn watch(&self, collection: &str, from: &str) -> Body {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state();
        let from_rv: u64 = from.parse().unwrap_or(0);
        let oldest = state.oldest_watchable.get(collection).copied().unwrap_or(0);
        if from_rv < oldest {
            let _ = tx.send(gone(from));
        } else {
            for (rv, c, event) in &state.history {
                if *rv > from_rv && c == collection {
                    let _ = tx.send(event.clone());
                }
            }
            let bookmark = json!({
                "kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": state.resource_version.to_string()},
            });
            let _ = tx.send(line("BOOKMARK", &bookmark));
            state.watchers.push(Watcher {
                collection: collection.to_owned(),
                events: tx,
            });
        }
        let frames = UnboundedReceiverStream::new(rx).map(|b| Ok(Frame::data(b)));
        StreamBody::new(frames).boxed()
    }
}

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found() -> Response<Body> {
    full(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// A parsed request path: collection, namespace ("" for cluster scope), the
/// object's name, and whether it addresses the `status` subresource.
struct Route {
    collection: String,
    namespace: String,
    name: Option<String>,
    status: bool,
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (rest, status) = match rest {
        [head @ .., "status"] if head.len() >= 2 => (head, true),
        _ => (rest, false),
    };
    let (namespace, plural, name) = match rest {
        [plural] => ("", *plural, None),
        [plural, name] => ("", *plural, Some(*name)),
        ["namespaces", ns, plural] => (*ns, *plural, None),
        ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
        _ => return None,
    };
    Some(Route {
        collection: format!("{prefix}/{plural}"),
        namespace: namespace.to_owned(),
        name: name.map(str::to_owned),
        status,
    })
}

impl FakeApi {
    /// Writes the `status` of an existing object, as the status subresource does.
    pub fn set_status(
        &self,
        collection: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Option<Value> {
        let mut object = self
            .state()
            .collections
            .get(collection)?
            .get(&(namespace.to_owned(), name.to_owned()))?
            .clone();
        object["status"] = status;
        Some(self.upsert(collection, object, true))
    }

    /// The stored object, if any.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .collections
            .get(collection)?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

async fn handle(api: FakeApi, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let method = request.method().clone();
    let Some(route) = route(request.uri().path()) else {
        return Ok(not_found());
    };
    let collection = route.collection.as_str();
    let response = match (method, route.name.clone()) {
        (Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            let from = query.get("resourceVersion").cloned().unwrap_or_default();
            let mut response = Response::new(api.watch(collection, &from));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        (Method::GET, None) => full(
            StatusCode::OK,
            &api.list_in(
                collection,
                Some(route.namespace.as_str()).filter(|n| !n.is_empty()),
            ),
        ),
        (Method::GET, Some(name)) => match api.get(collection, &route.namespace, &name) {
            Some(object) => full(StatusCode::OK, &object),
            None => not_found(),
        },
        (Method::PATCH, Some(name)) => {
            let Ok(body) = request.into_body().collect().await else {
                return Ok(full(StatusCode::BAD_REQUEST, &json!({})));
            };
            let Ok(object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
                return Ok(full(StatusCode::BAD_REQUEST, &json!({})));
            };
            if route.status {
                match api.set_status(
                    collection,
                    &route.namespace,
                    &name,
                    object["status"].clone(),
                ) {
                    Some(object) => full(StatusCode::OK, &object),
                    None => not_found(),
                }
            } else {
                // The main resource ignores `status` when it has a subresource;
                // keep what is stored, as the API server does.
                let mut object = object;
                if let Some(stored) = api.get(collection, &route.namespace, &name)
                    && collection.ends_with("/ciliumnodes")
                {
                    object["status"] = stored["status"].clone();
                }
                full(StatusCode::OK, &api.upsert(collection, object, true))
            }
        }
        (Method::DELETE, Some(name)) => match api.remove(collection, &route.namespace, &name, true)
        {
            Some(object) => full(StatusCode::OK, &object),
            None => not_found(),
        },
        _ => not_found(),
    };
    Ok(response)
}

/// A running fake API server; `stop` closes the listener and every open
/// connection (watches end mid-stream, like an API server restart).
pub struct Server {
    pub port: u16,
    stop: CancellationToken,
}

impl Server {
    /// Serves `api` on `port` (0: any free port).
    pub async fn start(api: FakeApi, port: u16) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { break };
                let api = api.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(api.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Dropping the set aborts every connection.
            drop(connections);
        });
        Server { port, stop }
    }

    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        let url: hyper::Uri = format!("http://127.0.0.1:{}", self.port)
            .parse()
            .expect("url");
        kube::Client::try_from(kube::Config::new(url)).expect("client")
    }

    /// Stops serving and drops every connection. Watchers of `api` are
    /// forgotten too, so their channels close.
    pub fn stop(&self, api: &FakeApi) {
        self.stop.cancel();
        api.state().watchers.clear();
    }
}

/// Waits until the store satisfies `f`; panics naming `what` after [`WAIT`].
pub async fn wait_for(
    store: &StateStore,
    what: &str,
    f: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    tokio::time::timeout(WAIT, store.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", store.snapshot()))
}

/// Serves `api` on a free port until the test ends.
pub async fn serve(api: FakeApi) -> u16 {
    let server = Server::start(api, 0).await;
    let port = server.port;
    std::mem::forget(server);
    port
}
