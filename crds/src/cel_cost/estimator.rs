//! The worst-case cost kube-apiserver estimates for a CEL rule before it admits a CRD.
//!
//! Three parts, each following what kube-apiserver runs, because the verdict (admit or refuse
//! the CRD) must be the same:
//! - cel-go's static cost walk: every identifier and select costs 1, list literals 10, string
//!   operations a tenth of the string's size, comprehensions their range's size times their
//!   body, and sizes are tracked through the expression;
//! - the Kubernetes library's per-function costs (`split`, `trim`, `containsIP`, ...);
//! - the CRD's size estimator: a size nobody computed is looked up in the schema by the
//!   expression's path from `self` (`maxLength` counts 4 bytes a character, `maxItems`).
//!
//! Where those rules give a size nobody can bound (the result of `string(int)`, say), the
//! estimate is the largest number there is, which is what makes a rule "exceed the budget by
//! more than 100x".

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};

use super::decl_type::{DeclKind, DeclType};
use super::types::{CelType, Checked, Kind};

const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;
const SELECT_AND_IDENT_COST: u64 = 1;
const ACCUMULATOR_NAMES: [&str; 2] = ["@result", "__result__"];

/// A range of sizes or costs; sums and products saturate at `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const UNKNOWN: Range = Range {
        min: 0,
        max: u64::MAX,
    };

    pub fn fixed(n: u64) -> Range {
        Range { min: n, max: n }
    }

    fn add(self, other: Range) -> Range {
        Range {
            min: self.min.saturating_add(other.min),
            max: self.max.saturating_add(other.max),
        }
    }

    fn multiply(self, other: Range) -> Range {
        Range {
            min: self.min.saturating_mul(other.min),
            max: self.max.saturating_mul(other.max),
        }
    }

    /// Times a cost factor, rounded up, as cel-go does in floating point.
    fn times(self, factor: f64) -> Range {
        Range {
            min: times_factor(self.min, factor),
            max: times_factor(self.max, factor),
        }
    }

    fn union(self, other: Range) -> Range {
        Range {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

// Cost arithmetic in f64 is what cel-go does; the casts are that arithmetic, saturating.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn times_factor(x: u64, factor: f64) -> u64 {
    let x = x as f64;
    if x > 0.0 && factor > 0.0 && x > u64::MAX as f64 / factor {
        return u64::MAX;
    }
    let product = (x * factor).ceil();
    if product >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        product as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct EntrySize {
    container: Kind,
    key: Range,
    value: Range,
}

impl EntrySize {
    fn union(a: Option<EntrySize>, b: Option<EntrySize>) -> Option<EntrySize> {
        let (a, b) = (a?, b?);
        Some(EntrySize {
            container: a.container,
            key: a.key.union(b.key),
            value: a.value.union(b.value),
        })
    }
}

struct LocalVar {
    path: Vec<String>,
    size: Option<Range>,
    entry: Option<EntrySize>,
}

/// What cel-go calls an AstNode: an argument or receiver as the function coster sees it.
struct Node<'a> {
    expr: Option<&'a IdedExpr>,
    path: Vec<String>,
    cel_type: CelType,
    computed: Option<Range>,
}

struct Call {
    cost: Range,
    result_size: Option<Range>,
}

struct Coster<'a> {
    checked: &'a Checked,
    root: &'a Arc<DeclType>,
    paths: HashMap<u64, Vec<String>>,
    locals: HashMap<String, Vec<LocalVar>>,
    sizes: HashMap<u64, Range>,
    entries: HashMap<u64, EntrySize>,
}

/// The estimated cost range of a type-checked rule whose `self` is `root`.
pub fn estimate(expr: &IdedExpr, checked: &Checked, root: &Arc<DeclType>) -> Range {
    let mut coster = Coster {
        checked,
        root,
        paths: HashMap::new(),
        locals: HashMap::new(),
        sizes: HashMap::new(),
        entries: HashMap::new(),
    };
    coster.cost(expr)
}

impl<'a> Coster<'a> {
    fn cost(&mut self, e: &'a IdedExpr) -> Range {
        match &e.expr {
            Expr::Literal(_) => Range::fixed(0),
            Expr::Ident(name) => {
                let path = match self.local(name) {
                    Some(var) => var.path.clone(),
                    None => vec![name.clone()],
                };
                self.paths.insert(e.id, path);
                Range::fixed(SELECT_AND_IDENT_COST)
            }
            Expr::Select(select) => {
                if select.test {
                    // kube-apiserver prices presence tests at zero.
                    return self.cost(&select.operand);
                }
                let mut sum = self.cost(&select.operand);
                let operand_kind = self.checked.type_of(select.operand.id).kind();
                if matches!(operand_kind, Kind::Map | Kind::Struct) {
                    sum = sum.add(Range::fixed(SELECT_AND_IDENT_COST));
                }
                let mut path = self.path_of(&select.operand);
                path.push(select.field.clone());
                self.paths.insert(e.id, path);
                sum
            }
            Expr::Call(call) => self.cost_call(e, call),
            Expr::List(list) => {
                let mut sum = Range::fixed(0);
                let mut item_size = Range {
                    min: if list.elements.is_empty() {
                        0
                    } else {
                        u64::MAX
                    },
                    max: 0,
                };
                for item in &list.elements {
                    sum = sum.add(self.cost(item));
                    item_size = item_size.union(self.size_or_unknown(item));
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        container: Kind::List,
                        key: Range::fixed(1),
                        value: item_size,
                    },
                );
                sum.add(Range::fixed(LIST_CREATE_BASE_COST))
            }
            Expr::Map(map) => {
                let mut sum = Range::fixed(0);
                let empty_min = if map.entries.is_empty() { 0 } else { u64::MAX };
                let mut key_size = Range {
                    min: empty_min,
                    max: 0,
                };
                let mut value_size = key_size;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        sum = sum.add(self.cost(&entry.key));
                        sum = sum.add(self.cost(&entry.value));
                        key_size = key_size.union(self.size_or_unknown(&entry.key));
                        value_size = value_size.union(self.size_or_unknown(&entry.value));
                    }
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        container: Kind::Map,
                        key: key_size,
                        value: value_size,
                    },
                );
                sum.add(Range::fixed(MAP_CREATE_BASE_COST))
            }
            Expr::Comprehension(comp) => self.cost_comprehension(e, comp),
            Expr::Struct(_) | Expr::Unspecified => Range::fixed(0),
        }
    }

    fn local(&self, name: &str) -> Option<&LocalVar> {
        self.locals.get(name).and_then(|stack| stack.last())
    }

    fn path_of(&self, e: &IdedExpr) -> Vec<String> {
        if let Expr::Ident(name) = &e.expr
            && let Some(var) = self.local(name)
        {
            return var.path.clone();
        }
        self.paths.get(&e.id).cloned().unwrap_or_default()
    }

    fn node(&mut self, e: &'a IdedExpr) -> Node<'a> {
        let mut path = self.path_of(e);
        if path
            .first()
            .is_some_and(|first| ACCUMULATOR_NAMES.contains(&first.as_str()))
        {
            path.clear();
        }
        Node {
            expr: Some(e),
            path,
            cel_type: self.checked.type_of(e.id),
            computed: self.compute_size(e),
        }
    }

    /// The size of an expression: computed, literal, from the schema, scalar, or a variable's.
    fn compute_size(&mut self, e: &IdedExpr) -> Option<Range> {
        if let Some(size) = self.sizes.get(&e.id) {
            return Some(*size);
        }
        if let Some(size) = literal_size(e) {
            return Some(size);
        }
        let path = self.path_of(e);
        if let Some(size) = schema_size(self.root, &path) {
            self.sizes.insert(e.id, size);
            return Some(size);
        }
        if self.checked.type_of(e.id).kind() == Kind::Scalar {
            return Some(Range::fixed(1));
        }
        if let Expr::Ident(name) = &e.expr
            && let Some(var) = self.local(name)
        {
            return var.size;
        }
        None
    }

    fn size_or_unknown(&mut self, e: &IdedExpr) -> Range {
        self.compute_size(e).unwrap_or(Range::UNKNOWN)
    }

    fn entry_size(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(entry) = self.entries.get(&e.id) {
            return Some(*entry);
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|var| var.entry);
        }
        None
    }

    fn push_local(
        &mut self,
        name: &str,
        path: Vec<String>,
        size: Option<Range>,
        entry: Option<EntrySize>,
    ) {
        self.locals
            .entry(name.to_string())
            .or_default()
            .push(LocalVar { path, size, entry });
    }

    fn pop_local(&mut self, name: &str) {
        if let Some(stack) = self.locals.get_mut(name) {
            stack.pop();
        }
    }

    fn cost_comprehension(&mut self, e: &'a IdedExpr, comp: &'a ComprehensionExpr) -> Range {
        if is_bind(comp) {
            let mut sum = self.cost(&comp.iter_range).add(self.cost(&comp.accu_init));
            let path = self.path_of(&comp.accu_init);
            let size = self.compute_size(&comp.accu_init);
            let entry = self.entry_size(&comp.accu_init);
            self.push_local(&comp.accu_var, path, size, entry);
            sum = sum.add(self.cost(&comp.result));
            self.pop_local(&comp.accu_var);
            if let Some(size) = self.compute_size(&comp.result) {
                self.sizes.insert(e.id, size);
            }
            if let Some(entry) = self.entry_size(&comp.result) {
                self.entries.insert(e.id, entry);
            }
            return sum;
        }
        let mut sum = self.cost(&comp.iter_range).add(self.cost(&comp.accu_init));
        let path = self.path_of(&comp.accu_init);
        let size = self.compute_size(&comp.accu_init);
        let entry = self.entry_size(&comp.accu_init);
        self.push_local(&comp.accu_var, path, size, entry);

        let range_entry = self.entry_size(&comp.iter_range);
        let range_kind = range_entry.map_or_else(
            || self.checked.type_of(comp.iter_range.id).kind(),
            |entry| entry.container,
        );
        let range_path = self.path_of(&comp.iter_range);
        let with_sub = |sub: &str| {
            let mut p = range_path.clone();
            p.push(sub.to_string());
            p
        };
        match &comp.iter_var2 {
            Some(second) => {
                let key_sub = if range_kind == Kind::List {
                    "@indices"
                } else {
                    "@keys"
                };
                let value_sub = if range_kind == Kind::List {
                    "@items"
                } else {
                    "@values"
                };
                self.push_local(
                    &comp.iter_var,
                    with_sub(key_sub),
                    range_entry.map(|x| x.key),
                    None,
                );
                self.push_local(
                    second,
                    with_sub(value_sub),
                    range_entry.map(|x| x.value),
                    None,
                );
            }
            None => {
                let (sub, size) = if range_kind == Kind::List {
                    ("@items", range_entry.map(|x| x.value))
                } else {
                    ("@keys", range_entry.map(|x| x.key))
                };
                self.push_local(&comp.iter_var, with_sub(sub), size, None);
            }
        }
        let loop_cost = self.cost(&comp.loop_cond);
        let step_cost = self.cost(&comp.loop_step);
        self.pop_local(&comp.iter_var);
        if let Some(second) = &comp.iter_var2 {
            self.pop_local(second);
        }
        sum = sum.add(self.cost(&comp.result));
        self.pop_local(&comp.accu_var);

        let range_count = self.size_or_unknown(&comp.iter_range);
        sum = sum.add(range_count.multiply(step_cost.add(loop_cost)));
        match &comp.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(size) = self.compute_size(&comp.accu_init) {
                    self.sizes.insert(e.id, size);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.sizes.insert(e.id, range_count);
                if let Some(entry) = self.entry_size(&comp.loop_step) {
                    self.entries.insert(e.id, entry);
                }
            }
            _ => {}
        }
        sum
    }

    fn cost_call(&mut self, e: &'a IdedExpr, call: &'a CallExpr) -> Range {
        let qualified = self.checked.qualified_calls.get(&e.id);
        if call.func_name == "dyn" && call.target.is_none() && call.args.len() == 1 {
            let arg = &call.args[0];
            let cost = Range::fixed(1).add(self.cost(arg));
            if let Some(size) = self.compute_size(arg) {
                self.sizes.insert(e.id, size);
            }
            if let Some(entry) = self.entry_size(arg) {
                self.entries.insert(e.id, entry);
            }
            return cost;
        }
        let mut arg_costs = Vec::with_capacity(call.args.len());
        let mut args = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            arg_costs.push(self.cost(arg));
            args.push(self.node(arg));
        }
        let Some(overloads) = self.checked.overloads.get(&e.id) else {
            return Range::fixed(0);
        };
        let function = qualified.cloned().unwrap_or_else(|| call.func_name.clone());
        let mut sum = Range::fixed(0);
        let mut target = None;
        if qualified.is_none()
            && let Some(receiver) = &call.target
        {
            sum = sum.add(self.cost(receiver));
            target = Some(self.node(receiver));
        }
        let mut fn_cost = Range {
            min: u64::MAX,
            max: 0,
        };
        let mut result_size: Option<Range> = None;
        for overload in overloads {
            let estimate =
                self.function_cost(e, &function, overload, target.as_ref(), &args, &arg_costs);
            fn_cost = fn_cost.union(estimate.cost);
            if let Some(size) = estimate.result_size {
                result_size = Some(result_size.map_or(size, |r| r.union(size)));
            }
            if matches!(*overload, "index_list" | "index_map")
                && let Some(container) = call.args.first()
            {
                result_size = self.entry_size(container).map(|entry| entry.value);
                let mut path = self.path_of(container);
                path.push(
                    if *overload == "index_list" {
                        "@items"
                    } else {
                        "@values"
                    }
                    .into(),
                );
                self.paths.insert(e.id, path);
            }
            if result_size.is_none() {
                result_size = self.compute_size(e);
            }
        }
        if let Some(size) = result_size {
            self.sizes.insert(e.id, size);
        }
        sum.add(fn_cost)
    }

    fn function_cost(
        &mut self,
        e: &IdedExpr,
        function: &str,
        overload: &str,
        target: Option<&Node<'a>>,
        args: &[Node<'a>],
        arg_costs: &[Range],
    ) -> Call {
        let arg_sum = arg_costs.iter().fold(Range::fixed(0), |sum, c| sum.add(*c));
        if let Some(library) = self.library_call_cost(function, overload, target, args) {
            return Call {
                cost: library.cost.add(arg_sum),
                result_size: library.result_size,
            };
        }
        let size_of = |node: &Node<'_>| node.computed.unwrap_or(Range::UNKNOWN);
        let plain = |cost: Range| Call {
            cost: cost.add(arg_sum),
            result_size: None,
        };
        match overload {
            "string_format" if target.is_some() && !args.is_empty() => {
                let target_size = target.map_or(Range::UNKNOWN, size_of);
                let result = target_size.add(size_of(&args[0]));
                Call {
                    cost: target_size.times(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(result),
                }
            }
            "string_to_bytes" if args.len() == 1 => {
                let size = size_of(&args[0]);
                Call {
                    cost: size.times(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(Range {
                        min: size.min,
                        max: size.max.saturating_mul(4),
                    }),
                }
            }
            "bytes_to_string" if args.len() == 1 => {
                let size = size_of(&args[0]);
                Call {
                    cost: size.times(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(Range {
                        min: size.min / 4,
                        max: size.max,
                    }),
                }
            }
            "strings_quote" if args.len() == 1 => {
                let size = size_of(&args[0]);
                Call {
                    cost: size.times(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(Range {
                        min: size.min.saturating_add(2),
                        max: size.max.saturating_mul(2).saturating_add(2),
                    }),
                }
            }
            "starts_with_string" | "ends_with_string" if args.len() == 1 => {
                plain(size_of(&args[0]).times(STRING_TRAVERSAL_COST_FACTOR))
            }
            "in_list" if args.len() == 2 => plain(size_of(&args[1]).times(1.0)),
            "matches_string" if target.is_some() && args.len() == 1 => {
                let text = target
                    .map_or(Range::UNKNOWN, size_of)
                    .add(Range::fixed(1))
                    .times(STRING_TRAVERSAL_COST_FACTOR);
                let regex = size_of(&args[0]).times(REGEX_STRING_LENGTH_COST_FACTOR);
                plain(text.multiply(regex))
            }
            "contains_string" if target.is_some() && args.len() == 1 => {
                let text = target
                    .map_or(Range::UNKNOWN, size_of)
                    .times(STRING_TRAVERSAL_COST_FACTOR);
                let sub = size_of(&args[0]).times(STRING_TRAVERSAL_COST_FACTOR);
                plain(text.multiply(sub))
            }
            "logical_or" | "logical_and" if arg_costs.len() == 2 => Call {
                cost: Range {
                    min: arg_costs[0].min,
                    max: arg_costs[0].add(arg_costs[1]).max,
                },
                result_size: None,
            },
            "conditional" if args.len() == 3 && arg_costs.len() == 3 => {
                let size = size_of(&args[1]).union(size_of(&args[2]));
                let entry = match (args[1].expr, args[2].expr) {
                    (Some(a), Some(b)) => EntrySize::union(self.entry_size(a), self.entry_size(b)),
                    _ => None,
                };
                if let Some(entry) = entry {
                    self.entries.insert(e.id, entry);
                }
                Call {
                    cost: arg_costs[0].add(arg_costs[1].union(arg_costs[2])),
                    result_size: Some(size),
                }
            }
            "add_string" | "add_bytes" | "add_list" if args.len() == 2 => {
                let result = size_of(&args[0]).add(size_of(&args[1]));
                let entry = match (args[0].expr, args[1].expr) {
                    (Some(a), Some(b)) => EntrySize::union(self.entry_size(a), self.entry_size(b)),
                    _ => None,
                };
                if let Some(entry) = entry {
                    self.entries.insert(e.id, entry);
                }
                let cost = if overload == "add_list" {
                    Range::fixed(1)
                } else {
                    result.times(STRING_TRAVERSAL_COST_FACTOR)
                };
                Call {
                    cost: cost.add(arg_sum),
                    result_size: Some(result),
                }
            }
            "less_string"
            | "greater_string"
            | "less_equals_string"
            | "greater_equals_string"
            | "less_bytes"
            | "greater_bytes"
            | "less_equals_bytes"
            | "greater_equals_bytes"
            | "equals"
            | "not_equals"
                if args.len() == 2 =>
            {
                let smallest_max = size_of(&args[0]).max.min(size_of(&args[1]).max);
                let min = u64::from(smallest_max > 0);
                plain(
                    Range {
                        min,
                        max: smallest_max,
                    }
                    .times(STRING_TRAVERSAL_COST_FACTOR),
                )
            }
            _ => plain(Range::fixed(1)),
        }
    }

    /// The Kubernetes library's estimate for its functions (and the strings extension's),
    /// by function name; `None` leaves the call to cel-go's own rules.
    fn library_call_cost(
        &mut self,
        function: &str,
        overload: &str,
        target: Option<&Node<'a>>,
        args: &[Node<'a>],
    ) -> Option<Call> {
        let cost = |range: Range| Call {
            cost: range,
            result_size: None,
        };
        let nominal = || cost(Range::fixed(1));
        match function {
            "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" => {
                let target = target?;
                let target_size = self.size_estimate(target);
                match self.list_element(target) {
                    Some(element) => {
                        let mut element_cost = Range::fixed(1);
                        if matches!(element.cel_type.kind(), Kind::String | Kind::Bytes) {
                            element_cost = element_cost.add(
                                self.size_estimate(&element)
                                    .times(STRING_TRAVERSAL_COST_FACTOR),
                            );
                        }
                        Some(cost(target_size.multiply(element_cost)))
                    }
                    None => Some(cost(target_size.times(STRING_TRAVERSAL_COST_FACTOR))),
                }
            }
            "url" if args.len() == 1 => Some(cost(
                self.size_estimate(&args[0])
                    .times(STRING_TRAVERSAL_COST_FACTOR),
            )),
            "lowerAscii" | "upperAscii" | "substring" | "trim" => {
                let size = self.size_estimate(target?);
                Some(Call {
                    cost: size.times(STRING_TRAVERSAL_COST_FACTOR),
                    result_size: Some(size),
                })
            }
            "replace" if target.is_some() && args.len() >= 2 => {
                let size = self.size_estimate(target?);
                let to_replace = self.size_estimate(&args[0]);
                let replacement = self.size_estimate(&args[1]);
                Some(Call {
                    cost: size.times(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                    result_size: Some(replace_size(size, to_replace, replacement)),
                })
            }
            "split" => {
                let size = self.size_estimate(target?);
                let mut max = size.max;
                if let Some(limit) = args.get(1).and_then(|a| a.expr)
                    && let Expr::Literal(literal) = &limit.expr
                {
                    max = match literal {
                        LiteralValue::Int(n) => u64::try_from(*n.inner()).unwrap_or(max),
                        LiteralValue::UInt(n) => *n.inner(),
                        _ => max,
                    };
                }
                Some(Call {
                    cost: size.times(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                    result_size: Some(Range { min: 0, max }),
                })
            }
            "join" => {
                let target = target?;
                let list_size = self.size_estimate(target);
                let mut size = Range::fixed(0);
                if let Some(element) = self.list_element(target) {
                    size = list_size.multiply(self.size_estimate(&element));
                }
                if let Some(separator) = args.first() {
                    let separator = self.size_estimate(separator);
                    let count = Range {
                        min: list_size.min.saturating_sub(1),
                        max: list_size.max.saturating_sub(1),
                    };
                    size = size.add(separator.multiply(count));
                }
                Some(Call {
                    cost: size.times(STRING_TRAVERSAL_COST_FACTOR),
                    result_size: Some(size),
                })
            }
            "find" | "findAll" if target.is_some() && !args.is_empty() => {
                let size = self.size_estimate(target?);
                let text = size
                    .add(Range::fixed(1))
                    .times(STRING_TRAVERSAL_COST_FACTOR);
                let regex = self
                    .size_estimate(&args[0])
                    .times(REGEX_STRING_LENGTH_COST_FACTOR);
                Some(Call {
                    cost: text.multiply(regex),
                    result_size: Some(Range {
                        min: 0,
                        max: size.max,
                    }),
                })
            }
            // Only when written as a receiver call; the usual global form costs 1.
            "cidr" | "isIP" | "isCIDR" | "quantity" | "isQuantity" => {
                target?;
                Some(cost(
                    self.size_estimate(args.first()?)
                        .times(STRING_TRAVERSAL_COST_FACTOR),
                ))
            }
            "ip" => {
                target?;
                if overload == "cidr_ip" || args.is_empty() {
                    return Some(nominal());
                }
                Some(cost(
                    self.size_estimate(&args[0])
                        .times(STRING_TRAVERSAL_COST_FACTOR),
                ))
            }
            "ip.isCanonical" => {
                target?;
                Some(cost(
                    self.size_estimate(args.first()?)
                        .times(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                ))
            }
            "masked"
            | "prefixLength"
            | "family"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast" => Some(nominal()),
            "containsIP" | "containsCIDR" if target.is_some() && !args.is_empty() => {
                let bytes = Range { min: 4, max: 16 };
                let mut total = bytes.add(bytes).times(STRING_TRAVERSAL_COST_FACTOR);
                if function == "containsCIDR" {
                    total = total
                        .add(bytes.times(STRING_TRAVERSAL_COST_FACTOR))
                        .add(Range::fixed(1));
                }
                if matches!(
                    overload,
                    "cidr_contains_ip_string" | "cidr_contains_cidr_string"
                ) {
                    total = total.add(
                        self.size_estimate(&args[0])
                            .times(STRING_TRAVERSAL_COST_FACTOR),
                    );
                }
                Some(cost(total))
            }
            "sign" | "asInteger" | "isInteger" | "asApproximateFloat" | "isGreaterThan"
            | "isLessThan" | "compareTo" | "add" | "sub" => Some(nominal()),
            _ => None,
        }
    }

    /// A node's size: computed, or from the schema by its path, or unknown.
    fn size_estimate(&self, node: &Node<'_>) -> Range {
        node.computed
            .or_else(|| schema_size(self.root, &node.path))
            .unwrap_or(Range::UNKNOWN)
    }

    /// The element of a list (or key of a map) receiver, with its schema path.
    fn list_element(&self, list: &Node<'_>) -> Option<Node<'a>> {
        let element = list.cel_type.list_element()?.clone();
        let path = if list.path.is_empty() {
            Vec::new()
        } else {
            let mut path = list.path.clone();
            path.push("@items".into());
            path
        };
        Some(Node {
            expr: None,
            path,
            cel_type: element,
            computed: None,
        })
    }
}

fn is_bind(comp: &ComprehensionExpr) -> bool {
    matches!(&comp.iter_range.expr, Expr::List(list) if list.elements.is_empty())
        && matches!(&comp.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if !b.inner())
        && comp.accu_var != "@result"
}

fn literal_size(e: &IdedExpr) -> Option<Range> {
    let n = match &e.expr {
        Expr::Literal(literal) => match literal {
            LiteralValue::String(s) => s.inner().chars().count(),
            LiteralValue::Bytes(b) => b.inner().len(),
            _ => 1,
        },
        Expr::List(list) => list.elements.len(),
        Expr::Map(map) => map.entries.len(),
        _ => return None,
    };
    Some(Range::fixed(u64::try_from(n).unwrap_or(u64::MAX)))
}

/// kube-apiserver's CRD size estimator: the schema node a path leads to, from `self` (the
/// path's first element is skipped whatever it names), and its most elements.
fn schema_size(root: &Arc<DeclType>, path: &[String]) -> Option<Range> {
    if path.is_empty() {
        return None;
    }
    let mut node = root;
    for step in &path[1..] {
        node = match step.as_str() {
            "@items" | "@values" => node.elem()?,
            "@keys" => {
                // Map keys are declared as plain strings, whose most elements is zero.
                return match node.kind {
                    DeclKind::Map(_) => Some(Range::fixed(0)),
                    _ => None,
                };
            }
            field => node.field(field)?,
        };
    }
    Some(Range {
        min: 0,
        max: u64::try_from(node.max_elements).unwrap_or(0),
    })
}

fn replace_size(size: Range, to_replace: Range, replacement: Range) -> Range {
    let mut count = Range::fixed(0);
    let mut retained = Range::fixed(0);
    if to_replace.min == 0 {
        count.max = if size.max < u64::MAX {
            size.max + 1
        } else {
            size.max
        };
        retained.max = size.max;
    } else if replacement.max <= to_replace.min {
        count.max = 0;
        retained.max = size.max;
    } else {
        count.max = size.max.div_ceil(to_replace.min);
    }
    if to_replace.max == 0 {
        count.min = if size.min < u64::MAX {
            size.min + 1
        } else {
            size.min
        };
        retained.min = size.min;
    } else if to_replace.max <= replacement.min {
        count.min = 0;
        retained.min = size.min;
    } else {
        count.min = size.min.div_ceil(to_replace.max);
    }
    count.multiply(replacement).add(retained)
}
