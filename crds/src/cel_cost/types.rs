//! Type checking of a CEL rule in kube-apiserver's CRD environment: the type of every
//! expression and the overloads every call resolves to, which is what the cost estimate is
//! computed from. The functions are those kube-apiserver 1.31+ declares for CRD rules: the
//! standard library, the strings (v2) and sets extensions, and the Kubernetes lists, regex,
//! URL, quantity, IP and CIDR libraries. A rule calling anything else is refused as
//! kube-apiserver would refuse an undeclared reference, so the emulator errs towards "no".

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

use super::decl_type::{DeclKind, DeclType};

/// A CEL type, as far as cost estimation needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum CelType {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Duration,
    Timestamp,
    Dyn,
    List(Box<CelType>),
    Map(Box<CelType>, Box<CelType>),
    /// An object of the CRD's schema.
    Object(Arc<DeclType>),
    /// A library type with no literal form (`net.IP`, `net.CIDR`, `kubernetes.URL`, ...).
    Opaque(&'static str),
    /// The value of a type name such as `int`.
    Type(Box<CelType>),
}

/// The kinds cel-go's cost estimator distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scalar,
    String,
    Bytes,
    List,
    Map,
    Struct,
    Dyn,
    Other,
}

impl CelType {
    pub fn kind(&self) -> Kind {
        match self {
            CelType::Bool
            | CelType::Int
            | CelType::Uint
            | CelType::Double
            | CelType::Duration
            | CelType::Timestamp => Kind::Scalar,
            CelType::String => Kind::String,
            CelType::Bytes => Kind::Bytes,
            CelType::List(_) => Kind::List,
            CelType::Map(..) => Kind::Map,
            CelType::Object(_) => Kind::Struct,
            CelType::Dyn => Kind::Dyn,
            CelType::Null | CelType::Opaque(_) | CelType::Type(_) => Kind::Other,
        }
    }

    /// The element type of a list (cel-go's first type parameter).
    pub fn list_element(&self) -> Option<&CelType> {
        match self {
            CelType::List(elem) => Some(elem),
            CelType::Map(key, _) => Some(key),
            _ => None,
        }
    }

    pub fn of_decl(decl: &Arc<DeclType>) -> CelType {
        match &decl.kind {
            DeclKind::Object(_) => CelType::Object(decl.clone()),
            DeclKind::List(elem) => CelType::List(Box::new(CelType::of_decl(elem))),
            DeclKind::Map(value) => {
                CelType::Map(Box::new(CelType::String), Box::new(CelType::of_decl(value)))
            }
            DeclKind::String => CelType::String,
            DeclKind::Bytes => CelType::Bytes,
            DeclKind::Bool => CelType::Bool,
            DeclKind::Int => CelType::Int,
            DeclKind::Double => CelType::Double,
            DeclKind::Duration => CelType::Duration,
            DeclKind::Timestamp => CelType::Timestamp,
            DeclKind::Dyn => CelType::Dyn,
        }
    }

    fn name(&self) -> String {
        match self {
            CelType::Bool => "bool".into(),
            CelType::Int => "int".into(),
            CelType::Uint => "uint".into(),
            CelType::Double => "double".into(),
            CelType::String => "string".into(),
            CelType::Bytes => "bytes".into(),
            CelType::Null => "null_type".into(),
            CelType::Duration => "google.protobuf.Duration".into(),
            CelType::Timestamp => "google.protobuf.Timestamp".into(),
            CelType::Dyn => "dyn".into(),
            CelType::List(e) => format!("list({})", e.name()),
            CelType::Map(k, v) => format!("map({}, {})", k.name(), v.name()),
            CelType::Object(_) => "object".into(),
            CelType::Opaque(n) => (*n).into(),
            CelType::Type(t) => format!("type({})", t.name()),
        }
    }
}

/// A parameter or result in an overload signature; `A` and `B` are type parameters.
#[derive(Debug, Clone, Copy)]
enum P {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Dyn,
    A,
    B,
    ListOf(&'static P),
    MapOf(&'static P, &'static P),
    Opaque(&'static str),
    TypeOfA,
}

const LIST_A: P = P::ListOf(&P::A);
const LIST_STRING: P = P::ListOf(&P::String);
const LIST_DYN: P = P::ListOf(&P::Dyn);
const MAP_AB: P = P::MapOf(&P::A, &P::B);
const MAP_STRING_LIST_STRING: P = P::MapOf(&P::String, &LIST_STRING);
const IP: P = P::Opaque("net.IP");
const CIDR: P = P::Opaque("net.CIDR");
const URL: P = P::Opaque("kubernetes.URL");
const QUANTITY: P = P::Opaque("kubernetes.Quantity");
const SEMVER: P = P::Opaque("kubernetes.Semver");

/// One overload: function name, overload id, member (receiver first in `params`), signature.
struct Overload {
    function: &'static str,
    id: &'static str,
    member: bool,
    params: &'static [P],
    result: P,
}

macro_rules! overloads {
    ($($function:literal $id:literal $member:ident ($($param:expr),*) -> $result:expr;)*) => {
        &[$(Overload {
            function: $function,
            id: $id,
            member: overloads!(@member $member),
            params: &[$($param),*],
            result: $result,
        }),*]
    };
    (@member member) => { true };
    (@member global) => { false };
}

use P::{
    Bool as B, Bytes as BY, Double as D, Duration as DU, Int as I, String as S, Timestamp as TS,
    Uint as U,
};

static OVERLOADS: &[Overload] = overloads! {
    "!_" "logical_not" global (B) -> B;
    "_&&_" "logical_and" global (B, B) -> B;
    "_||_" "logical_or" global (B, B) -> B;
    "_?_:_" "conditional" global (B, P::A, P::A) -> P::A;
    "@not_strictly_false" "not_strictly_false" global (B) -> B;
    "-_" "negate_int64" global (I) -> I;
    "-_" "negate_double" global (D) -> D;
    "_==_" "equals" global (P::A, P::A) -> B;
    "_!=_" "not_equals" global (P::A, P::A) -> B;
    "_+_" "add_int64" global (I, I) -> I;
    "_+_" "add_uint64" global (U, U) -> U;
    "_+_" "add_double" global (D, D) -> D;
    "_+_" "add_string" global (S, S) -> S;
    "_+_" "add_bytes" global (BY, BY) -> BY;
    "_+_" "add_list" global (LIST_A, LIST_A) -> LIST_A;
    "_+_" "add_timestamp_duration" global (TS, DU) -> TS;
    "_+_" "add_duration_timestamp" global (DU, TS) -> TS;
    "_+_" "add_duration_duration" global (DU, DU) -> DU;
    "_-_" "subtract_int64" global (I, I) -> I;
    "_-_" "subtract_uint64" global (U, U) -> U;
    "_-_" "subtract_double" global (D, D) -> D;
    "_-_" "subtract_timestamp_timestamp" global (TS, TS) -> DU;
    "_-_" "subtract_timestamp_duration" global (TS, DU) -> TS;
    "_-_" "subtract_duration_duration" global (DU, DU) -> DU;
    "_*_" "multiply_int64" global (I, I) -> I;
    "_*_" "multiply_uint64" global (U, U) -> U;
    "_*_" "multiply_double" global (D, D) -> D;
    "_/_" "divide_int64" global (I, I) -> I;
    "_/_" "divide_uint64" global (U, U) -> U;
    "_/_" "divide_double" global (D, D) -> D;
    "_%_" "modulo_int64" global (I, I) -> I;
    "_%_" "modulo_uint64" global (U, U) -> U;
    "_[_]" "index_list" global (LIST_A, I) -> P::A;
    "_[_]" "index_map" global (MAP_AB, P::A) -> P::B;
    "@in" "in_list" global (P::A, LIST_A) -> B;
    "@in" "in_map" global (P::A, MAP_AB) -> B;
    "size" "size_string" global (S) -> I;
    "size" "size_bytes" global (BY) -> I;
    "size" "size_list" global (LIST_A) -> I;
    "size" "size_map" global (MAP_AB) -> I;
    "size" "string_size" member (S) -> I;
    "size" "bytes_size" member (BY) -> I;
    "size" "list_size" member (LIST_A) -> I;
    "size" "map_size" member (MAP_AB) -> I;
    "contains" "contains_string" member (S, S) -> B;
    "startsWith" "starts_with_string" member (S, S) -> B;
    "endsWith" "ends_with_string" member (S, S) -> B;
    "matches" "matches" global (S, S) -> B;
    "matches" "matches_string" member (S, S) -> B;
    "int" "int64_to_int64" global (I) -> I;
    "int" "uint64_to_int64" global (U) -> I;
    "int" "double_to_int64" global (D) -> I;
    "int" "string_to_int64" global (S) -> I;
    "int" "timestamp_to_int64" global (TS) -> I;
    "int" "duration_to_int64" global (DU) -> I;
    "uint" "uint64_to_uint64" global (U) -> U;
    "uint" "int64_to_uint64" global (I) -> U;
    "uint" "double_to_uint64" global (D) -> U;
    "uint" "string_to_uint64" global (S) -> U;
    "double" "double_to_double" global (D) -> D;
    "double" "int64_to_double" global (I) -> D;
    "double" "uint64_to_double" global (U) -> D;
    "double" "string_to_double" global (S) -> D;
    "string" "string_to_string" global (S) -> S;
    "string" "int64_to_string" global (I) -> S;
    "string" "uint64_to_string" global (U) -> S;
    "string" "double_to_string" global (D) -> S;
    "string" "bool_to_string" global (B) -> S;
    "string" "bytes_to_string" global (BY) -> S;
    "string" "timestamp_to_string" global (TS) -> S;
    "string" "duration_to_string" global (DU) -> S;
    "string" "ip_to_string" global (IP) -> S;
    "string" "cidr_to_string" global (CIDR) -> S;
    "bytes" "bytes_to_bytes" global (BY) -> BY;
    "bytes" "string_to_bytes" global (S) -> BY;
    "bool" "bool_to_bool" global (B) -> B;
    "bool" "string_to_bool" global (S) -> B;
    "duration" "duration_to_duration" global (DU) -> DU;
    "duration" "string_to_duration" global (S) -> DU;
    "timestamp" "timestamp_to_timestamp" global (TS) -> TS;
    "timestamp" "string_to_timestamp" global (S) -> TS;
    "timestamp" "int64_to_timestamp" global (I) -> TS;
    "dyn" "to_dyn" global (P::A) -> P::Dyn;
    "type" "type" global (P::A) -> P::TypeOfA;
    "getFullYear" "timestamp_to_year" member (TS) -> I;
    "getFullYear" "timestamp_to_year_with_tz" member (TS, S) -> I;
    "getMonth" "timestamp_to_month" member (TS) -> I;
    "getMonth" "timestamp_to_month_with_tz" member (TS, S) -> I;
    "getDayOfYear" "timestamp_to_day_of_year" member (TS) -> I;
    "getDayOfYear" "timestamp_to_day_of_year_with_tz" member (TS, S) -> I;
    "getDayOfMonth" "timestamp_to_day_of_month" member (TS) -> I;
    "getDayOfMonth" "timestamp_to_day_of_month_with_tz" member (TS, S) -> I;
    "getDate" "timestamp_to_day_of_month_1_based" member (TS) -> I;
    "getDate" "timestamp_to_day_of_month_1_based_with_tz" member (TS, S) -> I;
    "getDayOfWeek" "timestamp_to_day_of_week" member (TS) -> I;
    "getDayOfWeek" "timestamp_to_day_of_week_with_tz" member (TS, S) -> I;
    "getHours" "timestamp_to_hours" member (TS) -> I;
    "getHours" "timestamp_to_hours_with_tz" member (TS, S) -> I;
    "getHours" "duration_to_hours" member (DU) -> I;
    "getMinutes" "timestamp_to_minutes" member (TS) -> I;
    "getMinutes" "timestamp_to_minutes_with_tz" member (TS, S) -> I;
    "getMinutes" "duration_to_minutes" member (DU) -> I;
    "getSeconds" "timestamp_to_seconds" member (TS) -> I;
    "getSeconds" "timestamp_to_seconds_with_tz" member (TS, S) -> I;
    "getSeconds" "duration_to_seconds" member (DU) -> I;
    "getMilliseconds" "timestamp_to_milliseconds" member (TS) -> I;
    "getMilliseconds" "timestamp_to_milliseconds_with_tz" member (TS, S) -> I;
    "getMilliseconds" "duration_to_milliseconds" member (DU) -> I;
    // Strings extension, version 2.
    "charAt" "string_char_at_int" member (S, I) -> S;
    "indexOf" "string_index_of_string" member (S, S) -> I;
    "indexOf" "string_index_of_string_int" member (S, S, I) -> I;
    "lastIndexOf" "string_last_index_of_string" member (S, S) -> I;
    "lastIndexOf" "string_last_index_of_string_int" member (S, S, I) -> I;
    "lowerAscii" "string_lower_ascii" member (S) -> S;
    "upperAscii" "string_upper_ascii" member (S) -> S;
    "replace" "string_replace_string_string" member (S, S, S) -> S;
    "replace" "string_replace_string_string_int" member (S, S, S, I) -> S;
    "split" "string_split_string" member (S, S) -> LIST_STRING;
    "split" "string_split_string_int" member (S, S, I) -> LIST_STRING;
    "substring" "string_substring_int" member (S, I) -> S;
    "substring" "string_substring_int_int" member (S, I, I) -> S;
    "trim" "string_trim" member (S) -> S;
    "join" "list_join" member (LIST_STRING) -> S;
    "join" "list_join_string" member (LIST_STRING, S) -> S;
    "strings.quote" "strings_quote" global (S) -> S;
    "format" "string_format" member (S, LIST_DYN) -> S;
    // Sets extension.
    "sets.contains" "list_sets_contains_list" global (LIST_A, LIST_A) -> B;
    "sets.equivalent" "list_sets_equivalent_list" global (LIST_A, LIST_A) -> B;
    "sets.intersects" "list_sets_intersects_list" global (LIST_A, LIST_A) -> B;
    // Kubernetes lists library.
    "isSorted" "list_is_sorted" member (LIST_A) -> B;
    "sum" "list_sum" member (LIST_A) -> P::A;
    "max" "list_max" member (LIST_A) -> P::A;
    "min" "list_min" member (LIST_A) -> P::A;
    "indexOf" "list_index_of" member (LIST_A, P::A) -> I;
    "lastIndexOf" "list_last_index_of" member (LIST_A, P::A) -> I;
    // Kubernetes regex library.
    "find" "string_find_string" member (S, S) -> S;
    "findAll" "string_find_all_string" member (S, S) -> LIST_STRING;
    "findAll" "string_find_all_string_int" member (S, S, I) -> LIST_STRING;
    // Kubernetes URL library.
    "url" "string_to_url" global (S) -> URL;
    "isURL" "is_url_string" global (S) -> B;
    "getScheme" "url_get_scheme" member (URL) -> S;
    "getHost" "url_get_host" member (URL) -> S;
    "getHostname" "url_get_hostname" member (URL) -> S;
    "getPort" "url_get_port" member (URL) -> S;
    "getEscapedPath" "url_get_escaped_path" member (URL) -> S;
    "getQuery" "url_get_query" member (URL) -> MAP_STRING_LIST_STRING;
    // Kubernetes quantity library.
    "quantity" "string_to_quantity" global (S) -> QUANTITY;
    "isQuantity" "is_quantity_string" global (S) -> B;
    "sign" "quantity_sign" member (QUANTITY) -> I;
    "isInteger" "quantity_is_integer" member (QUANTITY) -> B;
    "asInteger" "quantity_as_integer" member (QUANTITY) -> I;
    "asApproximateFloat" "quantity_as_float" member (QUANTITY) -> D;
    "add" "quantity_add" member (QUANTITY, QUANTITY) -> QUANTITY;
    "add" "quantity_add_int" member (QUANTITY, I) -> QUANTITY;
    "sub" "quantity_sub" member (QUANTITY, QUANTITY) -> QUANTITY;
    "sub" "quantity_sub_int" member (QUANTITY, I) -> QUANTITY;
    "isLessThan" "quantity_less" member (QUANTITY, QUANTITY) -> B;
    "isGreaterThan" "quantity_greater" member (QUANTITY, QUANTITY) -> B;
    "compareTo" "quantity_compare_to" member (QUANTITY, QUANTITY) -> I;
    // Kubernetes semver library (1.33+).
    "semver" "string_to_semver" global (S) -> SEMVER;
    "isSemver" "is_semver_string" global (S) -> B;
    "major" "semver_major" member (SEMVER) -> I;
    "minor" "semver_minor" member (SEMVER) -> I;
    "patch" "semver_patch" member (SEMVER) -> I;
    "isLessThan" "semver_less" member (SEMVER, SEMVER) -> B;
    "isGreaterThan" "semver_greater" member (SEMVER, SEMVER) -> B;
    "compareTo" "semver_compare_to" member (SEMVER, SEMVER) -> I;
    // Kubernetes IP library.
    "ip" "string_to_ip" global (S) -> IP;
    "isIP" "is_ip" global (S) -> B;
    "ip.isCanonical" "ip_is_canonical" global (S) -> B;
    "family" "ip_family" member (IP) -> I;
    "isUnspecified" "ip_is_unspecified" member (IP) -> B;
    "isLoopback" "ip_is_loopback" member (IP) -> B;
    "isLinkLocalMulticast" "ip_is_link_local_multicast" member (IP) -> B;
    "isLinkLocalUnicast" "ip_is_link_local_unicast" member (IP) -> B;
    "isGlobalUnicast" "ip_is_global_unicast" member (IP) -> B;
    // Kubernetes CIDR library.
    "cidr" "string_to_cidr" global (S) -> CIDR;
    "isCIDR" "is_cidr" global (S) -> B;
    "containsIP" "cidr_contains_ip_string" member (CIDR, S) -> B;
    "containsIP" "cidr_contains_ip_ip" member (CIDR, IP) -> B;
    "containsCIDR" "cidr_contains_cidr_string" member (CIDR, S) -> B;
    "containsCIDR" "cidr_contains_cidr" member (CIDR, CIDR) -> B;
    "ip" "cidr_ip" member (CIDR) -> IP;
    "masked" "cidr_masked" member (CIDR) -> CIDR;
    "prefixLength" "cidr_prefix_length" member (CIDR) -> I;
};

/// The comparison operators, with cel-go's overloads (same-type and cross-type numeric).
const COMPARISONS: &[(&str, &str)] = &[
    ("_<_", "less"),
    ("_<=_", "less_equals"),
    ("_>_", "greater"),
    ("_>=_", "greater_equals"),
];

fn comparison_overloads(function: &str, args: &[CelType]) -> Option<Vec<&'static str>> {
    let (_, prefix) = COMPARISONS.iter().find(|(f, _)| *f == function)?;
    let names: &[(&CelType, &str)] = &[
        (&CelType::Bool, "bool"),
        (&CelType::Int, "int64"),
        (&CelType::Uint, "uint64"),
        (&CelType::Double, "double"),
        (&CelType::String, "string"),
        (&CelType::Bytes, "bytes"),
        (&CelType::Timestamp, "timestamp"),
        (&CelType::Duration, "duration"),
    ];
    let numeric = [CelType::Int, CelType::Uint, CelType::Double];
    let fits = |actual: &CelType, wanted: &CelType| actual == wanted || *actual == CelType::Dyn;
    let mut ids = Vec::new();
    for (lhs, lname) in names {
        for (rhs, rname) in names {
            let same = lname == rname;
            let cross = numeric.contains(lhs) && numeric.contains(rhs) && !same;
            if !(same || cross) || !fits(&args[0], lhs) || !fits(&args[1], rhs) {
                continue;
            }
            let id = if same {
                format!("{prefix}_{lname}")
            } else {
                format!("{prefix}_{lname}_{rname}")
            };
            ids.push(intern(id));
        }
    }
    Some(ids)
}

/// Overload ids built at run time are few and fixed; they are leaked once and reused.
fn intern(id: String) -> &'static str {
    use std::sync::{Mutex, OnceLock};
    static IDS: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
    let ids = IDS.get_or_init(|| Mutex::new(Vec::new()));
    let mut ids = match ids.lock() {
        Ok(ids) => ids,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(existing) = ids.iter().find(|existing| **existing == id) {
        return existing;
    }
    let leaked: &'static str = Box::leak(id.into_boxed_str());
    ids.push(leaked);
    leaked
}

#[derive(Default)]
struct Bindings {
    a: Option<CelType>,
    b: Option<CelType>,
}

fn bind(slot: &mut Option<CelType>, actual: &CelType) -> bool {
    match slot {
        None => {
            *slot = Some(actual.clone());
            true
        }
        Some(bound) => {
            if *bound == CelType::Dyn || *bound == CelType::Null {
                *slot = Some(actual.clone());
                true
            } else {
                same_shape(bound, actual)
            }
        }
    }
}

/// Whether two types unify under cel-go's checker, loosely: dyn and null unify with anything.
fn same_shape(a: &CelType, b: &CelType) -> bool {
    match (a, b) {
        (CelType::Dyn, _) | (_, CelType::Dyn) | (CelType::Null, _) | (_, CelType::Null) => true,
        (CelType::List(x), CelType::List(y)) => same_shape(x, y),
        (CelType::Map(k1, v1), CelType::Map(k2, v2)) => same_shape(k1, k2) && same_shape(v1, v2),
        (CelType::Object(_), CelType::Object(_)) => true,
        (CelType::Type(_), CelType::Type(_)) => true,
        _ => a == b,
    }
}

fn matches(param: &P, actual: &CelType, bindings: &mut Bindings) -> bool {
    if *actual == CelType::Dyn {
        return match param {
            P::A => bind(&mut bindings.a, actual),
            P::B => bind(&mut bindings.b, actual),
            _ => true,
        };
    }
    match param {
        P::Bool => *actual == CelType::Bool,
        P::Int => *actual == CelType::Int,
        P::Uint => *actual == CelType::Uint,
        P::Double => *actual == CelType::Double,
        P::String => *actual == CelType::String,
        P::Bytes => *actual == CelType::Bytes,
        P::Duration => *actual == CelType::Duration,
        P::Timestamp => *actual == CelType::Timestamp,
        P::Dyn => true,
        P::A => bind(&mut bindings.a, actual),
        P::B => bind(&mut bindings.b, actual),
        P::ListOf(elem) => match actual {
            CelType::List(actual_elem) => matches(elem, actual_elem, bindings),
            _ => false,
        },
        P::MapOf(key, value) => match actual {
            CelType::Map(k, v) => matches(key, k, bindings) && matches(value, v, bindings),
            _ => false,
        },
        P::Opaque(name) => *actual == CelType::Opaque(name),
        P::TypeOfA => matches!(actual, CelType::Type(_)),
    }
}

fn substitute(param: &P, bindings: &Bindings) -> CelType {
    let bound = |slot: &Option<CelType>| slot.clone().unwrap_or(CelType::Dyn);
    match param {
        P::Bool => CelType::Bool,
        P::Int => CelType::Int,
        P::Uint => CelType::Uint,
        P::Double => CelType::Double,
        P::String => CelType::String,
        P::Bytes => CelType::Bytes,
        P::Duration => CelType::Duration,
        P::Timestamp => CelType::Timestamp,
        P::Dyn => CelType::Dyn,
        P::A => bound(&bindings.a),
        P::B => bound(&bindings.b),
        P::ListOf(elem) => CelType::List(Box::new(substitute(elem, bindings))),
        P::MapOf(k, v) => CelType::Map(
            Box::new(substitute(k, bindings)),
            Box::new(substitute(v, bindings)),
        ),
        P::Opaque(name) => CelType::Opaque(name),
        P::TypeOfA => CelType::Type(Box::new(bound(&bindings.a))),
    }
}

/// What the checker learnt about a rule.
#[derive(Debug, Default)]
pub struct Checked {
    pub types: HashMap<u64, CelType>,
    /// The overloads each call may resolve to (several when arguments are `dyn`).
    pub overloads: HashMap<u64, Vec<&'static str>>,
    /// Calls written as `a.b.f(x)` that name the global function `a.b.f` (`sets.contains`).
    pub qualified_calls: HashMap<u64, String>,
}

impl Checked {
    pub fn type_of(&self, id: u64) -> CelType {
        self.types.get(&id).cloned().unwrap_or(CelType::Dyn)
    }
}

/// A rule that does not type-check, with cel-go's wording of the first problem.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckError(pub String);

struct Checker {
    checked: Checked,
    scopes: Vec<(String, CelType)>,
    root: CelType,
}

/// Type-checks `expr` with `self` and `oldSelf` of type `root`.
pub fn check(expr: &IdedExpr, root: CelType) -> Result<Checked, CheckError> {
    let mut checker = Checker {
        checked: Checked::default(),
        scopes: Vec::new(),
        root,
    };
    checker.check(expr)?;
    Ok(checker.checked)
}

fn type_name_value(name: &str) -> Option<CelType> {
    Some(match name {
        "int" => CelType::Int,
        "uint" => CelType::Uint,
        "double" => CelType::Double,
        "bool" => CelType::Bool,
        "string" => CelType::String,
        "bytes" => CelType::Bytes,
        "list" => CelType::List(Box::new(CelType::Dyn)),
        "map" => CelType::Map(Box::new(CelType::Dyn), Box::new(CelType::Dyn)),
        "null_type" => CelType::Null,
        "type" => CelType::Type(Box::new(CelType::Dyn)),
        "dyn" => CelType::Dyn,
        _ => return None,
    })
}

/// The dotted name an expression spells (`a.b.c`), when it is only identifiers and selects.
fn qualified_name(expr: &IdedExpr) -> Option<String> {
    match &expr.expr {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(select) if !select.test => Some(format!(
            "{}.{}",
            qualified_name(&select.operand)?,
            select.field
        )),
        _ => None,
    }
}

impl Checker {
    fn lookup(&self, name: &str) -> Option<CelType> {
        if let Some((_, t)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return Some(t.clone());
        }
        match name {
            "self" | "oldSelf" => Some(self.root.clone()),
            _ => type_name_value(name).map(|t| CelType::Type(Box::new(t))),
        }
    }

    fn set(&mut self, id: u64, t: CelType) -> CelType {
        self.checked.types.insert(id, t.clone());
        t
    }

    fn check(&mut self, e: &IdedExpr) -> Result<CelType, CheckError> {
        let t = match &e.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(_) => CelType::Bool,
                LiteralValue::Bytes(_) => CelType::Bytes,
                LiteralValue::Double(_) => CelType::Double,
                LiteralValue::Int(_) => CelType::Int,
                LiteralValue::Null => CelType::Null,
                LiteralValue::String(_) => CelType::String,
                LiteralValue::UInt(_) => CelType::Uint,
            },
            Expr::Ident(name) => self.lookup(name).ok_or_else(|| {
                CheckError(format!(
                    "undeclared reference to '{name}' (in container '')"
                ))
            })?,
            Expr::Select(select) => {
                let operand = self.check(&select.operand)?;
                let field_type = match &operand {
                    CelType::Object(decl) => match decl.field(&select.field) {
                        Some(field) => CelType::of_decl(field),
                        None => {
                            return Err(CheckError(format!("undefined field '{}'", select.field)));
                        }
                    },
                    CelType::Map(_, value) => (**value).clone(),
                    CelType::Dyn => CelType::Dyn,
                    other => {
                        return Err(CheckError(format!(
                            "type '{}' does not support field selection",
                            other.name()
                        )));
                    }
                };
                if select.test {
                    CelType::Bool
                } else {
                    field_type
                }
            }
            Expr::List(list) => {
                let mut elem: Option<CelType> = None;
                for item in &list.elements {
                    let t = self.check(item)?;
                    elem = Some(match elem {
                        None => t,
                        Some(prev) if prev == t => prev,
                        Some(prev) if same_shape(&prev, &t) => {
                            if prev == CelType::Dyn || prev == CelType::Null {
                                t
                            } else {
                                prev
                            }
                        }
                        Some(prev) => {
                            return Err(CheckError(format!(
                                "expected type '{}' but found '{}'",
                                prev.name(),
                                t.name()
                            )));
                        }
                    });
                }
                CelType::List(Box::new(elem.unwrap_or(CelType::Dyn)))
            }
            Expr::Map(map) => {
                let mut key: Option<CelType> = None;
                let mut value: Option<CelType> = None;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        let k = self.check(&entry.key)?;
                        let v = self.check(&entry.value)?;
                        key.get_or_insert(k);
                        value.get_or_insert(v);
                    }
                }
                CelType::Map(
                    Box::new(key.unwrap_or(CelType::Dyn)),
                    Box::new(value.unwrap_or(CelType::Dyn)),
                )
            }
            Expr::Struct(_) => {
                return Err(CheckError(
                    "object construction is not supported in CRD rules".into(),
                ));
            }
            Expr::Comprehension(comp) => {
                let range = self.check(&comp.iter_range)?;
                let (var1, var2) = match &range {
                    CelType::List(elem) => match comp.iter_var2 {
                        Some(_) => (CelType::Int, (**elem).clone()),
                        None => ((**elem).clone(), CelType::Dyn),
                    },
                    CelType::Map(key, value) => ((**key).clone(), (**value).clone()),
                    CelType::Dyn => (CelType::Dyn, CelType::Dyn),
                    other => {
                        return Err(CheckError(format!(
                            "expression of type '{}' cannot be range of a comprehension (must be list, map, or dynamic)",
                            other.name()
                        )));
                    }
                };
                let init = self.check(&comp.accu_init)?;
                self.scopes.push((comp.accu_var.clone(), init.clone()));
                self.scopes.push((comp.iter_var.clone(), var1));
                if let Some(var2_name) = &comp.iter_var2 {
                    self.scopes.push((var2_name.clone(), var2));
                }
                self.check(&comp.loop_cond)?;
                let step = self.check(&comp.loop_step)?;
                // The accumulator takes the step's type when the init was an empty literal.
                if let Some(slot) = self
                    .scopes
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| *n == comp.accu_var)
                {
                    slot.1 = step;
                }
                if comp.iter_var2.is_some() {
                    self.scopes.pop();
                }
                self.scopes.pop();
                let result = self.check(&comp.result)?;
                self.scopes.pop();
                result
            }
            Expr::Call(call) => self.check_call(e.id, call)?,
            Expr::Unspecified => CelType::Dyn,
        };
        Ok(self.set(e.id, t))
    }

    fn check_call(
        &mut self,
        id: u64,
        call: &cel::common::ast::CallExpr,
    ) -> Result<CelType, CheckError> {
        // `a.b.f(x)`: a global function with a qualified name, unless `a` is a variable.
        if let Some(target) = &call.target
            && let Some(prefix) = qualified_name(target)
        {
            let root = prefix.split('.').next().unwrap_or("");
            let qualified = format!("{prefix}.{}", call.func_name);
            if self.lookup(root).is_none()
                && OVERLOADS
                    .iter()
                    .any(|o| o.function == qualified && !o.member)
            {
                let mut args = Vec::new();
                for arg in &call.args {
                    args.push(self.check(arg)?);
                }
                self.checked.qualified_calls.insert(id, qualified.clone());
                return self.resolve(id, &qualified, false, &args);
            }
        }
        let mut args = Vec::new();
        let member = call.target.is_some();
        if let Some(target) = &call.target {
            args.push(self.check(target)?);
        }
        for arg in &call.args {
            args.push(self.check(arg)?);
        }
        if let Some(ids) = comparison_overloads(&call.func_name, &args) {
            if ids.is_empty() {
                return Err(no_overload(&call.func_name, &args));
            }
            self.checked.overloads.insert(id, ids);
            return Ok(CelType::Bool);
        }
        self.resolve(id, &call.func_name, member, &args)
    }

    fn resolve(
        &mut self,
        id: u64,
        function: &str,
        member: bool,
        args: &[CelType],
    ) -> Result<CelType, CheckError> {
        let declared = OVERLOADS.iter().any(|o| o.function == function);
        if !declared {
            return Err(CheckError(format!(
                "undeclared reference to '{function}' (in container '')"
            )));
        }
        let mut ids = Vec::new();
        let mut results: Vec<CelType> = Vec::new();
        for overload in OVERLOADS
            .iter()
            .filter(|o| o.function == function && o.member == member)
            .filter(|o| o.params.len() == args.len())
        {
            let mut bindings = Bindings::default();
            if overload
                .params
                .iter()
                .zip(args)
                .all(|(p, a)| matches(p, a, &mut bindings))
            {
                ids.push(overload.id);
                results.push(substitute(&overload.result, &bindings));
            }
        }
        if ids.is_empty() {
            return Err(no_overload(function, args));
        }
        self.checked.overloads.insert(id, ids);
        let first = results[0].clone();
        Ok(if results.iter().all(|r| *r == first) {
            first
        } else {
            CelType::Dyn
        })
    }
}

fn no_overload(function: &str, args: &[CelType]) -> CheckError {
    let names: Vec<String> = args.iter().map(CelType::name).collect();
    CheckError(format!(
        "found no matching overload for '{function}' applied to '({})'",
        names.join(", ")
    ))
}
