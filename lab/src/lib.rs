//! ferrolb's lab: an emulated Kubernetes API server for tests and the local demo.

pub mod apiserver;
pub mod netns;
