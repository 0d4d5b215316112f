//! Object maps: keys are strings, iterated in sorted order.

use std::rc::Rc;

use super::{fn_of, is_true, no_match};
use crate::error::EvalError;
use crate::native::{Caller, NativeError};
use crate::value::{FnPtr, Map, Value};

fn map_ref(v: &Value) -> Result<&Rc<Map>, NativeError> {
    match v {
        Value::Map(m) => Ok(m),
        _ => no_match(),
    }
}

fn map_mut(v: &mut Value) -> Result<&mut Map, NativeError> {
    match v {
        Value::Map(m) => Ok(Rc::make_mut(m)),
        _ => no_match(),
    }
}

/// A key argument: a string (a char is taken as a one-character string).
fn key_of(v: &Value) -> Result<Rc<str>, NativeError> {
    match v {
        Value::Str(s) => Ok(Rc::from(s.as_str())),
        Value::Char(c) => Ok(Rc::from(c.to_string().as_str())),
        _ => no_match(),
    }
}

native! {
    pub fn keys(c, a) {
        let m = map_ref(&a[0])?;
        Ok(Value::array(m.keys().map(|k| Value::str(k)).collect()))
    }
}

native! {
    pub fn values(c, a) {
        let m = map_ref(&a[0])?;
        Ok(Value::array(m.values().cloned().collect()))
    }
}

native! {
    pub fn contains(c, a) {
        let m = map_ref(&a[0])?;
        match &a[1] {
            Value::Str(s) => Ok(Value::Bool(m.contains_key(s.as_str()))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn get(c, a) {
        let m = map_ref(&a[0])?;
        match &a[1] {
            Value::Str(s) => Ok(m.get(s.as_str()).cloned().unwrap_or(Value::Unit)),
            _ => no_match(),
        }
    }
}

native! {
    pub fn set(c, a) {
        let k = key_of(&a[1])?;
        let v = std::mem::replace(&mut a[2], Value::Unit);
        map_mut(&mut a[0])?.insert(k, v);
        Ok(Value::Unit)
    }
}

native! {
    pub fn remove(c, a) {
        let k = match &a[1] { Value::Str(s) => s.clone(), _ => return no_match() };
        Ok(map_mut(&mut a[0])?.remove(k.as_str()).unwrap_or(Value::Unit))
    }
}

native! {
    /// `mixin(other)` (and `+=`): adds all of `other`, overwriting.
    pub fn mixin(c, a) {
        let other = map_ref(&a[1])?.clone();
        let m = map_mut(&mut a[0])?;
        for (k, v) in other.iter() {
            m.insert(k.clone(), v.clone());
        }
        Ok(Value::Unit)
    }
}

native! {
    /// `fill_with(other)`: adds the keys of `other` that are missing.
    pub fn fill_with(c, a) {
        let other = map_ref(&a[1])?.clone();
        let m = map_mut(&mut a[0])?;
        for (k, v) in other.iter() {
            if !m.contains_key(k) {
                m.insert(k.clone(), v.clone());
            }
        }
        Ok(Value::Unit)
    }
}

/// Calls `f(key, value)` (or `f(key)` if it takes one parameter).
fn call_kv(c: &mut dyn Caller, f: &FnPtr, k: &Rc<str>, v: &Value) -> Result<bool, EvalError> {
    let args = match c.fn_ptr_arity(f) {
        Some(1) => vec![Value::str(k)],
        _ => vec![Value::str(k), v.clone()],
    };
    c.call_fn_ptr(f, args).map(|r| is_true(&r))
}

/// Splits the map by `f`: `(matching, others)`.
fn split_by(c: &mut dyn Caller, m: &Map, f: &FnPtr) -> Result<(Map, Map), EvalError> {
    let mut yes = Map::new();
    let mut no = Map::new();
    for (k, v) in m.iter() {
        if call_kv(c, f, k, v)? {
            yes.insert(k.clone(), v.clone());
        } else {
            no.insert(k.clone(), v.clone());
        }
    }
    Ok((yes, no))
}

native_cb! {
    pub fn filter(c, a) {
        let m = map_ref(&a[0])?.clone();
        let f = fn_of(&a[1])?;
        let (yes, _) = split_by(c, &m, &f)?;
        Ok(Value::map(yes))
    }
}

native_cb! {
    /// `drain(fn)`: removes the entries for which `fn(key, value)` is true, returns them.
    pub fn drain(c, a) {
        let m = map_ref(&a[0])?.clone();
        let f = fn_of(&a[1])?;
        let (yes, no) = split_by(c, &m, &f)?;
        a[0] = Value::map(no);
        Ok(Value::map(yes))
    }
}

native_cb! {
    /// `retain(fn)`: keeps the entries for which `fn(key, value)` is true, returns the others.
    pub fn retain(c, a) {
        let m = map_ref(&a[0])?.clone();
        let f = fn_of(&a[1])?;
        let (yes, no) = split_by(c, &m, &f)?;
        a[0] = Value::map(yes);
        Ok(Value::map(no))
    }
}
