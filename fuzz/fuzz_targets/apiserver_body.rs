//! Any request body, as JSON, YAML or Kubernetes protobuf (the first byte picks the content
//! type): the emulated API server decodes it or answers with an error, never panics.
#![no_main]

use ferrolb_lab::apiserver::handler::decode_object_body;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 3] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let _ = decode_object_body(content_type, body);
});
