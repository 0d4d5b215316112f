//! Everything else: `type_of`, `print`/`debug`, `to_string`/`to_debug`,
//! function pointers (`Fn`, `curry`, `call`), JSON, `range`, timestamps,
//! and the operators on library types (`+` on arrays, blobs, maps and
//! strings, `-` on strings and timestamps, `==`, `in`).

use std::rc::Rc;

use super::{err, no_match, values_eq};
use crate::format::{to_debug as debug_text, to_display, write_display};
use crate::json;
use crate::native::{Caller, NativeError, NativeResult};
use crate::value::{FnPtr, Value};

/// The bounds `(start, end exclusive)` of a range value (`a..b`, `a..=b`).
pub fn range_bounds(v: &Value) -> Option<(i64, i64)> {
    v.as_range()
}

native! {
    pub fn type_of(c, a) {
        Ok(Value::str(match a[0].range_env() {
            Some((_, _, false)) => "range",
            Some((_, _, true)) => "range=",
            None => a[0].type_name(),
        }))
    }
}

// ---- range values (`a..b`, `a..=b`)

fn range_parts(v: &Value) -> Result<(i64, i64, bool), NativeError> {
    match v.range_env() {
        Some(r) => Ok(r),
        None => no_match(),
    }
}

native! {
    pub fn range_start(c, a) {
        Ok(Value::Int(range_parts(&a[0])?.0))
    }
}

native! {
    pub fn range_end(c, a) {
        Ok(Value::Int(range_parts(&a[0])?.1))
    }
}

native! {
    pub fn range_is_inclusive(c, a) {
        Ok(Value::Bool(range_parts(&a[0])?.2))
    }
}

native! {
    pub fn range_is_exclusive(c, a) {
        Ok(Value::Bool(!range_parts(&a[0])?.2))
    }
}

/// For `is_empty` and `contains` on a range (dispatched from `mod.rs`).
pub fn range_is_empty(v: &Value) -> Option<bool> {
    v.as_range().map(|(lo, hi)| lo >= hi)
}

pub fn range_contains(v: &Value, x: &Value) -> Option<bool> {
    let (lo, hi) = v.as_range()?;
    match x {
        Value::Int(i) => Some(*i >= lo && *i < hi),
        _ => None,
    }
}

native! {
    pub fn print(c, a) {
        let text = match &a[0] {
            Value::Str(s) => s.clone(),
            other => Rc::new(to_display(other)),
        };
        c.output(&text, false)?;
        Ok(Value::Unit)
    }
}

native! {
    pub fn debug(c, a) {
        c.output(&debug_text(&a[0]), true)?;
        Ok(Value::Unit)
    }
}

native! {
    pub fn to_string(c, a) {
        match &a[0] {
            Value::Str(_) => Ok(a[0].clone()),
            other => Ok(Value::string(to_display(other))),
        }
    }
}

native! {
    pub fn to_debug(c, a) {
        Ok(Value::string(debug_text(&a[0])))
    }
}

/// `is_shared(x)`: whether `x` is a variable captured by a closure. Written
/// without `native!`, which would look through the cell.
pub fn is_shared(_c: &mut dyn Caller, a: &mut [Value]) -> NativeResult {
    Ok(Value::Bool(matches!(a[0], Value::Shared(_))))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || c == '_') && s != "_"
}

native! {
    /// `Fn(name)`: a pointer to the function `name` (which need not exist yet).
    pub fn fn_new(c, a) {
        let name = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        if !is_identifier(&name) {
            return Err(err("ErrorFunctionNotFound", format!("Function not found: {}", name)));
        }
        Ok(Value::FnPtr(Rc::new(FnPtr { name: Rc::from(name.as_str()), curry: Vec::new(), env: None })))
    }
}

native! {
    /// `curry(f, args...)`: a new pointer with more arguments bound.
    pub fn curry(c, a) {
        let mut f = match &a[0] { Value::FnPtr(p) => (**p).clone(), _ => return no_match() };
        f.curry.extend(a[1..].iter_mut().map(|v| std::mem::replace(v, Value::Unit)));
        Ok(Value::FnPtr(Rc::new(f)))
    }
}

native_cb! {
    /// `call(f, args...)`, or `obj.call(f, args...)` with `obj` as `this`.
    pub fn call(c, a) {
        if let Value::FnPtr(p) = &a[0] {
            let f = p.clone();
            let args = a[1..].iter_mut().map(|v| std::mem::replace(v, Value::Unit)).collect();
            return Ok(c.call_fn_ptr(&f, args)?);
        }
        if a.len() >= 2 {
            if let Value::FnPtr(p) = &a[1] {
                let f = p.clone();
                let args = a[2..].iter_mut().map(|v| std::mem::replace(v, Value::Unit)).collect();
                return Ok(c.call_fn_ptr_this(&f, &mut a[0], args)?);
            }
        }
        no_match()
    }
}

native! {
    pub fn fn_name(c, a) {
        match &a[0] {
            Value::FnPtr(p) => Ok(Value::str(&p.name)),
            _ => no_match(),
        }
    }
}

native! {
    /// Whether the pointer is to an anonymous function (a closure).
    pub fn is_anonymous(c, a) {
        match &a[0] {
            Value::FnPtr(p) if a[0].range_env().is_none() => Ok(Value::Bool(p.name.starts_with("anon$"))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn parse_json(c, a) {
        match &a[0] {
            Value::Str(s) => json::parse_json(s).map_err(|e| err("ErrorRuntime", e)),
            _ => no_match(),
        }
    }
}

native! {
    pub fn to_json(c, a) {
        Ok(Value::string(json::to_json(&a[0])))
    }
}

// ---- range(a, b[, step]): an array of the values (until ranges are values)

/// Most elements `range` will build at once.
const MAX_RANGE: u64 = 1 << 26;

fn int_range(from: i64, to: i64, step: i64) -> NativeResult {
    if step == 0 {
        return Err(err("ErrorArithmetic", "step value cannot be zero"));
    }
    let mut out = Vec::new();
    let mut x = from;
    while (step > 0 && x < to) || (step < 0 && x > to) {
        if out.len() as u64 >= MAX_RANGE {
            return Err(err("ErrorDataTooLarge", "range too large"));
        }
        out.push(Value::Int(x));
        x = match x.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(Value::array(out))
}

fn float_range(from: f64, to: f64, step: f64) -> NativeResult {
    if step == 0.0 || step.is_nan() {
        return Err(err("ErrorArithmetic", "step value cannot be zero"));
    }
    let mut out = Vec::new();
    let mut x = from;
    while (step > 0.0 && x < to) || (step < 0.0 && x > to) {
        if out.len() as u64 >= MAX_RANGE {
            return Err(err("ErrorDataTooLarge", "range too large"));
        }
        out.push(Value::Float(x));
        x += step;
    }
    Ok(Value::array(out))
}

native! {
    pub fn range2(c, a) {
        match (&a[0], &a[1]) {
            (Value::Int(x), Value::Int(y)) => Ok(Value::range(*x, *y)),
            (Value::Float(x), Value::Float(y)) => float_range(*x, *y, 1.0),
            _ => no_match(),
        }
    }
}

native! {
    pub fn range3(c, a) {
        match (&a[0], &a[1], &a[2]) {
            (Value::Int(x), Value::Int(y), Value::Int(s)) => int_range(*x, *y, *s),
            (Value::Float(x), Value::Float(y), Value::Float(s)) => float_range(*x, *y, *s),
            _ => no_match(),
        }
    }
}

// ---- timestamps: milliseconds from a per-instance origin

thread_local! {
    static ORIGIN: std::time::Instant = std::time::Instant::now();
}

fn now_ms() -> f64 {
    ORIGIN.with(|o| o.elapsed().as_secs_f64() * 1000.0)
}

native! {
    pub fn timestamp(c, a) {
        Ok(Value::Timestamp(now_ms()))
    }
}

native! {
    /// Seconds since the timestamp.
    pub fn elapsed(c, a) {
        match &a[0] {
            Value::Timestamp(t) => Ok(Value::Float((now_ms() - t) / 1000.0)),
            _ => no_match(),
        }
    }
}

fn seconds_of(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

// ---- operators

native! {
    pub fn op_add(c, a) {
        match (&a[0], &a[1]) {
            (Value::Str(x), Value::Str(y)) => {
                let mut s = String::with_capacity(x.len() + y.len());
                s.push_str(x);
                s.push_str(y);
                Ok(Value::string(s))
            }
            (Value::Str(x), Value::Blob(y)) => {
                let mut s = x.to_string();
                s.push_str(&String::from_utf8_lossy(y));
                Ok(Value::string(s))
            }
            (Value::Blob(x), Value::Str(y)) => {
                let mut s = String::from_utf8_lossy(x).into_owned();
                s.push_str(y);
                Ok(Value::string(s))
            }
            (Value::Str(x), other) => {
                let mut s = String::with_capacity(x.len() + 8);
                s.push_str(x);
                write_display(&mut s, other);
                Ok(Value::string(s))
            }
            (other, Value::Str(y)) => {
                let mut s = to_display(other);
                s.push_str(y);
                Ok(Value::string(s))
            }
            (Value::Char(x), Value::Char(y)) => {
                let mut s = String::new();
                s.push(*x);
                s.push(*y);
                Ok(Value::string(s))
            }
            (Value::Array(x), Value::Array(y)) => {
                let mut v = Vec::with_capacity(x.len() + y.len());
                v.extend(x.iter().cloned());
                v.extend(y.iter().cloned());
                Ok(Value::array(v))
            }
            (Value::Blob(x), Value::Blob(y)) => {
                let mut v = Vec::with_capacity(x.len() + y.len());
                v.extend_from_slice(x);
                v.extend_from_slice(y);
                Ok(Value::Blob(Rc::new(v)))
            }
            (Value::Map(x), Value::Map(y)) => {
                let mut m = (**x).clone();
                for (k, v) in y.iter() {
                    m.insert(k.clone(), v.clone());
                }
                Ok(Value::map(m))
            }
            (Value::Timestamp(t), other) => match seconds_of(other) {
                Some(s) => Ok(Value::Timestamp(t + s * 1000.0)),
                None => no_match(),
            },
            _ => no_match(),
        }
    }
}

native! {
    pub fn op_sub(c, a) {
        match (&a[0], &a[1]) {
            (Value::Str(x), Value::Str(y)) => {
                Ok(Value::string(if y.is_empty() { x.to_string() } else { x.replace(y.as_str(), "") }))
            }
            (Value::Str(x), Value::Char(y)) => Ok(Value::string(x.replace(*y, ""))),
            (Value::Timestamp(t), Value::Timestamp(u)) => Ok(Value::Float((t - u) / 1000.0)),
            (Value::Timestamp(t), other) => match seconds_of(other) {
                Some(s) => Ok(Value::Timestamp(t - s * 1000.0)),
                None => no_match(),
            },
            _ => no_match(),
        }
    }
}

native! {
    pub fn op_eq(c, a) {
        Ok(Value::Bool(values_eq(&a[0], &a[1])))
    }
}

native! {
    pub fn op_ne(c, a) {
        Ok(Value::Bool(!values_eq(&a[0], &a[1])))
    }
}

native! {
    /// `needle in haystack`.
    pub fn op_in(c, a) {
        let found = match (&a[1], &a[0]) {
            (Value::Str(h), Value::Str(n)) => h.contains(n.as_str()),
            (Value::Str(h), Value::Char(n)) => h.contains(*n),
            (Value::Array(h), n) => h.iter().any(|x| values_eq(x, n)),
            (Value::Map(h), Value::Str(n)) => h.contains_key(n.as_str()),
            (Value::Map(h), Value::Char(n)) => h.contains_key(n.to_string().as_str()),
            (Value::Blob(h), Value::Int(n)) => *n >= 0 && *n <= 255 && h.contains(&(*n as u8)),
            _ => return no_match(),
        };
        Ok(Value::Bool(found))
    }
}
