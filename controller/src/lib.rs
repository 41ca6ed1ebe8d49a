//! ferrolb's controller: allocates external IPs from IPAddressPools to LoadBalancer Services.
//!
//! The allocation rules live in pure modules ([`allocator`], [`pool`], [`service_request`],
//! [`sharing`]) that know nothing of the API server, so that they are tested on their own.

pub mod allocator;
pub mod annotation_lane;
pub mod event_sink;
pub mod health;
pub mod ip_set;
pub mod leader;
pub mod pool;
pub mod runtime;
pub mod service_condition;
pub mod service_request;
pub mod sharing;
