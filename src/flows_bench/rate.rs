//! Flows per second on one core (this thread): core's decoding of the ring-buffer
//! record, the plugin's pipeline (endpoints through its cache) and the ring of
//! the default size (`flows_per_s_per_core`). `message_flows_per_s_per_core` also
//! builds the Hubble `Flow` and evaluates a `GetFlows` filter (`--namespace`) on
//! it, as a reader of every flow would. Rates are per second of this thread's
//! CPU time, so other processes on the machine do not lower them (they still
//! disturb caches).

use std::sync::Arc;
use std::time::Duration;

use porin_observe::endpoints::CacheSettings;
use porin_observe::filter::keeps;
use porin_observe::hubble_proto::flow::FlowFilter;
use porin_observe::pipeline::Pipeline;
use porin_observe::{DEFAULT_BUFFER_SIZE, FlowRing};
use serde_json::json;

use crate::context::BenchContext;
use crate::source::Source;

pub fn measure(events: u64) -> serde_json::Value {
    let ctx = BenchContext::new(std::env::temp_dir());
    let store_only = run(&ctx, events, false);
    let with_message = run(&ctx, events, true);
    json!({
        "events": events,
        "flows_per_s_per_core": store_only.round(),
        "message_flows_per_s_per_core": with_message.round(),
    })
}

fn run(ctx: &BenchContext, events: u64, with_message: bool) -> f64 {
    let mut source = Source::new();
    let mut pipeline = Pipeline::new("node-1", CacheSettings::default());
    let ring = FlowRing::new(DEFAULT_BUFFER_SIZE as usize);
    // `--namespace ns-1`: two filters, one per side, as `porin observe` sends them.
    let whitelist = vec![
        FlowFilter {
            source_pod: vec!["ns-1/".into()],
            ..FlowFilter::default()
        },
        FlowFilter {
            destination_pod: vec!["ns-1/".into()],
            ..FlowFilter::default()
        },
    ];
    let mut kept = 0u64;
    let started = thread_cpu();
    for _ in 0..events {
        // Core broadcasts each decoded event behind an Arc.
        let event = Arc::new(source.next_event());
        let entry = Arc::new(pipeline.entry(&event, ctx));
        if with_message && keeps(&whitelist, &[], entry.flow()) {
            kept += 1;
        }
        ring.push_entry(entry);
    }
    // CPU time of this thread: a rate per core even when other processes share it.
    let elapsed = (thread_cpu() - started).as_secs_f64();
    if with_message {
        // One pod namespace in four: the filter must have kept some, not all.
        assert!(
            kept > 0 && kept < events,
            "the filter kept {kept} of {events}"
        );
    }
    events as f64 / elapsed
}

/// CPU time this thread has used (CLOCK_THREAD_CPUTIME_ID).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}
