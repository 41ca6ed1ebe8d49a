//! What the shipped monitoring (config/monitoring) queries, and what a component exports: the
//! two sides of the check that no alert or panel asks for a metric nobody exports.

use std::collections::{BTreeMap, BTreeSet};

/// The component that exports a metric, by its name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Controller,
    Speaker,
}

/// Who exports a metric of this name: one component, both (MetalLB's client metrics), or
/// none of ferrolb's (a name no prefix claims).
pub fn exporters(metric: &str) -> Vec<Component> {
    const OWNERS: [(&str, &[Component]); 6] = [
        ("ferrolb_controller_", &[Component::Controller]),
        ("metallb_allocator_", &[Component::Controller]),
        ("ferrolb_speaker_", &[Component::Speaker]),
        ("metallb_layer2_", &[Component::Speaker]),
        ("metallb_speaker_", &[Component::Speaker]),
        (
            "metallb_k8s_client_",
            &[Component::Controller, Component::Speaker],
        ),
    ];
    OWNERS
        .iter()
        .find(|(prefix, _)| metric.starts_with(prefix))
        .map(|(_, owners)| owners.to_vec())
        .unwrap_or_default()
}

/// Every PromQL expression of the shipped alert rules and dashboard, with where it is used.
pub fn shipped_queries() -> anyhow::Result<Vec<(String, String)>> {
    let dir = crate::repo_root().join("config/monitoring");
    let mut queries = Vec::new();
    let rules = std::fs::read_to_string(dir.join("prometheus-rule.yaml"))?;
    for document in crate::yaml_documents(&rules)? {
        for group in document["spec"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let name = rule["alert"].as_str().or(rule["record"].as_str());
                let (Some(name), Some(expr)) = (name, rule["expr"].as_str()) else {
                    anyhow::bail!("a rule without a name or an expression: {rule}");
                };
                queries.push((format!("alert {name}"), expr.to_string()));
            }
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.join("grafana-dashboard.json"),
    )?)?;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("untitled");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                anyhow::bail!("panel {title:?}: a target without an expression");
            };
            queries.push((format!("panel {title:?}"), expr.to_string()));
        }
    }
    Ok(queries)
}

/// Every metric the shipped queries read, with the alerts and panels that read it.
pub fn queried_metrics() -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (used_by, expr) in shipped_queries()? {
        for name in promql_metric_names(&expr) {
            metrics.entry(name).or_default().insert(used_by.clone());
        }
    }
    Ok(metrics)
}

/// PromQL words that are not metric names where they stand alone (aggregations may be
/// followed by `by (...)` rather than by their parenthesis).
const KEYWORDS: [&str; 25] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
];

/// Keywords whose parenthesised list names labels, not metrics.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names an expression selects: identifiers that are not functions (followed by
/// `(`), keywords, label names (in `{...}` or after `by`/`on`...), strings, durations or
/// numbers.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After a keyword that takes a label list, the next `(...)` holds labels.
    let mut labels_follow = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = past_quoted(&chars, i),
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                i += 1;
                while i < chars.len() && chars[i] != close {
                    i = if chars[i] == '"' || chars[i] == '\'' {
                        past_quoted(&chars, i)
                    } else {
                        i + 1
                    };
                }
                i += 1;
            }
            '(' if labels_follow => {
                labels_follow = false;
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (5m, 1.5e3, 0x1f).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) {
                    labels_follow = true;
                } else if !called && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Where the string starting with the quote at `start` ends (just past its closing quote).
fn past_quoted(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The metrics the shipped queries read of `component`'s that its `/metrics` text
/// (`metrics_text`, with a series in every labelled family) does not expose, each with what
/// reads it. Panics if the queries read fewer than five of its metrics: the check would be
/// empty.
pub fn unexported_reads(component: Component, metrics_text: &str) -> anyhow::Result<Vec<String>> {
    let exported = exported_metric_names(metrics_text);
    let queried = queried_metrics()?;
    let read: Vec<_> = queried
        .iter()
        .filter(|(metric, _)| exporters(metric).contains(&component))
        .collect();
    assert!(read.len() >= 5, "{component:?} reads: {read:?}");
    Ok(read
        .into_iter()
        .filter(|(metric, _)| !exported.contains(*metric))
        .map(|(metric, used_by)| {
            format!(
                "{metric} (read by {used_by:?}) is not exported; {component:?} exports {exported:?}"
            )
        })
        .collect())
}

/// The sample names a component's `/metrics` text exposes, from its `# TYPE` lines (a counter
/// `x` is sampled as `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`).
pub fn exported_metric_names(metrics_text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics_text.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "info" => {
                names.insert(format!("{name}_info"));
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        promql_metric_names(expr).into_iter().collect()
    }

    #[test]
    fn metric_names_are_told_from_functions_labels_and_keywords() {
        assert_eq!(
            names(
                r#"sum by (node, kind) (increase(ferrolb_speaker_address_conflicts_total{kind!="x"}[5m])) > 0"#
            ),
            ["ferrolb_speaker_address_conflicts_total"]
        );
        assert_eq!(
            names("a / (b > 0) > 0.9 and on(pool) c unless ignoring (le) d offset 5m"),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            names(
                "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) or absent(y) or vector(1e3)"
            ),
            ["x_bucket", "y"]
        );
        assert_eq!(names(r#"max by (pod) (m{pod=~"a.*b"}) == bool 1"#), ["m"]);
    }

    #[test]
    fn exported_names_follow_the_type_lines() {
        let text = "# HELP a_b A.\n# TYPE a_b counter\na_b_total 1\n# TYPE c gauge\n# TYPE d histogram\n# TYPE e unknown\ne 2\n# EOF\n";
        assert_eq!(
            exported_metric_names(text).into_iter().collect::<Vec<_>>(),
            ["a_b_total", "c", "d_bucket", "d_count", "d_sum", "e"]
        );
    }

    #[test]
    fn every_shipped_query_reads_metrics_a_component_exports_by_name() {
        let queried = queried_metrics().unwrap();
        assert!(!queried.is_empty());
        for (metric, used_by) in &queried {
            assert!(
                !exporters(metric).is_empty(),
                "{metric} (read by {used_by:?}) is not a ferrolb or MetalLB metric name"
            );
        }
    }
}
