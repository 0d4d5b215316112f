//! How values look as text: `to_display` is what `print`, `to_string` and
//! string `+` show; `to_debug` is what `debug` and `to_debug` show.
//!
//! Rhai's rules: unit displays as nothing and debugs as `()`; strings and
//! chars are bare in display and quoted (with escapes) in debug; containers
//! always show their elements in debug form (`[1, "a"]`, `#{"k": 'c'}`);
//! blobs show as hex bytes in groups of eight (`[0102ff]`); function pointers
//! as `Fn(name)`. Floats display naturally between about 1e-13 and 1e13 and
//! in exponent form outside, always with a fractional part (`1.0`).

use std::fmt::Write;

use crate::value::{FnPtr, Value};

/// Above this magnitude a float displays in exponent form. Rhai keeps the
/// bound as an `f32`, so the effective value is the `f32` nearest to 1e13.
fn max_natural() -> f64 {
    10_000_000_000_000.0f32 as f64
}

/// Below this magnitude (other than zero) a float displays in exponent form.
fn min_natural() -> f64 {
    0.000_000_000_000_1f32 as f64
}

/// A float the way Rhai displays it: `1.0`, `0.5`, `1e20`, `1e-14`, `0.0`.
pub fn format_float(f: f64) -> String {
    let mut s = String::new();
    write_float(&mut s, f);
    s
}

/// Appends a float in Rhai's display form.
pub fn write_float(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs == 0.0 {
        out.push_str("0.0");
    } else if abs > max_natural() || abs < min_natural() {
        // NaN fails both comparisons and lands below; infinities land here.
        let _ = write!(out, "{:e}", f);
    } else {
        let _ = write!(out, "{}", f);
        if abs.fract() == 0.0 {
            out.push_str(".0");
        }
    }
}

/// A float in debug form (Rust's `{:?}`: `1.0`, `1e20`, `1e-7`, `-0.0`).
pub fn write_float_debug(out: &mut String, f: f64) {
    let _ = write!(out, "{:?}", f);
}

/// Appends an integer in decimal (without going through `fmt`, which is
/// several times slower for the short numbers scripts mostly print).
pub fn write_int(out: &mut String, i: i64) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let mut n = i.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push('-');
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[pos..]).unwrap_or(""));
}

/// The display form of a value.
pub fn to_display(v: &Value) -> String {
    let mut s = String::new();
    write_display(&mut s, v);
    s
}

/// The debug form of a value.
pub fn to_debug(v: &Value) -> String {
    let mut s = String::new();
    write_debug(&mut s, v);
    s
}

/// Appends the display form of a value.
pub fn write_display(out: &mut String, v: &Value) {
    match v {
        Value::Unit => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => write_float(out, *f),
        Value::Char(c) => out.push(*c),
        Value::Str(s) => out.push_str(s),
        Value::Array(_) | Value::Blob(_) | Value::Map(_) => write_debug(out, v),
        Value::FnPtr(p) => {
            if let Some(r) = v.range_env() {
                write_range(out, r);
                return;
            }
            out.push_str("Fn(");
            out.push_str(&p.name);
            out.push(')');
        }
        Value::Timestamp(_) => out.push_str("<timestamp>"),
        Value::Shared(cell) => write_display(out, &cell.borrow()),
    }
}

/// Appends the debug form of a value.
pub fn write_debug(out: &mut String, v: &Value) {
    match v {
        Value::Unit => out.push_str("()"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => write_float_debug(out, *f),
        Value::Char(c) => {
            let _ = write!(out, "{:?}", c);
        }
        Value::Str(s) => {
            let _ = write!(out, "{:?}", s.as_str());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_debug(out, item);
            }
            out.push(']');
        }
        Value::Blob(bytes) => write_blob(out, bytes),
        Value::Map(m) => {
            out.push_str("#{");
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{:?}: ", &**k);
                write_debug(out, item);
            }
            out.push('}');
        }
        Value::FnPtr(p) => match v.range_env() {
            Some(r) => write_range(out, r),
            None => write_fn_ptr_debug(out, p),
        },
        Value::Timestamp(_) => out.push_str("<timestamp>"),
        Value::Shared(cell) => write_debug(out, &cell.borrow()),
    }
}

/// A range as written: `1..3`, `1..=3`.
fn write_range(out: &mut String, (start, end, inclusive): (i64, i64, bool)) {
    let _ = write!(out, "{}..{}{}", start, if inclusive { "=" } else { "" }, end);
}

/// A blob as hex bytes, a space after every eight: `[0102030405060708 09]`.
pub fn write_blob(out: &mut String, bytes: &[u8]) {
    out.push('[');
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 8 == 0 {
            out.push(' ');
        }
        let _ = write!(out, "{:02x}", b);
    }
    out.push(']');
}

fn write_fn_ptr_debug(out: &mut String, p: &FnPtr) {
    if p.curry.is_empty() {
        out.push_str("Fn(");
        out.push_str(&p.name);
        out.push(')');
    } else {
        let _ = write!(out, "Fn({:?}, [", &*p.name);
        for (i, item) in p.curry.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_debug(out, item);
        }
        out.push_str("])");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Map;
    use std::rc::Rc;

    #[test]
    fn floats_display_like_rhai() {
        assert_eq!(format_float(1.0), "1.0");
        assert_eq!(format_float(-3.0), "-3.0");
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(123.456), "123.456");
        assert_eq!(format_float(0.0000001), "0.0000001");
        assert_eq!(format_float(1e20), "1e20");
        assert_eq!(format_float(-1e20), "-1e20");
        assert_eq!(format_float(1e-14), "1e-14");
        assert_eq!(format_float(0.0), "0.0");
        assert_eq!(format_float(-0.0), "0.0");
        assert_eq!(format_float(1e12), "1000000000000.0");
        assert_eq!(format_float(f64::INFINITY), "inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn display_and_debug_of_scalars() {
        assert_eq!(to_display(&Value::Unit), "");
        assert_eq!(to_debug(&Value::Unit), "()");
        assert_eq!(to_display(&Value::str("hi\n")), "hi\n");
        assert_eq!(to_debug(&Value::str("hi\n")), "\"hi\\n\"");
        assert_eq!(to_display(&Value::Char('x')), "x");
        assert_eq!(to_debug(&Value::Char('x')), "'x'");
        assert_eq!(to_debug(&Value::Float(-0.0)), "-0.0");
        assert_eq!(to_debug(&Value::Float(1e20)), "1e20");
        assert_eq!(to_display(&Value::Int(-42)), "-42");
        for i in [0, 7, -7, 10, 1234567890, i64::MAX, i64::MIN] {
            assert_eq!(to_display(&Value::Int(i)), i.to_string());
        }
    }

    #[test]
    fn containers_show_elements_in_debug_form() {
        let a = Value::array(vec![Value::Int(1), Value::str("a"), Value::Char('c'), Value::Unit, Value::Float(2.0)]);
        assert_eq!(to_display(&a), "[1, \"a\", 'c', (), 2.0]");
        let mut m = Map::new();
        m.insert(Rc::from("b"), Value::Int(2));
        m.insert(Rc::from("a"), Value::array(vec![]));
        assert_eq!(to_display(&Value::map(m)), "#{\"a\": [], \"b\": 2}");
        let b = Value::Blob(Rc::new((1u8..=10).collect()));
        assert_eq!(to_display(&b), "[0102030405060708 090a]");
        let f = Value::FnPtr(Rc::new(FnPtr { name: Rc::from("foo"), curry: vec![], env: None }));
        assert_eq!(to_display(&f), "Fn(foo)");
        assert_eq!(to_debug(&f), "Fn(foo)");
        let g = Value::FnPtr(Rc::new(FnPtr { name: Rc::from("foo"), curry: vec![Value::Int(1)], env: None }));
        assert_eq!(to_display(&g), "Fn(foo)");
        assert_eq!(to_debug(&g), "Fn(\"foo\", [1])");
        assert_eq!(to_display(&Value::range(1, 3)), "1..3");
        assert_eq!(to_debug(&Value::range_parts(1, 3, true)), "1..=3");
    }
}
