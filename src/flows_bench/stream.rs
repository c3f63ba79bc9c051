//! How fast one `GetFlows` client receives flows over the agent's unix socket:
//! a full ring of the default size, read again and again for the duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use porin_observe::endpoints::CacheSettings;
use porin_observe::hubble_proto::observer::GetFlowsRequest;
use porin_observe::hubble_proto::observer::get_flows_response::ResponseTypes;
use porin_observe::pipeline::Pipeline;
use porin_observe::{DEFAULT_BUFFER_SIZE, FlowRing, HubbleAddress, HubbleService, bind_unix};
use serde_json::json;

use crate::context::BenchContext;
use crate::source::Source;

/// A directory of this process for the benchmark's socket.
pub fn work_dir(name: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("porin-flows-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub async fn measure(duration: Duration) -> Result<serde_json::Value> {
    let dir = work_dir("stream")?;
    let ctx = BenchContext::new(dir.clone());
    let ring = Arc::new(FlowRing::new(DEFAULT_BUFFER_SIZE as usize));
    let mut pipeline = Pipeline::new("node-1", CacheSettings::default());
    let mut source = Source::new();
    for _ in 0..DEFAULT_BUFFER_SIZE {
        ring.push_entry(Arc::new(pipeline.entry(&source.next_event(), &ctx)));
    }
    let socket = dir.join("hubble.sock");
    let service = HubbleService::new(ring, "node-1", format!("unix://{}", socket.display()));
    let server = tokio::spawn(bind_unix(&socket, service)?);
    let mut client = HubbleAddress::Unix(socket).observer().await?;
    let started = Instant::now();
    let mut flows = 0u64;
    let mut calls = 0u64;
    while started.elapsed() < duration {
        let mut stream = client
            .get_flows(GetFlowsRequest::default())
            .await
            .context("GetFlows")?
            .into_inner();
        while let Some(r) = stream.message().await.context("GetFlows stream")? {
            if matches!(r.response_types, Some(ResponseTypes::Flow(_))) {
                flows += 1;
            }
        }
        calls += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        flows >= calls * u64::from(DEFAULT_BUFFER_SIZE),
        "{flows} flows in {calls} calls: the ring was not read whole"
    );
    Ok(json!({
        "grpc_stream_flows_per_s": (flows as f64 / elapsed).round(),
        "calls": calls,
        "flows": flows,
    }))
}
