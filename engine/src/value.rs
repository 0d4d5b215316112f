//! The dynamic value: a tag plus a payload. Containers are reference-counted
//! and copied on write (`Rc::make_mut`), which gives Rhai's value semantics
//! (assignment copies) without copying until a shared container is mutated.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

pub type Array = Vec<Value>;
pub type Blob = Vec<u8>;
/// Object maps iterate their keys in sorted order, as Rhai's do.
pub type Map = BTreeMap<Rc<str>, Value>;

#[derive(Clone)]
pub enum Value {
    Unit,
    Bool(bool),
    Int(i64),
    Float(f64),
    Char(char),
    Str(Rc<String>),
    Array(Rc<Array>),
    Blob(Rc<Blob>),
    Map(Rc<Map>),
    FnPtr(Rc<FnPtr>),
    /// Milliseconds since an arbitrary origin; only differences are meaningful.
    Timestamp(f64),
    /// A variable captured by a closure: every holder sees the same cell.
    Shared(Rc<RefCell<Value>>),
}

/// A function pointer: a name, curried arguments, and (for closures) an
/// environment that only the interpreter understands.
#[derive(Clone)]
pub struct FnPtr {
    pub name: Rc<str>,
    pub curry: Vec<Value>,
    pub env: Option<Rc<dyn Any>>,
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Rc::new(s.to_string()))
    }

    pub fn string(s: String) -> Value {
        Value::Str(Rc::new(s))
    }

    pub fn array(items: Array) -> Value {
        Value::Array(Rc::new(items))
    }

    pub fn map(m: Map) -> Value {
        Value::Map(Rc::new(m))
    }

    /// Rhai's `type_of` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Unit => "()",
            Value::Bool(_) => "bool",
            Value::Int(_) => "i64",
            Value::Float(_) => "f64",
            Value::Char(_) => "char",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Blob(_) => "blob",
            Value::Map(_) => "map",
            // A range travels as a function pointer (see `range_parts`); users
            // see its type as `type_of` names it.
            Value::FnPtr(f) => match f.env.as_ref().and_then(|e| e.downcast_ref::<RangeEnv>()) {
                Some(r) if r.inclusive => "range=",
                Some(_) => "range",
                None => "Fn",
            },
            Value::Timestamp(_) => "timestamp",
            Value::Shared(cell) => cell.borrow().type_name(),
        }
    }

    /// The value itself, looking through a shared cell.
    pub fn flatten(&self) -> Value {
        match self {
            Value::Shared(cell) => cell.borrow().flatten(),
            other => other.clone(),
        }
    }

    pub fn is_unit(&self) -> bool {
        matches!(self, Value::Unit)
    }
}

/// A closure's environment: which function, and the captured cells.
pub struct ClosureEnv {
    pub fn_idx: usize,
    pub captured: Vec<Value>,
}

/// The environment of a range value (see `Value::range`).
pub struct RangeEnv {
    pub start: i64,
    /// The end as written; exclusive unless `inclusive`.
    pub end: i64,
    pub inclusive: bool,
}

impl Value {
    /// A range `start..end` (end exclusive) as a value. Ranges travel as a
    /// function pointer named `range` whose environment is a `RangeEnv`, so
    /// that the value type keeps its variants; use `as_range` to read one.
    pub fn range(start: i64, end: i64) -> Value {
        Value::range_parts(start, end, false)
    }

    /// `start..end` or `start..=end` as written (negative ends are kept for
    /// slicing, where they count from the end).
    pub fn range_parts(start: i64, end: i64, inclusive: bool) -> Value {
        let env: Rc<dyn Any> = Rc::new(RangeEnv { start, end, inclusive });
        Value::FnPtr(Rc::new(FnPtr { name: Rc::from("range"), curry: Vec::new(), env: Some(env) }))
    }

    /// `(start, end, inclusive)` of a range value, as written.
    pub fn range_env(&self) -> Option<(i64, i64, bool)> {
        match self {
            Value::FnPtr(f) => f.env.as_ref().and_then(|e| e.downcast_ref::<RangeEnv>()).map(|r| (r.start, r.end, r.inclusive)),
            Value::Shared(c) => c.borrow().range_env(),
            _ => None,
        }
    }

    /// The bounds `(start, end exclusive)` of a range value.
    pub fn as_range(&self) -> Option<(i64, i64)> {
        self.range_env().map(|(s, e, incl)| (s, if incl { e.saturating_add(1) } else { e }))
    }
}

// ---- dropping without recursion
//
// Dropped the default way, a value nested N levels deep takes N nested drop
// calls, and a script can nest 100,000 levels in a loop (`a = [a]`), which
// exhausts the wasm stack. Instead, the last owner of a container empties it
// of every container it holds onto a work list, and empties each of those in
// turn before dropping it, so the drop glue never goes more than two levels
// down. Shared children go on the list too: the other holder may be a sibling
// dropped first, and one that stayed in place would be dropped (recursively)
// only after the work list is done.

impl Drop for Value {
    #[inline]
    fn drop(&mut self) {
        if is_last_container(self) {
            drop_iteratively(self);
        }
    }
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Map(_) | Value::FnPtr(_) | Value::Shared(_))
}

/// Whether `v` is the last owner of a container that may hold values.
#[inline]
fn is_last_container(v: &Value) -> bool {
    match v {
        Value::Array(rc) => Rc::strong_count(rc) == 1 && !rc.is_empty(),
        Value::Map(rc) => Rc::strong_count(rc) == 1 && !rc.is_empty(),
        Value::FnPtr(rc) => Rc::strong_count(rc) == 1,
        Value::Shared(rc) => Rc::strong_count(rc) == 1,
        _ => false,
    }
}

#[cold]
#[inline(never)]
fn drop_iteratively(root: &mut Value) {
    let mut work = Vec::new();
    take_contents(root, &mut work);
    while let Some(mut v) = work.pop() {
        take_contents(&mut v, &mut work);
        // `v` drops here, holding no container any more (or not the last
        // reference to its own).
    }
}

/// If `v` is the last owner of its container, moves the containers in it
/// onto `out`, leaving `()` in their place.
fn take_contents(v: &mut Value, out: &mut Vec<Value>) {
    let mut take = |x: &mut Value| {
        if is_container(x) {
            out.push(std::mem::replace(x, Value::Unit));
        }
    };
    match v {
        Value::Array(rc) => Rc::get_mut(rc).into_iter().flatten().for_each(take),
        Value::Map(rc) => Rc::get_mut(rc).into_iter().flat_map(|m| m.values_mut()).for_each(take),
        Value::FnPtr(rc) => {
            if let Some(f) = Rc::get_mut(rc) {
                f.curry.iter_mut().for_each(&mut take);
                let env = f.env.as_mut().and_then(Rc::get_mut).and_then(|e| e.downcast_mut::<ClosureEnv>());
                if let Some(env) = env {
                    env.captured.iter_mut().for_each(take);
                }
            }
        }
        Value::Shared(rc) => {
            if let Some(cell) = Rc::get_mut(rc) {
                take(cell.get_mut());
            }
        }
        _ => {}
    }
}
