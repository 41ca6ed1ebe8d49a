//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), evaluated against labels.
//! Pools, advertisements and their selectors use them for namespaces, Services, pools and nodes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Why a selector cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector: {0}")]
pub struct SelectorError(pub String);

/// Whether `labels` satisfy `selector`; an empty selector matches everything.
pub fn matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    if let Some(required) = &selector.match_labels
        && required.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return Ok(false);
    }
    for expression in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expression.key);
        let values = expression.values.as_deref().unwrap_or_default();
        let holds = match expression.operator.as_str() {
            "In" => {
                if values.is_empty() {
                    return Err(SelectorError(format!(
                        "{}: In needs values",
                        expression.key
                    )));
                }
                value.is_some_and(|v| values.contains(v))
            }
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(SelectorError(format!(
                    "{}: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)",
                    expression.key
                )));
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks every expression of a selector as kube-apiserver does for built-in selectors: a
/// known operator, values for In and NotIn, none for Exists and DoesNotExist. [`matches`]
/// stops at the first expression that fails, so only this finds every invalid one.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.as_deref().unwrap_or_default();
        let key = &expression.key;
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError(format!(
                    "{key}: {} needs values",
                    expression.operator
                )));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError(format!(
                    "{key}: {} takes no values",
                    expression.operator
                )));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(SelectorError(format!(
                    "{key}: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                )));
            }
        }
    }
    Ok(())
}

/// Whether `labels` satisfy any of `selectors` (MetalLB's lists of selectors are alternatives).
/// One invalid selector makes the whole list an error, whatever the labels.
pub fn matches_any(
    selectors: &[LabelSelector],
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    for selector in selectors {
        validate(selector)?;
    }
    for selector in selectors {
        if matches(selector, labels)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let yes = |v| assert!(matches(&selector(v), &l).unwrap());
        let no = |v| assert!(!matches(&selector(v), &l).unwrap());
        yes(json!({}));
        yes(json!({"matchLabels": {"app": "web"}}));
        no(json!({"matchLabels": {"app": "db"}}));
        yes(
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}),
        );
        no(
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
        );
        yes(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}));
        yes(json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}));
        no(
            json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
        );
        assert!(
            matches(
                &selector(json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})),
                &l
            )
            .is_err()
        );
    }

    #[test]
    fn any_of_a_list() {
        let l = labels(&[("app", "web")]);
        let list = vec![
            selector(json!({"matchLabels": {"app": "db"}})),
            selector(json!({"matchLabels": {"app": "web"}})),
        ];
        assert!(matches_any(&list, &l).unwrap());
        assert!(!matches_any(&[], &l).unwrap());
    }

    #[test]
    fn validation_finds_every_invalid_expression() {
        let invalid = [
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            // Behind an expression that fails for these labels: matches() never reaches it.
            json!({"matchExpressions": [{"key": "absent", "operator": "Exists"},
                                        {"key": "a", "operator": "Near"}]}),
        ];
        for v in invalid {
            assert!(validate(&selector(v.clone())).is_err(), "{v}");
            assert!(
                matches_any(&[selector(json!({})), selector(v.clone())], &labels(&[])).is_err(),
                "{v}"
            );
        }
        assert!(
            validate(&selector(
                json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]})
            ))
            .is_ok()
        );
    }
}
