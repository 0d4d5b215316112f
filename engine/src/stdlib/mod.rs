//! Rhai's standard library as native functions.
//!
//! `resolve(name, arity)` is called once per call site at compile time and
//! answers one `NativeFn` per (name, arity); that function dispatches on its
//! arguments' types and answers `NativeError::NoMatch` for types it does not
//! take. Method calls pass the receiver as `args[0]`; mutating functions
//! (`push`, `trim`, `pad`...) change it in place and return `()`, and the
//! interpreter writes it back. Property getters are `get$name` (arity 1),
//! setters `set$name` (arity 2).
//!
//! Areas: `strings` (and chars), `arrays`, `maps`, `blobs` (and bit fields),
//! `math` (numbers), `misc` (type_of, print/debug, function pointers, JSON,
//! ranges, timestamps). Names that several areas share (`len`, `contains`,
//! `clear`...) dispatch here.

use std::cmp::Ordering;
use std::rc::Rc;

use crate::error::{EvalError, Pos};
use crate::native::{Caller, NativeError, NativeFn, NativeResult};
use crate::value::{Array, FnPtr, Value};

/// Defines a native function whose arguments never arrive as shared cells:
/// a captured variable (`Value::Shared`) is looked through before the body
/// runs, and a receiver changed in place is written back into its cell.
macro_rules! native {
    ($(#[$m:meta])* $vis:vis fn $name:ident($c:ident, $a:ident) $body:block) => {
        $(#[$m])*
        #[allow(unused_variables)]
        $vis fn $name($c: &mut dyn $crate::native::Caller, $a: &mut [$crate::value::Value]) -> $crate::native::NativeResult {
            if $crate::stdlib::has_shared($a) {
                return $crate::stdlib::with_unshared($c, $a, $name);
            }
            $body
        }
    };
}

/// The same for functions that call back into the script (`map`, `filter`,
/// `sort(fn)`...): a shared receiver is copied out of its cell (cheaply: the
/// containers are reference-counted) rather than moved, so a callback that
/// reads the same captured variable still sees it; the result is written back.
macro_rules! native_cb {
    ($(#[$m:meta])* $vis:vis fn $name:ident($c:ident, $a:ident) $body:block) => {
        $(#[$m])*
        #[allow(unused_variables)]
        $vis fn $name($c: &mut dyn $crate::native::Caller, $a: &mut [$crate::value::Value]) -> $crate::native::NativeResult {
            if $crate::stdlib::has_shared($a) {
                return $crate::stdlib::with_unshared_copy($c, $a, $name);
            }
            $body
        }
    };
}

pub mod arrays;
pub mod blobs;
pub mod maps;
pub mod math;
pub mod misc;
pub mod strings;

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------
// Shared cells

#[doc(hidden)]
#[inline]
pub fn has_shared(args: &[Value]) -> bool {
    args.iter().any(|a| matches!(a, Value::Shared(_)))
}

/// Calls `f` with every shared argument replaced by its value; a receiver
/// (`args[0]`) is moved out of its cell for the call and moved back after, so
/// in-place changes reach every holder of the cell.
#[doc(hidden)]
pub fn with_unshared(c: &mut dyn Caller, args: &mut [Value], f: NativeFn) -> NativeResult {
    for a in args.iter_mut().skip(1) {
        if let Value::Shared(_) = a {
            *a = a.flatten();
        }
    }
    let cell = match &args[0] {
        Value::Shared(cell) => cell.clone(),
        _ => return f(c, args),
    };
    let inner = std::mem::replace(&mut *cell.borrow_mut(), Value::Unit);
    // A cell holding a cell (should not happen) is flattened.
    let inner = match inner {
        Value::Shared(_) => inner.flatten(),
        v => v,
    };
    args[0] = inner;
    let result = f(c, args);
    let back = std::mem::replace(&mut args[0], Value::Shared(cell.clone()));
    *cell.borrow_mut() = back;
    result
}

/// Like `with_unshared`, but the receiver's cell keeps its value during the
/// call (for functions that run callbacks).
#[doc(hidden)]
pub fn with_unshared_copy(c: &mut dyn Caller, args: &mut [Value], f: NativeFn) -> NativeResult {
    for a in args.iter_mut().skip(1) {
        if let Value::Shared(_) = a {
            *a = a.flatten();
        }
    }
    let cell = match &args[0] {
        Value::Shared(cell) => cell.clone(),
        _ => return f(c, args),
    };
    args[0] = cell.borrow().flatten();
    let result = f(c, args);
    let back = std::mem::replace(&mut args[0], Value::Shared(cell.clone()));
    *cell.borrow_mut() = back;
    result
}

// ---------------------------------------------------------------------------
// Small helpers for the areas

pub(crate) fn no_match<T>() -> Result<T, NativeError> {
    Err(NativeError::NoMatch)
}

pub(crate) fn err(variant: &'static str, message: impl Into<String>) -> NativeError {
    NativeError::Error(EvalError::runtime(variant, message, Pos::NONE))
}

pub(crate) fn int_of(v: &Value) -> Result<i64, NativeError> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => no_match(),
    }
}

/// Resolves a negative position (counting from the end) and clamps it into
/// `0..=len`.
pub(crate) fn clamp_start(start: i64, len: usize) -> usize {
    if start < 0 {
        let back = start.unsigned_abs();
        if back as u128 > len as u128 {
            0
        } else {
            len - back as usize
        }
    } else if start as u128 > len as u128 {
        len
    } else {
        start as usize
    }
}

/// `(start, len)` as Rhai's `extract`/`sub_string`/`splice` read them:
/// a negative start counts from the end, the range is clamped into `0..len`.
pub(crate) fn start_len(start: i64, count: i64, len: usize) -> (usize, usize) {
    let s = clamp_start(start, len);
    let n = if count <= 0 { 0 } else { (count as u128).min((len - s) as u128) as usize };
    (s, n)
}

/// A range argument (`a..b` or `a..=b`) as `(start, end exclusive)`.
pub(crate) fn range_of(v: &Value) -> Option<(i64, i64)> {
    misc::range_bounds(v)
}

/// The window `(start, len)` of a range argument within `len` items: as in
/// Rhai, a negative start is clamped to 0 (it does not count from the end)
/// and the end to the length.
pub(crate) fn range_window(lo: i64, hi: i64, len: usize) -> (usize, usize) {
    let lo = lo.max(0);
    let hi = hi.max(lo);
    start_len(lo, hi - lo, len)
}

/// A range argument as its window within `len` items; any other argument
/// does not match.
pub(crate) fn range_arg(v: &Value, len: usize) -> Result<(usize, usize), NativeError> {
    match range_of(v) {
        Some((lo, hi)) => Ok(range_window(lo, hi, len)),
        None => no_match(),
    }
}

/// The window of a `start` or `range` argument (a start runs to the end).
pub(crate) fn window1(arg: &Value, len: usize) -> Result<(usize, usize), NativeError> {
    if let Some((lo, hi)) = range_of(arg) {
        return Ok(range_window(lo, hi, len));
    }
    Ok(start_len(int_of(arg)?, i64::MAX, len))
}

/// The window of `start, count` arguments.
pub(crate) fn window2(start: &Value, count: &Value, len: usize) -> Result<(usize, usize), NativeError> {
    Ok(start_len(int_of(start)?, int_of(count)?, len))
}

/// The element at position `i` of `len` items (negative counts from the
/// end), if there is one: for indexing (`x[i]`) and `get`/`set`/`remove`.
pub(crate) fn index_in(i: i64, len: usize) -> Option<usize> {
    if i >= 0 {
        if (i as u64) < len as u64 {
            Some(i as usize)
        } else {
            None
        }
    } else {
        let back = i.unsigned_abs();
        if back <= len as u64 {
            Some(len - back as usize)
        } else {
            None
        }
    }
}

/// `chop(n)`: keeps only the last `n` items.
pub(crate) fn chop_to<T>(v: &mut Vec<T>, n: i64) {
    if n <= 0 {
        v.clear();
    } else if (n as u128) < v.len() as u128 {
        let cut = v.len() - n as usize;
        v.drain(..cut);
    }
}

/// `retain` of a window: keeps items `s..s + n`, answers the others in order.
pub(crate) fn keep_window<T>(v: &mut Vec<T>, s: usize, n: usize) -> Vec<T> {
    let tail: Vec<T> = v.drain(s + n..).collect();
    let mut out: Vec<T> = v.drain(..s).collect();
    out.extend(tail);
    out
}

/// Rhai's `==` for values of any types (the interpreter's own, so that
/// `contains`, `index_of` and `dedup` agree with the operator).
#[inline]
pub fn values_eq(a: &Value, b: &Value) -> bool {
    crate::ops::values_equal(a, b)
}

/// The natural order of two values of the same sortable type (int, float,
/// char, string, bool, unit; ints and floats compare as numbers).
pub fn natural_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Char(x), Value::Char(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.as_str().cmp(y.as_str())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Unit, Value::Unit) => Some(Ordering::Equal),
        _ => None,
    }
}

/// A callback argument: a function pointer, or the name of a function.
pub(crate) fn fn_of(v: &Value) -> Result<FnPtr, NativeError> {
    match v {
        Value::FnPtr(p) => Ok((**p).clone()),
        Value::Str(s) => Ok(FnPtr { name: Rc::from(s.as_str()), curry: Vec::new(), env: None }),
        _ => no_match(),
    }
}

/// Calls a per-element callback the way Rhai does: `|v|` gets the element,
/// `|v, i|` the element and its index, `||` the element as `this` (a copy:
/// the array is not changed).
pub(crate) fn call_item_ref(c: &mut dyn Caller, f: &FnPtr, item: &Value, index: usize) -> Result<Value, EvalError> {
    match c.fn_ptr_arity(f) {
        Some(0) => {
            let mut tmp = item.clone();
            c.call_fn_ptr_this(f, &mut tmp, Vec::new())
        }
        Some(n) if n >= 2 => c.call_fn_ptr(f, vec![item.clone(), Value::Int(index as i64)]),
        _ => c.call_fn_ptr(f, vec![item.clone()]),
    }
}

/// Truthiness of a callback's answer: only `true` counts.
pub(crate) fn is_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Shared(cell) => is_true(&cell.borrow()),
        _ => false,
    }
}

pub(crate) fn array_mut(v: &mut Value) -> Option<&mut Array> {
    match v {
        Value::Array(a) => Some(Rc::make_mut(a)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Names shared by several areas

native! {
    fn len(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(Value::Int(strings::char_len(s) as i64)),
            Value::Array(x) => Ok(Value::Int(x.len() as i64)),
            Value::Map(m) => Ok(Value::Int(m.len() as i64)),
            Value::Blob(b) => Ok(Value::Int(b.len() as i64)),
            _ => no_match(),
        }
    }
}

native! {
    fn is_empty(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(Value::Bool(s.is_empty())),
            Value::Array(x) => Ok(Value::Bool(x.is_empty())),
            Value::Map(m) => Ok(Value::Bool(m.is_empty())),
            Value::Blob(b) => Ok(Value::Bool(b.is_empty())),
            other => misc::range_is_empty(other).map(Value::Bool).ok_or(NativeError::NoMatch),
        }
    }
}

native! {
    fn clear(c, a) {
        match &mut a[0] {
            Value::Str(s) => Rc::make_mut(s).clear(),
            Value::Array(x) => Rc::make_mut(x).clear(),
            Value::Map(m) => Rc::make_mut(m).clear(),
            Value::Blob(b) => Rc::make_mut(b).clear(),
            _ => return no_match(),
        }
        Ok(Value::Unit)
    }
}

native! {
    fn contains(c, a) {
        match &a[0] {
            Value::Str(_) => strings::contains(c, a),
            Value::Array(_) => arrays::contains(c, a),
            Value::Map(_) => maps::contains(c, a),
            Value::Blob(_) => blobs::contains(c, a),
            other => misc::range_contains(other, &a[1]).map(Value::Bool).ok_or(NativeError::NoMatch),
        }
    }
}

native_cb! {
    fn index_of2(c, a) {
        match &a[0] {
            Value::Str(_) => strings::index_of(c, a),
            Value::Array(_) => arrays::index_of(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn truncate(c, a) {
        match &a[0] {
            Value::Str(_) => strings::truncate(c, a),
            Value::Array(_) => arrays::truncate(c, a),
            Value::Blob(_) => blobs::truncate(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn pad(c, a) {
        match &a[0] {
            Value::Str(_) => strings::pad(c, a),
            Value::Array(_) => arrays::pad(c, a),
            Value::Blob(_) => blobs::pad(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn remove(c, a) {
        match &a[0] {
            Value::Str(_) => strings::remove(c, a),
            Value::Array(_) => arrays::remove(c, a),
            Value::Map(_) => maps::remove(c, a),
            Value::Blob(_) => blobs::remove(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn get2(c, a) {
        match &a[0] {
            Value::Str(_) => strings::get(c, a),
            Value::Array(_) => arrays::get(c, a),
            Value::Map(_) => maps::get(c, a),
            Value::Blob(_) => blobs::get(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn set3(c, a) {
        match &a[0] {
            Value::Str(_) => strings::set(c, a),
            Value::Array(_) => arrays::set(c, a),
            Value::Map(_) => maps::set(c, a),
            Value::Blob(_) => blobs::set(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn split(c, a) {
        match &a[0] {
            Value::Str(_) => strings::split(c, a),
            Value::Array(_) => arrays::split(c, a),
            Value::Blob(_) => blobs::split(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn to_upper(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(Value::string(s.to_uppercase())),
            Value::Char(ch) => Ok(Value::Char(strings::char_upper(*ch))),
            _ => no_match(),
        }
    }
}

native! {
    fn to_lower(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(Value::string(s.to_lowercase())),
            Value::Char(ch) => Ok(Value::Char(strings::char_lower(*ch))),
            _ => no_match(),
        }
    }
}

/// The native function for a call of `name` with `arity` arguments (for a
/// method call the receiver counts), or `None` if the standard library has
/// no function of that name and arity.
pub fn resolve(name: &str, arity: usize) -> Option<NativeFn> {
    let f: NativeFn = match (name, arity) {
        // ---- shared names
        ("len", 1) | ("get$len", 1) => len,
        ("is_empty", 1) | ("get$is_empty", 1) => is_empty,
        ("clear", 1) => clear,
        ("contains", 2) => contains,
        ("index_of", 2) => index_of2,
        ("index_of", 3) => arrays_or_strings_index_of3,
        ("truncate", 2) => truncate,
        ("pad", 3) => pad,
        ("remove", 2) => remove,
        ("get", 2) => get2,
        ("set", 3) => set3,
        ("split", 2) => split,
        ("to_upper", 1) => to_upper,
        ("to_lower", 1) => to_lower,

        // ---- strings and chars
        ("split", 1) => strings::split_ws,
        ("split", 3) => strings::split3,
        ("split_rev", 2) => strings::split_rev,
        ("split_rev", 3) => strings::split_rev3,
        ("bytes", 1) | ("get$bytes", 1) => strings::bytes,
        ("chars", 1) | ("get$chars", 1) | ("to_chars", 1) => strings::chars,
        ("chars", 2) => strings::chars2,
        ("chars", 3) => strings::chars3,
        ("sub_string", 2) => strings::sub_string2,
        ("sub_string", 3) => strings::sub_string3,
        ("crop", 2) => strings::crop2,
        ("crop", 3) => strings::crop3,
        ("trim", 1) => strings::trim,
        ("make_upper", 1) => strings::make_upper,
        ("make_lower", 1) => strings::make_lower,
        ("replace", 3) => strings::replace,
        ("starts_with", 2) => strings::starts_with,
        ("ends_with", 2) => strings::ends_with,
        ("parse_int", 1) => strings::parse_int,
        ("parse_int", 2) => strings::parse_int2,
        ("parse_float", 1) => strings::parse_float,
        ("to_blob", 1) => strings::to_blob,

        // ---- arrays
        ("push", 2) => arrays_or_blobs_push,
        ("append", 2) => append,
        ("insert", 3) => arrays_or_blobs_insert,
        ("pop", 1) => pop,
        ("pop", 2) => strings::pop2,
        ("shift", 1) => arrays_or_blobs_shift,
        ("reverse", 1) => arrays_or_blobs_reverse,
        ("extract", 2) => arrays_or_blobs_extract2,
        ("extract", 3) => arrays_or_blobs_extract3,
        ("chop", 2) => arrays_or_blobs_chop,
        ("drain", 2) => arrays_or_maps_drain,
        ("drain", 3) => arrays_or_blobs_drain3,
        ("retain", 2) => arrays_or_maps_retain,
        ("retain", 3) => arrays_or_blobs_retain3,
        ("splice", 3) => arrays_or_blobs_splice3,
        ("splice", 4) => arrays_or_blobs_splice4,
        ("filter", 2) => arrays_or_maps_filter,
        ("map", 2) => arrays::map,
        ("for_each", 2) => arrays::for_each,
        ("reduce", 2) => arrays::reduce,
        ("reduce", 3) => arrays::reduce3,
        ("reduce_rev", 2) => arrays::reduce_rev,
        ("reduce_rev", 3) => arrays::reduce_rev3,
        ("some", 2) => arrays::some,
        ("all", 2) => arrays::all,
        ("find", 2) => arrays::find,
        ("find", 3) => arrays::find3,
        ("find_map", 2) => arrays::find_map,
        ("find_map", 3) => arrays::find_map3,
        ("sort", 1) => arrays::sort,
        ("sort", 2) => arrays::sort_by,
        ("sort_desc", 1) => arrays::sort_desc,
        ("dedup", 1) => arrays::dedup,
        ("dedup", 2) => arrays::dedup_by,
        ("zip", 3) => arrays::zip,

        // ---- maps
        ("keys", 1) => maps::keys,
        ("values", 1) => maps::values,
        ("mixin", 2) => maps::mixin,
        ("fill_with", 2) => maps::fill_with,
        ("to_json", 1) => misc::to_json,

        // ---- blobs and bit fields
        ("blob", 0) => blobs::blob0,
        ("blob", 1) => blobs::blob1,
        ("blob", 2) => blobs::blob2,
        ("to_array", 1) => blobs::to_array,
        ("as_string", 1) => blobs::as_string,
        ("parse_le_int", 2) => blobs::parse_le_int2,
        ("parse_le_int", 3) => blobs::parse_le_int3,
        ("parse_be_int", 2) => blobs::parse_be_int2,
        ("parse_be_int", 3) => blobs::parse_be_int3,
        ("parse_le_float", 2) => blobs::parse_le_float2,
        ("parse_le_float", 3) => blobs::parse_le_float3,
        ("parse_be_float", 2) => blobs::parse_be_float2,
        ("parse_be_float", 3) => blobs::parse_be_float3,
        ("write_le", 3) => blobs::write_le3,
        ("write_le", 4) => blobs::write_le4,
        ("write_be", 3) => blobs::write_be3,
        ("write_be", 4) => blobs::write_be4,
        ("write_ascii", 3) => blobs::write_ascii3,
        ("write_ascii", 4) => blobs::write_ascii4,
        ("write_utf8", 3) => blobs::write_utf8_3,
        ("write_utf8", 4) => blobs::write_utf8_4,
        ("get_bit", 2) => blobs::get_bit,
        ("set_bit", 3) => blobs::set_bit,
        ("get_bits", 2) => blobs::get_bits2,
        ("get_bits", 3) => blobs::get_bits3,
        ("set_bits", 3) => blobs::set_bits3,
        ("set_bits", 4) => blobs::set_bits4,
        ("bits", 1) => blobs::bits1,
        ("bits", 2) => blobs::bits2,
        ("bits", 3) => blobs::bits3,

        // ---- math
        ("abs", 1) => math::abs,
        ("sign", 1) => math::sign,
        ("min", 2) => math::min,
        ("max", 2) => math::max,
        ("sqrt", 1) => math::sqrt,
        ("exp", 1) => math::exp,
        ("ln", 1) => math::ln,
        ("log", 1) => math::log10,
        ("log", 2) => math::log,
        ("floor", 1) | ("get$floor", 1) => math::floor,
        ("ceiling", 1) | ("get$ceiling", 1) => math::ceiling,
        ("round", 1) | ("get$round", 1) => math::round,
        ("int", 1) | ("get$int", 1) => math::int_part,
        ("fraction", 1) | ("get$fraction", 1) => math::fraction,
        ("is_nan", 1) | ("get$is_nan", 1) => math::is_nan,
        ("is_finite", 1) | ("get$is_finite", 1) => math::is_finite,
        ("is_infinite", 1) | ("get$is_infinite", 1) => math::is_infinite,
        ("is_odd", 1) | ("get$is_odd", 1) => math::is_odd,
        ("is_even", 1) | ("get$is_even", 1) => math::is_even,
        ("is_zero", 1) | ("get$is_zero", 1) => math::is_zero,
        ("to_int", 1) => math::to_int,
        ("to_float", 1) => math::to_float,
        ("PI", 0) => math::pi,
        ("E", 0) => math::e,
        ("sin", 1) => math::sin,
        ("cos", 1) => math::cos,
        ("tan", 1) => math::tan,
        ("asin", 1) => math::asin,
        ("acos", 1) => math::acos,
        ("atan", 1) => math::atan,
        ("atan", 2) => math::atan2,
        ("hypot", 2) => math::hypot,
        ("sinh", 1) => math::sinh,
        ("cosh", 1) => math::cosh,
        ("tanh", 1) => math::tanh,
        ("asinh", 1) => math::asinh,
        ("acosh", 1) => math::acosh,
        ("atanh", 1) => math::atanh,
        ("to_degrees", 1) => math::to_degrees,
        ("to_radians", 1) => math::to_radians,
        ("to_hex", 1) => math::to_hex,
        ("to_octal", 1) => math::to_octal,
        ("to_binary", 1) => math::to_binary,

        // ---- misc
        ("type_of", 1) => misc::type_of,
        ("print", 1) => misc::print,
        ("debug", 1) => misc::debug,
        ("to_string", 1) => misc::to_string,
        ("to_debug", 1) => misc::to_debug,
        ("is_shared", 1) => misc::is_shared,
        ("Fn", 1) => misc::fn_new,
        ("curry", n) if n >= 2 => misc::curry,
        ("call", n) if n >= 1 => misc::call,
        ("name", 1) | ("get$name", 1) => misc::fn_name,
        ("is_anonymous", 1) | ("get$is_anonymous", 1) => misc::is_anonymous,
        ("parse_json", 1) => misc::parse_json,
        ("start", 1) | ("get$start", 1) => misc::range_start,
        ("end", 1) | ("get$end", 1) => misc::range_end,
        ("is_inclusive", 1) | ("get$is_inclusive", 1) => misc::range_is_inclusive,
        ("is_exclusive", 1) | ("get$is_exclusive", 1) => misc::range_is_exclusive,
        ("range", 2) => misc::range2,
        ("range", 3) => misc::range3,
        ("timestamp", 0) => misc::timestamp,
        ("elapsed", 1) | ("get$elapsed", 1) => misc::elapsed,

        // ---- operators the interpreter may leave to the library
        ("+", 2) => misc::op_add,
        ("-", 2) => misc::op_sub,
        ("==", 2) => misc::op_eq,
        ("!=", 2) => misc::op_ne,
        ("in", 2) => misc::op_in,
        _ => return None,
    };
    Some(f)
}

native_cb! {
    fn arrays_or_strings_index_of3(c, a) {
        match &a[0] {
            Value::Str(_) => strings::index_of3(c, a),
            Value::Array(_) => arrays::index_of3(c, a),
            _ => no_match(),
        }
    }
}

/// Defines a function that takes an array or a blob as its receiver.
macro_rules! array_or_blob {
    ($name:ident, $arr:path, $blob:path) => {
        native! {
            fn $name(c, a) {
                match &a[0] {
                    Value::Array(_) => $arr(c, a),
                    Value::Blob(_) => $blob(c, a),
                    _ => no_match(),
                }
            }
        }
    };
}

macro_rules! array_or_map {
    ($name:ident, $arr:path, $map:path) => {
        native_cb! {
            fn $name(c, a) {
                match &a[0] {
                    Value::Array(_) => $arr(c, a),
                    Value::Map(_) => $map(c, a),
                    _ => no_match(),
                }
            }
        }
    };
}

array_or_blob!(arrays_or_blobs_push, arrays::push, blobs::push);

native! {
    fn append(c, a) {
        match &a[0] {
            Value::Array(_) => arrays::append(c, a),
            Value::Blob(_) => blobs::append(c, a),
            Value::Str(_) => strings::append(c, a),
            _ => no_match(),
        }
    }
}

native! {
    fn pop(c, a) {
        match &a[0] {
            Value::Array(_) => arrays::pop(c, a),
            Value::Blob(_) => blobs::pop(c, a),
            Value::Str(_) => strings::pop(c, a),
            _ => no_match(),
        }
    }
}
array_or_blob!(arrays_or_blobs_insert, arrays::insert, blobs::insert);
array_or_blob!(arrays_or_blobs_shift, arrays::shift, blobs::shift);
array_or_blob!(arrays_or_blobs_reverse, arrays::reverse, blobs::reverse);
array_or_blob!(arrays_or_blobs_extract2, arrays::extract2, blobs::extract2);
array_or_blob!(arrays_or_blobs_extract3, arrays::extract3, blobs::extract3);
array_or_blob!(arrays_or_blobs_chop, arrays::chop, blobs::chop);
array_or_blob!(arrays_or_blobs_drain3, arrays::drain3, blobs::drain3);
array_or_blob!(arrays_or_blobs_retain3, arrays::retain3, blobs::retain3);
array_or_blob!(arrays_or_blobs_splice3, arrays::splice3, blobs::splice3);
array_or_blob!(arrays_or_blobs_splice4, arrays::splice4, blobs::splice4);
array_or_map!(arrays_or_maps_drain, arrays::drain, maps::drain);
array_or_map!(arrays_or_maps_retain, arrays::retain, maps::retain);
array_or_map!(arrays_or_maps_filter, arrays::filter, maps::filter);
