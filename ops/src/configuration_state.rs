//! Writes a component's `ConfigurationState`: whether it could use every pool and
//! advertisement it read, and if not, which and why.
//!
//! The verdict is computed in the component's reconcile pass, which must never wait on the API
//! server; it is handed to a task of its own that writes the newest verdict, retrying with
//! backoff until it lands.

use std::time::Duration;

use ferrolb_crds::configuration_state::{COMPONENT_LABEL, NODE_LABEL};
use ferrolb_crds::{ConfigurationResult, ConfigurationState, ConfigurationStateStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Which component reports, and so the object's name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Controller,
    Speaker { node: String },
}

impl Component {
    /// The object's name, as MetalLB names it.
    pub fn object_name(&self) -> String {
        match self {
            Component::Controller => "controller".into(),
            Component::Speaker { node } => format!("speaker-{node}"),
        }
    }

    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::new();
        match self {
            Component::Controller => {
                labels.insert(COMPONENT_LABEL.into(), "controller".into());
            }
            Component::Speaker { node } => {
                labels.insert(COMPONENT_LABEL.into(), "speaker".into());
                labels.insert(NODE_LABEL.into(), node.clone());
            }
        }
        labels
    }

    /// The condition type of the reconciler whose verdict this is.
    fn condition_type(&self) -> &'static str {
        match self {
            Component::Controller => "poolReconcilerValid",
            Component::Speaker { .. } => "configReconcilerValid",
        }
    }
}

/// The status for a verdict: `problems` lists each ignored or partly used object, one line
/// each ("pool NAME: why"); none means Valid.
pub fn status_for(
    component: &Component,
    problems: &[String],
    transitioned_at: Timestamp,
) -> ConfigurationStateStatus {
    let valid = problems.is_empty();
    ConfigurationStateStatus {
        result: Some(if valid {
            ConfigurationResult::Valid
        } else {
            ConfigurationResult::Invalid
        }),
        error_summary: (!valid).then(|| problems.join("; ")),
        conditions: Some(vec![Condition {
            type_: component.condition_type().into(),
            status: if valid { "True" } else { "False" }.into(),
            reason: if valid {
                "Reconciled"
            } else {
                "ConfigurationError"
            }
            .into(),
            message: problems.join("; "),
            last_transition_time: Time(transitioned_at),
            observed_generation: None,
        }]),
    }
}

/// Hands verdicts to the writer task; dropping it stops the task.
pub struct ConfigurationStateReporter {
    verdicts: watch::Sender<Option<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigurationStateReporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigurationStateReporter {
    /// Starts the writer of `component`'s object in `namespace`.
    pub fn spawn(client: kube::Client, namespace: &str, component: Component) -> Self {
        let (verdicts, mut receiver) = watch::channel::<Option<Vec<String>>>(None);
        let api: Api<ConfigurationState> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            // The verdict written last, and when its result last changed.
            let mut written: Option<Vec<String>> = None;
            let mut transitioned_at = Timestamp::now();
            loop {
                if receiver.changed().await.is_err() {
                    return;
                }
                let mut backoff = Duration::from_millis(200);
                loop {
                    let Some(problems) = receiver.borrow_and_update().clone() else {
                        break;
                    };
                    if written.as_ref() == Some(&problems) {
                        break;
                    }
                    if written.as_ref().map(Vec::is_empty) != Some(problems.is_empty()) {
                        transitioned_at = Timestamp::now();
                    }
                    let status = status_for(&component, &problems, transitioned_at);
                    match write(&api, &component, &status).await {
                        Ok(()) => {
                            info!(object = %component.object_name(), valid = problems.is_empty(), "ConfigurationState written");
                            written = Some(problems);
                            break;
                        }
                        Err(e) => {
                            warn!(error = %e, object = %component.object_name(), "could not write the ConfigurationState; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
        });
        ConfigurationStateReporter { verdicts, task }
    }

    /// The component's newest verdict; written unless it is the one already written.
    pub fn report(&self, problems: Vec<String>) {
        self.verdicts.send_if_modified(|current| {
            if current.as_ref() == Some(&problems) {
                return false;
            }
            *current = Some(problems);
            true
        });
    }
}

/// Writes the status; the object is created first only when it does not exist yet, so a
/// verdict costs one request once it does.
async fn write(
    api: &Api<ConfigurationState>,
    component: &Component,
    status: &ConfigurationStateStatus,
) -> Result<(), kube::Error> {
    let name = component.object_name();
    let body = serde_json::json!({"status": status});
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    let patch_status = || api.patch_status(&name, &params, &patch);
    match patch_status().await {
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        other => return other.map(|_| ()),
    }
    let object = ConfigurationState {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(component.labels()),
            ..Default::default()
        },
        spec: None,
        status: None,
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    patch_status().await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_and_labelled_as_metallb_names_them() {
        let speaker = Component::Speaker {
            node: "node-a".into(),
        };
        assert_eq!(speaker.object_name(), "speaker-node-a");
        assert_eq!(speaker.labels()[COMPONENT_LABEL], "speaker");
        assert_eq!(speaker.labels()[NODE_LABEL], "node-a");
        assert_eq!(Component::Controller.object_name(), "controller");
        assert!(!Component::Controller.labels().contains_key(NODE_LABEL));
    }

    #[test]
    fn a_verdict_with_problems_is_invalid_and_names_them() {
        let now = Timestamp::now();
        let valid = status_for(&Component::Controller, &[], now);
        assert_eq!(valid.result, Some(ConfigurationResult::Valid));
        assert_eq!(valid.error_summary, None);
        let condition = &valid.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "Reconciled")
        );
        let problems = vec!["pool broken: 10.0.0.300/32: not an address".to_string()];
        let invalid = status_for(&Component::Controller, &problems, now);
        assert_eq!(invalid.result, Some(ConfigurationResult::Invalid));
        assert_eq!(invalid.error_summary.as_deref(), Some(problems[0].as_str()));
        assert_eq!(invalid.conditions.unwrap()[0].status, "False");
    }
}
