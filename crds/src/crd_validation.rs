//! What kube-apiserver checks in a CustomResourceDefinition's CEL rules before it admits the
//! CRD: every rule compiles to a bool, and its estimated cost, times the most times it can run
//! in one object (the product of `maxItems` / `maxProperties` above it), stays within the
//! per-rule budget; all rules together stay within the per-CRD budget.
//!
//! The errors are kube-apiserver's, field paths and wording included, so that the emulated API
//! server refuses what a real one refuses with the same 422.

use std::sync::Arc;

use serde_json::Value;

use crate::cel_cost::{CompileError, DeclType, ExpectedResult, rule_cost};
use crate::schema_validation::{ErrorType, FieldError};

/// Most estimated cost one rule may have, counting how often it can run.
pub const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// Most estimated cost all rules of one schema may have together.
pub const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;
const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

/// The CEL problems of a CRD object (`apiextensions.k8s.io/v1`), in kube-apiserver's order.
pub fn validate_crd_rules(crd: &Value) -> Vec<FieldError> {
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let schemas: Vec<&Value> = versions
        .iter()
        .map(|v| &v["schema"]["openAPIV3Schema"])
        .collect();
    // kube-apiserver stores one schema shared by all versions under spec.validation, and
    // reports paths there.
    let shared = !schemas.is_empty() && schemas.iter().all(|s| *s == schemas[0]);
    if shared {
        if schemas[0].is_null() {
            return Vec::new();
        }
        return validate_schema_rules(schemas[0], "spec.validation.openAPIV3Schema");
    }
    let mut errors = Vec::new();
    for (i, schema) in schemas.iter().enumerate() {
        if !schema.is_null() {
            errors.extend(validate_schema_rules(
                schema,
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
            ));
        }
    }
    errors
}

/// The cost of one rule, and where it is, for the "most expensive" report.
struct RuleCost {
    field: String,
    cost: u64,
}

#[derive(Default)]
struct TotalCost {
    total: u64,
    most_expensive: Vec<RuleCost>,
}

impl TotalCost {
    fn observe(&mut self, field: &str, cost: u64) {
        self.total = self.total.saturating_add(cost);
        if cost < STATIC_ESTIMATED_CRD_COST_LIMIT / 100 {
            return;
        }
        self.most_expensive.push(RuleCost {
            field: field.to_string(),
            cost,
        });
        self.most_expensive
            .sort_by_key(|rule| std::cmp::Reverse(rule.cost));
        self.most_expensive.truncate(4);
    }
}

/// The CEL problems of one `openAPIV3Schema` whose field path is `path`.
pub fn validate_schema_rules(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut total = TotalCost::default();
    let mut errors = Vec::new();
    walk(schema, path, Some(1), true, &mut total, &mut errors);
    if total.total > STATIC_ESTIMATED_CRD_COST_LIMIT {
        for expensive in &total.most_expensive {
            errors.push(FieldError::new(
                &expensive.field,
                ErrorType::Forbidden,
                None,
                "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into(),
            ));
        }
        errors.push(FieldError::new(
            path,
            ErrorType::Forbidden,
            None,
            cost_error_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                total.total,
                STATIC_ESTIMATED_CRD_COST_LIMIT,
            ),
        ));
    }
    errors
}

/// kube-apiserver's wording of a budget overrun.
pub fn cost_error_message(what: &str, cost: u64, limit: u64) -> String {
    // The factor is reported, not computed with, so float precision is irrelevant here.
    #[allow(clippy::cast_precision_loss)]
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// How many times more often the children of `schema` can occur than `schema` itself.
fn child_factor(schema: &Value) -> Option<u64> {
    let bounded = |v: &Value| v.as_i64().map(|n| u64::try_from(n.max(0)).unwrap_or(0));
    match schema["type"].as_str() {
        Some("object") if schema.get("additionalProperties").is_some() => {
            bounded(&schema["maxProperties"])
        }
        Some("array") => bounded(&schema["maxItems"]),
        _ => Some(1),
    }
}

fn walk(
    schema: &Value,
    path: &str,
    cardinality: Option<u64>,
    root: bool,
    total: &mut TotalCost,
    errors: &mut Vec<FieldError>,
) {
    let child_cardinality = match (cardinality, child_factor(schema)) {
        (Some(c), Some(f)) => Some(c.saturating_mul(f)),
        _ => None,
    };
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(
            values,
            &format!("{path}.additionalProperties"),
            child_cardinality,
            false,
            total,
            errors,
        );
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            walk(
                property,
                &format!("{path}.properties[{name}]"),
                child_cardinality,
                false,
                total,
                errors,
            );
        }
    }
    if let Some(items) = schema.get("items").filter(|v| v.is_object()) {
        walk(
            items,
            &format!("{path}.items"),
            child_cardinality,
            false,
            total,
            errors,
        );
    }
    let Some(rules) = schema["x-kubernetes-validations"].as_array() else {
        return;
    };
    if rules.is_empty() {
        return;
    }
    let embedded = schema["x-kubernetes-embedded-resource"] == Value::Bool(true);
    let Some(self_type) = DeclType::of_schema(schema, root || embedded).map(Arc::new) else {
        errors.push(FieldError::new(
            &format!("{path}.x-kubernetes-validations"),
            ErrorType::Invalid,
            Some(Value::String(String::new())),
            format!(
                "rule declared on schema that does not support validation rules type: '{}' x-kubernetes-preserve-unknown-fields: '{}'",
                schema["type"].as_str().unwrap_or(""),
                schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
            ),
        ));
        return;
    };
    let times = cardinality.unwrap_or_else(|| {
        let size = u64::try_from(self_type.min_serialized_size.max(0)).unwrap_or(0);
        MAX_REQUEST_SIZE_BYTES / (size + 1)
    });
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{path}.x-kubernetes-validations[{i}]");
        let text = rule["rule"].as_str().unwrap_or("").trim();
        if text.is_empty() {
            errors.push(FieldError::new(
                &format!("{rule_path}.rule"),
                ErrorType::Required,
                None,
                "rule is not specified".into(),
            ));
            continue;
        }
        match rule_cost(text, &self_type, ExpectedResult::Bool) {
            Ok(cost) => {
                let cost = multiply_guarded(cost, times);
                if cost > STATIC_ESTIMATED_COST_LIMIT {
                    errors.push(FieldError::new(
                        &format!("{rule_path}.rule"),
                        ErrorType::Forbidden,
                        None,
                        cost_error_message(
                            "estimated rule cost",
                            cost,
                            STATIC_ESTIMATED_COST_LIMIT,
                        ),
                    ));
                }
                total.observe(&format!("{rule_path}.rule"), cost);
            }
            Err(CompileError(detail)) => errors.push(FieldError::new(
                &format!("{rule_path}.rule"),
                ErrorType::Invalid,
                Some(Value::String(text.to_string())),
                detail,
            )),
        }
        if let Some(message_expression) = rule["messageExpression"]
            .as_str()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let field = format!("{rule_path}.messageExpression");
            match rule_cost(message_expression, &self_type, ExpectedResult::String) {
                Ok(cost) => {
                    if cost > STATIC_ESTIMATED_COST_LIMIT {
                        errors.push(FieldError::new(
                            &field,
                            ErrorType::Forbidden,
                            None,
                            cost_error_message(
                                "estimated messageExpression cost",
                                cost,
                                STATIC_ESTIMATED_COST_LIMIT,
                            ),
                        ));
                    }
                    total.observe(&field, cost);
                }
                Err(CompileError(detail)) => errors.push(FieldError::new(
                    &field,
                    ErrorType::Invalid,
                    Some(Value::String(message_expression.to_string())),
                    detail,
                )),
            }
        }
    }
}

fn multiply_guarded(cost: u64, times: u64) -> u64 {
    if cost == 0 {
        return 0;
    }
    cost.saturating_mul(times)
}
