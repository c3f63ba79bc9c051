//! `http` and `httpV2`: HTTP requests and their durations from the L7 flows
//! of the policy plugin's proxy, with Cilium's names and labels.
//!
//! `httpV2` counts responses: `hubble_http_requests_total{method,protocol,
//! status,reporter}` and `hubble_http_request_duration_seconds{method,
//! reporter}`. `http` (v1) counts requests without status, responses in
//! `hubble_http_responses_total{method,protocol,status,reporter}` and the
//! same durations. `reporter` is `client` for flows of egress rules and
//! `server` for ingress rules. With `exemplars=true` each sample carries the
//! request's trace id (`traceID`) when it had a `traceparent` header.

use hubble_proto::flow::{self as pb, Flow, L7FlowType, layer7::Record};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{ContextOptions, Handler, Labels, with_context};
use crate::MetricSpec;

/// Prometheus' default buckets, which Cilium uses for request durations.
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const REQUESTS: &str = "hubble_http_requests";
const DURATION: &str = "hubble_http_request_duration_seconds";

enum Requests {
    Plain(Family<Labels, Counter>),
    Exemplars(Family<Labels, CounterWithExemplar<Labels>>),
}

enum Durations {
    Plain(Family<Labels, Histogram>),
    Exemplars(Family<Labels, HistogramWithExemplars<Labels>>),
}

/// The HTTP metrics of one `http` or `httpV2` spec.
pub struct HttpHandler {
    v2: bool,
    requests: Requests,
    durations: Durations,
    /// v1 only.
    responses: Option<Family<Labels, Counter>>,
    ctx: ContextOptions,
}

impl HttpHandler {
    pub fn register(registry: &mut Registry, spec: &MetricSpec, ctx: ContextOptions) -> Self {
        let requests_help = "Count of HTTP requests";
        let duration_help = "Quantiles of HTTP request duration in seconds";
        let (requests, durations) = if spec.exemplars {
            let r = Family::<Labels, CounterWithExemplar<Labels>>::default();
            let d = Family::<Labels, HistogramWithExemplars<Labels>>::new_with_constructor(|| {
                HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
            });
            registry.register(REQUESTS, requests_help, r.clone());
            registry.register(DURATION, duration_help, d.clone());
            ctx.watch(&r);
            ctx.watch(&d);
            (Requests::Exemplars(r), Durations::Exemplars(d))
        } else {
            let r = Family::<Labels, Counter>::default();
            let d = Family::<Labels, Histogram>::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS)
            });
            registry.register(REQUESTS, requests_help, r.clone());
            registry.register(DURATION, duration_help, d.clone());
            ctx.watch(&r);
            ctx.watch(&d);
            (Requests::Plain(r), Durations::Plain(d))
        };
        let v2 = spec.name == "httpV2";
        let responses = (!v2).then(|| {
            let f = Family::<Labels, Counter>::default();
            registry.register(
                "hubble_http_responses",
                "Count of HTTP responses",
                f.clone(),
            );
            ctx.watch(&f);
            f
        });
        Self {
            v2,
            requests,
            durations,
            responses,
            ctx,
        }
    }

    /// The names registered (counters without `_total`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = vec![REQUESTS, DURATION];
        if self.responses.is_some() {
            names.push("hubble_http_responses");
        }
        names
    }

    fn count_request(&self, labels: &Labels, exemplar: Option<&Labels>) {
        match &self.requests {
            Requests::Plain(f) => {
                f.get_or_create(labels).inc();
            }
            Requests::Exemplars(f) => {
                f.get_or_create(labels).inc_by(1, exemplar.cloned(), None);
            }
        }
    }

    fn observe(&self, labels: &Labels, seconds: f64, exemplar: Option<&Labels>) {
        match &self.durations {
            Durations::Plain(f) => f.get_or_create(labels).observe(seconds),
            Durations::Exemplars(f) => {
                f.get_or_create(labels)
                    .observe(seconds, exemplar.cloned(), None)
            }
        }
    }
}

/// Cilium's `reporter` label.
fn reporter(flow: &Flow) -> &'static str {
    match pb::TrafficDirection::try_from(flow.traffic_direction) {
        Ok(pb::TrafficDirection::Egress) => "client",
        Ok(pb::TrafficDirection::Ingress) => "server",
        _ => "unknown",
    }
}

/// `flow` with source and destination swapped (endpoints, addresses, names).
fn invert(flow: &Flow) -> Flow {
    let mut f = flow.clone();
    std::mem::swap(&mut f.source, &mut f.destination);
    std::mem::swap(&mut f.source_names, &mut f.destination_names);
    if let Some(ip) = f.ip.as_mut() {
        std::mem::swap(&mut ip.source, &mut ip.destination);
    }
    f
}

impl Handler for HttpHandler {
    fn name(&self) -> &'static str {
        REQUESTS
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        let Some(l7) = flow.l7.as_ref() else {
            return;
        };
        let Some(Record::Http(http)) = l7.record.as_ref() else {
            return;
        };
        let exemplar: Option<Labels> = flow
            .trace_context
            .as_ref()
            .and_then(|t| t.parent.as_ref())
            .filter(|p| !p.trace_id.is_empty())
            .map(|p| vec![("traceID".to_owned(), p.trace_id.clone())]);
        let method = ("method", http.method.clone());
        let protocol = ("protocol", http.protocol.clone());
        let status = ("status", http.code.to_string());
        let reporter = ("reporter", reporter(flow).to_owned());
        let is_response = l7.r#type == L7FlowType::Response as i32;
        // A response flow goes server to client; its context labels are the
        // request's (Cilium inverts source and destination for them).
        let inverted;
        let flow = if is_response {
            inverted = invert(flow);
            &inverted
        } else {
            flow
        };
        if is_response {
            let labels = [method.clone(), protocol.clone(), status, reporter.clone()];
            if self.v2 {
                let labels = with_context(&labels, &self.ctx, flow, extra);
                self.count_request(&labels, exemplar.as_ref());
            } else if let Some(responses) = &self.responses {
                responses
                    .get_or_create(&with_context(&labels, &self.ctx, flow, extra))
                    .inc();
            }
            let labels = with_context(&[method, reporter], &self.ctx, flow, extra);
            #[expect(
                clippy::cast_precision_loss,
                reason = "durations far below 2^52 ns are exact enough"
            )]
            let seconds = l7.latency_ns as f64 / 1e9;
            self.observe(&labels, seconds, exemplar.as_ref());
        } else if !self.v2 && l7.r#type == L7FlowType::Request as i32 {
            let labels = with_context(&[method, protocol, reporter], &self.ctx, flow, extra);
            self.count_request(&labels, exemplar.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::testing::{flow_between, has_line, scrape};

    /// An L7 flow of `shop/web-1` (client) and the world (server): a
    /// response goes from the server back to the client.
    fn http_flow(kind: L7FlowType, code: u32, trace: Option<&str>) -> Flow {
        let flow = Flow {
            r#type: pb::FlowType::L7 as i32,
            traffic_direction: pb::TrafficDirection::Ingress as i32,
            l7: Some(pb::Layer7 {
                r#type: kind as i32,
                latency_ns: 20_000_000,
                record: Some(Record::Http(pb::Http {
                    code,
                    method: "GET".into(),
                    url: "http://admin:8080/metrics".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: vec![],
                })),
            }),
            trace_context: trace.map(|t| pb::TraceContext {
                parent: Some(pb::TraceParent { trace_id: t.into() }),
            }),
            ..flow_between()
        };
        if kind == L7FlowType::Response {
            invert(&flow)
        } else {
            flow
        }
    }

    #[test]
    fn http_v2_counts_responses_with_status_and_exemplars() {
        let mut registry = Registry::default();
        let spec = MetricSpec::parse("httpV2:exemplars=true;labelsContext=source_namespace")
            .expect("spec");
        let h = HttpHandler::register(&mut registry, &spec, ContextOptions::from_spec(&spec));
        h.process(&http_flow(L7FlowType::Request, 0, None));
        h.process(&http_flow(L7FlowType::Response, 200, Some("4bf92f35")));
        h.process(&http_flow(L7FlowType::Response, 403, None));
        h.process(&flow_between());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("hubble_http_requests_total{method=\"GET\",protocol=\"HTTP/1.1\",status=\"200\",reporter=\"server\",source_namespace=\"shop\"} 1 # {traceID=\"4bf92f35\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hubble_http_requests_total{method=\"GET\",protocol=\"HTTP/1.1\",status=\"403\",reporter=\"server\",source_namespace=\"shop\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hubble_http_request_duration_seconds_bucket{le=\"0.025\",method=\"GET\",reporter=\"server\",source_namespace=\"shop\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn http_v1_counts_requests_and_responses_apart() {
        let mut registry = Registry::default();
        let spec = MetricSpec::parse("http").expect("spec");
        let h = HttpHandler::register(&mut registry, &spec, ContextOptions::from_spec(&spec));
        h.process(&http_flow(L7FlowType::Request, 0, None));
        h.process(&http_flow(L7FlowType::Response, 403, None));
        let text = scrape(&registry);
        assert!(
            has_line(
                &text,
                "hubble_http_requests_total{method=\"GET\",protocol=\"HTTP/1.1\",reporter=\"server\"} 1"
            ),
            "{text}"
        );
        assert!(
            has_line(
                &text,
                "hubble_http_responses_total{method=\"GET\",protocol=\"HTTP/1.1\",status=\"403\",reporter=\"server\"} 1"
            ),
            "{text}"
        );
        assert_eq!(h.names().len(), 3);
    }
}
