//! Strings and chars. Positions and lengths count characters, not bytes; a
//! negative position counts from the end. Functions that change a string
//! (`trim`, `pad`, `replace`, `crop`...) change the receiver in place and
//! return `()`.

use std::rc::Rc;

use super::{clamp_start, err, index_in, int_of, no_match, range_of, start_len};
use crate::value::Value;

pub fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// The byte offset of character `n` (or the end of the string).
fn byte_at(s: &str, n: usize) -> usize {
    if s.is_ascii() {
        return n.min(s.len());
    }
    s.char_indices().nth(n).map(|(i, _)| i).unwrap_or(s.len())
}

/// The characters `start..start+len` (in characters) of `s`.
fn char_slice(s: &str, start: usize, len: usize) -> &str {
    let b0 = byte_at(s, start);
    let rest = &s[b0..];
    let b1 = byte_at(rest, len);
    &rest[..b1]
}

pub fn char_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

pub fn char_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// A range `lo..hi` as `(start, count)`: a negative start is clamped to 0.
fn range_args(lo: i64, hi: i64) -> (i64, i64) {
    let lo = lo.max(0);
    (lo, hi.max(lo) - lo)
}

fn str_mut(v: &mut Value) -> &mut String {
    match v {
        Value::Str(s) => Rc::make_mut(s),
        _ => unreachable!("checked by the caller"),
    }
}

/// A pattern argument: a string or a char.
enum Pat {
    S(Rc<String>),
    C(char),
}

fn pat_of(v: &Value) -> Option<Pat> {
    match v {
        Value::Str(s) => Some(Pat::S(s.clone())),
        Value::Char(c) => Some(Pat::C(*c)),
        _ => None,
    }
}

native! {
    pub fn contains(c, a) {
        let s = match &a[0] { Value::Str(s) => s, _ => return no_match() };
        match &a[1] {
            Value::Str(p) => Ok(Value::Bool(s.contains(p.as_str()))),
            Value::Char(ch) => Ok(Value::Bool(s.contains(*ch))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn starts_with(c, a) {
        let s = match &a[0] { Value::Str(s) => s, _ => return no_match() };
        match &a[1] {
            Value::Str(p) => Ok(Value::Bool(s.starts_with(p.as_str()))),
            Value::Char(ch) => Ok(Value::Bool(s.starts_with(*ch))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn ends_with(c, a) {
        let s = match &a[0] { Value::Str(s) => s, _ => return no_match() };
        match &a[1] {
            Value::Str(p) => Ok(Value::Bool(s.ends_with(p.as_str()))),
            Value::Char(ch) => Ok(Value::Bool(s.ends_with(*ch))),
            _ => no_match(),
        }
    }
}

fn find_from(s: &str, pat: &Value, start_chars: usize) -> Result<i64, crate::native::NativeError> {
    let b0 = byte_at(s, start_chars);
    let hay = &s[b0..];
    let found = match pat {
        Value::Str(p) => hay.find(p.as_str()),
        Value::Char(ch) => hay.find(*ch),
        _ => return no_match(),
    };
    Ok(match found {
        Some(b) => (start_chars + char_len(&hay[..b])) as i64,
        None => -1,
    })
}

native! {
    pub fn index_of(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        find_from(&s, &a[1], 0).map(Value::Int)
    }
}

native! {
    pub fn index_of3(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let start = int_of(&a[2])?;
        let len = char_len(&s);
        if start >= 0 && start as u128 >= len as u128 {
            // Still type-check the pattern.
            return match &a[1] { Value::Str(_) | Value::Char(_) => Ok(Value::Int(-1)), _ => no_match() };
        }
        find_from(&s, &a[1], clamp_start(start, len)).map(Value::Int)
    }
}

native! {
    pub fn get(c, a) {
        let s = match &a[0] { Value::Str(s) => s, _ => return no_match() };
        let i = int_of(&a[1])?;
        let len = char_len(s);
        let idx = match index_in(i, len) { Some(idx) => idx, None => return Ok(Value::Unit) };
        Ok(s.chars().nth(idx).map(Value::Char).unwrap_or(Value::Unit))
    }
}

native! {
    pub fn set(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let i = int_of(&a[1])?;
        let ch = match &a[2] { Value::Char(ch) => *ch, _ => return no_match() };
        let s = str_mut(&mut a[0]);
        let len = char_len(s);
        let idx = match index_in(i, len) { Some(idx) => idx, None => return Ok(Value::Unit) };
        let b0 = byte_at(s, idx);
        let old = s[b0..].chars().next().map(|c| c.len_utf8()).unwrap_or(0);
        let mut buf = [0u8; 4];
        s.replace_range(b0..b0 + old, ch.encode_utf8(&mut buf));
        Ok(Value::Unit)
    }
}

native! {
    pub fn truncate(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let n = int_of(&a[1])?;
        let s = str_mut(&mut a[0]);
        let b = if n <= 0 { 0 } else { byte_at(s, n as usize) };
        s.truncate(b);
        Ok(Value::Unit)
    }
}

native! {
    pub fn pad(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let n = int_of(&a[1])?;
        let fill = match pat_of(&a[2]) { Some(p) => p, None => return no_match() };
        let s = str_mut(&mut a[0]);
        let mut len = char_len(s) as i64;
        if n <= len {
            return Ok(Value::Unit);
        }
        match fill {
            Pat::C(ch) => {
                while len < n {
                    s.push(ch);
                    len += 1;
                }
            }
            Pat::S(p) => {
                if p.is_empty() {
                    return Ok(Value::Unit);
                }
                'outer: loop {
                    for ch in p.chars() {
                        if len >= n {
                            break 'outer;
                        }
                        s.push(ch);
                        len += 1;
                    }
                }
            }
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn remove(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let pat = match pat_of(&a[1]) { Some(p) => p, None => return no_match() };
        let s = str_mut(&mut a[0]);
        let new = match pat {
            Pat::S(p) => if p.is_empty() { return Ok(Value::Unit) } else { s.replace(p.as_str(), "") },
            Pat::C(ch) => s.replace(ch, ""),
        };
        *s = new;
        Ok(Value::Unit)
    }
}

native! {
    pub fn replace(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let find = match pat_of(&a[1]) { Some(p) => p, None => return no_match() };
        let mut buf = [0u8; 4];
        let with: String = match &a[2] {
            Value::Str(w) => w.as_str().to_string(),
            Value::Char(ch) => ch.encode_utf8(&mut buf).to_string(),
            _ => return no_match(),
        };
        let s = str_mut(&mut a[0]);
        let new = match find {
            Pat::S(p) => if p.is_empty() { return Ok(Value::Unit) } else { s.replace(p.as_str(), &with) },
            Pat::C(ch) => s.replace(ch, &with),
        };
        *s = new;
        Ok(Value::Unit)
    }
}

native! {
    pub fn trim(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let s = str_mut(&mut a[0]);
        let t = s.trim();
        if t.len() != s.len() {
            *s = t.to_string();
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn make_upper(c, a) {
        match &mut a[0] {
            Value::Str(s) => { let u = s.to_uppercase(); *Rc::make_mut(s) = u; }
            Value::Char(ch) => *ch = char_upper(*ch),
            _ => return no_match(),
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn make_lower(c, a) {
        match &mut a[0] {
            Value::Str(s) => { let u = s.to_lowercase(); *Rc::make_mut(s) = u; }
            Value::Char(ch) => *ch = char_lower(*ch),
            _ => return no_match(),
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn bytes(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(Value::Int(s.len() as i64)),
            _ => no_match(),
        }
    }
}

native! {
    pub fn chars(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(Value::array(s.chars().map(Value::Char).collect())),
            _ => no_match(),
        }
    }
}

fn chars_from(s: &str, start: i64, count: i64) -> Value {
    let len = char_len(s);
    let (st, n) = start_len(start, count, len);
    Value::array(s.chars().skip(st).take(n).map(Value::Char).collect())
}

native! {
    /// `chars(s, start)` or `chars(s, range)`.
    pub fn chars2(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        if let Some((lo, hi)) = range_of(&a[1]) {
            return Ok({ let (lo, n) = range_args(lo, hi); chars_from(&s, lo, n) });
        }
        let start = int_of(&a[1])?;
        Ok(chars_from(&s, start, i64::MAX))
    }
}

native! {
    pub fn chars3(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let start = int_of(&a[1])?;
        let n = int_of(&a[2])?;
        Ok(chars_from(&s, start, n))
    }
}

/// Rhai's sub-string window: a start past the end is empty, a negative start
/// counts from the end, the length is clamped.
fn sub(s: &str, start: i64, count: i64) -> (usize, usize) {
    let len = char_len(s);
    if start >= 0 && start as u128 >= len as u128 {
        return (len, 0);
    }
    start_len(start, count, len)
}

native! {
    /// `sub_string(start)` or `sub_string(range)`.
    pub fn sub_string2(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let (st, n) = if let Some((lo, hi)) = range_of(&a[1]) {
            { let (lo, n) = range_args(lo, hi); sub(&s, lo, n) }
        } else {
            sub(&s, int_of(&a[1])?, i64::MAX)
        };
        Ok(Value::str(char_slice(&s, st, n)))
    }
}

native! {
    pub fn sub_string3(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let (st, n) = sub(&s, int_of(&a[1])?, int_of(&a[2])?);
        Ok(Value::str(char_slice(&s, st, n)))
    }
}

fn crop_to(v: &mut Value, st: usize, n: usize) {
    let s = str_mut(v);
    let b0 = byte_at(s, st);
    let b1 = b0 + byte_at(&s[b0..], n);
    s.truncate(b1);
    s.drain(..b0);
}

native! {
    /// `crop(start)` or `crop(range)`: keeps only that part, in place.
    pub fn crop2(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let (st, n) = if let Some((lo, hi)) = range_of(&a[1]) {
            { let (lo, n) = range_args(lo, hi); sub(&s, lo, n) }
        } else {
            sub(&s, int_of(&a[1])?, i64::MAX)
        };
        crop_to(&mut a[0], st, n);
        Ok(Value::Unit)
    }
}

native! {
    pub fn crop3(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let (st, n) = sub(&s, int_of(&a[1])?, int_of(&a[2])?);
        crop_to(&mut a[0], st, n);
        Ok(Value::Unit)
    }
}

fn strings(parts: impl Iterator<Item = String>) -> Value {
    Value::array(parts.map(Value::string).collect())
}

native! {
    /// `split()`: on whitespace.
    pub fn split_ws(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(strings(s.split_whitespace().map(str::to_string))),
            _ => no_match(),
        }
    }
}

native! {
    /// `split(sep)` (string or char), or `split(index)`: the two halves.
    pub fn split(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        match &a[1] {
            Value::Str(p) => Ok(strings(s.split(p.as_str()).map(str::to_string))),
            Value::Char(ch) => Ok(strings(s.split(*ch).map(str::to_string))),
            Value::Int(i) => {
                let len = char_len(&s);
                let at = clamp_start(*i, len);
                let b = byte_at(&s, at);
                Ok(strings(vec![s[..b].to_string(), s[b..].to_string()].into_iter()))
            }
            _ => no_match(),
        }
    }
}

native! {
    /// `split(sep, segments)`: at most `segments` parts.
    pub fn split3(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let n = int_of(&a[2])?;
        let n = if n < 1 { 1 } else { n as usize };
        match &a[1] {
            Value::Str(p) => Ok(strings(s.splitn(n, p.as_str()).map(str::to_string))),
            Value::Char(ch) => Ok(strings(s.splitn(n, *ch).map(str::to_string))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn split_rev(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        match &a[1] {
            Value::Str(p) => Ok(strings(s.rsplit(p.as_str()).map(str::to_string))),
            Value::Char(ch) => Ok(strings(s.rsplit(*ch).map(str::to_string))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn split_rev3(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let n = int_of(&a[2])?;
        let n = if n < 1 { 1 } else { n as usize };
        match &a[1] {
            Value::Str(p) => Ok(strings(s.rsplitn(n, p.as_str()).map(str::to_string))),
            Value::Char(ch) => Ok(strings(s.rsplitn(n, *ch).map(str::to_string))),
            _ => no_match(),
        }
    }
}

/// Parses an integer as Rhai's `parse_int` does (surrounding whitespace
/// allowed), in the given radix.
pub fn parse_int_radix(s: &str, radix: u32) -> Result<i64, crate::native::NativeError> {
    let t = s.trim();
    i64::from_str_radix(t, radix).map_err(|e| {
        err("ErrorArithmetic", format!("Error parsing integer number '{}': {}", s, e))
    })
}

native! {
    pub fn parse_int(c, a) {
        match &a[0] {
            Value::Str(s) => parse_int_radix(s, 10).map(Value::Int),
            _ => no_match(),
        }
    }
}

native! {
    pub fn parse_int2(c, a) {
        let s = match &a[0] { Value::Str(s) => s.clone(), _ => return no_match() };
        let radix = int_of(&a[1])?;
        if !(2..=36).contains(&radix) {
            return Err(err("ErrorArithmetic", format!("Invalid radix: '{}'", radix)));
        }
        parse_int_radix(&s, radix as u32).map(Value::Int)
    }
}

native! {
    pub fn parse_float(c, a) {
        match &a[0] {
            Value::Str(s) => s.trim().parse::<f64>().map(Value::Float).map_err(|e| {
                err("ErrorArithmetic", format!("Error parsing floating-point number '{}': {}", s, e))
            }),
            _ => no_match(),
        }
    }
}

native! {
    pub fn to_blob(c, a) {
        match &a[0] {
            Value::Str(s) => Ok(Value::Blob(Rc::new(s.as_bytes().to_vec()))),
            _ => no_match(),
        }
    }
}


native! {
    /// `append(item)` (and `+=`): the display text of `item`; a blob is
    /// taken as UTF-8 text.
    pub fn append(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let extra = match &a[1] {
            Value::Blob(b) => String::from_utf8_lossy(b).into_owned(),
            other => crate::format::to_display(other),
        };
        str_mut(&mut a[0]).push_str(&extra);
        Ok(Value::Unit)
    }
}

native! {
    /// `pop()`: removes and returns the last character (`()` if empty).
    pub fn pop(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        Ok(str_mut(&mut a[0]).pop().map(Value::Char).unwrap_or(Value::Unit))
    }
}

native! {
    /// `pop(n)`: removes the last `n` characters and returns them as a string.
    pub fn pop2(c, a) {
        if !matches!(a[0], Value::Str(_)) { return no_match(); }
        let n = int_of(&a[1])?;
        let s = str_mut(&mut a[0]);
        if n <= 0 {
            return Ok(Value::str(""));
        }
        let len = char_len(s);
        if n as u128 >= len as u128 {
            return Ok(Value::string(std::mem::take(s)));
        }
        let at = byte_at(s, len - n as usize);
        Ok(Value::string(s.split_off(at)))
    }
}
