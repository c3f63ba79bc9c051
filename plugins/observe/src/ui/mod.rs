//! The Flow UI: a live service map of a namespace in the browser, served by
//! `porin relay --ui ADDR` over any Hubble Observer API (docs/ui.md).
//!
//! - [`server`]: the HTTP routes (axum) and the listener;
//! - [`stream`]: one followed `GetFlows` per open page, aggregated here;
//! - [`graph`]: the service map (nodes, edges, verdicts, rates);
//! - [`rows`]: the flow table's lines;
//! - [`hints`]: policy hints, answered by whoever holds the policies;
//! - [`assets`]: the page (HTML, JS, CSS), embedded.

mod assets;
pub mod graph;
pub mod hints;
pub mod rows;
pub mod server;
pub mod stream;

pub use graph::{MapEdge, MapNode, MapSnapshot, ServiceMap};
pub use hints::{NoPolicyHints, PolicyHint, PolicyHintQuery, PolicyHints};
pub use rows::FlowRow;
pub use server::{DEFAULT_UI_PORT, StdUiListener, UiConfig, UiError, UiListener, router};
