//! The proxy's server side (hyper HTTP/1.1 with keep-alive) and its
//! forwarding client (pooled keep-alive connections per destination).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use porin_plugin_sdk::{Direction, L7Kind, L7Record, Verdict};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::error::L7ProxyError;
use super::marked_connector::{MARK_FROM_INGRESS_PROXY, MarkedConnector};
use super::original_dst::OriginalDestination;
use super::peers::{PeerResolver, ResolvedPeer};
use super::policy_set::SharedPolicies;
use super::record::{L7Sink, trace_id_of};
use crate::compute::{ConnectionFilter, Peer};
use crate::model::HttpRequestView;

/// The body of a denied request, as Cilium's proxy sends it.
pub const ACCESS_DENIED_BODY: &str = "Access denied\r\n";

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The proxy's parts, shared by every connection.
pub struct L7Proxy {
    pub policies: Arc<SharedPolicies>,
    pub peers: Arc<dyn PeerResolver>,
    pub original: Arc<dyn OriginalDestination>,
    pub sink: Arc<dyn L7Sink>,
}

/// A listening proxy; dropping it stops accepting.
#[derive(Debug)]
pub struct RunningProxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    parts: L7Proxy,
    client: Client<HttpConnector, Incoming>,
    /// Connections on behalf of clients judged by the pod's ingress rules: marked, so
    /// the pod program neither judges nor redirects them again.
    ingress_client: Client<MarkedConnector, Incoming>,
    addr: SocketAddr,
    /// The listener takes connections the datapath hands over on ingress.
    transparent: bool,
}

impl L7Proxy {
    /// Listen on `addr` and serve until the returned handle is dropped. Must
    /// be called inside a tokio runtime.
    pub fn start(self, addr: SocketAddr) -> Result<RunningProxy, L7ProxyError> {
        self.start_with(addr, false)
    }

    /// Like [`L7Proxy::start`], for the datapath's redirection: the listener is
    /// `IP_TRANSPARENT`, so it accepts the connections the pod programs hand to it
    /// on ingress with their original destination (a pod's address) as its local
    /// address, and answers from that address. Needs `CAP_NET_ADMIN`.
    pub fn start_transparent(self, addr: SocketAddr) -> Result<RunningProxy, L7ProxyError> {
        self.start_with(addr, true)
    }

    fn start_with(self, addr: SocketAddr, transparent: bool) -> Result<RunningProxy, L7ProxyError> {
        let listener = listen(addr, transparent)?;
        let addr = listener
            .local_addr()
            .map_err(|source| L7ProxyError::Bind { addr, source })?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let builder = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .clone();
        let shared = Arc::new(Shared {
            parts: self,
            client: builder.build(connector),
            ingress_client: builder.build(MarkedConnector {
                mark: MARK_FROM_INGRESS_PROXY,
            }),
            addr,
            transparent,
        });
        let task = tokio::spawn(accept_loop(listener, shared));
        Ok(RunningProxy { addr, task })
    }
}

fn listen(addr: SocketAddr, transparent: bool) -> Result<TcpListener, L7ProxyError> {
    let bind = |source| L7ProxyError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind)?;
    socket.set_reuse_address(true).map_err(bind)?;
    if transparent {
        let set = match addr {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true),
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true),
        };
        set.map_err(|source| L7ProxyError::Transparent { addr, source })?;
    }
    socket.set_nonblocking(true).map_err(bind)?;
    socket.bind(&addr.into()).map_err(bind)?;
    socket.listen(1024).map_err(bind)?;
    TcpListener::from_std(socket.into()).map_err(bind)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "L7 proxy: accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(shared, stream, peer).await {
                debug!(%peer, error = %e, "L7 proxy: connection ended");
            }
        });
    }
}

/// What one downstream connection knows: both sides and the rules for them.
struct Connection {
    shared: Arc<Shared>,
    src: SocketAddr,
    dst: SocketAddr,
    src_peer: ResolvedPeer,
    dst_peer: ResolvedPeer,
    /// Handed to the proxy on ingress (its local address is the pod's): forwarded
    /// with the ingress proxy's mark.
    ingress: bool,
    /// (policy revision, filter) computed for this connection.
    filter: Mutex<(u64, Arc<ConnectionFilter>)>,
}

impl Connection {
    fn compute(&self) -> (u64, Arc<ConnectionFilter>) {
        let (revision, set) = self.shared.parts.policies.snapshot();
        // Port names (`port: http`) resolve as the policy engine resolves them.
        let l4 = set.named_ports.l4(self.dst);
        let peer = |p: &ResolvedPeer| Peer {
            labels: p.labels.clone(),
            cidr: None,
        };
        let filter = ConnectionFilter::new(
            &set.policies,
            set.enforcement,
            &peer(&self.src_peer),
            &peer(&self.dst_peer),
            &l4,
        );
        (revision, Arc::new(filter))
    }

    /// The filter of the current policies (recomputed after a policy change).
    fn filter(&self) -> Arc<ConnectionFilter> {
        let revision = self.shared.parts.policies.revision();
        let mut cached = self
            .filter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.0 != revision {
            *cached = self.compute();
        }
        cached.1.clone()
    }
}

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    src: SocketAddr,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // An ingress connection's local address is the pod's own (transparent
    // listener); an egress one was DNATed to the proxy's address and the datapath
    // recorded where it was going.
    let local = stream.local_addr()?;
    let ingress = shared.transparent
        && (local.port() != shared.addr.port()
            || (!shared.addr.ip().is_unspecified() && local.ip() != shared.addr.ip()));
    let dst = if ingress {
        local
    } else {
        shared.parts.original.original_destination(&stream)?
    };
    if dst == shared.addr {
        return Err(format!("{src} asks for the proxy itself ({dst}): refused").into());
    }
    stream.set_nodelay(true)?;
    let mut conn = Connection {
        src_peer: shared.parts.peers.resolve(src.ip()),
        dst_peer: shared.parts.peers.resolve(dst.ip()),
        shared: shared.clone(),
        src,
        dst,
        ingress,
        filter: Mutex::new((0, Arc::new(ConnectionFilter::default_allow()))),
    };
    conn.filter = Mutex::new(conn.compute());
    let conn = Arc::new(conn);
    http1::Builder::new()
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(handle(&conn, req).await) }
            }),
        )
        .await?;
    Ok(())
}

/// The request as the HTTP rules see it.
struct View<'r>(&'r Request<Incoming>);

impl HttpRequestView for View<'_> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }
    fn path(&self) -> &str {
        self.0.uri().path_and_query().map_or("/", |p| p.as_str())
    }
    fn host(&self) -> Option<&str> {
        self.0
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.0.uri().authority().map(|a| a.as_str()))
    }
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.0
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

async fn handle(conn: &Connection, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let filter = conn.filter();
    let allowed = filter.allows(&View(&req));
    // Ingress rules of the destination make this a server-side record.
    let direction = if filter.ingress.needs_proxy() || !filter.egress.needs_proxy() {
        Direction::ToEndpoint
    } else {
        Direction::FromEndpoint
    };
    let mut record = request_record(conn, &req, direction, allowed);
    conn.shared.parts.sink.publish(record.clone());
    let response = if allowed {
        forward(conn, req).await
    } else {
        denied()
    };
    record.kind = L7Kind::Response;
    record.time = SystemTime::now();
    record.code = response.status().as_u16();
    record.latency_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    conn.shared.parts.sink.publish(record);
    response
}

fn request_record(
    conn: &Connection,
    req: &Request<Incoming>,
    direction: Direction,
    allowed: bool,
) -> L7Record {
    let view = View(req);
    let host = view
        .host()
        .map_or_else(|| conn.dst.to_string(), str::to_owned);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of);
    L7Record {
        time: SystemTime::now(),
        kind: L7Kind::Request,
        src: conn.src,
        dst: conn.dst,
        src_identity: conn.src_peer.identity,
        dst_identity: conn.dst_peer.identity,
        direction,
        verdict: if allowed {
            Verdict::Forwarded
        } else {
            Verdict::Dropped
        },
        method: req.method().as_str().to_owned(),
        url: format!("http://{host}{}", view.path()),
        protocol: format!("{:?}", req.version()),
        code: 0,
        headers,
        latency_ns: 0,
        trace_id,
        dns: None,
    }
}

/// Send the request to the original destination over a pooled connection.
async fn forward(conn: &Connection, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri = match Uri::builder()
        .scheme("http")
        .authority(conn.dst.to_string())
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(e) => return local_reply(StatusCode::BAD_REQUEST, format!("bad request: {e}\r\n")),
    };
    if !req.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(&conn.dst.to_string())
    {
        req.headers_mut().insert(HOST, host);
    }
    *req.uri_mut() = uri;
    let sent = if conn.ingress {
        conn.shared.ingress_client.request(req).await
    } else {
        conn.shared.client.request(req).await
    };
    match sent {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => {
            warn!(dst = %conn.dst, error = %e, "L7 proxy: upstream failed");
            local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error\r\n".to_owned(),
            )
        }
    }
}

fn denied() -> Response<ProxyBody> {
    local_reply(StatusCode::FORBIDDEN, ACCESS_DENIED_BODY.to_owned())
}

fn local_reply(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
