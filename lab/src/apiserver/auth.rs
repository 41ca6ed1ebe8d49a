//! Authentication (bearer tokens mapped to users and service accounts) and RBAC authorization
//! from the Roles, ClusterRoles and bindings stored in the server, as kube-apiserver does it.
//!
//! A server starts open (every request allowed) until identities are added with
//! [`Identities::enable`]; from then on unknown tokens get 401 and requests RBAC does not allow
//! get 403 with kube-apiserver's message.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::resources::{Registry, StorageKey};
use super::status::ApiError;
use super::store::Store;
use super::strings;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user of a service account's token.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// A cluster administrator (group system:masters, which RBAC always allows).
    pub fn admin() -> Self {
        UserInfo {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// The identities the server knows, by bearer token.
#[derive(Default)]
pub struct Identities {
    enforcing: AtomicBool,
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl Identities {
    /// Adds a token; the server authenticates and authorizes every request from now on.
    pub fn enable(&self, token: &str, user: UserInfo) {
        self.tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.to_string(), user);
        self.enforcing.store(true, Ordering::SeqCst);
    }

    /// Registers a new token for a service account and returns it.
    pub fn issue_service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("sa-{namespace}-{name}-{}", uuid::Uuid::new_v4().simple());
        self.enable(&token, UserInfo::service_account(namespace, name));
        token
    }

    pub fn enforcing(&self) -> bool {
        self.enforcing.load(Ordering::SeqCst)
    }

    /// The user behind an `Authorization` header; `None` when not enforcing.
    pub fn authenticate(&self, authorization: &str) -> Result<Option<UserInfo>, ApiError> {
        if !self.enforcing() {
            return Ok(None);
        }
        let token = authorization.strip_prefix("Bearer ").unwrap_or("").trim();
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
            .map(Some)
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))
    }
}

/// What a resource request does, in RBAC's terms.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub api_group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Attributes<'_> {
    fn resource_with_subresource(&self) -> String {
        match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_string(),
        }
    }
}

fn rule_allows(rule: &Value, attributes: &Attributes<'_>) -> bool {
    let matches = |list: Vec<String>, wanted: &str| list.iter().any(|v| v == "*" || v == wanted);
    if !matches(strings(&rule["verbs"]), attributes.verb) {
        return false;
    }
    if !matches(strings(&rule["apiGroups"]), attributes.api_group) {
        return false;
    }
    let wanted = attributes.resource_with_subresource();
    let resource_matches = strings(&rule["resources"]).iter().any(|r| {
        r == "*"
            || *r == wanted
            || (attributes.subresource.is_none() && r == attributes.resource)
            || r.strip_prefix("*/")
                .is_some_and(|sub| attributes.subresource == Some(sub))
            || (r.ends_with("/*")
                && attributes.subresource.is_some()
                && r.trim_end_matches("/*") == attributes.resource)
    });
    if !resource_matches {
        return false;
    }
    let names = strings(&rule["resourceNames"]);
    names.is_empty()
        || attributes
            .name
            .is_some_and(|n| names.iter().any(|x| x == n))
}

fn subject_matches(subject: &Value, user: &UserInfo) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => name == user.name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let namespace = subject["namespace"].as_str().unwrap_or("");
            user.name == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

fn storage(registry: &Registry, plural: &str) -> Option<StorageKey> {
    registry
        .find("rbac.authorization.k8s.io", "v1", plural)
        .map(|t| t.storage_key())
}

/// The rules the role a binding refers to grants, if it exists.
fn role_rules(
    store: &Store,
    registry: &Registry,
    binding: &Value,
    binding_namespace: &str,
) -> Vec<Value> {
    let role_name = binding["roleRef"]["name"].as_str().unwrap_or("");
    let role = match binding["roleRef"]["kind"].as_str() {
        Some("ClusterRole") => {
            storage(registry, "clusterroles").and_then(|s| store.get(&s, "", role_name))
        }
        Some("Role") => {
            storage(registry, "roles").and_then(|s| store.get(&s, binding_namespace, role_name))
        }
        _ => None,
    };
    role.and_then(|r| r["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether RBAC lets `user` do what `attributes` describe.
pub fn authorize(
    store: &Store,
    registry: &Registry,
    user: &UserInfo,
    attributes: &Attributes<'_>,
) -> bool {
    if user.is_master() {
        return true;
    }
    let bound = |bindings: Vec<Value>, namespace: &str| {
        bindings.iter().any(|binding| {
            strings_of_subjects(binding)
                .iter()
                .any(|s| subject_matches(s, user))
                && role_rules(store, registry, binding, namespace)
                    .iter()
                    .any(|rule| rule_allows(rule, attributes))
        })
    };
    if let Some(key) = storage(registry, "clusterrolebindings")
        && bound(store.list(&key, None).0, "")
    {
        return true;
    }
    if let (Some(namespace), Some(key)) = (attributes.namespace, storage(registry, "rolebindings"))
    {
        return bound(store.list(&key, Some(namespace)).0, namespace);
    }
    false
}

fn strings_of_subjects(binding: &Value) -> Vec<Value> {
    binding["subjects"].as_array().cloned().unwrap_or_default()
}

/// kube-apiserver's 403 for a request RBAC refused.
pub fn forbidden(user: &UserInfo, attributes: &Attributes<'_>) -> ApiError {
    let what = match attributes.name {
        Some(name) => format!("{} \"{name}\"", qualified(attributes)),
        None => qualified(attributes),
    };
    let scope = match attributes.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        user.name,
        attributes.verb,
        attributes.resource_with_subresource(),
        attributes.api_group,
    );
    let mut details = serde_json::json!({"kind": attributes.resource});
    if let Some(name) = attributes.name {
        details["name"] = Value::String(name.to_string());
    }
    if !attributes.api_group.is_empty() {
        details["group"] = Value::String(attributes.api_group.to_string());
    }
    let mut error = ApiError::new(403, "Forbidden", message);
    error.details = Some(details);
    error
}

fn qualified(attributes: &Attributes<'_>) -> String {
    let mut name = attributes.resource.to_string();
    if !attributes.api_group.is_empty() {
        name = format!("{name}.{}", attributes.api_group);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attributes<'a>(
        verb: &'a str,
        resource: &'a str,
        subresource: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            api_group: "",
            resource,
            subresource,
            namespace: Some("default"),
            name,
        }
    }

    #[test]
    fn rules_match_verbs_resources_subresources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["services", "services/status"], "verbs": ["get", "patch"]});
        assert!(rule_allows(
            &rule,
            &attributes("get", "services", None, Some("a"))
        ));
        assert!(rule_allows(
            &rule,
            &attributes("patch", "services", Some("status"), Some("a"))
        ));
        assert!(!rule_allows(
            &rule,
            &attributes("delete", "services", None, Some("a"))
        ));
        assert!(!rule_allows(
            &rule,
            &attributes("get", "endpoints", None, Some("a"))
        ));
        let status_only =
            json!({"apiGroups": [""], "resources": ["services/status"], "verbs": ["patch"]});
        assert!(!rule_allows(
            &status_only,
            &attributes("patch", "services", None, Some("a"))
        ));
        let named = json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["lock"], "verbs": ["get", "update"]});
        assert!(rule_allows(
            &named,
            &attributes("get", "configmaps", None, Some("lock"))
        ));
        assert!(!rule_allows(
            &named,
            &attributes("get", "configmaps", None, Some("other"))
        ));
        assert!(!rule_allows(
            &named,
            &attributes("list", "configmaps", None, None)
        ));
        let wildcard = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &wildcard,
            &attributes("deletecollection", "pods", None, None)
        ));
    }

    #[test]
    fn forbidden_messages_read_like_kube_apiserver() {
        let user = UserInfo::service_account("metallb-system", "ferrolb-speaker");
        let error = forbidden(
            &user,
            &attributes("patch", "services", Some("status"), Some("myapp")),
        );
        assert_eq!(
            error.message,
            "services \"myapp\" is forbidden: User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot patch resource \"services/status\" in API group \"\" in the namespace \"default\""
        );
        let list_nodes = Attributes {
            verb: "list",
            api_group: "",
            resource: "nodes",
            subresource: None,
            namespace: None,
            name: None,
        };
        assert_eq!(
            forbidden(&user, &list_nodes).message,
            "nodes is forbidden: User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }
}
