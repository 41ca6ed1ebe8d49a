//! `kubectl ferrolb`: an operator's view of ferrolb, computed with the components' own
//! decision code on what the API server holds.
//!
//! - [`explain`]: where a Service's addresses came from or why it has none; who answers,
//!   who could, in which order, and why not the others.
//! - [`status_report`]: pools, speakers, configuration verdicts, conflicts, waiting Services.
//! - [`validate`]: offline checks of manifests with the API server's and controller's words.
//! - [`migrate`]: MetalLB's legacy ConfigMap as IPAddressPool and L2Advertisement manifests.

pub mod cluster_view;
pub mod explain;
pub mod migrate;
pub mod status_report;
pub mod validate;
