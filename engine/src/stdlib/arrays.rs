//! Arrays. A negative position counts from the end; out-of-range positions
//! are clamped (or give `()`), never an error, as in Rhai. Callbacks take a
//! function pointer or a function name; see `call_item_ref` for how an element
//! reaches them.

use std::cmp::Ordering;
use std::rc::Rc;

use super::{
    array_mut, call_item_ref, chop_to, clamp_start, err, fn_of, index_in, int_of, is_true,
    keep_window, natural_cmp, no_match, range_arg, range_of, range_window, values_eq, window1,
    window2,
};
use crate::error::{ErrorKind, EvalError};
use crate::native::{Caller, NativeError, NativeResult};
use crate::value::{Array, FnPtr, Value};

fn arr(v: &Value) -> Result<&Rc<Array>, NativeError> {
    match v {
        Value::Array(a) => Ok(a),
        _ => no_match(),
    }
}

fn arr_mut(v: &mut Value) -> Result<&mut Array, NativeError> {
    match array_mut(v) {
        Some(a) => Ok(a),
        None => no_match(),
    }
}

native! {
    pub fn push(c, a) {
        let item = std::mem::replace(&mut a[1], Value::Unit);
        arr_mut(&mut a[0])?.push(item);
        Ok(Value::Unit)
    }
}

native! {
    /// `append(other)`: the elements of another array (or one value).
    pub fn append(c, a) {
        let item = std::mem::replace(&mut a[1], Value::Unit);
        let target = arr_mut(&mut a[0])?;
        let other = match &item {
            Value::Array(other) => other.clone(),
            _ => {
                target.push(item);
                return Ok(Value::Unit);
            }
        };
        drop(item);
        match Rc::try_unwrap(other) {
            Ok(mut v) => target.append(&mut v),
            Err(rc) => target.extend(rc.iter().cloned()),
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn insert(c, a) {
        let pos = int_of(&a[1])?;
        let item = std::mem::replace(&mut a[2], Value::Unit);
        let v = arr_mut(&mut a[0])?;
        let at = clamp_start(pos, v.len());
        v.insert(at, item);
        Ok(Value::Unit)
    }
}

native! {
    pub fn pop(c, a) {
        Ok(arr_mut(&mut a[0])?.pop().unwrap_or(Value::Unit))
    }
}

native! {
    pub fn shift(c, a) {
        let v = arr_mut(&mut a[0])?;
        Ok(if v.is_empty() { Value::Unit } else { v.remove(0) })
    }
}

native! {
    pub fn remove(c, a) {
        let i = int_of(&a[1])?;
        let v = arr_mut(&mut a[0])?;
        Ok(match index_in(i, v.len()) {
            Some(idx) => v.remove(idx),
            None => Value::Unit,
        })
    }
}

native! {
    pub fn truncate(c, a) {
        let n = int_of(&a[1])?;
        let v = arr_mut(&mut a[0])?;
        v.truncate(if n < 0 { 0 } else { n as usize });
        Ok(Value::Unit)
    }
}

native! {
    /// `chop(n)`: keeps only the last `n` elements.
    pub fn chop(c, a) {
        let n = int_of(&a[1])?;
        chop_to(arr_mut(&mut a[0])?, n);
        Ok(Value::Unit)
    }
}

native! {
    pub fn pad(c, a) {
        let n = int_of(&a[1])?;
        let item = a[2].clone();
        let v = arr_mut(&mut a[0])?;
        if n > 0 && n as u128 > v.len() as u128 {
            v.resize(n as usize, item);
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn reverse(c, a) {
        arr_mut(&mut a[0])?.reverse();
        Ok(Value::Unit)
    }
}

native! {
    pub fn get(c, a) {
        let v = arr(&a[0])?;
        let i = int_of(&a[1])?;
        Ok(index_in(i, v.len()).map_or(Value::Unit, |idx| v[idx].clone()))
    }
}

native! {
    pub fn set(c, a) {
        let i = int_of(&a[1])?;
        let item = std::mem::replace(&mut a[2], Value::Unit);
        let v = arr_mut(&mut a[0])?;
        if let Some(idx) = index_in(i, v.len()) {
            v[idx] = item;
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn extract2(c, a) {
        let v = arr(&a[0])?;
        let (s, n) = window1(&a[1], v.len())?;
        Ok(Value::array(v[s..s + n].to_vec()))
    }
}

native! {
    pub fn extract3(c, a) {
        let v = arr(&a[0])?;
        let (s, n) = window2(&a[1], &a[2], v.len())?;
        Ok(Value::array(v[s..s + n].to_vec()))
    }
}

fn splice_at(a: &mut [Value], s: usize, n: usize, with: usize) -> NativeResult {
    let r = match &a[with] {
        Value::Array(r) => r.clone(),
        _ => return no_match(),
    };
    a[with] = Value::Unit;
    let replacement = Rc::try_unwrap(r).unwrap_or_else(|rc| (*rc).clone());
    let v = arr_mut(&mut a[0])?;
    v.splice(s..s + n, replacement);
    Ok(Value::Unit)
}

native! {
    /// `splice(range, array)`.
    pub fn splice3(c, a) {
        let len = arr(&a[0])?.len();
        let (s, n) = range_arg(&a[1], len)?;
        splice_at(a, s, n, 2)
    }
}

native! {
    /// `splice(start, len, array)`.
    pub fn splice4(c, a) {
        let len = arr(&a[0])?.len();
        let (s, n) = window2(&a[1], &a[2], len)?;
        splice_at(a, s, n, 3)
    }
}

native! {
    /// `split(index)`: cuts the array at `index`, returning the tail.
    pub fn split(c, a) {
        let i = int_of(&a[1])?;
        let v = arr_mut(&mut a[0])?;
        let at = clamp_start(i, v.len());
        Ok(Value::array(v.split_off(at)))
    }
}

/// Runs `keep` over the elements; answers `(kept, removed)` in order.
fn partition(c: &mut dyn Caller, items: Array, f: &FnPtr) -> Result<(Array, Array), EvalError> {
    let mut kept = Vec::with_capacity(items.len());
    let mut removed = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if is_true(&call_item_ref(c, f, &item, i)?) {
            kept.push(item);
        } else {
            removed.push(item);
        }
    }
    Ok((kept, removed))
}

fn take_array(v: &mut Value) -> Result<Array, NativeError> {
    match v {
        Value::Array(rc) => {
            let rc = std::mem::replace(rc, Rc::new(Vec::new()));
            Ok(Rc::try_unwrap(rc).unwrap_or_else(|rc| (*rc).clone()))
        }
        _ => no_match(),
    }
}

/// `drain(fn)` (`keep` false) and `retain(fn)` (`keep` true): the array keeps
/// the elements for which `fn` answers `keep`, the others are returned; a
/// failing callback leaves the array as it was.
fn split_off_by(c: &mut dyn Caller, a: &mut [Value], keep: bool) -> NativeResult {
    let f = fn_of(&a[1])?;
    let items = take_array(&mut a[0])?;
    match partition(c, items.clone(), &f) {
        Ok((matched, rest)) => {
            let (stay, out) = if keep { (matched, rest) } else { (rest, matched) };
            a[0] = Value::array(stay);
            Ok(Value::array(out))
        }
        Err(e) => {
            a[0] = Value::array(items);
            Err(e.into())
        }
    }
}

native_cb! {
    /// `drain(fn)`: removes the elements for which `fn` is true and returns them;
    /// `drain(range)` removes that range.
    pub fn drain(c, a) {
        arr(&a[0])?;
        if let Some((lo, hi)) = range_of(&a[1]) {
            let v = arr_mut(&mut a[0])?;
            let (s, n) = range_window(lo, hi, v.len());
            return Ok(Value::array(v.drain(s..s + n).collect()));
        }
        split_off_by(c, a, false)
    }
}

native! {
    pub fn drain3(c, a) {
        let len = arr(&a[0])?.len();
        let (s, n) = window2(&a[1], &a[2], len)?;
        let v = arr_mut(&mut a[0])?;
        Ok(Value::array(v.drain(s..s + n).collect()))
    }
}

native_cb! {
    /// `retain(fn)`: keeps the elements for which `fn` is true, returns the others;
    /// `retain(range)` keeps that range.
    pub fn retain(c, a) {
        arr(&a[0])?;
        if let Some((lo, hi)) = range_of(&a[1]) {
            let v = arr_mut(&mut a[0])?;
            let (s, n) = range_window(lo, hi, v.len());
            return Ok(Value::array(keep_window(v, s, n)));
        }
        split_off_by(c, a, true)
    }
}

native! {
    pub fn retain3(c, a) {
        let len = arr(&a[0])?.len();
        let (s, n) = window2(&a[1], &a[2], len)?;
        Ok(Value::array(keep_window(arr_mut(&mut a[0])?, s, n)))
    }
}

native! {
    pub fn contains(c, a) {
        let v = arr(&a[0])?;
        Ok(Value::Bool(v.iter().any(|x| values_eq(x, &a[1]))))
    }
}

/// Whether an `index_of`/`find` argument names a callback rather than a
/// value to look for: a function pointer, or the name of a script function.
fn as_callback(c: &dyn Caller, v: &Value) -> Option<FnPtr> {
    match v {
        Value::FnPtr(p) => Some((**p).clone()),
        Value::Str(s) if c.has_script_fn(s, 1) || c.has_script_fn(s, 2) => {
            Some(FnPtr { name: Rc::from(s.as_str()), curry: Vec::new(), env: None })
        }
        _ => None,
    }
}

fn index_from(c: &mut dyn Caller, v: &Rc<Array>, what: &Value, start: usize) -> Result<i64, EvalError> {
    if let Some(f) = as_callback(c, what) {
        for i in start..v.len() {
            if is_true(&call_item_ref(c, &f, &v[i], i)?) {
                return Ok(i as i64);
            }
        }
        return Ok(-1);
    }
    Ok(v.iter().skip(start).position(|x| values_eq(x, what)).map(|p| (p + start) as i64).unwrap_or(-1))
}

native_cb! {
    pub fn index_of(c, a) {
        let v = arr(&a[0])?.clone();
        Ok(Value::Int(index_from(c, &v, &a[1], 0)?))
    }
}

native_cb! {
    pub fn index_of3(c, a) {
        let v = arr(&a[0])?.clone();
        let start = clamp_start(int_of(&a[2])?, v.len());
        Ok(Value::Int(index_from(c, &v, &a[1], start)?))
    }
}

fn find_from(c: &mut dyn Caller, a: &[Value], start: usize, map: bool) -> NativeResult {
    let v = arr(&a[0])?.clone();
    let f = fn_of(&a[1])?;
    for i in start..v.len() {
        let r = call_item_ref(c, &f, &v[i], i)?;
        if map {
            if !r.is_unit() {
                return Ok(r);
            }
        } else if is_true(&r) {
            return Ok(v[i].clone());
        }
    }
    Ok(Value::Unit)
}

native_cb! {
    pub fn find(c, a) {
        find_from(c, a, 0, false)
    }
}

native_cb! {
    pub fn find3(c, a) {
        let len = arr(&a[0])?.len();
        let start = clamp_start(int_of(&a[2])?, len);
        find_from(c, a, start, false)
    }
}

native_cb! {
    pub fn find_map(c, a) {
        find_from(c, a, 0, true)
    }
}

native_cb! {
    pub fn find_map3(c, a) {
        let len = arr(&a[0])?.len();
        let start = clamp_start(int_of(&a[2])?, len);
        find_from(c, a, start, true)
    }
}

native_cb! {
    pub fn filter(c, a) {
        let v = arr(&a[0])?.clone();
        let f = fn_of(&a[1])?;
        let mut out = Vec::new();
        for (i, item) in v.iter().enumerate() {
            if is_true(&call_item_ref(c, &f, item, i)?) {
                out.push(item.clone());
            }
        }
        Ok(Value::array(out))
    }
}

native_cb! {
    pub fn map(c, a) {
        let v = arr(&a[0])?.clone();
        let f = fn_of(&a[1])?;
        let mut out = Vec::with_capacity(v.len());
        for (i, item) in v.iter().enumerate() {
            out.push(call_item_ref(c, &f, item, i)?);
        }
        Ok(Value::array(out))
    }
}

native_cb! {
    /// `for_each(fn)`: calls `fn` with each element as `this` (and the index if
    /// it takes a parameter); changes to `this` stay in the array.
    pub fn for_each(c, a) {
        arr(&a[0])?;
        let f = fn_of(&a[1])?;
        let with_index = matches!(c.fn_ptr_arity(&f), Some(n) if n >= 1);
        let mut items = take_array(&mut a[0])?;
        let mut result = Ok(Value::Unit);
        for i in 0..items.len() {
            let args = if with_index { vec![Value::Int(i as i64)] } else { Vec::new() };
            if let Err(e) = c.call_fn_ptr_this(&f, &mut items[i], args) {
                result = Err(e.into());
                break;
            }
        }
        a[0] = Value::array(items);
        result
    }
}

fn reduce_impl(c: &mut dyn Caller, a: &[Value], init: Value, rev: bool) -> NativeResult {
    let v = arr(&a[0])?.clone();
    let f = fn_of(&a[1])?;
    // `|sum| ..` sees the element as `this`; `|sum, v| ..` gets it as an
    // argument; `|sum, v, i| ..` also gets the index.
    let arity = c.fn_ptr_arity(&f);
    let mut acc = init;
    let n = v.len();
    for k in 0..n {
        let i = if rev { n - 1 - k } else { k };
        acc = match arity {
            Some(1) => {
                let mut this = v[i].clone();
                c.call_fn_ptr_this(&f, &mut this, vec![acc])?
            }
            Some(p) if p >= 3 => c.call_fn_ptr(&f, vec![acc, v[i].clone(), Value::Int(i as i64)])?,
            _ => c.call_fn_ptr(&f, vec![acc, v[i].clone()])?,
        };
    }
    Ok(acc)
}

native_cb! {
    pub fn reduce(c, a) {
        reduce_impl(c, a, Value::Unit, false)
    }
}

native_cb! {
    pub fn reduce3(c, a) {
        let init = a[2].clone();
        reduce_impl(c, a, init, false)
    }
}

native_cb! {
    pub fn reduce_rev(c, a) {
        reduce_impl(c, a, Value::Unit, true)
    }
}

native_cb! {
    pub fn reduce_rev3(c, a) {
        let init = a[2].clone();
        reduce_impl(c, a, init, true)
    }
}

native_cb! {
    pub fn some(c, a) {
        let v = arr(&a[0])?.clone();
        let f = fn_of(&a[1])?;
        for (i, item) in v.iter().enumerate() {
            if is_true(&call_item_ref(c, &f, item, i)?) {
                return Ok(Value::Bool(true));
            }
        }
        Ok(Value::Bool(false))
    }
}

native_cb! {
    pub fn all(c, a) {
        let v = arr(&a[0])?.clone();
        let f = fn_of(&a[1])?;
        for (i, item) in v.iter().enumerate() {
            if !is_true(&call_item_ref(c, &f, item, i)?) {
                return Ok(Value::Bool(false));
            }
        }
        Ok(Value::Bool(true))
    }
}

/// Sorts in the natural order; all elements must be of one sortable type
/// (ints and floats may mix).
fn sort_natural(v: &mut Array) -> Result<(), NativeError> {
    if v.len() <= 1 {
        return Ok(());
    }
    // Fast path: all ints.
    if v.iter().all(|x| matches!(x, Value::Int(_))) {
        let mut ints: Vec<i64> = v.iter().map(|x| if let Value::Int(i) = x { *i } else { 0 }).collect();
        ints.sort_unstable();
        for (slot, i) in v.iter_mut().zip(ints) {
            *slot = Value::Int(i);
        }
        return Ok(());
    }
    let first = std::mem::discriminant(&v[0]);
    let numeric = |x: &Value| matches!(x, Value::Int(_) | Value::Float(_));
    let same = v.iter().all(|x| std::mem::discriminant(x) == first || (numeric(x) && numeric(&v[0])));
    if !same || natural_cmp(&v[0], &v[0]).is_none() && !matches!(v[0], Value::Float(_)) {
        return Err(err(
            "ErrorFunctionNotFound",
            "sort() cannot be called with elements of different types",
        ));
    }
    v.sort_by(|x, y| natural_cmp(x, y).unwrap_or(Ordering::Equal));
    Ok(())
}

native! {
    pub fn sort(c, a) {
        sort_natural(arr_mut(&mut a[0])?)?;
        Ok(Value::Unit)
    }
}

native! {
    pub fn sort_desc(c, a) {
        let v = arr_mut(&mut a[0])?;
        sort_natural(v)?;
        v.reverse();
        Ok(Value::Unit)
    }
}

native_cb! {
    /// `sort(fn)`: `fn(a, b)` answers a negative int, zero or a positive int.
    /// As in Rhai, a comparator that fails or answers something else orders
    /// by type; limit errors still end the script.
    pub fn sort_by(c, a) {
        arr(&a[0])?;
        let f = fn_of(&a[1])?;
        let mut items = take_array(&mut a[0])?;
        let mut fatal: Option<EvalError> = None;
        items.sort_by(|x, y| {
            if fatal.is_some() {
                return Ordering::Equal;
            }
            match c.call_fn_ptr(&f, vec![x.clone(), y.clone()]) {
                Ok(Value::Int(n)) => n.cmp(&0),
                Ok(_) => x.type_name().cmp(y.type_name()),
                Err(e) => {
                    if e.kind == ErrorKind::Limit {
                        fatal = Some(e);
                    }
                    x.type_name().cmp(y.type_name())
                }
            }
        });
        a[0] = Value::array(items);
        match fatal {
            Some(e) => Err(e.into()),
            None => Ok(Value::Unit),
        }
    }
}

native! {
    pub fn dedup(c, a) {
        arr_mut(&mut a[0])?.dedup_by(|x, y| values_eq(x, y));
        Ok(Value::Unit)
    }
}

native_cb! {
    /// `dedup(fn)`: removes an element when `fn(previous, element)` is true.
    pub fn dedup_by(c, a) {
        arr(&a[0])?;
        let f = fn_of(&a[1])?;
        let items = take_array(&mut a[0])?;
        let mut out: Array = Vec::with_capacity(items.len());
        for item in items.iter() {
            let dup = match out.last() {
                Some(prev) => match c.call_fn_ptr(&f, vec![prev.clone(), item.clone()]) {
                    Ok(r) => is_true(&r),
                    Err(e) => {
                        a[0] = Value::array(items);
                        return Err(e.into());
                    }
                },
                None => false,
            };
            if !dup {
                out.push(item.clone());
            }
        }
        a[0] = Value::array(out);
        Ok(Value::Unit)
    }
}

native_cb! {
    /// `zip(other, fn)`: `fn(a, b)` (or `fn(a, b, i)`) over pairs, up to the shorter.
    pub fn zip(c, a) {
        let v = arr(&a[0])?.clone();
        let w = arr(&a[1])?.clone();
        let f = fn_of(&a[2])?;
        let with_index = matches!(c.fn_ptr_arity(&f), Some(n) if n >= 3);
        let mut out = Vec::with_capacity(v.len().min(w.len()));
        for (i, (x, y)) in v.iter().zip(w.iter()).enumerate() {
            let mut args = vec![x.clone(), y.clone()];
            if with_index {
                args.push(Value::Int(i as i64));
            }
            out.push(c.call_fn_ptr(&f, args)?);
        }
        Ok(Value::array(out))
    }
}
