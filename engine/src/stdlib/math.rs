//! Numbers: ints are i64 with checked overflow, floats f64. As in Rhai, the
//! float functions (`sqrt`, `sin`, `floor`...) take floats only.

use super::{err, no_match};
use crate::format::format_float;
use crate::native::NativeError;
use crate::value::Value;

fn float_of(v: &Value) -> Result<f64, NativeError> {
    match v {
        Value::Float(f) => Ok(*f),
        _ => no_match(),
    }
}

native! {
    pub fn abs(c, a) {
        match &a[0] {
            Value::Int(i) => i
                .checked_abs()
                .map(Value::Int)
                .ok_or_else(|| err("ErrorArithmetic", format!("Numeric overflow: abs({})", i))),
            Value::Float(f) => Ok(Value::Float(f.abs())),
            _ => no_match(),
        }
    }
}

native! {
    pub fn sign(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::Int(i.signum())),
            Value::Float(f) => {
                if f.is_nan() {
                    Err(err("ErrorArithmetic", "Sign of NaN is undefined"))
                } else if *f == 0.0 {
                    Ok(Value::Int(0))
                } else {
                    Ok(Value::Int(if *f > 0.0 { 1 } else { -1 }))
                }
            }
            _ => no_match(),
        }
    }
}

fn pick(a: &[Value], want_max: bool) -> Result<Value, NativeError> {
    Ok(match (&a[0], &a[1]) {
        (Value::Int(x), Value::Int(y)) => Value::Int(if want_max { *x.max(y) } else { *x.min(y) }),
        (Value::Float(x), Value::Float(y)) => Value::Float(if want_max { x.max(*y) } else { x.min(*y) }),
        (Value::Int(x), Value::Float(y)) => {
            let x = *x as f64;
            Value::Float(if want_max { x.max(*y) } else { x.min(*y) })
        }
        (Value::Float(x), Value::Int(y)) => {
            let y = *y as f64;
            Value::Float(if want_max { x.max(y) } else { x.min(y) })
        }
        (Value::Char(x), Value::Char(y)) => Value::Char(if want_max { *x.max(y) } else { *x.min(y) }),
        (Value::Str(x), Value::Str(y)) => {
            let first_wins = if want_max { x.as_str() >= y.as_str() } else { x.as_str() <= y.as_str() };
            if first_wins { a[0].clone() } else { a[1].clone() }
        }
        _ => return no_match(),
    })
}

native! {
    pub fn min(c, a) {
        pick(a, false)
    }
}

native! {
    pub fn max(c, a) {
        pick(a, true)
    }
}

macro_rules! float_fn {
    ($name:ident, $f:expr) => {
        native! {
            pub fn $name(c, a) {
                let x = float_of(&a[0])?;
                Ok(Value::Float($f(x)))
            }
        }
    };
}

float_fn!(sqrt, f64::sqrt);
float_fn!(exp, f64::exp);
float_fn!(ln, f64::ln);
float_fn!(log10, f64::log10);
float_fn!(floor, f64::floor);
float_fn!(ceiling, f64::ceil);
float_fn!(int_part, f64::trunc);
float_fn!(fraction, f64::fract);
float_fn!(sin, f64::sin);
float_fn!(cos, f64::cos);
float_fn!(tan, f64::tan);
float_fn!(asin, f64::asin);
float_fn!(acos, f64::acos);
float_fn!(atan, f64::atan);
float_fn!(sinh, f64::sinh);
float_fn!(cosh, f64::cosh);
float_fn!(tanh, f64::tanh);
float_fn!(asinh, f64::asinh);
float_fn!(acosh, f64::acosh);
float_fn!(atanh, f64::atanh);
float_fn!(to_degrees, f64::to_degrees);
float_fn!(to_radians, f64::to_radians);

native! {
    /// Rounds half away from zero, as Rust's `round`.
    pub fn round(c, a) {
        Ok(Value::Float(float_of(&a[0])?.round()))
    }
}

native! {
    pub fn log(c, a) {
        let x = float_of(&a[0])?;
        let base = float_of(&a[1])?;
        Ok(Value::Float(x.log(base)))
    }
}

native! {
    pub fn hypot(c, a) {
        let x = float_of(&a[0])?;
        let y = float_of(&a[1])?;
        Ok(Value::Float(x.hypot(y)))
    }
}

native! {
    pub fn atan2(c, a) {
        let y = float_of(&a[0])?;
        let x = float_of(&a[1])?;
        Ok(Value::Float(y.atan2(x)))
    }
}

macro_rules! float_test {
    ($name:ident, $f:expr) => {
        native! {
            pub fn $name(c, a) {
                let x = float_of(&a[0])?;
                Ok(Value::Bool($f(x)))
            }
        }
    };
}

float_test!(is_nan, f64::is_nan);
float_test!(is_finite, f64::is_finite);
float_test!(is_infinite, f64::is_infinite);

native! {
    pub fn is_odd(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::Bool(i % 2 != 0)),
            _ => no_match(),
        }
    }
}

native! {
    pub fn is_even(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::Bool(i % 2 == 0)),
            _ => no_match(),
        }
    }
}

native! {
    pub fn is_zero(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::Bool(*i == 0)),
            Value::Float(f) => Ok(Value::Bool(*f == 0.0)),
            _ => no_match(),
        }
    }
}

/// A float as an int, if it fits (truncating toward zero).
pub fn float_to_int(f: f64) -> Result<i64, NativeError> {
    let t = f.trunc();
    if t.is_nan() || t < -9_223_372_036_854_775_808.0 || t >= 9_223_372_036_854_775_808.0 {
        Err(err("ErrorArithmetic", format!("Integer overflow: to_int({})", format_float(f))))
    } else {
        Ok(t as i64)
    }
}

native! {
    pub fn to_int(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::Int(*i)),
            Value::Float(f) => float_to_int(*f).map(Value::Int),
            Value::Char(ch) => Ok(Value::Int(*ch as i64)),
            Value::Bool(b) => Ok(Value::Int(*b as i64)),
            _ => no_match(),
        }
    }
}

native! {
    pub fn to_float(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::Float(*i as f64)),
            Value::Float(f) => Ok(Value::Float(*f)),
            _ => no_match(),
        }
    }
}

native! {
    pub fn pi(c, a) {
        Ok(Value::Float(std::f64::consts::PI))
    }
}

native! {
    pub fn e(c, a) {
        Ok(Value::Float(std::f64::consts::E))
    }
}

native! {
    pub fn to_hex(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::string(format!("{:x}", i))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn to_octal(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::string(format!("{:o}", i))),
            _ => no_match(),
        }
    }
}

native! {
    pub fn to_binary(c, a) {
        match &a[0] {
            Value::Int(i) => Ok(Value::string(format!("{:b}", i))),
            _ => no_match(),
        }
    }
}
