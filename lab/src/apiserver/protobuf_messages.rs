// The field tables of the mapped messages (see protobuf.rs): JSON name => k8s-pb field.
// Generated once from k8s-pb's types, with JSON names from kube-apiserver's OpenAPI; kept by hand.

json_message!(meta::ObjectMeta {
    "name" => name,
    "generateName" => generate_name,
    "namespace" => namespace,
    "selfLink" => self_link,
    "uid" => uid,
    "resourceVersion" => resource_version,
    "generation" => generation,
    "creationTimestamp" => creation_timestamp,
    "deletionTimestamp" => deletion_timestamp,
    "deletionGracePeriodSeconds" => deletion_grace_period_seconds as pointer,
    "labels" => labels,
    "annotations" => annotations,
    "ownerReferences" => owner_references,
    "finalizers" => finalizers,
    "managedFields" => managed_fields,
});
json_message!(meta::OwnerReference {
    "apiVersion" => api_version,
    "kind" => kind,
    "name" => name,
    "uid" => uid,
    "controller" => controller as pointer,
    "blockOwnerDeletion" => block_owner_deletion as pointer,
});
json_message!(meta::ManagedFieldsEntry {
    "manager" => manager,
    "operation" => operation,
    "apiVersion" => api_version,
    "time" => time,
    "fieldsType" => fields_type,
    "fieldsV1" => fields_v1,
    "subresource" => subresource,
});
json_message!(meta::LabelSelector {
    "matchLabels" => match_labels,
    "matchExpressions" => match_expressions,
});
json_message!(meta::LabelSelectorRequirement {
    "key" => key,
    "operator" => operator,
    "values" => values,
});
json_message!(meta::Condition {
    "type" => r#type,
    "status" => status,
    "observedGeneration" => observed_generation,
    "lastTransitionTime" => last_transition_time,
    "reason" => reason,
    "message" => message,
});
json_message!(core::Namespace {
    "metadata" => metadata,
    "spec" => spec,
    "status" => status,
});
json_message!(core::NamespaceSpec {
    "finalizers" => finalizers,
});
json_message!(core::NamespaceStatus {
    "phase" => phase,
    "conditions" => conditions,
});
json_message!(core::NamespaceCondition {
    "type" => r#type,
    "status" => status,
    "lastTransitionTime" => last_transition_time,
    "reason" => reason,
    "message" => message,
});
json_message!(core::Service {
    "metadata" => metadata,
    "spec" => spec,
    "status" => status,
});
json_message!(core::ServiceSpec {
    "ports" => ports,
    "selector" => selector,
    "clusterIP" => cluster_ip,
    "clusterIPs" => cluster_ips,
    "type" => r#type,
    "externalIPs" => external_ips,
    "sessionAffinity" => session_affinity,
    "loadBalancerIP" => load_balancer_ip,
    "loadBalancerSourceRanges" => load_balancer_source_ranges,
    "externalName" => external_name,
    "externalTrafficPolicy" => external_traffic_policy,
    "healthCheckNodePort" => health_check_node_port,
    "publishNotReadyAddresses" => publish_not_ready_addresses,
    "sessionAffinityConfig" => session_affinity_config,
    "ipFamilies" => ip_families,
    "ipFamilyPolicy" => ip_family_policy as pointer,
    "allocateLoadBalancerNodePorts" => allocate_load_balancer_node_ports as pointer,
    "loadBalancerClass" => load_balancer_class as pointer,
    "internalTrafficPolicy" => internal_traffic_policy as pointer,
    "trafficDistribution" => traffic_distribution as pointer,
});
json_message!(core::ServicePort {
    "name" => name,
    "protocol" => protocol,
    "appProtocol" => app_protocol as pointer,
    "port" => port,
    "targetPort" => target_port,
    "nodePort" => node_port,
});
json_message!(core::ServiceStatus {
    "loadBalancer" => load_balancer,
    "conditions" => conditions,
});
json_message!(core::LoadBalancerStatus {
    "ingress" => ingress,
});
json_message!(core::LoadBalancerIngress {
    "ip" => ip,
    "hostname" => hostname,
    "ipMode" => ip_mode as pointer,
    "ports" => ports,
});
json_message!(core::PortStatus {
    "port" => port,
    "protocol" => protocol,
    "error" => error as pointer,
});
json_message!(core::SessionAffinityConfig {
    "clientIP" => client_ip,
});
json_message!(core::ClientIpConfig {
    "timeoutSeconds" => timeout_seconds as pointer,
});
json_message!(core::ConfigMap {
    "metadata" => metadata,
    "immutable" => immutable as pointer,
    "data" => data,
    "binaryData" => binary_data,
});
json_message!(core::Secret {
    "metadata" => metadata,
    "immutable" => immutable as pointer,
    "data" => data,
    "stringData" => string_data,
    "type" => r#type,
});
json_message!(core::ServiceAccount {
    "metadata" => metadata,
    "secrets" => secrets,
    "imagePullSecrets" => image_pull_secrets,
    "automountServiceAccountToken" => automount_service_account_token as pointer,
});
json_message!(core::ObjectReference {
    "kind" => kind,
    "namespace" => namespace,
    "name" => name,
    "uid" => uid,
    "apiVersion" => api_version,
    "resourceVersion" => resource_version,
    "fieldPath" => field_path,
});
json_message!(core::LocalObjectReference {
    "name" => name,
});
json_message!(rbac::Role {
    "metadata" => metadata,
    "rules" => rules,
});
json_message!(rbac::ClusterRole {
    "metadata" => metadata,
    "rules" => rules,
    "aggregationRule" => aggregation_rule,
});
json_message!(rbac::RoleBinding {
    "metadata" => metadata,
    "subjects" => subjects,
    "roleRef" => role_ref,
});
json_message!(rbac::ClusterRoleBinding {
    "metadata" => metadata,
    "subjects" => subjects,
    "roleRef" => role_ref,
});
json_message!(rbac::PolicyRule {
    "verbs" => verbs,
    "apiGroups" => api_groups,
    "resources" => resources,
    "resourceNames" => resource_names,
    "nonResourceURLs" => non_resource_ur_ls,
});
json_message!(rbac::Subject {
    "kind" => kind,
    "apiGroup" => api_group,
    "name" => name,
    "namespace" => namespace,
});
json_message!(rbac::RoleRef {
    "apiGroup" => api_group,
    "kind" => kind,
    "name" => name,
});
json_message!(rbac::AggregationRule {
    "clusterRoleSelectors" => cluster_role_selectors,
});
json_message!(authentication::TokenRequest {
    "metadata" => metadata,
    "spec" => spec,
    "status" => status,
});
json_message!(authentication::TokenRequestSpec {
    "audiences" => audiences,
    "expirationSeconds" => expiration_seconds as pointer,
    "boundObjectRef" => bound_object_ref,
});
json_message!(authentication::TokenRequestStatus {
    "token" => token,
    "expirationTimestamp" => expiration_timestamp,
});
json_message!(authentication::BoundObjectReference {
    "kind" => kind,
    "apiVersion" => api_version,
    "name" => name,
    "uid" => u_id,
});
