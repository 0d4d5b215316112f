//! Blobs (byte arrays) and bit fields on integers.
//!
//! Blob positions follow the array rules (negative from the end, clamped);
//! a blob element is an int 0..=255, and a value stored into a blob keeps
//! its low 8 bits. Integer encodings take at most 8 bytes: `write_le(x, 3, 3,
//! v)` writes the first 3 bytes of `v`'s little-endian form, and
//! `parse_be_int(x, 3, 3)` reads 3 bytes into the top of a big-endian i64.

use std::rc::Rc;

use super::{
    chop_to, clamp_start, err, index_in, int_of, keep_window, no_match, range_arg, range_of,
    window1, window2,
};
use crate::native::{NativeError, NativeResult};
use crate::value::{Blob, Value};

const INT_BITS: i64 = 64;

fn blob(v: &Value) -> Result<&Rc<Blob>, NativeError> {
    match v {
        Value::Blob(b) => Ok(b),
        _ => no_match(),
    }
}

fn blob_mut(v: &mut Value) -> Result<&mut Blob, NativeError> {
    match v {
        Value::Blob(b) => Ok(Rc::make_mut(b)),
        _ => no_match(),
    }
}

fn new_blob(bytes: Blob) -> Value {
    Value::Blob(Rc::new(bytes))
}

native! {
    pub fn blob0(c, a) {
        Ok(new_blob(Vec::new()))
    }
}

/// A size argument, refused past a bound that keeps a script from asking
/// for gigabytes in one call (the sandbox's memory limit stops it anyway).
fn size_of(v: &Value) -> Result<usize, NativeError> {
    let n = int_of(v)?;
    if n <= 0 {
        return Ok(0);
    }
    if n > (1 << 30) {
        return Err(err("ErrorDataTooLarge", "Size of BLOB too large"));
    }
    Ok(n as usize)
}

native! {
    pub fn blob1(c, a) {
        Ok(new_blob(vec![0; size_of(&a[0])?]))
    }
}

native! {
    pub fn blob2(c, a) {
        let n = size_of(&a[0])?;
        let fill = int_of(&a[1])? as u8;
        Ok(new_blob(vec![fill; n]))
    }
}

native! {
    pub fn push(c, a) {
        let b = int_of(&a[1])? as u8;
        blob_mut(&mut a[0])?.push(b);
        Ok(Value::Unit)
    }
}

native! {
    /// `append(blob | int | string | char)`.
    pub fn append(c, a) {
        let extra: Vec<u8> = match &a[1] {
            Value::Blob(b) => b.to_vec(),
            Value::Int(i) => vec![*i as u8],
            Value::Str(s) => s.as_bytes().to_vec(),
            Value::Char(ch) => ch.to_string().into_bytes(),
            _ => return no_match(),
        };
        blob_mut(&mut a[0])?.extend_from_slice(&extra);
        Ok(Value::Unit)
    }
}

native! {
    pub fn insert(c, a) {
        let pos = int_of(&a[1])?;
        let b = int_of(&a[2])? as u8;
        let v = blob_mut(&mut a[0])?;
        let at = clamp_start(pos, v.len());
        v.insert(at, b);
        Ok(Value::Unit)
    }
}

native! {
    pub fn pop(c, a) {
        Ok(Value::Int(blob_mut(&mut a[0])?.pop().map(i64::from).unwrap_or(0)))
    }
}

native! {
    pub fn shift(c, a) {
        let v = blob_mut(&mut a[0])?;
        Ok(Value::Int(if v.is_empty() { 0 } else { v.remove(0) as i64 }))
    }
}

native! {
    pub fn remove(c, a) {
        let i = int_of(&a[1])?;
        let v = blob_mut(&mut a[0])?;
        Ok(Value::Int(index_in(i, v.len()).map_or(0, |idx| v.remove(idx) as i64)))
    }
}

native! {
    pub fn get(c, a) {
        let v = blob(&a[0])?;
        let i = int_of(&a[1])?;
        Ok(Value::Int(index_in(i, v.len()).map_or(0, |idx| v[idx] as i64)))
    }
}

native! {
    pub fn set(c, a) {
        let i = int_of(&a[1])?;
        let b = int_of(&a[2])? as u8;
        let v = blob_mut(&mut a[0])?;
        if let Some(idx) = index_in(i, v.len()) {
            v[idx] = b;
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn contains(c, a) {
        let v = blob(&a[0])?;
        match &a[1] {
            Value::Int(i) => Ok(Value::Bool(*i >= 0 && *i <= 255 && v.contains(&(*i as u8)))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn truncate(c, a) {
        let n = int_of(&a[1])?;
        blob_mut(&mut a[0])?.truncate(if n < 0 { 0 } else { n as usize });
        Ok(Value::Unit)
    }
}

native! {
    pub fn chop(c, a) {
        let n = int_of(&a[1])?;
        chop_to(blob_mut(&mut a[0])?, n);
        Ok(Value::Unit)
    }
}

native! {
    pub fn pad(c, a) {
        let n = int_of(&a[1])?;
        let b = int_of(&a[2])? as u8;
        let v = blob_mut(&mut a[0])?;
        if n > 0 && n as u128 > v.len() as u128 {
            if n > (1 << 30) {
                return Err(err("ErrorDataTooLarge", "Size of BLOB too large"));
            }
            v.resize(n as usize, b);
        }
        Ok(Value::Unit)
    }
}

native! {
    pub fn reverse(c, a) {
        blob_mut(&mut a[0])?.reverse();
        Ok(Value::Unit)
    }
}

native! {
    pub fn extract2(c, a) {
        let v = blob(&a[0])?;
        let (s, n) = window1(&a[1], v.len())?;
        Ok(new_blob(v[s..s + n].to_vec()))
    }
}

native! {
    pub fn extract3(c, a) {
        let v = blob(&a[0])?;
        let (s, n) = window2(&a[1], &a[2], v.len())?;
        Ok(new_blob(v[s..s + n].to_vec()))
    }
}

native! {
    pub fn split(c, a) {
        let i = int_of(&a[1])?;
        let v = blob_mut(&mut a[0])?;
        let at = clamp_start(i, v.len());
        Ok(new_blob(v.split_off(at)))
    }
}

native! {
    pub fn drain3(c, a) {
        let len = blob(&a[0])?.len();
        let (s, n) = window2(&a[1], &a[2], len)?;
        Ok(new_blob(blob_mut(&mut a[0])?.drain(s..s + n).collect()))
    }
}

native! {
    pub fn retain3(c, a) {
        let len = blob(&a[0])?.len();
        let (s, n) = window2(&a[1], &a[2], len)?;
        Ok(new_blob(keep_window(blob_mut(&mut a[0])?, s, n)))
    }
}

fn splice_bytes(a: &mut [Value], s: usize, n: usize, with: usize) -> NativeResult {
    let replacement = match &a[with] {
        Value::Blob(r) => r.to_vec(),
        _ => return no_match(),
    };
    blob_mut(&mut a[0])?.splice(s..s + n, replacement);
    Ok(Value::Unit)
}

native! {
    pub fn splice3(c, a) {
        let len = blob(&a[0])?.len();
        let (s, n) = range_arg(&a[1], len)?;
        splice_bytes(a, s, n, 2)
    }
}

native! {
    pub fn splice4(c, a) {
        let len = blob(&a[0])?.len();
        let (s, n) = window2(&a[1], &a[2], len)?;
        splice_bytes(a, s, n, 3)
    }
}

native! {
    pub fn to_array(c, a) {
        let v = blob(&a[0])?;
        Ok(Value::array(v.iter().map(|b| Value::Int(*b as i64)).collect()))
    }
}

native! {
    /// The bytes as UTF-8 text (invalid sequences become U+FFFD).
    pub fn as_string(c, a) {
        let v = blob(&a[0])?;
        Ok(Value::string(String::from_utf8_lossy(v).into_owned()))
    }
}

// ---- numbers in bytes

/// Up to 8 bytes at the window, copied into the front of an 8-byte buffer.
fn read8(v: &[u8], s: usize, n: usize) -> [u8; 8] {
    let mut buf = [0u8; 8];
    let n = n.min(8);
    buf[..n].copy_from_slice(&v[s..s + n]);
    buf
}

fn parse_int_at(a: &[Value], s: usize, n: usize, le: bool) -> NativeResult {
    let v = blob(&a[0])?;
    if n == 0 {
        return Ok(Value::Int(0));
    }
    let buf = read8(v, s, n);
    Ok(Value::Int(if le { i64::from_le_bytes(buf) } else { i64::from_be_bytes(buf) }))
}

fn parse_float_at(a: &[Value], s: usize, n: usize, le: bool) -> NativeResult {
    let v = blob(&a[0])?;
    if n == 0 {
        return Ok(Value::Float(0.0));
    }
    let buf = read8(v, s, n);
    Ok(Value::Float(if le { f64::from_le_bytes(buf) } else { f64::from_be_bytes(buf) }))
}

macro_rules! parse_fns {
    ($two:ident, $three:ident, $imp:ident, $le:expr) => {
        native! {
            pub fn $two(c, a) {
                let len = blob(&a[0])?.len();
                let (s, n) = range_arg(&a[1], len)?;
                $imp(a, s, n, $le)
            }
        }
        native! {
            pub fn $three(c, a) {
                let len = blob(&a[0])?.len();
                let (s, n) = window2(&a[1], &a[2], len)?;
                $imp(a, s, n, $le)
            }
        }
    };
}

parse_fns!(parse_le_int2, parse_le_int3, parse_int_at, true);
parse_fns!(parse_be_int2, parse_be_int3, parse_int_at, false);
parse_fns!(parse_le_float2, parse_le_float3, parse_float_at, true);
parse_fns!(parse_be_float2, parse_be_float3, parse_float_at, false);

fn write_num(a: &mut [Value], s: usize, n: usize, value: usize, le: bool) -> NativeResult {
    let bytes: [u8; 8] = match &a[value] {
        Value::Int(i) => if le { i.to_le_bytes() } else { i.to_be_bytes() },
        Value::Float(f) => if le { f.to_le_bytes() } else { f.to_be_bytes() },
        _ => return no_match(),
    };
    let v = blob_mut(&mut a[0])?;
    let n = n.min(8);
    v[s..s + n].copy_from_slice(&bytes[..n]);
    Ok(Value::Unit)
}

fn write_ascii_at(a: &mut [Value], s: usize, n: usize, value: usize) -> NativeResult {
    let text = match &a[value] {
        Value::Str(t) => t.clone(),
        _ => return no_match(),
    };
    let v = blob_mut(&mut a[0])?;
    for (slot, b) in v[s..s + n].iter_mut().zip(text.chars().filter(char::is_ascii).map(|c| c as u8)) {
        *slot = b;
    }
    Ok(Value::Unit)
}

fn write_utf8_at(a: &mut [Value], s: usize, n: usize, value: usize) -> NativeResult {
    let text = match &a[value] {
        Value::Str(t) => t.clone(),
        _ => return no_match(),
    };
    let v = blob_mut(&mut a[0])?;
    for (slot, b) in v[s..s + n].iter_mut().zip(text.bytes()) {
        *slot = b;
    }
    Ok(Value::Unit)
}

macro_rules! write_fns {
    ($three:ident, $four:ident, $body:expr) => {
        native! {
            /// `(range, value)`.
            pub fn $three(c, a) {
                let len = blob(&a[0])?.len();
                let (s, n) = range_arg(&a[1], len)?;
                $body(a, s, n, 2)
            }
        }
        native! {
            /// `(start, len, value)`.
            pub fn $four(c, a) {
                let len = blob(&a[0])?.len();
                let (s, n) = window2(&a[1], &a[2], len)?;
                $body(a, s, n, 3)
            }
        }
    };
}

write_fns!(write_le3, write_le4, |a: &mut [Value], s, n, i| write_num(a, s, n, i, true));
write_fns!(write_be3, write_be4, |a: &mut [Value], s, n, i| write_num(a, s, n, i, false));
write_fns!(write_ascii3, write_ascii4, write_ascii_at);
write_fns!(write_utf8_3, write_utf8_4, write_utf8_at);

// ---- bit fields on integers

fn bounds_error(bit: i64) -> NativeError {
    err("ErrorBitFieldBounds", format!("Bit-field index {} out of bounds: only {} bits in the bit-field", bit, INT_BITS))
}

/// A bit position: negative counts from the most significant end.
fn bit_index(bit: i64) -> Result<u32, NativeError> {
    let b = if bit < 0 { INT_BITS + bit } else { bit };
    if (0..INT_BITS).contains(&b) {
        Ok(b as u32)
    } else {
        Err(bounds_error(bit))
    }
}

/// Public for the interpreter's `x[bit]` indexing on integers.
pub fn get_bit_of(value: i64, bit: i64) -> Result<bool, NativeError> {
    Ok(value & (1i64 << bit_index(bit)?) != 0)
}

pub fn set_bit_of(value: i64, bit: i64, on: bool) -> Result<i64, NativeError> {
    let mask = 1i64 << bit_index(bit)?;
    Ok(if on { value | mask } else { value & !mask })
}

/// `(start, bits)` of a bit window, the width clamped to the integer.
fn bit_window(start: i64, bits: i64) -> Result<(u32, u32), NativeError> {
    let s = bit_index(start)?;
    if bits <= 0 {
        return Ok((s, 0));
    }
    let n = bits.min(INT_BITS - s as i64) as u32;
    Ok((s, n))
}

/// A range of bits `lo..hi` (exclusive) as `(start, bits)`; the end may not
/// pass the integer's width.
pub fn bit_range(lo: i64, hi: i64) -> Result<(u32, u32), NativeError> {
    let s = bit_index(lo)?;
    let end = if hi < 0 { INT_BITS + hi } else { hi };
    if end > INT_BITS || end < 0 {
        return Err(bounds_error(hi));
    }
    Ok((s, (end - s as i64).max(0) as u32))
}

fn mask_of(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

pub fn get_bits_of(value: i64, s: u32, n: u32) -> i64 {
    if n == 0 {
        return 0;
    }
    (((value as u64) >> s) & mask_of(n)) as i64
}

pub fn set_bits_of(value: i64, s: u32, n: u32, new: i64) -> i64 {
    if n == 0 {
        return value;
    }
    let mask = mask_of(n) << s;
    (((value as u64) & !mask) | (((new as u64) << s) & mask)) as i64
}

native! {
    pub fn get_bit(c, a) {
        let v = int_of(&a[0])?;
        Ok(Value::Bool(get_bit_of(v, int_of(&a[1])?)?))
    }
}

native! {
    pub fn set_bit(c, a) {
        let v = int_of(&a[0])?;
        let bit = int_of(&a[1])?;
        let on = match &a[2] { Value::Bool(b) => *b, _ => return no_match() };
        a[0] = Value::Int(set_bit_of(v, bit, on)?);
        Ok(Value::Unit)
    }
}

native! {
    /// `get_bits(range)`.
    pub fn get_bits2(c, a) {
        let v = int_of(&a[0])?;
        let (s, n) = match range_of(&a[1]) {
            Some((lo, hi)) => bit_range(lo, hi)?,
            None => return no_match(),
        };
        Ok(Value::Int(get_bits_of(v, s, n)))
    }
}

native! {
    pub fn get_bits3(c, a) {
        let v = int_of(&a[0])?;
        let (s, n) = bit_window(int_of(&a[1])?, int_of(&a[2])?)?;
        Ok(Value::Int(get_bits_of(v, s, n)))
    }
}

native! {
    /// `set_bits(range, value)`.
    pub fn set_bits3(c, a) {
        let v = int_of(&a[0])?;
        let (s, n) = match range_of(&a[1]) {
            Some((lo, hi)) => bit_range(lo, hi)?,
            None => return no_match(),
        };
        let new = int_of(&a[2])?;
        a[0] = Value::Int(set_bits_of(v, s, n, new));
        Ok(Value::Unit)
    }
}

native! {
    pub fn set_bits4(c, a) {
        let v = int_of(&a[0])?;
        let (s, n) = bit_window(int_of(&a[1])?, int_of(&a[2])?)?;
        let new = int_of(&a[3])?;
        a[0] = Value::Int(set_bits_of(v, s, n, new));
        Ok(Value::Unit)
    }
}

fn bits_list(v: i64, s: u32, n: u32) -> Value {
    Value::array((s..s + n).map(|b| Value::Bool(v & (1i64 << b) != 0)).collect())
}

native! {
    /// `bits()`: every bit, least significant first.
    pub fn bits1(c, a) {
        let v = int_of(&a[0])?;
        Ok(bits_list(v, 0, INT_BITS as u32))
    }
}

native! {
    /// `bits(start)` or `bits(range)`.
    pub fn bits2(c, a) {
        let v = int_of(&a[0])?;
        let (s, n) = match range_of(&a[1]) {
            Some((lo, hi)) => bit_range(lo, hi)?,
            None => bit_window(int_of(&a[1])?, INT_BITS)?,
        };
        Ok(bits_list(v, s, n))
    }
}

native! {
    pub fn bits3(c, a) {
        let v = int_of(&a[0])?;
        let (s, n) = bit_window(int_of(&a[1])?, int_of(&a[2])?)?;
        Ok(bits_list(v, s, n))
    }
}
