//! Operators with Rhai's semantics, shared by the interpreter and constant folding.

use std::rc::Rc;

use crate::error::{EvalError, Pos};
use crate::format::to_display;
use crate::value::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Shl,
    Shr,
    BitAnd,
    BitOr,
    BitXor,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Pow => "**",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
        }
    }
}

fn overflow(what: &str, a: i64, op: &str, b: i64) -> EvalError {
    EvalError::arithmetic(format!("{} overflow: {} {} {}", what, a, op, b))
}

pub fn int_op(op: BinOp, a: i64, b: i64) -> Result<Value, EvalError> {
    Ok(match op {
        BinOp::Add => Value::Int(a.checked_add(b).ok_or_else(|| overflow("Addition", a, "+", b))?),
        BinOp::Sub => {
            Value::Int(a.checked_sub(b).ok_or_else(|| overflow("Subtraction", a, "-", b))?)
        }
        BinOp::Mul => {
            Value::Int(a.checked_mul(b).ok_or_else(|| overflow("Multiplication", a, "*", b))?)
        }
        BinOp::Div => {
            if b == 0 {
                return Err(EvalError::arithmetic(format!("Division by zero: {} / {}", a, b)));
            }
            Value::Int(a.checked_div(b).ok_or_else(|| overflow("Division", a, "/", b))?)
        }
        BinOp::Rem => {
            if b == 0 {
                return Err(EvalError::arithmetic(format!(
                    "Modulo division by zero: {} % {}",
                    a, b
                )));
            }
            Value::Int(a.checked_rem(b).ok_or_else(|| overflow("Modulo division", a, "%", b))?)
        }
        BinOp::Pow => Value::Int(int_pow(a, b)?),
        BinOp::Shl => Value::Int(shift_left(a, b)),
        BinOp::Shr => Value::Int(shift_right(a, b)),
        BinOp::BitAnd => Value::Int(a & b),
        BinOp::BitOr => Value::Int(a | b),
        BinOp::BitXor => Value::Int(a ^ b),
        BinOp::Eq => Value::Bool(a == b),
        BinOp::Ne => Value::Bool(a != b),
        BinOp::Lt => Value::Bool(a < b),
        BinOp::Le => Value::Bool(a <= b),
        BinOp::Gt => Value::Bool(a > b),
        BinOp::Ge => Value::Bool(a >= b),
        BinOp::In => return Err(not_found(op, &Value::Int(a), &Value::Int(b))),
    })
}

pub fn int_pow(a: i64, b: i64) -> Result<i64, EvalError> {
    if b < 0 {
        return Err(EvalError::arithmetic(format!(
            "Integer raised to a negative power: {} ** {}",
            a, b
        )));
    }
    if b > u32::MAX as i64 {
        return Err(overflow("Exponential", a, "**", b));
    }
    a.checked_pow(b as u32).ok_or_else(|| overflow("Exponential", a, "**", b))
}

fn shift_left(a: i64, b: i64) -> i64 {
    if b < 0 {
        return shift_right(a, b.checked_neg().unwrap_or(i64::MAX));
    }
    if b >= 64 {
        0
    } else {
        a << b
    }
}

fn shift_right(a: i64, b: i64) -> i64 {
    if b < 0 {
        return shift_left(a, b.checked_neg().unwrap_or(i64::MAX));
    }
    if b >= 64 {
        if a < 0 {
            -1
        } else {
            0
        }
    } else {
        a >> b
    }
}

/// Float equality with a relative epsilon, as Rhai compares floats.
pub fn float_eq(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    let diff = (a - b).abs();
    diff <= f64::EPSILON * a.abs().max(b.abs())
}

pub fn float_op(op: BinOp, a: f64, b: f64) -> Result<Value, EvalError> {
    Ok(match op {
        BinOp::Add => Value::Float(a + b),
        BinOp::Sub => Value::Float(a - b),
        BinOp::Mul => Value::Float(a * b),
        BinOp::Div => Value::Float(a / b),
        BinOp::Rem => Value::Float(a % b),
        BinOp::Pow => Value::Float(a.powf(b)),
        BinOp::Eq => Value::Bool(float_eq(a, b)),
        BinOp::Ne => Value::Bool(!float_eq(a, b)),
        BinOp::Lt => Value::Bool(a < b && !float_eq(a, b)),
        BinOp::Le => Value::Bool(a <= b || float_eq(a, b)),
        BinOp::Gt => Value::Bool(a > b && !float_eq(a, b)),
        BinOp::Ge => Value::Bool(a >= b || float_eq(a, b)),
        _ => return Err(not_found(op, &Value::Float(a), &Value::Float(b))),
    })
}

/// An int compared with a float: values within an epsilon are equal.
fn mixed_op(op: BinOp, a: f64, b: f64) -> Result<Value, EvalError> {
    if is_cmp(op) {
        let near = (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0);
        return Ok(Value::Bool(match op {
            BinOp::Eq => near,
            BinOp::Ne => !near,
            BinOp::Lt => a < b && !near,
            BinOp::Gt => a > b && !near,
            BinOp::Le => a <= b || near,
            BinOp::Ge => a >= b || near,
            _ => false,
        }));
    }
    float_op(op, a, b)
}

pub fn not_found(op: BinOp, a: &Value, b: &Value) -> EvalError {
    EvalError::runtime(
        "ErrorFunctionNotFound",
        format!("Function not found: {} ({}, {})", op.symbol(), a.type_name(), b.type_name()),
        Pos::NONE,
    )
}

fn is_cmp(op: BinOp) -> bool {
    matches!(op, BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
}

fn cmp_result<T: PartialOrd + ?Sized>(op: BinOp, a: &T, b: &T) -> Value {
    Value::Bool(match op {
        BinOp::Eq => a == b,
        BinOp::Ne => a != b,
        BinOp::Lt => a < b,
        BinOp::Le => a <= b,
        BinOp::Gt => a > b,
        BinOp::Ge => a >= b,
        _ => false,
    })
}

/// Value equality as `==` sees it (used by `in`, `contains`, `switch`, arrays and maps).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match binary(BinOp::Eq, a, b) {
        Ok(Value::Bool(x)) => x,
        _ => false,
    }
}

pub fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, EvalError> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => int_op(op, *x, *y),
        (Float(x), Float(y)) => float_op(op, *x, *y),
        (Int(x), Float(y)) if op != BinOp::In => mixed_op(op, *x as f64, *y),
        (Float(x), Int(y)) if op != BinOp::In => {
            if op == BinOp::Pow {
                if let Ok(e) = i32::try_from(*y) {
                    return Ok(Float(x.powi(e)));
                }
            }
            mixed_op(op, *x, *y as f64)
        }
        (Shared(c), _) => {
            let v = c.borrow().clone();
            binary(op, &v, b)
        }
        (_, Shared(c)) => {
            let v = c.borrow().clone();
            binary(op, a, &v)
        }
        _ => binary_slow(op, a, b),
    }
}

fn binary_slow(op: BinOp, a: &Value, b: &Value) -> Result<Value, EvalError> {
    use Value::*;
    if op == BinOp::In {
        return contains(b, a).map(Bool).ok_or_else(|| not_found(op, a, b));
    }
    match (a, b) {
        (Str(x), Str(y)) => match op {
            BinOp::Add => {
                let mut s = String::with_capacity(x.len() + y.len());
                s.push_str(x);
                s.push_str(y);
                Ok(Value::string(s))
            }
            BinOp::Sub => Ok(Value::string(x.replace(y.as_str(), ""))),
            _ if is_cmp(op) => Ok(cmp_result(op, x.as_str(), y.as_str())),
            _ => Err(not_found(op, a, b)),
        },
        (Str(x), Char(c)) => match op {
            BinOp::Add => {
                let mut s = String::with_capacity(x.len() + 4);
                s.push_str(x);
                s.push(*c);
                Ok(Value::string(s))
            }
            BinOp::Sub => Ok(Value::string(x.chars().filter(|d| d != c).collect())),
            _ if is_cmp(op) => {
                let cs = c.to_string();
                Ok(cmp_result(op, x.as_str(), cs.as_str()))
            }
            _ => Err(not_found(op, a, b)),
        },
        (Char(c), Str(y)) => match op {
            BinOp::Add => {
                let mut s = String::with_capacity(y.len() + 4);
                s.push(*c);
                s.push_str(y);
                Ok(Value::string(s))
            }
            _ if is_cmp(op) => {
                let cs = c.to_string();
                Ok(cmp_result(op, cs.as_str(), y.as_str()))
            }
            _ => Err(not_found(op, a, b)),
        },
        (Char(x), Char(y)) => match op {
            BinOp::Add => {
                let mut s = String::new();
                s.push(*x);
                s.push(*y);
                Ok(Value::string(s))
            }
            _ if is_cmp(op) => Ok(cmp_result(op, x, y)),
            _ => Err(not_found(op, a, b)),
        },
        (Str(x), other) if op == BinOp::Add => {
            let mut s = String::clone(x);
            s.push_str(&to_display(other));
            Ok(Value::string(s))
        }
        (other, Str(y)) if op == BinOp::Add => {
            let mut s = to_display(other);
            s.push_str(y);
            Ok(Value::string(s))
        }
        (Bool(x), Bool(y)) => match op {
            BinOp::BitAnd => Ok(Bool(*x & *y)),
            BinOp::BitOr => Ok(Bool(*x | *y)),
            BinOp::BitXor => Ok(Bool(*x ^ *y)),
            _ if is_cmp(op) => Ok(cmp_result(op, x, y)),
            _ => Err(not_found(op, a, b)),
        },
        (Unit, Unit) => match op {
            BinOp::Eq | BinOp::Le | BinOp::Ge => Ok(Bool(true)),
            BinOp::Ne | BinOp::Lt | BinOp::Gt => Ok(Bool(false)),
            _ => Err(not_found(op, a, b)),
        },
        (Array(x), Array(y)) => match op {
            BinOp::Add => {
                let mut v = crate::value::Array::clone(x);
                v.extend(y.iter().cloned());
                Ok(Value::array(v))
            }
            BinOp::Eq => Ok(Bool(arrays_equal(x, y))),
            BinOp::Ne => Ok(Bool(!arrays_equal(x, y))),
            _ => Err(not_found(op, a, b)),
        },
        (Blob(x), Blob(y)) => match op {
            BinOp::Add => {
                let mut v = crate::value::Blob::clone(x);
                v.extend(y.iter().cloned());
                Ok(Value::Blob(Rc::new(v)))
            }
            BinOp::Eq => Ok(Bool(x == y)),
            BinOp::Ne => Ok(Bool(x != y)),
            _ => Err(not_found(op, a, b)),
        },
        (Map(x), Map(y)) => match op {
            BinOp::Add => {
                let mut m = crate::value::Map::clone(x);
                for (k, v) in y.iter() {
                    m.insert(k.clone(), v.clone());
                }
                Ok(Value::map(m))
            }
            BinOp::Eq | BinOp::Ne => {
                let eq = x.len() == y.len()
                    && x.iter().all(|(k, v)| match y.get(k) {
                        Some(w) => values_equal(v, w),
                        None => false,
                    });
                Ok(Bool(if op == BinOp::Eq { eq } else { !eq }))
            }
            _ => Err(not_found(op, a, b)),
        },
        (FnPtr(x), FnPtr(y)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
            let eq = x.name == y.name && x.env.is_none() && y.env.is_none();
            Ok(Bool(if op == BinOp::Eq { eq } else { !eq }))
        }
        (Timestamp(x), Int(_)) | (Timestamp(x), Float(_)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            let secs = match b {
                Int(i) => *i as f64,
                Float(f) => *f,
                _ => 0.0,
            };
            Ok(Timestamp(if op == BinOp::Add { x + secs * 1000.0 } else { x - secs * 1000.0 }))
        }
        (Timestamp(x), Timestamp(y)) => match op {
            BinOp::Sub => Ok(Float((x - y) / 1000.0)),
            _ if is_cmp(op) => Ok(cmp_result(op, x, y)),
            _ => Err(not_found(op, a, b)),
        },
        (Array(_), _) if op == BinOp::Add => Err(not_found(op, a, b)),
        _ => match op {
            // Comparing values of unrelated types is false, not an error.
            BinOp::Eq | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => Ok(Bool(false)),
            BinOp::Ne => Ok(Bool(true)),
            _ => Err(not_found(op, a, b)),
        },
    }
}

fn arrays_equal(x: &[Value], y: &[Value]) -> bool {
    x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| values_equal(a, b))
}

/// `needle in haystack`; None when the types do not support it.
pub fn contains(haystack: &Value, needle: &Value) -> Option<bool> {
    if let Some((a, z)) = haystack.as_range() {
        return match needle {
            Value::Int(i) => Some(*i >= a && *i < z),
            _ => None,
        };
    }
    match (haystack, needle) {
        (Value::Array(a), n) => Some(a.iter().any(|x| values_equal(x, n))),
        (Value::Str(s), Value::Str(n)) => Some(s.contains(n.as_str())),
        (Value::Str(s), Value::Char(c)) => Some(s.contains(*c)),
        (Value::Map(m), Value::Str(k)) => Some(m.contains_key(k.as_str())),
        (Value::Map(m), Value::Char(c)) => Some(m.contains_key(c.to_string().as_str())),
        (Value::Blob(b), Value::Int(i)) => Some(b.iter().any(|x| *x as i64 == *i)),
        (Value::Shared(c), n) => contains(&c.borrow(), n),
        (h, Value::Shared(c)) => contains(h, &c.borrow()),
        _ => None,
    }
}

/// Compound assignment `a op= b`, in place where the type allows it.
pub fn assign_op(op: BinOp, target: &mut Value, b: Value) -> Result<(), EvalError> {
    match (&mut *target, &b) {
        (Value::Int(x), Value::Int(y)) => {
            if let Value::Int(r) = int_op(op, *x, *y)? {
                *x = r;
                return Ok(());
            }
        }
        (Value::Str(s), _) if op == BinOp::Add => {
            let s = Rc::make_mut(s);
            match &b {
                Value::Str(y) => s.push_str(y),
                Value::Char(c) => s.push(*c),
                other => s.push_str(&to_display(other)),
            }
            return Ok(());
        }
        (Value::Array(a), _) if op == BinOp::Add => {
            let a = Rc::make_mut(a);
            if let Value::Array(y) = &b {
                a.extend(y.iter().cloned());
            } else {
                a.push(b);
            }
            return Ok(());
        }
        (Value::Blob(a), _) if op == BinOp::Add => {
            let a = Rc::make_mut(a);
            match &b {
                Value::Blob(y) => a.extend(y.iter().cloned()),
                Value::Int(i) => a.push(*i as u8),
                other => return Err(not_found(op, &Value::Blob(Rc::new(Vec::new())), other)),
            }
            return Ok(());
        }
        (Value::Map(m), Value::Map(y)) if op == BinOp::Add => {
            let m = Rc::make_mut(m);
            for (k, v) in y.iter() {
                m.insert(k.clone(), v.clone());
            }
            return Ok(());
        }
        (Value::Shared(c), _) => {
            let c = c.clone();
            let mut inner = c.borrow_mut();
            return assign_op(op, &mut inner, b);
        }
        _ => {}
    }
    let r = binary(op, target, &b)?;
    *target = r;
    Ok(())
}

pub fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Shared(c) => truthy(&c.borrow()),
        _ => None,
    }
}
