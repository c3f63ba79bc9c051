//! Losses at a sustained event rate with the default settings: events decoded
//! from ring-buffer records enter the agent's event channel (its capacity) at
//! RATE per second; the plugin's own `run_pipeline` stores them in a ring of the
//! default size; one `GetFlows --follow` client reads every flow over the unix
//! socket. Losses are those the plugin counts and reports (`OBSERVER_EVENTS_QUEUE`
//! when the pipeline falls behind the channel, `HUBBLE_RING_BUFFER` when the
//! follower falls behind the ring). The process's RSS is sampled every second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use porin_observe::hubble_proto::flow::LostEventSource;
use porin_observe::hubble_proto::observer::GetFlowsRequest;
use porin_observe::hubble_proto::observer::get_flows_response::ResponseTypes;
use porin_observe::pipeline::run_pipeline;
use porin_observe::{
    DEFAULT_BUFFER_SIZE, FlowRing, HubbleAddress, HubbleService, LostEvents, bind_unix,
};
use serde_json::json;

use crate::context::BenchContext;
use crate::source::Source;
use crate::stream::work_dir;

pub async fn measure(rate: u64, duration: Duration) -> Result<serde_json::Value> {
    let dir = work_dir("sustained")?;
    let ctx = Arc::new(BenchContext::new(dir.clone()));
    let ring = Arc::new(FlowRing::new(DEFAULT_BUFFER_SIZE as usize));
    let lost = Arc::new(LostEvents::new());
    let pipeline = tokio::spawn(run_pipeline(
        ctx.clone(),
        ring.clone(),
        lost.clone(),
        None,
        None,
    ));

    let socket = dir.join("hubble.sock");
    let service = HubbleService::new(
        ring.clone(),
        "node-1",
        format!("unix://{}", socket.display()),
    )
    .with_lost_events(lost.clone());
    let server = tokio::spawn(bind_unix(&socket, service)?);
    let mut client = HubbleAddress::Unix(socket).observer().await?;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            ..GetFlowsRequest::default()
        })
        .await
        .context("GetFlows --follow")?
        .into_inner();
    let followed = Arc::new(AtomicU64::new(0));
    let reported_lost = Arc::new(AtomicU64::new(0));
    let follower = {
        let (followed, reported_lost) = (followed.clone(), reported_lost.clone());
        tokio::spawn(async move {
            while let Ok(Some(r)) = stream.message().await {
                match r.response_types {
                    Some(ResponseTypes::Flow(_)) => followed.fetch_add(1, Ordering::Relaxed),
                    Some(ResponseTypes::LostEvents(l)) => {
                        reported_lost.fetch_add(l.num_events_lost, Ordering::Relaxed)
                    }
                    _ => 0,
                };
            }
        })
    };
    // Let the follower subscribe before the first event.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let events = ctx.events.clone();
    let producer = std::thread::spawn(move || {
        let mut source = Source::new();
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
            while sent < due {
                // No receiver means the pipeline is gone: the run is void.
                if events.send(Arc::new(source.next_event())).is_err() {
                    return sent;
                }
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    });
    let mut rss = Vec::new();
    while !producer.is_finished() {
        rss.push(rss_kib()?);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let sent = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))?;
    // Let the pipeline and the follower catch up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while followed.load(Ordering::Relaxed) + reported_lost.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    server.abort();
    pipeline.abort();
    let _ = std::fs::remove_dir_all(&dir);

    let queue = lost.total(LostEventSource::ObserverEventsQueue);
    let reader = lost.total(LostEventSource::HubbleRingBuffer);
    // Skip the first tenth of the run: the ring and caches fill up.
    let settled = rss.get(rss.len() / 10).copied().unwrap_or_default();
    let last = rss.last().copied().unwrap_or_default();
    let growth = if settled > 0 {
        (last as f64 - settled as f64) * 100.0 / settled as f64
    } else {
        0.0
    };
    Ok(json!({
        "rate": rate,
        "seconds": duration.as_secs(),
        "sent": sent,
        "stored": ring.seen(),
        "followed": followed.load(Ordering::Relaxed),
        "lost": queue + reader,
        "lost_observer_events_queue": queue,
        "lost_hubble_ring_buffer": reader,
        "lost_reported_in_band": reported_lost.load(Ordering::Relaxed),
        "rss_kib_settled": settled,
        "rss_kib_last": last,
        "rss_kib_max": rss.iter().copied().max().unwrap_or_default(),
        "rss_growth_pct": (growth * 100.0).round() / 100.0,
    }))
}

/// This process's resident set (VmRSS), KiB.
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}
