//! `scripts/bench wasm`: flows per second per core through the WASM filter
//! stage (trivial filter, a real filter, a labeller), the flow pipeline
//! (decode, filter, store) with the real filter as WASM and natively in the
//! same run, the call shapes the contract was chosen from, and reload time.
//! Progress on stderr; one line of JSON on stdout.
//!
//! Usage: porin-wasm-bench --guests DIR [--quick]
//! (DIR holds bench_trivial_filter.wasm, bench_real_filter.wasm, team_labeller.wasm)

mod shapes;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hubble_proto::flow::Flow;
use porin_observe::FlowRing;
use porin_observe::pipeline::flow_of;
use porin_wasm::cpu::thread_cpu_time;
use porin_wasm::{WasmKind, WasmMetrics, WasmModuleConfig, WasmModules};

use workload::{BenchEnricher, events, native_keep};

const BATCH: usize = 256;

struct Args {
    guests: PathBuf,
    quick: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut guests = None;
    let mut quick = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--guests" => guests = it.next().map(PathBuf::from),
            "--quick" => quick = true,
            other => bail!("unknown argument `{other}`"),
        }
    }
    Ok(Args {
        guests: guests.context("--guests DIR is required")?,
        quick,
    })
}

/// Flows per second of one core: `step` (which handles `per_step` flows) run
/// for `time` of this thread's CPU time. CPU time, not wall time, so that other
/// work on a shared machine does not count against the measurement.
fn rate(time: Duration, per_step: usize, mut step: impl FnMut()) -> f64 {
    let warm = thread_cpu_time();
    while thread_cpu_time() - warm < time / 10 {
        step();
    }
    let start = thread_cpu_time();
    let mut steps = 0u64;
    while thread_cpu_time() - start < time {
        step();
        steps += 1;
    }
    (steps as f64 * per_step as f64) / (thread_cpu_time() - start).as_secs_f64()
}

fn load(path: PathBuf, kind: WasmKind, config: &str) -> anyhow::Result<WasmModules> {
    let mut c = WasmModuleConfig::new("bench", path, kind);
    c.config = config.to_string();
    let modules = WasmModules::load(&[c], Arc::new(WasmMetrics::default()))
        .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
    let status = &modules.status()[0];
    if status.state != "running" {
        bail!("module did not load: {status:?}");
    }
    Ok(modules)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let time = Duration::from_millis(if args.quick { 700 } else { 3000 });
    let guest = |name: &str| args.guests.join(name);
    let enricher = BenchEnricher::new();
    let events = events(BATCH);
    let flows: Vec<Flow> = events.iter().map(|e| flow_of(e, &enricher)).collect();

    eprintln!("== call shapes (wasmtime 48)");
    let trivial = load(guest("bench_trivial_filter.wasm"), WasmKind::Filter, "")?;
    let iterations = if args.quick { 200_000 } else { 2_000_000 };
    let shapes = shapes::measure(trivial.engine().engine(), iterations)
        .map_err(|e| anyhow::anyhow!("call shapes: {e}"))?;
    eprintln!(
        "plain call {:.1} ns, 64-byte buffer + call {:.1} ns, component list<u8> 64 B {:.1} ns, \
         component batch {:.1} ns/flow, new instance {:.2} us",
        shapes.plain_call_ns,
        shapes.buffer64_call_ns,
        shapes.component_list64_ns,
        shapes.component_batch_ns_per_flow,
        shapes.new_instance_us
    );

    eprintln!("== filter stage (batches of {BATCH})");
    let trivial_rate = rate(time, BATCH, || drop(trivial.filter(&flows)));
    eprintln!("trivial filter: {trivial_rate:.0} flows/s");
    let real = load(guest("bench_real_filter.wasm"), WasmKind::Filter, "")?;
    let kept = real.filter(&flows).iter().filter(|k| **k).count();
    let native_kept = flows.iter().filter(|f| native_keep(f)).count();
    if kept != native_kept {
        bail!("WASM filter kept {kept}, native {native_kept}: not the same filter");
    }
    let real_rate = rate(time, BATCH, || drop(real.filter(&flows)));
    eprintln!("real filter: {real_rate:.0} flows/s ({kept}/{BATCH} kept)");
    let labeller = load(
        guest("team_labeller.wasm"),
        WasmKind::Labeller,
        "payments=payments-team,kube-system=platform,monitoring=sre",
    )?;
    let labeller_rate = rate(time, BATCH, || drop(labeller.labels(&flows)));
    eprintln!("labeller: {labeller_rate:.0} flows/s");

    eprintln!("== pipeline: decode, filter, store (WASM vs native, alternating)");
    let ring = FlowRing::new(4096);
    let pipeline = |wasm: bool| {
        rate(time, BATCH, || {
            let flows: Vec<Flow> = events.iter().map(|e| flow_of(e, &enricher)).collect();
            let keep: Vec<bool> = if wasm {
                real.filter(&flows)
            } else {
                flows.iter().map(native_keep).collect()
            };
            for (f, k) in flows.into_iter().zip(keep) {
                if k {
                    ring.push(f);
                }
            }
        })
    };
    let (mut wasm_runs, mut native_runs) = (Vec::new(), Vec::new());
    for _ in 0..if args.quick { 1 } else { 3 } {
        native_runs.push(pipeline(false));
        wasm_runs.push(pipeline(true));
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (pipeline_wasm, pipeline_native) = (best(&wasm_runs), best(&native_runs));
    eprintln!("pipeline with WASM {pipeline_wasm:.0} flows/s, native {pipeline_native:.0} flows/s");

    eprintln!("== reload (compile, instantiate, init, swap) of the real filter");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("filter.wasm");
    let real_bytes = std::fs::read(guest("bench_real_filter.wasm"))?;
    let trivial_bytes = std::fs::read(guest("bench_trivial_filter.wasm"))?;
    std::fs::write(&path, &real_bytes)?;
    let swapping = load(path.clone(), WasmKind::Filter, "")?;
    let mut reloads = Vec::new();
    for i in 0..if args.quick { 3 } else { 9 } {
        std::fs::write(
            &path,
            if i % 2 == 0 {
                &trivial_bytes
            } else {
                &real_bytes
            },
        )?;
        let took = swapping.modules()[0]
            .reload_if_changed()
            .context("change not seen")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        reloads.push(took.as_secs_f64() * 1e3);
    }
    reloads.sort_by(f64::total_cmp);
    let reload_ms = reloads[reloads.len() / 2];
    eprintln!("reload: median {reload_ms:.1} ms of {reloads:.1?}");

    for (what, modules) in [
        ("trivial", &trivial),
        ("real", &real),
        ("labeller", &labeller),
    ] {
        let status = &modules.status()[0];
        if status.state != "running" {
            bail!("the {what} module stopped during the run: {status:?}");
        }
        eprintln!(
            "{what}: {} flows, {:.3} s CPU",
            status.flows, status.cpu_seconds
        );
    }
    let json = serde_json::json!({
        "bench": "wasm",
        "batch": BATCH,
        "trivial_flows_per_s": trivial_rate.round(),
        "real_flows_per_s": real_rate.round(),
        "labeller_flows_per_s": labeller_rate.round(),
        "pipeline_wasm_flows_per_s": pipeline_wasm.round(),
        "pipeline_native_flows_per_s": pipeline_native.round(),
        "ratio_vs_native": (pipeline_wasm / pipeline_native * 1000.0).round() / 1000.0,
        "reload_ms": (reload_ms * 10.0).round() / 10.0,
        "instantiate_us": (shapes.new_instance_us * 100.0).round() / 100.0,
        "plain_call_ns": (shapes.plain_call_ns * 10.0).round() / 10.0,
        "buffer64_call_ns": (shapes.buffer64_call_ns * 10.0).round() / 10.0,
        "component_list64_call_ns": (shapes.component_list64_ns * 10.0).round() / 10.0,
        "component_batch_ns_per_flow": (shapes.component_batch_ns_per_flow * 10.0).round() / 10.0,
    });
    println!("{json}");
    Ok(())
}
