//! How much a CEL rule may cost, as kube-apiserver estimates it when a CRD is created or
//! updated. A rule whose estimate exceeds the budget makes kube-apiserver refuse the whole
//! CRD, so the emulated API server and `crdgen`'s tests must reach the same verdict.

pub mod decl_type;
mod estimator;
pub mod types;

use std::sync::Arc;

pub use decl_type::DeclType;
pub use estimator::Range;
use types::CelType;

/// Why a rule cannot be compiled, in kube-apiserver's wording.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError(pub String);

/// The estimated worst-case cost of one evaluation of `rule` on a value of type `self_type`,
/// which must produce `result` (a bool for rules, a string for message expressions).
pub fn rule_cost(
    rule: &str,
    self_type: &Arc<DeclType>,
    result: ExpectedResult,
) -> Result<u64, CompileError> {
    let expr = cel::parser::Parser::new()
        .parse(rule)
        .map_err(|e| CompileError(format!("compilation failed: ERROR: <input>: {e}")))?;
    let checked = types::check(&expr, CelType::of_decl(self_type))
        .map_err(|e| CompileError(format!("compilation failed: ERROR: <input>: {}", e.0)))?;
    let produced = checked.type_of(expr.id);
    let fits = match result {
        ExpectedResult::Bool => matches!(produced, CelType::Bool | CelType::Dyn),
        ExpectedResult::String => matches!(produced, CelType::String | CelType::Dyn),
    };
    if !fits {
        return Err(CompileError(match result {
            ExpectedResult::Bool => "cel expression must evaluate to a bool".into(),
            ExpectedResult::String => "messageExpression must evaluate to a string".into(),
        }));
    }
    Ok(estimator::estimate(&expr, &checked, self_type).max)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedResult {
    Bool,
    String,
}
