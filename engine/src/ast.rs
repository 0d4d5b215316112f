//! The resolved syntax tree the interpreter runs: variables are frame slots,
//! calls point into the program's call-site table.

use std::rc::Rc;

use crate::error::Pos;
use crate::ops::BinOp;
use crate::value::Value;

pub type Slot = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Plus,
    Not,
}

/// An assignable place: a root variable and a chain of index/property steps.
pub struct LValue {
    pub root: Root,
    pub steps: Vec<Step>,
}

pub enum Root {
    Local(Slot),
    This,
    /// A constant: changing it through an index or property is a run-time error.
    Const(Slot),
    /// `x?[i] = v` where the part before `?[` is this expression: when it is
    /// `()` the assignment does nothing (other cases are not supported).
    SafeUnit(Box<Expr>),
    /// A variable that was not found at compile time.
    Missing(Rc<str>),
}

pub enum Step {
    Index(Expr, Pos),
    Prop(Rc<str>, Pos),
}

pub struct CallSite {
    pub name: Rc<str>,
    /// Index into `Program::sites`.
    pub site: usize,
    pub args: Vec<Expr>,
    pub pos: Pos,
    /// A local variable of the same name (a function pointer called as `f(x)`).
    pub var: Option<Slot>,
    /// For `name!(...)`: the caller's visible variables (name, slot), which
    /// the callee's free variables refer to; also for `is_def_var` and `eval`
    /// of a computed argument, which look them up.
    pub scope_names: Option<Rc<Vec<(Rc<str>, Slot)>>>,
    /// Written `name!(...)`.
    pub bang: bool,
}

pub struct MethodCall {
    pub target: LValue,
    /// Whether the target is an assignable place (a variable path) whose
    /// changes are written back; otherwise `obj` is a temporary.
    pub obj: Option<Expr>,
    pub name: Rc<str>,
    pub args: Vec<Expr>,
    /// Site for a script function called with `this` (arity = args).
    pub this_site: usize,
    /// Site for a function taking the receiver first (arity = args + 1).
    pub site: usize,
    pub safe: bool,
    pub pos: Pos,
}

pub struct SwitchCase {
    /// Matching values (alternatives), or ranges.
    pub values: Vec<Value>,
    pub ranges: Vec<(i64, i64, bool)>,
    pub guard: Option<Expr>,
    pub body: Expr,
}

pub enum Expr {
    Const(Value, Pos),
    Local(Slot, Pos),
    Missing(Rc<str>, Pos),
    /// A top-level constant read from inside a function (`global::NAME`).
    Global(Slot, Pos),
    This(Pos),
    Array(Vec<Expr>, Pos),
    Map(Vec<(Rc<str>, Expr)>, Pos),
    Interp(Vec<Expr>, Pos),
    Unary(UnOp, Box<Expr>, Pos),
    Binary(BinOp, Box<(Expr, Expr)>, Pos),
    /// A fast path: `local op int-constant`.
    LocalIntOp(BinOp, Slot, i64, Pos),
    /// `a !in b`
    NotIn(Box<(Expr, Expr)>, Pos),
    And(Box<(Expr, Expr)>, Pos),
    Or(Box<(Expr, Expr)>, Pos),
    Coalesce(Box<(Expr, Expr)>),
    Range(Box<(Expr, Expr)>, bool, Pos),
    Index(Box<(Expr, Expr)>, bool, Pos),
    Prop(Box<Expr>, Rc<str>, usize, bool, Pos),
    Call(Box<CallSite>),
    Method(Box<MethodCall>),
    Closure(usize, Rc<Vec<Slot>>, Pos),
    Assign(Box<(LValue, Expr)>, Option<BinOp>, Pos),
    /// A fast path: `local op= expr`.
    AssignLocal(Slot, Option<BinOp>, Box<Expr>, Pos),
    Let(Slot, Box<Expr>),
    Block(Vec<Expr>),
    If(Box<(Expr, Expr, Expr)>, Pos),
    Switch(Box<Expr>, Vec<SwitchCase>, Box<Expr>, Pos),
    While(Box<(Expr, Expr)>, Pos),
    DoWhile(Box<(Expr, Expr)>, bool, Pos),
    Loop(Box<Expr>),
    /// `for var, counter in iterable { body }`
    For(Slot, Option<Slot>, Box<(Expr, Expr)>, Pos),
    Break(Option<Box<Expr>>, Pos),
    Continue(Pos),
    Return(Option<Box<Expr>>, Pos),
    Throw(Option<Box<Expr>>, Pos),
    Try(Box<(Expr, Expr)>, Option<Slot>, Pos),
}

impl Expr {
    pub fn pos(&self) -> Pos {
        match self {
            Expr::Const(_, p)
            | Expr::Local(_, p)
            | Expr::Missing(_, p)
            | Expr::Global(_, p)
            | Expr::This(p)
            | Expr::Array(_, p)
            | Expr::Map(_, p)
            | Expr::Interp(_, p)
            | Expr::Unary(_, _, p)
            | Expr::Binary(_, _, p)
            | Expr::LocalIntOp(_, _, _, p)
            | Expr::NotIn(_, p)
            | Expr::And(_, p)
            | Expr::Or(_, p)
            | Expr::Range(_, _, p)
            | Expr::Index(_, _, p)
            | Expr::Prop(_, _, _, _, p)
            | Expr::Closure(_, _, p)
            | Expr::Assign(_, _, p)
            | Expr::AssignLocal(_, _, _, p)
            | Expr::If(_, p)
            | Expr::Switch(_, _, _, p)
            | Expr::While(_, p)
            | Expr::DoWhile(_, _, p)
            | Expr::For(_, _, _, p)
            | Expr::Break(_, p)
            | Expr::Continue(p)
            | Expr::Return(_, p)
            | Expr::Throw(_, p)
            | Expr::Try(_, _, p) => *p,
            Expr::Coalesce(b) => b.0.pos(),
            Expr::Call(c) => c.pos,
            Expr::Method(m) => m.pos,
            Expr::Let(_, e) => e.pos(),
            Expr::Block(v) => v.first().map(|e| e.pos()).unwrap_or(Pos::NONE),
            Expr::Loop(b) => b.pos(),
        }
    }
}

pub struct FnDef {
    pub name: Rc<str>,
    pub params: Vec<Rc<str>>,
    pub nslots: u32,
    pub body: Expr,
    pub pos: Pos,
    /// For closures: the slots inside the closure's frame that receive the
    /// captured cells, in the order of the closure expression's capture list.
    pub capture_slots: Vec<Slot>,
    pub is_closure: bool,
}

pub struct Program {
    pub fns: Vec<FnDef>,
    /// Call sites (name, arity) deduplicated; resolved after parsing.
    pub sites: Vec<(Rc<str>, usize)>,
    pub main: Expr,
    pub main_slots: u32,
    /// Names of the top-level variables passed in by the host, in slot order.
    pub inputs: Vec<Rc<str>>,
    /// Top-level constants (for `global::NAME` inside functions), by name: their slots.
    pub global_consts: Vec<(Rc<str>, Slot)>,
    /// Methods defined for one type (`fn string.calc(x)`): (type name, fn index).
    pub typed: Vec<(Rc<str>, usize)>,
}
