//! The `kubernetes` datastore against a local fake API server speaking the
//! real list/watch protocol (JSON lists with `metadata.resourceVersion`,
//! chunked watch streams of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR lines).

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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use porin_core::state::cilium_types::{CiliumEndpointStatus, EndpointIdentity};
use porin_core::state::{
    CiliumEndpoint, Datastore, Kind, KubernetesDatastore, ObjectKey, Snapshot, StateStore,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, Infallible>;

const PODS: &str = "/api/v1/pods";
const NAMESPACES: &str = "/api/v1/namespaces";
const ENDPOINTS: &str = "/apis/cilium.io/v2/ciliumendpoints";
const WAIT: Duration = Duration::from_secs(20);

/// Objects of one collection, keyed by (namespace, name); "" for cluster scope.
type Collection = BTreeMap<(String, String), Value>;

struct Watcher {
    collection: String,
    events: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct ApiState {
    resource_version: u64,
    collections: BTreeMap<String, Collection>,
    /// Events that watchers may replay: (resourceVersion, collection, line).
    history: Vec<(u64, String, Bytes)>,
    /// Watches older than this get `410 Gone`.
    oldest_watchable: BTreeMap<String, u64>,
    watchers: Vec<Watcher>,
    lists: BTreeMap<String, usize>,
}

/// A fake API server: tests mutate it with or without telling watchers.
#[derive(Clone, Default)]
struct FakeApi {
    state: Arc<Mutex<ApiState>>,
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
    fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().expect("fake api lock")
    }

    /// Adds or replaces an object; `notify` sends the event to watchers.
    fn upsert(&self, collection: &str, mut object: Value, notify: bool) -> Value {
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
    fn remove(&self, collection: &str, namespace: &str, name: &str, notify: bool) -> Option<Value> {
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
    fn expire_watches(&self, collection: &str) {
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

    fn lists(&self, collection: &str) -> usize {
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
        let mut state = self.state();
        *state.lists.entry(collection.to_owned()).or_default() += 1;
        let items: Vec<Value> = state
            .collections
            .get(collection)
            .map(|c| c.values().cloned().collect())
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

/// Splits a request path into (collection path, namespace, name).
fn route(path: &str) -> Option<(String, String, Option<String>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    match rest {
        [plural] => Some((format!("{prefix}/{plural}"), String::new(), None)),
        [plural, name] => Some((
            format!("{prefix}/{plural}"),
            String::new(),
            Some((*name).to_owned()),
        )),
        ["namespaces", ns, plural, name] => Some((
            format!("{prefix}/{plural}"),
            (*ns).to_owned(),
            Some((*name).to_owned()),
        )),
        _ => None,
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
    let Some((collection, namespace, name)) = route(request.uri().path()) else {
        return Ok(not_found());
    };
    let response = match (method, name) {
        (Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            let from = query.get("resourceVersion").cloned().unwrap_or_default();
            let mut response = Response::new(api.watch(&collection, &from));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        (Method::GET, None) => full(StatusCode::OK, &api.list(&collection)),
        (Method::PATCH, Some(_)) => {
            let Ok(body) = request.into_body().collect().await else {
                return Ok(full(StatusCode::BAD_REQUEST, &json!({})));
            };
            let Ok(object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
                return Ok(full(StatusCode::BAD_REQUEST, &json!({})));
            };
            full(StatusCode::OK, &api.upsert(&collection, object, true))
        }
        (Method::DELETE, Some(name)) => match api.remove(&collection, &namespace, &name, true) {
            Some(object) => full(StatusCode::OK, &object),
            None => not_found(),
        },
        _ => not_found(),
    };
    Ok(response)
}

async fn serve(api: FakeApi) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = api.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(api.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn pod(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "payments", "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"podIP": "10.1.0.5"},
    })
}

fn app(s: &Snapshot, name: &str) -> Option<String> {
    s.pod("payments", name)?
        .metadata
        .labels
        .as_ref()?
        .get("app")
        .cloned()
}

async fn wait_for(
    store: &StateStore,
    what: &str,
    f: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    tokio::time::timeout(WAIT, store.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", store.snapshot()))
}

fn pod_names(s: &Snapshot) -> Vec<String> {
    s.pods().filter_map(|p| p.metadata.name.clone()).collect()
}

#[tokio::test]
async fn lists_watches_and_relists_after_gone() {
    let api = FakeApi::default();
    api.upsert(
        NAMESPACES,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}}),
        true,
    );
    api.upsert(PODS, pod("a", "v1"), true);
    api.upsert(PODS, pod("b", "v1"), true);
    let port = serve(api.clone()).await;

    let url: hyper::Uri = format!("http://127.0.0.1:{port}").parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
    let datastore = Arc::new(KubernetesDatastore::new(client, "node-1"));
    let store = StateStore::new();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(datastore.clone().run(store.clone(), shutdown.clone()));

    // Initial list.
    let snap = wait_for(&store, "initial list", |s| s.pods().count() == 2).await;
    assert!(snap.namespace("payments").is_some());
    assert_eq!(app(&snap, "a").as_deref(), Some("v1"));

    // Watch: modification and deletion.
    api.upsert(PODS, pod("a", "v2"), true);
    wait_for(&store, "modification", |s| {
        app(s, "a").as_deref() == Some("v2")
    })
    .await;
    api.remove(PODS, "payments", "b", true);
    wait_for(&store, "deletion", |s| s.pod("payments", "b").is_none()).await;

    // Changes the watcher never hears about, then 410 Gone: it must relist
    // and converge, dropping the object deleted behind its back.
    let lists_before = api.lists(PODS);
    api.remove(PODS, "payments", "a", false);
    api.upsert(PODS, pod("c", "v1"), false);
    assert!(store.snapshot().pod("payments", "a").is_some());
    api.expire_watches(PODS);
    let snap = wait_for(&store, "relist after 410", |s| pod_names(s) == ["c"]).await;
    assert!(snap.namespace("payments").is_some());
    assert!(api.lists(PODS) > lists_before, "no relist happened");

    // Watching continues after the relist.
    api.upsert(PODS, pod("d", "v1"), true);
    wait_for(&store, "event after relist", |s| pod_names(s) == ["c", "d"]).await;

    // Publishing goes through the API server and comes back through the watch.
    let cep = CiliumEndpoint {
        metadata: ObjectMeta {
            name: Some("c".into()),
            namespace: Some("payments".into()),
            ..Default::default()
        },
        status: Some(CiliumEndpointStatus {
            identity: Some(EndpointIdentity {
                id: 4242,
                labels: vec!["k8s:app=v1".into()],
            }),
            ..Default::default()
        }),
    };
    datastore.publish(cep.into()).await.expect("publish");
    let stored = api.state().collections.get(ENDPOINTS).map(BTreeMap::len);
    assert_eq!(stored, Some(1), "server-side apply reached the API server");
    let snap = wait_for(&store, "published endpoint", |s| {
        s.cilium_endpoints().count() == 1
    })
    .await;
    let got = snap.cilium_endpoint("payments", "c").expect("endpoint");
    assert_eq!(
        got.status
            .as_ref()
            .and_then(|s| s.identity.as_ref())
            .map(|i| i.id),
        Some(4242)
    );
    let key = ObjectKey::namespaced(Kind::CiliumEndpoint, "payments", "c");
    datastore.withdraw(key.clone()).await.expect("withdraw");
    wait_for(&store, "withdrawn endpoint", |s| {
        s.cilium_endpoints().count() == 0
    })
    .await;
    datastore
        .withdraw(key)
        .await
        .expect("withdrawing twice is fine");

    // The watch error of the 410 is no longer reported once recovered.
    assert!(store.issues().is_empty(), "{:?}", store.issues());

    shutdown.cancel();
    tokio::time::timeout(WAIT, running)
        .await
        .expect("datastore stops on shutdown")
        .expect("join")
        .expect("datastore result");
}
