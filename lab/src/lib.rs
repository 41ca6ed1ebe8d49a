//! ferrolb's lab: an emulated Kubernetes API server for tests and the local demo.

pub mod apiserver;
pub mod demo;
pub mod helpers;
pub mod machine;
pub mod netns;
pub mod target_cluster;
