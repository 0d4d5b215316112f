//! The interpreter: walks the resolved tree. Variables live in one value
//! stack (a frame is a window of slots starting at `base`), calls are bound
//! to their targets once per program, and integer arithmetic has an inline
//! fast path with checked overflow.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::ast::*;
use crate::error::{ErrorKind, EvalError, Pos};
use crate::format::{to_debug, to_display};
use crate::native::{Caller, NativeError, NativeFn};
use crate::ops::{self, BinOp};
use crate::stdlib::index_in;
use crate::value::{ClosureEnv, FnPtr, Map, Value};

pub const MAX_CALL_DEPTH: usize = 64;

/// What the interpreter needs from its host (the wasm imports, or a native
/// stand-in for tests and the native runner).
pub trait Host {
    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError>;
    /// Calls a host function (one listed in the request's `host_functions`).
    fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, EvalError>;
}

pub enum Flow {
    Err(Box<EvalError>),
    Break(Value),
    Continue,
    Return(Value),
}

impl From<EvalError> for Flow {
    fn from(e: EvalError) -> Flow {
        Flow::Err(Box::new(e))
    }
}

type R = Result<Value, Flow>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Print,
    Debug,
    TypeOf,
    FnCtor,
    Call,
    Curry,
    IsDefFn,
    IsDefVar,
    IsShared,
    Eval,
}

#[derive(Clone)]
pub enum Target {
    Script(usize),
    Host(Rc<str>),
    Builtin(Builtin),
    Native(NativeFn),
    NotFound,
}

fn builtin(name: &str, arity: usize) -> Option<Builtin> {
    Some(match (name, arity) {
        ("print", 1) => Builtin::Print,
        ("debug", 1) => Builtin::Debug,
        ("type_of", 1) => Builtin::TypeOf,
        ("Fn", 1) => Builtin::FnCtor,
        ("call", n) if n >= 1 => Builtin::Call,
        ("curry", n) if n >= 1 => Builtin::Curry,
        ("is_def_fn", 2) => Builtin::IsDefFn,
        ("is_def_var", 1) => Builtin::IsDefVar,
        ("is_shared", 1) => Builtin::IsShared,
        ("eval", 1) => Builtin::Eval,
        _ => return None,
    })
}


pub struct Interp<'a> {
    prog: &'a Program,
    targets: Vec<Target>,
    by_name: HashMap<(Rc<str>, usize), usize>,
    host_fns: Vec<(String, usize)>,
    pub stack: Vec<Value>,
    base: usize,
    this: Value,
    depth: usize,
    host: &'a mut dyn Host,
    /// Errors being handled by `catch` blocks (for a bare `throw`).
    caught: Vec<EvalError>,
    /// In a function called as `f!(...)`: the caller's variables and frame base.
    bang: Option<(Rc<Vec<(Rc<str>, Slot)>>, usize)>,
    /// Set by a `f!(...)` call site for the next frame.
    pending_bang: Option<(Rc<Vec<(Rc<str>, Slot)>>, usize)>,
}

fn err(variant: &'static str, msg: impl Into<String>, pos: Pos) -> Flow {
    Flow::Err(Box::new(EvalError::runtime(variant, msg, pos)))
}

fn read(v: &Value) -> Value {
    match v {
        Value::Shared(c) => c.borrow().clone(),
        other => other.clone(),
    }
}

#[cold]
fn not_bool(v: &Value, pos: Pos) -> Flow {
    err("ErrorMismatchDataType", format!("Data type incorrect: {} (expecting bool)", v.type_name()), pos)
}

/// The integer operators' fast path, shared by `a op b` and `local op constant`:
/// `None` when `ops::binary` must decide (another operator, or an overflow to report).
#[inline(always)]
fn int_fast(op: BinOp, x: i64, y: i64) -> Option<Value> {
    match op {
        BinOp::Add => x.checked_add(y).map(Value::Int),
        BinOp::Sub => x.checked_sub(y).map(Value::Int),
        BinOp::Lt => Some(Value::Bool(x < y)),
        BinOp::Gt => Some(Value::Bool(x > y)),
        BinOp::Le => Some(Value::Bool(x <= y)),
        BinOp::Ge => Some(Value::Bool(x >= y)),
        BinOp::Eq => Some(Value::Bool(x == y)),
        BinOp::Ne => Some(Value::Bool(x != y)),
        BinOp::Mul => x.checked_mul(y).map(Value::Int),
        _ => None,
    }
}

/// The host of a script run by `eval`: the caller's script functions, then
/// the caller's host.
struct CallerHost<'p, 'a> {
    interp: &'p mut Interp<'a>,
}

impl<'p, 'a> Host for CallerHost<'p, 'a> {
    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError> {
        self.interp.host.output(text, debug)
    }

    fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        match self.interp.by_name.get(&(Rc::from(name), args.len())) {
            Some(&idx) => self.interp.call_script(idx, args.to_vec(), None, Pos::NONE),
            None => self.interp.host.call(name, args),
        }
    }
}

enum Key {
    Index(Value, Pos),
    Prop(Rc<str>, Pos),
}

impl<'a> Interp<'a> {
    pub fn new(prog: &'a Program, host_fns: &[(String, usize)], host: &'a mut dyn Host) -> Interp<'a> {
        let mut by_name = HashMap::new();
        for (i, f) in prog.fns.iter().enumerate() {
            if !f.is_closure {
                by_name.insert((f.name.clone(), f.params.len()), i);
            }
        }
        let mut interp = Interp {
            prog,
            targets: Vec::new(),
            by_name,
            host_fns: host_fns.to_vec(),
            stack: Vec::with_capacity(1024),
            base: 0,
            this: Value::Unit,
            depth: 0,
            host,
            caught: Vec::new(),
            bang: None,
            pending_bang: None,
        };
        interp.targets = prog.sites.iter().map(|(n, a)| interp.lookup(n, *a)).collect();
        interp
    }

    fn lookup(&self, name: &Rc<str>, arity: usize) -> Target {
        if let Some(i) = self.by_name.get(&(name.clone(), arity)) {
            return Target::Script(*i);
        }
        if self.host_fns.iter().any(|(n, a)| **n == **name && *a == arity) {
            return Target::Host(name.clone());
        }
        if let Some(b) = builtin(name, arity) {
            return Target::Builtin(b);
        }
        if let Some(f) = crate::stdlib::resolve(name, arity) {
            return Target::Native(f);
        }
        Target::NotFound
    }

    /// Runs the program's main body with the given top-level inputs.
    pub fn run_main(&mut self, inputs: Vec<Value>) -> Result<Value, EvalError> {
        self.stack.clear();
        self.stack.resize(self.prog.main_slots as usize, Value::Unit);
        for (i, v) in inputs.into_iter().enumerate() {
            self.stack[i] = v;
        }
        self.base = 0;
        match self.eval(&self.prog.main) {
            Ok(v) => Ok(v),
            Err(Flow::Return(v)) => Ok(v),
            Err(Flow::Err(e)) => Err(*e),
            Err(Flow::Break(_)) | Err(Flow::Continue) => Err(EvalError::parse("LoopBreak", "Break outside a loop", Pos::NONE)),
        }
    }

    #[inline]
    fn local(&self, slot: Slot) -> Value {
        read(&self.stack[self.base + slot as usize])
    }

    fn set_local(&mut self, slot: Slot, v: Value) {
        let cell = &mut self.stack[self.base + slot as usize];
        if let Value::Shared(c) = cell {
            *c.borrow_mut() = v;
        } else {
            *cell = v;
        }
    }

    #[inline]
    pub fn eval(&mut self, e: &'a Expr) -> R {
        match e {
            Expr::Const(v, _) => Ok(v.clone()),
            Expr::Local(s, _) => Ok(self.local(*s)),
            Expr::Binary(op, b, pos) => {
                let l = self.eval(&b.0)?;
                let r = self.eval(&b.1)?;
                if let (Value::Int(x), Value::Int(y)) = (&l, &r) {
                    if let Some(v) = int_fast(*op, *x, *y) {
                        return Ok(v);
                    }
                }
                ops::binary(*op, &l, &r).map_err(|e| Flow::from(e.at(*pos)))
            }
            Expr::LocalIntOp(op, slot, k, pos) => {
                let v = &self.stack[self.base + *slot as usize];
                if let Value::Int(x) = v {
                    if let Some(v) = int_fast(*op, *x, *k) {
                        return Ok(v);
                    }
                }
                let l = read(v);
                ops::binary(*op, &l, &Value::Int(*k)).map_err(|e| Flow::from(e.at(*pos)))
            }
            Expr::Call(c) => self.call_site(c),
            Expr::Block(stmts) => {
                let mut last = Value::Unit;
                for s in stmts {
                    last = self.eval(s)?;
                }
                Ok(last)
            }
            Expr::If(b, pos) => {
                let c = self.eval(&b.0)?;
                match c {
                    Value::Bool(true) => self.eval(&b.1),
                    Value::Bool(false) => self.eval(&b.2),
                    other => match ops::truthy(&other) {
                        Some(true) => self.eval(&b.1),
                        Some(false) => self.eval(&b.2),
                        None => Err(not_bool(&other, *pos)),
                    },
                }
            }
            Expr::AssignLocal(slot, op, rhs, pos) => {
                let v = self.eval(rhs)?;
                match op {
                    None => self.set_local(*slot, v),
                    Some(op) => {
                        let cell = &mut self.stack[self.base + *slot as usize];
                        if let (Value::Int(x), Value::Int(y)) = (&mut *cell, &v) {
                            match op {
                                BinOp::Add => {
                                    if let Some(r) = x.checked_add(*y) {
                                        *x = r;
                                        return Ok(Value::Unit);
                                    }
                                }
                                BinOp::Sub => {
                                    if let Some(r) = x.checked_sub(*y) {
                                        *x = r;
                                        return Ok(Value::Unit);
                                    }
                                }
                                _ => {}
                            }
                        }
                        ops::assign_op(*op, cell, v).map_err(|e| Flow::from(e.at(*pos)))?;
                    }
                }
                Ok(Value::Unit)
            }
            Expr::Let(slot, init) => {
                let v = self.eval(init)?;
                self.stack[self.base + *slot as usize] = v;
                Ok(Value::Unit)
            }
            Expr::Index(b, safe, pos) => {
                let obj = self.eval(&b.0)?;
                if *safe && obj.is_unit() {
                    return Ok(Value::Unit);
                }
                let idx = self.eval(&b.1)?;
                index_get(&obj, &idx, *pos).map_err(Flow::from)
            }
            Expr::Method(m) => self.method_call(m),
            Expr::While(b, pos) => {
                loop {
                    let c = self.eval(&b.0)?;
                    match ops::truthy(&c) {
                        Some(true) => {}
                        Some(false) => return Ok(Value::Unit),
                        None => return Err(not_bool(&c, *pos)),
                    }
                    match self.eval(&b.1) {
                        Ok(_) | Err(Flow::Continue) => {}
                        Err(Flow::Break(v)) => return Ok(v),
                        Err(e) => return Err(e),
                    }
                }
            }
            Expr::For(vslot, cslot, b, pos) => self.for_loop(*vslot, *cslot, &b.0, &b.1, *pos),
            Expr::Return(v, _) => {
                let v = match v {
                    Some(x) => self.eval(x)?,
                    None => Value::Unit,
                };
                Err(Flow::Return(v))
            }
            _ => self.eval_cold(e),
        }
    }

    /// `a && b` (`stop` false) and `a || b` (`stop` true): `b` is evaluated
    /// only when `a` is not `stop`.
    fn logic(&mut self, b: &'a (Expr, Expr), stop: bool, pos: Pos) -> R {
        let l = self.eval(&b.0)?;
        match ops::truthy(&l) {
            Some(x) if x == stop => Ok(Value::Bool(stop)),
            Some(_) => {
                let r = self.eval(&b.1)?;
                ops::truthy(&r).map(Value::Bool).ok_or_else(|| not_bool(&r, pos))
            }
            None => Err(not_bool(&l, pos)),
        }
    }

    /// The less frequent node kinds, out of line so that `eval`'s frame stays small.
    #[inline(never)]
    fn eval_cold(&mut self, e: &'a Expr) -> R {
        match e {
            Expr::Missing(name, pos) => {
                // `global::NAME` for a constant declared later in the source.
                if let Some(n) = name.strip_prefix("global::") {
                    let mut found = None;
                    for (c, slot) in self.prog.global_consts.iter().rev() {
                        if &**c == n {
                            let v = read(&self.stack[*slot as usize]);
                            // The latest declaration that has run.
                            if !v.is_unit() || found.is_none() {
                                found = Some(v.clone());
                            }
                            if !v.is_unit() {
                                break;
                            }
                        }
                    }
                    if let Some(v) = found {
                        return Ok(v);
                    }
                }
                // Inside `f!(...)`: the caller's variables.
                if let Some((scope, base)) = &self.bang {
                    if let Some((_, slot)) = scope.iter().rev().find(|(n, _)| n == name) {
                        return Ok(read(&self.stack[*base + *slot as usize]));
                    }
                }
                // A bare script-function name is a function pointer.
                if self.by_name.keys().any(|(n, _)| n == name) {
                    return Ok(Value::FnPtr(Rc::new(FnPtr { name: name.clone(), curry: Vec::new(), env: None })));
                }
                Err(err("ErrorVariableNotFound", format!("Variable not found: {}", name), *pos))
            }
            Expr::Global(slot, _) => Ok(read(&self.stack[*slot as usize])),
            Expr::This(pos) => {
                if self.depth == 0 && self.this.is_unit() {
                    return Err(err("ErrorUnboundThis", "'this' is not bound", *pos));
                }
                Ok(read(&self.this))
            }
            Expr::Array(items, _) => {
                let mut v = Vec::with_capacity(items.len());
                for i in items {
                    v.push(self.eval(i)?);
                }
                Ok(Value::array(v))
            }
            Expr::Map(items, _) => {
                let mut m = Map::new();
                for (k, i) in items {
                    let v = self.eval(i)?;
                    m.insert(k.clone(), v);
                }
                Ok(Value::map(m))
            }
            Expr::Interp(parts, _) => {
                let mut s = String::new();
                for p in parts {
                    match &self.eval(p)? {
                        Value::Str(x) => s.push_str(x),
                        other => crate::format::write_display(&mut s, other),
                    }
                }
                Ok(Value::string(s))
            }
            Expr::Unary(op, x, pos) => {
                let v = self.eval(x)?;
                match (op, &v) {
                    (UnOp::Neg, Value::Int(i)) => i.checked_neg().map(Value::Int).ok_or_else(|| {
                        Flow::from(EvalError::arithmetic(format!("Negation overflow: -{}", i)).at(*pos))
                    }),
                    (UnOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
                    (UnOp::Plus, Value::Int(_)) | (UnOp::Plus, Value::Float(_)) => Ok(v),
                    (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    _ => {
                        let sym = match op {
                            UnOp::Neg => "-",
                            UnOp::Plus => "+",
                            UnOp::Not => "!",
                        };
                        Err(err("ErrorFunctionNotFound", format!("Function not found: {} ({})", sym, v.type_name()), *pos))
                    }
                }
            }
            Expr::NotIn(b, pos) => {
                let l = self.eval(&b.0)?;
                let r = self.eval(&b.1)?;
                match ops::binary(BinOp::In, &l, &r) {
                    Ok(Value::Bool(x)) => Ok(Value::Bool(!x)),
                    Ok(v) => Ok(v),
                    Err(e) => Err(Flow::from(e.at(*pos))),
                }
            }
            Expr::And(b, pos) => self.logic(b, false, *pos),
            Expr::Or(b, pos) => self.logic(b, true, *pos),
            Expr::Coalesce(b) => {
                let l = self.eval(&b.0)?;
                if l.is_unit() {
                    self.eval(&b.1)
                } else {
                    Ok(l)
                }
            }
            Expr::Range(b, incl, pos) => {
                let lo = self.eval(&b.0)?;
                let hi = self.eval(&b.1)?;
                match (lo, hi) {
                    (Value::Int(a), Value::Int(z)) => {
                        Ok(Value::range_parts(a, z, *incl))
                    }
                    (a, z) => Err(err("ErrorMismatchDataType", format!("Data type incorrect: range of {} and {}", a.type_name(), z.type_name()), *pos)),
                }
            }
            Expr::Prop(obj, name, getter, safe, pos) => {
                let o = self.eval(obj)?;
                if *safe && o.is_unit() {
                    return Ok(Value::Unit);
                }
                self.prop_get(o, name, *getter, *pos)
            }
            Expr::Closure(idx, outer, _) => {
                let mut captured = Vec::with_capacity(outer.len());
                for slot in outer.iter() {
                    let cell = &mut self.stack[self.base + *slot as usize];
                    if !matches!(cell, Value::Shared(_)) {
                        let v = std::mem::replace(cell, Value::Unit);
                        *cell = Value::Shared(Rc::new(RefCell::new(v)));
                    }
                    captured.push(cell.clone());
                }
                let f = &self.prog.fns[*idx];
                let env: Rc<dyn Any> = Rc::new(ClosureEnv { fn_idx: *idx, captured });
                Ok(Value::FnPtr(Rc::new(FnPtr { name: f.name.clone(), curry: Vec::new(), env: Some(env) })))
            }
            Expr::Assign(b, op, pos) => {
                let v = self.eval(&b.1)?;
                self.assign(&b.0, *op, v, *pos)?;
                Ok(Value::Unit)
            }
            Expr::Switch(subject, cases, default, pos) => {
                let v = self.eval(subject)?;
                for case in cases {
                    let mut hit = case.values.iter().any(|c| switch_eq(c, &v));
                    if !hit {
                        if let Value::Int(i) = v {
                            hit = case.ranges.iter().any(|(a, b, incl)| i >= *a && (i < *b || (*incl && i == *b)));
                        } else if let Some((x, y)) = v.as_range() {
                            hit = case.ranges.iter().any(|(a, b, incl)| *a == x && (if *incl { b.saturating_add(1) } else { *b }) == y);
                        }
                    }
                    if hit {
                        if let Some(g) = &case.guard {
                            let gv = self.eval(g)?;
                            match gv {
                                Value::Bool(true) => {}
                                Value::Bool(false) => continue,
                                other => return Err(not_bool(&other, *pos)),
                            }
                        }
                        return self.eval(&case.body);
                    }
                }
                self.eval(default)
            }
            Expr::DoWhile(b, until, pos) => loop {
                match self.eval(&b.0) {
                    Ok(_) | Err(Flow::Continue) => {}
                    Err(Flow::Break(v)) => return Ok(v),
                    Err(e) => return Err(e),
                }
                let c = self.eval(&b.1)?;
                match ops::truthy(&c) {
                    Some(x) => {
                        if x == *until {
                            return Ok(Value::Unit);
                        }
                    }
                    None => return Err(not_bool(&c, *pos)),
                }
            },
            Expr::Loop(body) => loop {
                match self.eval(body) {
                    Ok(_) | Err(Flow::Continue) => {}
                    Err(Flow::Break(v)) => return Ok(v),
                    Err(e) => return Err(e),
                }
            },
            Expr::Break(v, _) => {
                let v = match v {
                    Some(x) => self.eval(x)?,
                    None => Value::Unit,
                };
                Err(Flow::Break(v))
            }
            Expr::Continue(_) => Err(Flow::Continue),
            Expr::Throw(v, pos) => {
                let v = match v {
                    Some(x) => self.eval(x)?,
                    None => {
                        // A bare `throw` inside `catch` re-throws the caught error.
                        if let Some(e) = self.caught.last() {
                            return Err(Flow::from(e.clone()));
                        }
                        Value::Unit
                    }
                };
                let mut e = EvalError::runtime("ErrorRuntime", to_display(&v), *pos);
                e.value = Some(v);
                Err(Flow::from(e))
            }
            Expr::Try(b, slot, _) => match self.eval(&b.0) {
                Err(Flow::Err(e)) if e.kind == ErrorKind::Runtime => {
                    let v = match e.value.clone() {
                        Some(v) => v,
                        None => {
                            let mut m = Map::new();
                            m.insert(Rc::from("message"), Value::string(e.message.clone()));
                            m.insert(Rc::from("error"), Value::str(e.variant));
                            if !e.pos.is_none() {
                                m.insert(Rc::from("line"), Value::Int(e.pos.line as i64));
                                m.insert(Rc::from("position"), Value::Int(e.pos.col as i64));
                            }
                            Value::map(m)
                        }
                    };
                    if let Some(s) = slot {
                        self.stack[self.base + *s as usize] = v;
                    }
                    self.caught.push(*e);
                    let r = self.eval(&b.1);
                    self.caught.pop();
                    r
                }
                Ok(_) => Ok(Value::Unit),
                other => other,
            },
            _ => unreachable!(),
        }
    }

    fn for_loop(&mut self, vslot: Slot, cslot: Option<Slot>, iter: &'a Expr, body: &'a Expr, pos: Pos) -> R {
        let vi = self.base + vslot as usize;
        macro_rules! run_body {
            ($item:expr, $n:expr) => {{
                // The loop variable is one variable across iterations: a closure
                // that captured it sees its latest value.
                match &self.stack[vi] {
                    Value::Shared(c) => *c.borrow_mut() = $item,
                    _ => self.stack[vi] = $item,
                }
                if let Some(c) = cslot {
                    self.set_local(c, Value::Int($n as i64));
                }
                match self.eval(body) {
                    Ok(_) | Err(Flow::Continue) => {}
                    Err(Flow::Break(v)) => return Ok(v),
                    Err(e) => return Err(e),
                }
            }};
        }
        if let Expr::Range(b, incl, rpos) = iter {
            let lo = self.eval(&b.0)?;
            let hi = self.eval(&b.1)?;
            let (a, z) = match (lo, hi) {
                (Value::Int(a), Value::Int(z)) => (a, z),
                (a, z) => return Err(err("ErrorMismatchDataType", format!("Data type incorrect: range of {} and {}", a.type_name(), z.type_name()), *rpos)),
            };
            let mut i = a;
            let mut n: i64 = 0;
            loop {
                if *incl {
                    if i > z {
                        break;
                    }
                } else if i >= z {
                    break;
                }
                run_body!(Value::Int(i), n);
                n += 1;
                match i.checked_add(1) {
                    Some(x) => i = x,
                    None => break,
                }
            }
            return Ok(Value::Unit);
        }
        let it = self.eval(iter)?;
        if let Some((a, z)) = it.as_range() {
            let mut n: i64 = 0;
            let mut i = a;
            while i < z {
                run_body!(Value::Int(i), n);
                n += 1;
                i += 1;
            }
            return Ok(Value::Unit);
        }
        match &it {
            Value::Array(a) => {
                for (n, item) in a.iter().enumerate() {
                    run_body!(item.clone(), n);
                }
            }
            Value::Str(s) => {
                for (n, c) in s.chars().enumerate() {
                    run_body!(Value::Char(c), n);
                }
            }
            Value::Blob(b) => {
                for (n, x) in b.iter().enumerate() {
                    run_body!(Value::Int(*x as i64), n);
                }
            }
            Value::Map(m) => {
                for (n, (k, _)) in m.iter().enumerate() {
                    run_body!(Value::str(k), n);
                }
            }
            other => {
                return Err(err("ErrorFor", format!("For loop expects an iterable type, not {}", other.type_name()), pos));
            }
        }
        Ok(Value::Unit)
    }

    fn prop_get(&mut self, o: Value, name: &Rc<str>, getter: usize, pos: Pos) -> R {
        match &o {
            Value::Map(m) => return Ok(m.get(name).cloned().unwrap_or(Value::Unit)),
            Value::Shared(c) => {
                let v = c.borrow().clone();
                return self.prop_get(v, name, getter, pos);
            }
            _ => {}
        }
        match self.targets[getter].clone() {
            Target::Native(f) => {
                let mut args = [o];
                self.invoke_native(f, &format!("get${}", name), &mut args, pos)
            }
            Target::Script(i) => self.call_script(i, vec![o], None, pos).map_err(Flow::from),
            _ => Err(err(
                "ErrorDotExpr",
                format!("Unknown property '{}' - a getter is not registered for type '{}'", name, o.type_name()),
                pos,
            )),
        }
    }

    fn invoke_native(&mut self, f: NativeFn, name: &str, args: &mut [Value], pos: Pos) -> R {
        match f(self, args) {
            Ok(v) => Ok(v),
            Err(NativeError::Error(e)) => Err(Flow::from(e.at(pos))),
            Err(NativeError::NoMatch) => Err(Flow::from(not_found(name, args, pos))),
        }
    }

    /// A call site bound to script function `idx`: its arguments become the new frame's first slots.
    #[inline]
    fn call_at_site(&mut self, idx: usize, c: &'a CallSite) -> R {
        let f = &self.prog.fns[idx];
        if self.depth >= MAX_CALL_DEPTH {
            return Err(err("ErrorStackOverflow", format!("Stack overflow in function {}", f.name), c.pos));
        }
        let new_base = self.stack.len();
        for a in &c.args {
            match self.eval(a) {
                Ok(v) => self.stack.push(v),
                Err(e) => {
                    self.stack.truncate(new_base);
                    return Err(e);
                }
            }
        }
        self.frame(idx, new_base, None, c.pos)
    }

    fn call_site(&mut self, c: &'a CallSite) -> R {
        if let Some(scope) = &c.scope_names {
            if let Target::Builtin(Builtin::IsDefVar) = self.targets[c.site] {
                // `is_def_var(expr)`: the name is looked up among the variables
                // the parser saw in scope at this call.
                let v = self.eval(&c.args[0])?.flatten();
                return match &v {
                    Value::Str(s) => Ok(Value::Bool(scope.iter().any(|(n, _)| &**n == s.as_str()))),
                    _ => Err(Flow::from(not_found(&c.name, &[v], c.pos))),
                };
            }
            if let Target::Builtin(Builtin::Eval) = self.targets[c.site] {
                let v = self.eval(&c.args[0])?.flatten();
                return match &v {
                    Value::Str(src) => self.eval_in_scope(src, scope, c.pos),
                    other => Err(err("ErrorMismatchDataType", format!("Data type incorrect: {} (expecting string)", other.type_name()), c.pos)),
                };
            }
            let mut args = Vec::with_capacity(c.args.len());
            for a in &c.args {
                args.push(self.eval(a)?);
            }
            // A script function that happens to be named `eval` or `is_def_var`
            // sees the caller's variables only when called with `!`.
            self.pending_bang = if c.bang { Some((scope.clone(), self.base)) } else { None };
            let target = self.targets[c.site].clone();
            let r = self.call_target(&target, &c.name, args, c.pos);
            self.pending_bang = None;
            return r;
        }
        if let Target::Script(idx) = self.targets[c.site] {
            return self.call_at_site(idx, c);
        }
        let target = self.targets[c.site].clone();
        match target {
            Target::Script(idx) => self.call_at_site(idx, c),
            Target::Builtin(Builtin::IsShared) => {
                if let Expr::Local(s, _) = &c.args[0] {
                    return Ok(Value::Bool(matches!(self.stack[self.base + *s as usize], Value::Shared(_))));
                }
                self.eval(&c.args[0])?;
                Ok(Value::Bool(false))
            }
            Target::Native(f) if matches!(c.args.first(), Some(Expr::Local(..))) => {
                // A native function's first argument is passed by reference
                // when it is a variable (`pad(y, 5, 0)` changes `y`).
                let slot = match &c.args[0] {
                    Expr::Local(s, _) => *s,
                    _ => unreachable!(),
                };
                let mut args = Vec::with_capacity(c.args.len());
                args.push(Value::Unit);
                for a in &c.args[1..] {
                    args.push(self.eval(a)?);
                }
                let i = self.base + slot as usize;
                let shared = match &self.stack[i] {
                    Value::Shared(cell) => Some(cell.clone()),
                    _ => None,
                };
                args[0] = match &shared {
                    Some(cell) => std::mem::replace(&mut *cell.borrow_mut(), Value::Unit),
                    None => std::mem::replace(&mut self.stack[i], Value::Unit),
                };
                let r = self.invoke_native(f, &c.name, &mut args, c.pos);
                let recv = std::mem::replace(&mut args[0], Value::Unit);
                match &shared {
                    Some(cell) => *cell.borrow_mut() = recv,
                    None => self.stack[i] = recv,
                }
                r
            }
            _ => {
                let mut args = Vec::with_capacity(c.args.len());
                for a in &c.args {
                    args.push(self.eval(a)?);
                }
                if let (Target::NotFound, Some(slot)) = (&target, c.var) {
                    if let Value::FnPtr(f) = &self.local(slot) {
                        if self.local(slot).as_range().is_none() {
                            return self.call_fn_ptr_at(&f, args, c.pos);
                        }
                    }
                }
                self.call_target(&target, &c.name, args, c.pos)
            }
        }
    }

    fn call_target(&mut self, target: &Target, name: &str, mut args: Vec<Value>, pos: Pos) -> R {
        match target {
            Target::Script(idx) => self.call_script(*idx, args, None, pos).map_err(Flow::from),
            Target::Native(f) => self.invoke_native(*f, name, &mut args, pos),
            Target::Builtin(b) => self.call_builtin(*b, args, pos),
            Target::Host(n) => {
                let n = n.clone();
                self.host.call(&n, &args).map_err(|e| Flow::from(e.at(pos)))
            }
            Target::NotFound => Err(Flow::from(not_found(name, &args, pos))),
        }
    }

    /// Calls script function `idx` with arguments (already including any
    /// curried ones), optionally with `this` bound; returns the new `this`.
    fn call_script(&mut self, idx: usize, args: Vec<Value>, env: Option<&ClosureEnv>, pos: Pos) -> Result<Value, EvalError> {
        if self.depth >= MAX_CALL_DEPTH {
            return Err(EvalError::runtime(
                "ErrorStackOverflow",
                format!("Stack overflow in function {}", self.prog.fns[idx].name),
                pos,
            ));
        }
        let new_base = self.stack.len();
        self.stack.extend(args);
        self.enter_frame(idx, new_base, env, pos)
    }

    fn enter_frame(&mut self, idx: usize, new_base: usize, env: Option<&ClosureEnv>, pos: Pos) -> Result<Value, EvalError> {
        match self.frame(idx, new_base, env, pos) {
            Ok(v) => Ok(v),
            Err(Flow::Err(e)) => Err(*e),
            Err(Flow::Return(v)) | Err(Flow::Break(v)) => Ok(v),
            Err(Flow::Continue) => Ok(Value::Unit),
        }
    }

    /// Runs script function `idx` on the arguments at `stack[new_base..]`.
    fn frame(&mut self, idx: usize, new_base: usize, env: Option<&ClosureEnv>, pos: Pos) -> R {
        let f = &self.prog.fns[idx];
        let nargs = self.stack.len() - new_base;
        if nargs != f.params.len() {
            self.stack.truncate(new_base);
            return Err(err(
                "ErrorFunctionNotFound",
                format!("Function not found: {} with {} arguments", f.name, nargs),
                pos,
            ));
        }
        self.stack.resize(new_base + f.nslots as usize, Value::Unit);
        if let Some(env) = env {
            for (slot, cell) in f.capture_slots.iter().zip(env.captured.iter()) {
                self.stack[new_base + *slot as usize] = cell.clone();
            }
        }
        let saved_base = self.base;
        self.base = new_base;
        self.depth += 1;
        let r = if self.pending_bang.is_none() && self.bang.is_none() {
            self.eval(&f.body)
        } else {
            let bang = self.pending_bang.take();
            let saved_bang = std::mem::replace(&mut self.bang, bang);
            let r = self.eval(&f.body);
            self.bang = saved_bang;
            r
        };
        self.depth -= 1;
        self.base = saved_base;
        self.stack.truncate(new_base);
        match r {
            Ok(v) | Err(Flow::Return(v)) => Ok(v),
            Err(Flow::Err(mut e)) => {
                // Rhai reports an error raised inside a script function as
                // `ErrorInFunctionCall` (a thrown value still reaches `catch`).
                if e.kind == ErrorKind::Runtime && e.variant != "ErrorStackOverflow" && e.variant != "ErrorInFunctionCall" && !f.is_closure {
                    e.message = format!("Error in call to function '{}': {}", f.name, e.message);
                    e.variant = "ErrorInFunctionCall";
                }
                Err(Flow::Err(e))
            }
            Err(Flow::Break(_)) | Err(Flow::Continue) => Ok(Value::Unit),
        }
    }

    fn call_fn_ptr_at(&mut self, f: &FnPtr, args: Vec<Value>, pos: Pos) -> R {
        let mut all = f.curry.clone();
        all.extend(args);
        if let Some(env) = &f.env {
            if let Some(env) = env.downcast_ref::<ClosureEnv>() {
                return self.call_script(env.fn_idx, all, Some(env), pos).map_err(Flow::from);
            }
            if let Some(r) = env.downcast_ref::<crate::value::RangeEnv>() {
                // A range is carried as a function pointer but is not one.
                let t = if r.inclusive { "range=" } else { "range" };
                return Err(err("ErrorMismatchDataType", format!("Data type incorrect: {} (expecting Fn)", t), pos));
            }
        }
        let name = f.name.clone();
        let target = self.lookup(&name, all.len());
        self.call_target(&target, &name, all, pos)
    }

    fn call_builtin(&mut self, b: Builtin, mut args: Vec<Value>, pos: Pos) -> R {
        match b {
            Builtin::Print | Builtin::Debug => {
                let text = if b == Builtin::Print {
                    match &args[0] {
                        Value::Str(s) => s.to_string(),
                        other => to_display(other),
                    }
                } else {
                    to_debug(&args[0])
                };
                self.host.output(&text, b == Builtin::Debug).map_err(|e| Flow::from(e.at(pos)))?;
                Ok(Value::Unit)
            }
            Builtin::TypeOf => Ok(Value::str(args[0].type_name())),
            Builtin::FnCtor => match &args[0] {
                Value::Str(s) => {
                    let ok = s.chars().next().map(|c| c.is_alphabetic() || c == '_').unwrap_or(false)
                        && s.chars().all(|c| c.is_alphanumeric() || c == '_');
                    if !ok {
                        return Err(err("ErrorFunctionNotFound", format!("Function not found: {}", s), pos));
                    }
                    Ok(Value::FnPtr(Rc::new(FnPtr { name: Rc::from(s.as_str()), curry: Vec::new(), env: None })))
                }
                other => Err(err("ErrorMismatchDataType", format!("Data type incorrect: {} (expecting string)", other.type_name()), pos)),
            },
            Builtin::Call => {
                let f = args.remove(0);
                match &f {
                    Value::FnPtr(f) => self.call_fn_ptr_at(f, args, pos),
                    other => Err(err("ErrorMismatchDataType", format!("Data type incorrect: {} (expecting Fn)", other.type_name()), pos)),
                }
            }
            Builtin::Curry => {
                let f = args.remove(0);
                match &f {
                    Value::FnPtr(f) if f.env.as_ref().map_or(true, |e| e.downcast_ref::<crate::value::RangeEnv>().is_none()) => {
                        let mut g = FnPtr::clone(f);
                        g.curry.extend(args);
                        Ok(Value::FnPtr(Rc::new(g)))
                    }
                    other => Err(err("ErrorMismatchDataType", format!("Data type incorrect: {} (expecting Fn)", other.type_name()), pos)),
                }
            }
            Builtin::IsDefFn => match (&args[0], &args[1]) {
                (Value::Str(s), Value::Int(n)) => {
                    Ok(Value::Bool(*n >= 0 && self.by_name.contains_key(&(Rc::from(s.as_str()), *n as usize))))
                }
                _ => Ok(Value::Bool(false)),
            },
            Builtin::IsDefVar => Ok(Value::Bool(false)),
            Builtin::IsShared => Ok(Value::Bool(false)),
            Builtin::Eval => {
                let src = match &args[0] {
                    Value::Str(s) => s.clone(),
                    other => return Err(err("ErrorMismatchDataType", format!("Data type incorrect: {} (expecting string)", other.type_name()), pos)),
                };
                self.eval_string(&src, pos)
            }
        }
    }

    fn eval_string(&mut self, src: &str, pos: Pos) -> R {
        self.eval_in_scope(src, &[], pos)
    }

    /// `eval` of a string built at run time: `src` runs as a script whose
    /// top-level inputs are the caller's variables in `scope` (name, slot).
    /// They go in by value (a captured variable as its shared cell) and come
    /// back, changed or not, even when the script fails; variables that `src`
    /// declares stay inside it.
    fn eval_in_scope(&mut self, src: &str, scope: &[(Rc<str>, Slot)], pos: Pos) -> R {
        let names: Vec<Rc<str>> = scope.iter().map(|(n, _)| n.clone()).collect();
        let prog = match crate::parser::parse_program(src, &names, false) {
            Ok(p) => p,
            Err(e) => {
                return Err(err("ErrorParsing", format!("{}: {}", e.variant, e.message), pos));
            }
        };
        let base = self.base;
        let inputs: Vec<Value> = scope
            .iter()
            .map(|(_, s)| match &mut self.stack[base + *s as usize] {
                cell @ Value::Shared(_) => cell.clone(),
                cell => std::mem::replace(cell, Value::Unit),
            })
            .collect();
        // The caller's script functions reach the script as host functions.
        let mut host_fns = self.host_fns.clone();
        host_fns.extend(self.by_name.keys().map(|(n, a)| (n.to_string(), *a)));
        let depth = self.depth;
        let (r, mut outputs) = {
            let mut caller = CallerHost { interp: self };
            let mut sub = Interp::new(&prog, &host_fns, &mut caller);
            sub.depth = depth + 1;
            let r = sub.run_main(inputs);
            (r, std::mem::take(&mut sub.stack))
        };
        for (i, (_, s)) in scope.iter().enumerate() {
            let cell = &mut self.stack[base + *s as usize];
            if !matches!(cell, Value::Shared(_)) {
                let v = std::mem::replace(&mut outputs[i], Value::Unit);
                *cell = if let Value::Shared(_) = &v { read(&v) } else { v };
            }
        }
        r.map_err(Flow::from)
    }

    // ---- places ----

    fn eval_keys(&mut self, steps: &'a [Step]) -> Result<Vec<Key>, Flow> {
        let mut keys = Vec::with_capacity(steps.len());
        for s in steps {
            keys.push(match s {
                Step::Index(e, p) => Key::Index(self.eval(e)?, *p),
                Step::Prop(n, p) => Key::Prop(n.clone(), *p),
            });
        }
        Ok(keys)
    }

    /// Runs `f` on the place named by `root` and `keys`.
    fn with_place<T>(&mut self, root: &Root, keys: &[Key], f: impl FnOnce(&mut Value) -> Result<T, EvalError>) -> Result<T, EvalError> {
        let rootv: &mut Value = match root {
            Root::Local(s) => &mut self.stack[self.base + *s as usize],
            Root::This => &mut self.this,
            Root::Missing(n) => {
                let found = match &self.bang {
                    Some((scope, base)) => scope.iter().rev().find(|(m, _)| m == n).map(|(_, s)| *base + *s as usize),
                    None => None,
                };
                match found {
                    Some(i) => &mut self.stack[i],
                    None => {
                        return Err(EvalError::runtime("ErrorVariableNotFound", format!("Variable not found: {}", n), Pos::NONE));
                    }
                }
            }
            Root::Const(_) => {
                return Err(EvalError::runtime("ErrorAssignmentToConstant", "Cannot modify a constant", Pos::NONE));
            }
            Root::SafeUnit(_) => {
                return Err(EvalError::runtime("ErrorIndexingType", "Cannot assign through '?['", Pos::NONE));
            }
        };
        if let Value::Shared(c) = rootv {
            let c = c.clone();
            let mut inner = c.borrow_mut();
            let place = walk_mut(&mut inner, keys)?;
            return f(place);
        }
        let place = walk_mut(rootv, keys)?;
        f(place)
    }

    fn assign(&mut self, lv: &'a LValue, op: Option<BinOp>, v: Value, pos: Pos) -> Result<(), Flow> {
        if let Root::Missing(n) = &lv.root {
            let known = match &self.bang {
                Some((scope, _)) => scope.iter().any(|(m, _)| m == n),
                None => false,
            };
            if !known {
                return Err(err("ErrorVariableNotFound", format!("Variable not found: {}", n), pos));
            }
        }
        if let Root::SafeUnit(e) = &lv.root {
            if self.eval(e)?.is_unit() {
                return Ok(());
            }
        }
        let mut keys = self.eval_keys(&lv.steps)?;
        let last = keys.pop();
        let last = match last {
            None => {
                return self
                    .with_place(&lv.root, &[], |place| match op {
                        None => {
                            *place = v;
                            Ok(())
                        }
                        Some(op) => ops::assign_op(op, place, v),
                    })
                    .map_err(|e| Flow::from(e.at(pos)));
            }
            Some(k) => k,
        };
        // Setter call for a property of a non-map value.
        let needs_setter = matches!(last, Key::Prop(..))
            && self
                .with_place(&lv.root, &keys, |place| Ok(!matches!(place, Value::Map(_))))
                .map_err(|e| Flow::from(e.at(pos)))?;
        if needs_setter {
            let name = match &last {
                Key::Prop(n, _) => n.clone(),
                _ => unreachable!(),
            };
            let obj = self.with_place(&lv.root, &keys, |place| Ok(std::mem::replace(place, Value::Unit))).map_err(Flow::from)?;
            let new_v = match op {
                None => v,
                Some(op) => {
                    let getter = crate::stdlib::resolve(&format!("get${}", name), 1);
                    let cur = match getter {
                        Some(g) => {
                            let mut a = [obj.clone()];
                            self.invoke_native(g, &name, &mut a, pos)?
                        }
                        None => Value::Unit,
                    };
                    let mut cur = cur;
                    ops::assign_op(op, &mut cur, v).map_err(|e| Flow::from(e.at(pos)))?;
                    cur
                }
            };
            let setter = crate::stdlib::resolve(&format!("set${}", name), 2);
            let mut args = [obj, new_v];
            let r = match setter {
                Some(s) => self.invoke_native(s, &format!("set${}", name), &mut args, pos).map(|_| ()),
                None => Err(err(
                    "ErrorDotExpr",
                    format!("Cannot assign property '{}' of type '{}'", name, args[0].type_name()),
                    pos,
                )),
            };
            let [obj, _] = args;
            self.with_place(&lv.root, &keys, |place| {
                *place = obj;
                Ok(())
            })
            .map_err(Flow::from)?;
            return r;
        }
        self.with_place(&lv.root, &keys, |place| set_step(place, &last, op, v))
            .map_err(|e| Flow::from(e.at(pos)))
    }

    fn method_call(&mut self, m: &'a MethodCall) -> R {
        let mut args = Vec::with_capacity(m.args.len() + 1);
        args.push(Value::Unit);
        for a in &m.args {
            args.push(self.eval(a)?);
        }
        if let Some(obj) = &m.obj {
            let recv = self.eval(obj)?;
            if m.safe && recv.is_unit() {
                return Ok(Value::Unit);
            }
            args[0] = recv;
            let (v, _) = self.dispatch_method(m, args).map_err(|(e, _)| e)?;
            return Ok(v);
        }
        if &*m.name == "is_shared" && m.args.is_empty() && m.target.steps.is_empty() {
            if let Root::Local(s) = m.target.root {
                return Ok(Value::Bool(matches!(self.stack[self.base + s as usize], Value::Shared(_))));
            }
        }
        // `a.call(f)` where the closure `f` captured `a` itself: `this` and
        // the captured variable would be the same cell.
        if &*m.name == "call" && m.target.steps.is_empty() {
            if let (Root::Local(s), Some(Value::FnPtr(f))) = (&m.target.root, args.get(1)) {
                if let (Value::Shared(cell), Some(env)) = (&self.stack[self.base + *s as usize], f.env.as_ref().and_then(|e| e.downcast_ref::<ClosureEnv>())) {
                    let shared_twice = env.captured.iter().any(|c| matches!(c, Value::Shared(d) if Rc::ptr_eq(d, cell)));
                    if shared_twice {
                        return Err(err("ErrorDataRace", "Cannot bind 'this' to a variable the closure captured", m.pos));
                    }
                }
            }
        }
        let keys = self.eval_keys(&m.target.steps)?;
        let recv = self
            .with_place(&m.target.root, &keys, |place| Ok(std::mem::replace(place, Value::Unit)))
            .map_err(|e| Flow::from(e.at(m.pos)))?;
        if m.safe && recv.is_unit() {
            return Ok(Value::Unit);
        }
        // Shared cells as receivers are read through, and written back into.
        args[0] = recv;
        let r = self.dispatch_method(m, args);
        match r {
            Ok((v, recv)) => {
                self.with_place(&m.target.root, &keys, |place| {
                    *place = recv;
                    Ok(())
                })
                .map_err(Flow::from)?;
                Ok(v)
            }
            Err((e, recv)) => {
                let _ = self.with_place(&m.target.root, &keys, |place| {
                    *place = recv;
                    Ok(())
                });
                Err(e)
            }
        }
    }

    /// Calls a method; returns the result and the (possibly changed) receiver.
    fn dispatch_method(&mut self, m: &'a MethodCall, mut args: Vec<Value>) -> Result<(Value, Value), (Flow, Value)> {
        // A script method for the receiver's type, or one for any type, with `this` bound.
        let mut script = None;
        if !self.prog.typed.is_empty() {
            let tn = args[0].type_name();
            for (t, idx) in &self.prog.typed {
                let f = &self.prog.fns[*idx];
                if &**t == tn && f.name == m.name && f.params.len() == m.args.len() {
                    script = Some(*idx);
                    break;
                }
            }
        }
        if script.is_none() {
            if let Target::Script(idx) = self.targets[m.this_site] {
                script = Some(idx);
            }
        }
        // `obj.call(f, args...)` calls `f` with `this` bound to `obj`.
        if &*m.name == "call" && !matches!(args[0], Value::FnPtr(_)) && args.len() >= 2 {
            if let Value::FnPtr(f) = &args[1] {
                let f = f.clone();
                let recv = std::mem::replace(&mut args[0], Value::Unit);
                let rest: Vec<Value> = args.drain(2..).collect();
                let saved = std::mem::replace(&mut self.this, recv);
                let r = self.call_fn_ptr_at(&f, rest, m.pos);
                let recv = std::mem::replace(&mut self.this, saved);
                return match r {
                    Ok(v) => Ok((v, recv)),
                    Err(e) => Err((e, recv)),
                };
            }
        }
        if let Some(idx) = script {
            let recv = std::mem::replace(&mut args[0], Value::Unit);
            args.remove(0);
            let saved = std::mem::replace(&mut self.this, recv);
            let r = self.call_script(idx, args, None, m.pos);
            let recv = std::mem::replace(&mut self.this, saved);
            return match r {
                Ok(v) => Ok((v, recv)),
                Err(e) => Err((Flow::from(e), recv)),
            };
        }
        // A function-pointer property of a map called as a method: `obj.f(x)`.
        if let Value::Map(map) = &args[0] {
            if let Some(Value::FnPtr(f)) = map.get(&m.name) {
                let f = f.clone();
                let recv = std::mem::replace(&mut args[0], Value::Unit);
                args.remove(0);
                let mut all = f.curry.clone();
                all.extend(args);
                let saved = std::mem::replace(&mut self.this, recv);
                let r = if let Some(env) = f.env.as_ref().and_then(|e| e.downcast_ref::<ClosureEnv>()) {
                    self.call_script(env.fn_idx, all, Some(env), m.pos).map_err(Flow::from)
                } else {
                    let t = self.lookup(&f.name, all.len());
                    let name = f.name.clone();
                    self.call_target(&t, &name, all, m.pos)
                };
                let recv = std::mem::replace(&mut self.this, saved);
                return match r {
                    Ok(v) => Ok((v, recv)),
                    Err(e) => Err((e, recv)),
                };
            }
        }
        let target = self.targets[m.site].clone();
        match target {
            Target::Native(f) => {
                let r = self.invoke_native(f, &m.name, &mut args, m.pos);
                let recv = std::mem::replace(&mut args[0], Value::Unit);
                match r {
                    Ok(v) => Ok((v, recv)),
                    Err(e) => Err((e, recv)),
                }
            }
            Target::Builtin(b) => {
                let recv = args[0].clone();
                match self.call_builtin(b, args, m.pos) {
                    Ok(v) => Ok((v, recv)),
                    Err(e) => Err((e, recv)),
                }
            }
            other => {
                let recv = args[0].clone();
                match self.call_target(&other, &m.name, args, m.pos) {
                    Ok(v) => Ok((v, recv)),
                    Err(e) => Err((e, recv)),
                }
            }
        }
    }
}

fn switch_eq(c: &Value, v: &Value) -> bool {
    match (c, v) {
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Float(a), Value::Float(b)) => ops::float_eq(*a, *b),
        (Value::Int(_), _) | (Value::Float(_), _) | (_, Value::Int(_)) | (_, Value::Float(_)) => false,
        (Value::Str(_), Value::Char(_)) | (Value::Char(_), Value::Str(_)) => false,
        _ => std::mem::discriminant(c) == std::mem::discriminant(v) && ops::values_equal(c, v),
    }
}

pub fn not_found(name: &str, args: &[Value], pos: Pos) -> EvalError {
    let types: Vec<&str> = args.iter().map(|a| a.type_name()).collect();
    let name = name.strip_prefix("get$").or_else(|| name.strip_prefix("set$")).unwrap_or(name);
    EvalError::runtime(
        "ErrorFunctionNotFound",
        format!("Function not found: {} ({})", name, types.join(", ")),
        pos,
    )
}

fn type_err(expected: &str, v: &Value, pos: Pos) -> EvalError {
    EvalError::runtime(
        "ErrorMismatchDataType",
        format!("Data type incorrect: {} (expecting {})", v.type_name(), expected),
        pos,
    )
}

/// The character or element positions `[lo, hi)` a range selects in a
/// sequence of `len` (negative ends count from the end; clamped).
pub fn slice_bounds(range: (i64, i64, bool), len: usize) -> (usize, usize) {
    let n = len as i64;
    let (s, e, incl) = range;
    let s = if s < 0 { (n + s).max(0) } else { s.min(n) };
    let from_end = e < 0;
    let mut e = if e < 0 { n + e } else { e };
    if incl && !(from_end && e <= s) {
        // (Rhai: an inclusive range whose end counts from the end and does not
        // pass the start selects nothing.)
        e = e.saturating_add(1);
    }
    let e = e.max(0).min(n);
    if e <= s {
        (s as usize, s as usize)
    } else {
        (s as usize, e as usize)
    }
}

pub fn index_get(obj: &Value, idx: &Value, pos: Pos) -> Result<Value, EvalError> {
    if let Some(r) = idx.range_env() {
        match obj {
            Value::Str(s) => {
                let n = s.chars().count();
                let (a, b) = slice_bounds(r, n);
                return Ok(Value::string(s.chars().skip(a).take(b - a).collect()));
            }
            Value::Array(v) => {
                let (a, b) = slice_bounds(r, v.len());
                return Ok(Value::array(v[a..b].to_vec()));
            }
            Value::Blob(v) => {
                let (a, b) = slice_bounds(r, v.len());
                return Ok(Value::Blob(Rc::new(v[a..b].to_vec())));
            }
            Value::Int(x) => {
                let (s, e, incl) = r;
                let s2 = if s < 0 { s + 64 } else { s };
                let e2 = if e < 0 { e + 64 } else { e } + incl as i64;
                if s2 < 0 || s2 > 64 || e2 > 64 || e2 < s2 {
                    return Err(EvalError::runtime("ErrorBitFieldBounds", format!("Bit-field range {}..{} out of bounds", s, e), pos));
                }
                let (a, b) = slice_bounds(r, 64);
                let w = b - a;
                let v = if w == 0 { 0 } else if w >= 64 { *x } else { (x >> a) & ((1i64 << w) - 1) };
                return Ok(Value::Int(v));
            }
            _ => {}
        }
    }
    match (obj, idx) {
        (Value::Array(a), Value::Int(i)) => match index_in(*i, a.len()) {
            Some(k) => Ok(a[k].clone()),
            None => Err(EvalError::runtime(
                "ErrorArrayBounds",
                format!("Array index {} out of bounds: only {} elements in array", i, a.len()),
                pos,
            )),
        },
        (Value::Map(m), Value::Str(k)) => Ok(m.get(k.as_str()).cloned().unwrap_or(Value::Unit)),
        (Value::Map(m), Value::Char(c)) => Ok(m.get(c.to_string().as_str()).cloned().unwrap_or(Value::Unit)),
        (Value::Str(s), Value::Int(i)) => {
            let n = s.chars().count();
            match index_in(*i, n) {
                Some(k) => Ok(Value::Char(s.chars().nth(k).unwrap())),
                None => Err(EvalError::runtime(
                    "ErrorStringBounds",
                    format!("String index {} out of bounds: only {} characters in string", i, n),
                    pos,
                )),
            }
        }
        (Value::Blob(b), Value::Int(i)) => match index_in(*i, b.len()) {
            Some(k) => Ok(Value::Int(b[k] as i64)),
            None => Err(EvalError::runtime(
                "ErrorArrayBounds",
                format!("Blob index {} out of bounds: only {} bytes in blob", i, b.len()),
                pos,
            )),
        },
        (Value::Int(x), Value::Int(i)) => match index_in(*i, 64) {
            Some(k) => Ok(Value::Bool((x >> k) & 1 == 1)),
            None => Err(EvalError::runtime(
                "ErrorBitFieldBounds",
                format!("Bit-field index {} out of bounds: only 64 bits", i),
                pos,
            )),
        },
        (Value::Shared(c), _) => index_get(&c.borrow(), idx, pos),
        (_, Value::Shared(c)) => index_get(obj, &c.borrow(), pos),
        (Value::Array(_), _) | (Value::Str(_), _) | (Value::Blob(_), _) | (Value::Int(_), _) => {
            Err(type_err("i64", idx, pos).with_variant("ErrorIndexingType"))
        }
        (Value::Map(_), _) => Err(type_err("string", idx, pos).with_variant("ErrorIndexingType")),
        _ => Err(EvalError::runtime(
            "ErrorIndexingType",
            format!("Indexer not registered for type {}", obj.type_name()),
            pos,
        )),
    }
}

trait WithVariant {
    fn with_variant(self, v: &'static str) -> Self;
}

impl WithVariant for EvalError {
    fn with_variant(mut self, v: &'static str) -> Self {
        self.variant = v;
        self
    }
}

fn walk_mut<'v>(mut cur: &'v mut Value, keys: &[Key]) -> Result<&'v mut Value, EvalError> {
    for k in keys {
        cur = step_mut(cur, k)?;
    }
    Ok(cur)
}

fn step_mut<'v>(cur: &'v mut Value, k: &Key) -> Result<&'v mut Value, EvalError> {
    match (cur, k) {
        (Value::Array(a), Key::Index(Value::Int(i), p)) => {
            let len = a.len();
            match index_in(*i, len) {
                Some(n) => Ok(&mut Rc::make_mut(a)[n]),
                None => Err(EvalError::runtime(
                    "ErrorArrayBounds",
                    format!("Array index {} out of bounds: only {} elements in array", i, len),
                    *p,
                )),
            }
        }
        (Value::Map(m), Key::Index(Value::Str(s), _)) => {
            let m = Rc::make_mut(m);
            if let Some(v) = m.get_mut(s.as_str()) {
                let p: *mut Value = v;
                // SAFETY: `p` points into `m`, which stays borrowed for 'v and is
                // not touched again on this path (the borrow checker of Rust
                // 1.63 cannot see that the two branches do not overlap).
                return Ok(unsafe { &mut *p });
            }
            Ok(m.entry(Rc::from(s.as_str())).or_insert(Value::Unit))
        }
        (Value::Map(m), Key::Index(Value::Char(c), _)) => {
            Ok(Rc::make_mut(m).entry(Rc::from(c.to_string().as_str())).or_insert(Value::Unit))
        }
        (Value::Map(m), Key::Prop(name, _)) => {
            let m = Rc::make_mut(m);
            if !m.contains_key(name) {
                m.insert(name.clone(), Value::Unit);
            }
            Ok(m.get_mut(name).unwrap())
        }
        (cur, Key::Index(idx, p)) => Err(index_type_error(cur, idx, *p)),
        (cur, Key::Prop(name, p)) => Err(EvalError::runtime(
            "ErrorDotExpr",
            format!("Unknown property '{}' for type '{}'", name, cur.type_name()),
            *p,
        )),
    }
}

fn index_type_error(cur: &Value, idx: &Value, p: Pos) -> EvalError {
    match cur {
        Value::Array(_) | Value::Str(_) | Value::Blob(_) | Value::Int(_) | Value::Map(_) => EvalError::runtime(
            "ErrorIndexingType",
            format!("Indexer not registered for type {} with index {}", cur.type_name(), idx.type_name()),
            p,
        ),
        _ => EvalError::runtime(
            "ErrorIndexingType",
            format!("Indexer not registered for type {}", cur.type_name()),
            p,
        ),
    }
}

/// Applies the last step of an assignment to its container.
fn set_step(place: &mut Value, last: &Key, op: Option<BinOp>, v: Value) -> Result<(), EvalError> {
    if let Key::Index(idx, p) = last {
        if let Some(r) = idx.range_env() {
            match (&mut *place, &v) {
                (Value::Str(s), Value::Str(new)) if op.is_none() => {
                    let chars: Vec<char> = s.chars().collect();
                    let (a, b) = slice_bounds(r, chars.len());
                    let mut out: String = chars[..a].iter().collect();
                    out.push_str(new);
                    out.extend(chars[b..].iter());
                    *Rc::make_mut(s) = out;
                    return Ok(());
                }
                (Value::Int(x), Value::Int(new)) if op.is_none() => {
                    let (a, b) = slice_bounds(r, 64);
                    let w = b - a;
                    if w > 0 {
                        let mask: i64 = if w >= 64 { -1 } else { ((1i64 << w) - 1) << a };
                        *x = (*x & !mask) | ((new << a) & mask);
                    }
                    return Ok(());
                }
                (cur, _) => return Err(index_type_error(cur, idx, *p)),
            }
        }
    }
    match (&mut *place, last) {
        (Value::Str(s), Key::Index(Value::Int(i), p)) => {
            let n = s.chars().count();
            let k = index_in(*i, n).ok_or_else(|| {
                EvalError::runtime(
                    "ErrorStringBounds",
                    format!("String index {} out of bounds: only {} characters in string", i, n),
                    *p,
                )
            })?;
            let cur = Value::Char(s.chars().nth(k).unwrap());
            let newv = match op {
                None => v,
                Some(op) => ops::binary(op, &cur, &v)?,
            };
            let c = match newv {
                Value::Char(c) => c,
                other => return Err(type_err("char", &other, *p)),
            };
            let st: String = s.chars().enumerate().map(|(j, d)| if j == k { c } else { d }).collect();
            *Rc::make_mut(s) = st;
            Ok(())
        }
        (Value::Blob(b), Key::Index(Value::Int(i), p)) => {
            let n = b.len();
            let k = index_in(*i, n).ok_or_else(|| {
                EvalError::runtime("ErrorArrayBounds", format!("Blob index {} out of bounds", i), *p)
            })?;
            let cur = Value::Int(Rc::make_mut(b)[k] as i64);
            let newv = match op {
                None => v,
                Some(op) => ops::binary(op, &cur, &v)?,
            };
            match newv {
                Value::Int(x) => {
                    Rc::make_mut(b)[k] = x as u8;
                    Ok(())
                }
                other => Err(type_err("i64", &other, *p)),
            }
        }
        (Value::Int(x), Key::Index(Value::Int(i), p)) => {
            let k = index_in(*i, 64).ok_or_else(|| {
                EvalError::runtime("ErrorBitFieldBounds", format!("Bit-field index {} out of bounds", i), *p)
            })?;
            let cur = Value::Bool((*x >> k) & 1 == 1);
            let newv = match op {
                None => v,
                Some(op) => ops::binary(op, &cur, &v)?,
            };
            match newv {
                Value::Bool(bit) => {
                    if bit {
                        *x |= 1 << k;
                    } else {
                        *x &= !(1i64 << k);
                    }
                    Ok(())
                }
                other => Err(type_err("bool", &other, *p)),
            }
        }
        _ => {
            let target = step_mut(place, last)?;
            match op {
                None => {
                    *target = v;
                    Ok(())
                }
                Some(op) => ops::assign_op(op, target, v),
            }
        }
    }
}

impl<'a> Caller for Interp<'a> {
    fn call_fn_ptr(&mut self, f: &FnPtr, args: Vec<Value>) -> Result<Value, EvalError> {
        match self.call_fn_ptr_at(f, args, Pos::NONE) {
            Ok(v) => Ok(v),
            Err(Flow::Err(e)) => Err(*e),
            Err(Flow::Return(v)) | Err(Flow::Break(v)) => Ok(v),
            Err(Flow::Continue) => Ok(Value::Unit),
        }
    }

    fn fn_ptr_arity(&self, f: &FnPtr) -> Option<usize> {
        if let Some(env) = f.env.as_ref().and_then(|e| e.downcast_ref::<ClosureEnv>()) {
            return Some(self.prog.fns[env.fn_idx].params.len().saturating_sub(f.curry.len()));
        }
        let mut found = None;
        for ((n, a), _) in self.by_name.iter() {
            if **n == *f.name {
                if found.is_some() {
                    return None;
                }
                found = Some(a.saturating_sub(f.curry.len()));
            }
        }
        found
    }

    fn call_fn_ptr_this(&mut self, f: &FnPtr, this: &mut Value, args: Vec<Value>) -> Result<Value, EvalError> {
        let recv = std::mem::replace(this, Value::Unit);
        let saved = std::mem::replace(&mut self.this, recv);
        let r = self.call_fn_ptr_at(f, args, Pos::NONE);
        *this = std::mem::replace(&mut self.this, saved);
        match r {
            Ok(v) => Ok(v),
            Err(Flow::Err(e)) => Err(*e),
            Err(Flow::Return(v)) | Err(Flow::Break(v)) => Ok(v),
            Err(Flow::Continue) => Ok(Value::Unit),
        }
    }

    fn has_script_fn(&self, name: &str, arity: usize) -> bool {
        self.by_name.contains_key(&(Rc::from(name), arity))
    }

    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError> {
        self.host.output(text, debug)
    }
}
