//! The parser: tokens to the resolved tree. Variables are resolved to frame
//! slots while parsing (a `let` gets a fresh slot in its function's frame;
//! closures capture outer variables as shared cells); calls are recorded as
//! (name, arity) sites that are bound to script or native functions after
//! the whole source (with every hoisted `fn`) has been read.

use std::collections::HashMap;
use std::rc::Rc;

use crate::ast::*;
use crate::error::{EvalError, Pos};
use crate::lexer::{tokenize, InterpPart, Tok, Token};
use crate::ops::{self, BinOp};
use crate::value::Value;

const MAX_EXPR_DEPTH: usize = 64;
const MAX_FN_EXPR_DEPTH: usize = 32;
/// Longest chain of operators, postfix steps or `else if`s in one expression:
/// chains nest the tree too, and the interpreter walks it recursively.
const MAX_CHAIN: usize = 1000;

struct Var {
    name: Rc<str>,
    slot: Slot,
    is_const: bool,
    /// Index into the symbol table (`NO_SYM` for host inputs).
    sym: usize,
}

const NO_SYM: usize = usize::MAX;

/// A declaration, for editor support.
#[derive(Clone, Debug)]
pub struct Symbol {
    pub name: Rc<str>,
    pub kind: &'static str,
    pub pos: Pos,
}

/// Declarations and references collected while parsing.
#[derive(Default, Debug)]
pub struct SymbolIndex {
    pub symbols: Vec<Symbol>,
    /// (symbol, position, length in characters)
    pub references: Vec<(usize, Pos, usize)>,
    /// Calls to resolve to function symbols: (name, arity, position).
    pub calls: Vec<(Rc<str>, usize, Pos)>,
    /// Function symbols by (name, arity).
    pub fns: Vec<(Rc<str>, usize, usize)>,
}

struct FnCtx {
    scopes: Vec<Vec<Var>>,
    next_slot: Slot,
    is_closure: bool,
    is_fn: bool,
    /// (name, slot in the parent frame, slot in this frame, symbol)
    captures: Vec<(Rc<str>, Slot, Slot, usize)>,
    loop_depth: usize,
}

impl FnCtx {
    fn new(is_fn: bool, is_closure: bool) -> FnCtx {
        FnCtx {
            scopes: vec![Vec::new()],
            next_slot: 0,
            is_closure,
            is_fn,
            captures: Vec::new(),
            loop_depth: 0,
        }
    }

    fn find(&self, name: &str) -> Option<(Slot, bool, usize)> {
        for scope in self.scopes.iter().rev() {
            for v in scope.iter().rev() {
                if &*v.name == name {
                    return Some((v.slot, v.is_const, v.sym));
                }
            }
        }
        for (n, _, inner, sym) in &self.captures {
            if &**n == name {
                return Some((*inner, false, *sym));
            }
        }
        None
    }
}

pub struct Parser {
    toks: Vec<Token>,
    i: usize,
    ctxs: Vec<FnCtx>,
    fns: Vec<FnDef>,
    fn_sigs: HashMap<(Rc<str>, usize), usize>,
    sites: Vec<(Rc<str>, usize)>,
    site_ids: HashMap<(Rc<str>, usize), usize>,
    depth: usize,
    closure_count: usize,
    global_consts: Vec<(Rc<str>, Slot)>,
    /// Rhai's `compile_expression`: no statement blocks or loops.
    expr_only: bool,
    /// Typed method definitions: `fn string.calc(x)` -> (type name, fn index).
    pub typed: Vec<(Rc<str>, usize)>,
    pub index: SymbolIndex,
    else_ifs: usize,
}

fn perr(variant: &'static str, msg: impl Into<String>, pos: Pos) -> EvalError {
    EvalError::parse(variant, msg, pos)
}

/// Parses a whole script (`expression_only`: Rhai's `compile_expression`).
pub fn parse_program(
    src: &str,
    inputs: &[Rc<str>],
    expression_only: bool,
) -> Result<Program, EvalError> {
    parse_with_index(src, inputs, expression_only).0
}

/// Parses a script and also returns its symbol index (declarations and
/// resolved references), complete up to the first error if there is one.
pub fn parse_with_index(
    src: &str,
    inputs: &[Rc<str>],
    expression_only: bool,
) -> (Result<Program, EvalError>, SymbolIndex) {
    let toks = match tokenize(src, Pos::new(1, 1)) {
        Ok(t) => t,
        Err(e) => return (Err(e), SymbolIndex::default()),
    };
    let mut p = Parser {
        toks,
        i: 0,
        ctxs: vec![FnCtx::new(false, false)],
        fns: Vec::new(),
        fn_sigs: HashMap::new(),
        sites: Vec::new(),
        site_ids: HashMap::new(),
        depth: 0,
        closure_count: 0,
        global_consts: Vec::new(),
        expr_only: expression_only,
        typed: Vec::new(),
        index: SymbolIndex::default(),
        else_ifs: 0,
    };
    for name in inputs {
        p.declare(name.clone(), false);
    }
    let main = if expression_only {
        p.expr().and_then(|e| {
            if matches!(p.peek(), Tok::Eof) {
                Ok(e)
            } else {
                Err(perr("BadInput", "Unexpected token after expression", p.pos()))
            }
        })
    } else {
        p.stmts_until_eof().map(Expr::Block)
    };
    // Calls resolve to function symbols by name and arity (or by name alone).
    let mut index = std::mem::take(&mut p.index);
    let calls = std::mem::take(&mut index.calls);
    for (name, arity, pos) in calls {
        let exact = index.fns.iter().find(|(n, a, _)| *n == name && *a == arity);
        let any = index.fns.iter().find(|(n, _, _)| *n == name);
        if let Some((_, _, sym)) = exact.or(any) {
            let sym = *sym;
            index.references.push((sym, pos, name.chars().count()));
        }
    }
    let main = match main {
        Ok(m) => m,
        Err(e) => return (Err(e), index),
    };
    let main_slots = p.ctxs[0].next_slot;
    let prog = Program {
        fns: p.fns,
        sites: p.sites,
        main,
        main_slots,
        inputs: inputs.to_vec(),
        global_consts: p.global_consts,
        typed: p.typed,
    };
    (Ok(prog), index)
}

/// A block of one statement as that statement (where the block is a child
/// node, not a statement of a list: slots are already resolved).
fn simplify(e: Expr) -> Expr {
    match e {
        Expr::Block(mut v) if v.len() == 1 => v.pop().unwrap(),
        other => other,
    }
}

fn is_block_like(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Block(_)
            | Expr::If(..)
            | Expr::Switch(..)
            | Expr::While(..)
            | Expr::Loop(_)
            | Expr::For(..)
            | Expr::Try(..)
    )
}

impl Parser {
    // ---- tokens ----

    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }

    fn peek_at(&self, k: usize) -> &Tok {
        let j = (self.i + k).min(self.toks.len() - 1);
        &self.toks[j].tok
    }

    fn pos(&self) -> Pos {
        self.toks[self.i].pos
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Ident(q) if q == s)
    }

    fn eat(&mut self, p: &str) -> bool {
        if self.is_punct(p) {
            self.next();
            true
        } else {
            false
        }
    }

    /// Consumes the punctuation `p` or fails with Rhai's `MissingToken`
    /// ("Expecting 'p' <why>").
    fn expect(&mut self, p: &str, why: &str) -> Result<Pos, EvalError> {
        if self.is_punct(p) {
            Ok(self.next().pos)
        } else {
            Err(self.unexpected(p, why))
        }
    }

    /// `MissingToken` for `wanted` at the current token: Rhai's wording
    /// ("Expecting ';' to terminate this statement"), plus the token found,
    /// as the user wrote it.
    fn unexpected(&self, wanted: &str, why: &str) -> EvalError {
        let pos = self.pos();
        match self.peek() {
            Tok::LexErr(v, m) => perr(v, m.clone(), pos),
            Tok::Eof => perr("MissingToken", format!("Expecting '{}' {}", wanted, why), pos),
            Tok::Reserved(s) => {
                perr("Reserved", format!("'{}' is a reserved keyword", s), pos)
            }
            t => perr(
                "MissingToken",
                format!("Expecting '{}' {} (found {})", wanted, why, t.describe()),
                pos,
            ),
        }
    }

    fn ident(&mut self) -> Result<(Rc<str>, Pos), EvalError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.next();
                Ok((Rc::from(s.as_str()), pos))
            }
            Tok::Reserved(s) => {
                Err(perr("Reserved", format!("'{}' is a reserved keyword", s), pos))
            }
            _ => Err(perr("VariableExpected", "Expecting name of a variable", pos)),
        }
    }

    // ---- scopes ----

    fn ctx(&mut self) -> &mut FnCtx {
        self.ctxs.last_mut().unwrap()
    }

    fn declare(&mut self, name: Rc<str>, is_const: bool) -> Slot {
        self.declare_sym(name, is_const, "", Pos::NONE)
    }

    /// Declares a variable, recording a symbol when `pos` is known.
    fn declare_sym(&mut self, name: Rc<str>, is_const: bool, kind: &'static str, pos: Pos) -> Slot {
        let sym = if pos.is_none() {
            NO_SYM
        } else {
            self.index.symbols.push(Symbol { name: name.clone(), kind, pos });
            self.index.symbols.len() - 1
        };
        let ctx = self.ctx();
        let slot = ctx.next_slot;
        ctx.next_slot += 1;
        ctx.scopes.last_mut().unwrap().push(Var { name, slot, is_const, sym });
        slot
    }

    fn reference(&mut self, sym: usize, name: &str, pos: Pos) {
        if sym != NO_SYM {
            self.index.references.push((sym, pos, name.chars().count()));
        }
    }

    fn push_scope(&mut self) {
        self.ctx().scopes.push(Vec::new());
    }

    fn pop_scope(&mut self) {
        self.ctx().scopes.pop();
    }

    /// Resolves a variable name in context `k`, capturing through closures.
    fn resolve_in(&mut self, k: usize, name: &str) -> Option<(Slot, bool, usize)> {
        if let Some(r) = self.ctxs[k].find(name) {
            return Some(r);
        }
        if !self.ctxs[k].is_closure || k == 0 {
            return None;
        }
        let (outer, _, sym) = self.resolve_in(k - 1, name)?;
        let ctx = &mut self.ctxs[k];
        let inner = ctx.next_slot;
        ctx.next_slot += 1;
        ctx.captures.push((Rc::from(name), outer, inner, sym));
        Some((inner, false, sym))
    }

    fn resolve(&mut self, name: &str) -> Option<(Slot, bool, usize)> {
        let k = self.ctxs.len() - 1;
        self.resolve_in(k, name)
    }

    fn site(&mut self, name: &Rc<str>, arity: usize) -> usize {
        let key = (name.clone(), arity);
        if let Some(id) = self.site_ids.get(&key) {
            return *id;
        }
        let id = self.sites.len();
        self.sites.push(key.clone());
        self.site_ids.insert(key, id);
        id
    }

    fn max_depth(&self) -> usize {
        if self.ctxs.iter().any(|c| c.is_fn) {
            MAX_FN_EXPR_DEPTH
        } else {
            MAX_EXPR_DEPTH
        }
    }

    fn enter(&mut self) -> Result<(), EvalError> {
        self.depth += 1;
        if self.depth > self.max_depth() {
            return Err(perr("ExprTooDeep", "Expression exceeds maximum complexity", self.pos()));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ---- statements ----

    fn stmts_until_eof(&mut self) -> Result<Vec<Expr>, EvalError> {
        let mut out = Vec::new();
        loop {
            while self.eat(";") {}
            if matches!(self.peek(), Tok::Eof) {
                return Ok(out);
            }
            if self.is_ident("fn") || (self.is_ident("private") && matches!(self.peek_at(1), Tok::Ident(s) if s == "fn")) {
                self.fn_def()?;
                continue;
            }
            let s = self.stmt()?;
            let block_like = is_block_like(&s);
            out.push(s);
            if self.eat(";") || matches!(self.peek(), Tok::Eof) || block_like {
                continue;
            }
            if self.is_punct("#") {
                return Err(perr("UnknownOperator", "Unknown operator: '#'", self.pos()));
            }
            return Err(self.unexpected(";", "to terminate this statement"));
        }
    }

    fn block(&mut self) -> Result<Expr, EvalError> {
        self.expect("{", "to start a statement block")?;
        self.enter()?;
        self.push_scope();
        let mut out = Vec::new();
        loop {
            while self.eat(";") {}
            if self.eat("}") {
                break;
            }
            if matches!(self.peek(), Tok::Eof) {
                return Err(perr("MissingToken", "Expecting '}' to end this statement block", self.pos()));
            }
            if self.is_ident("fn") {
                return Err(perr(
                    "WrongFnDefinition",
                    "Function definitions must be at global level",
                    self.pos(),
                ));
            }
            let s = self.stmt()?;
            let block_like = is_block_like(&s);
            out.push(s);
            if self.eat(";") || self.is_punct("}") || block_like {
                continue;
            }
            if matches!(self.peek(), Tok::Eof) {
                return Err(self.unexpected("}", "to end this statement block"));
            }
            return Err(self.unexpected(";", "to terminate this statement"));
        }
        self.pop_scope();
        self.leave();
        Ok(Expr::Block(out))
    }

    fn stmt(&mut self) -> Result<Expr, EvalError> {
        let pos = self.pos();
        if let Tok::Ident(kw) = self.peek().clone() {
            match kw.as_str() {
                "let" | "const" => {
                    self.next();
                    let is_const = kw == "const";
                    let (name, npos) = self.ident()?;
                    if crate::lexer::is_keyword(&name) {
                        return Err(perr("Reserved", format!("'{}' is a keyword", name), npos));
                    }
                    let init = if self.eat("=") { self.expr()? } else { Expr::Const(Value::Unit, pos) };
                    let slot = self.declare_sym(name.clone(), is_const, if is_const { "constant" } else { "variable" }, npos);
                    if is_const && self.ctxs.len() == 1 && self.ctx().scopes.len() == 1 {
                        self.global_consts.push((name, slot));
                    }
                    return Ok(Expr::Let(slot, Box::new(init)));
                }
                "return" | "throw" => {
                    self.next();
                    let value = if self.is_punct(";") || self.is_punct("}") || matches!(self.peek(), Tok::Eof) {
                        None
                    } else {
                        Some(Box::new(self.expr()?))
                    };
                    return Ok(if kw == "return" { Expr::Return(value, pos) } else { Expr::Throw(value, pos) });
                }
                "break" | "continue" => {
                    self.next();
                    if self.ctx().loop_depth == 0 {
                        return Err(perr("LoopBreak", format!("'{}' not inside a loop", kw), pos));
                    }
                    if kw == "continue" {
                        return Ok(Expr::Continue(pos));
                    }
                    let value = if self.is_punct(";") || self.is_punct("}") || matches!(self.peek(), Tok::Eof) {
                        None
                    } else {
                        Some(Box::new(self.expr()?))
                    };
                    return Ok(Expr::Break(value, pos));
                }
                "try" => {
                    self.next();
                    let body = self.block()?;
                    if !self.is_ident("catch") {
                        return Err(self.unexpected("catch", "for the 'try' statement"));
                    }
                    self.next();
                    self.push_scope();
                    let mut slot = None;
                    if self.eat("(") {
                        let (name, npos) = self.ident()?;
                        slot = Some(self.declare_sym(name, false, "variable", npos));
                        self.expect(")", "to enclose the catch variable")?;
                    }
                    let handler = self.block()?;
                    self.pop_scope();
                    return Ok(Expr::Try(Box::new((body, handler)), slot, pos));
                }
                "import" => {
                    return Err(perr("ModuleUndefined", "Modules are not supported", pos));
                }
                "export" if self.ctxs.len() == 1 && self.ctx().scopes.len() == 1 => {
                    // Outside a module, `export` only declares (or does nothing).
                    self.next();
                    if self.is_ident("let") || self.is_ident("const") {
                        return self.stmt();
                    }
                    let (name, npos) = self.ident()?;
                    if self.resolve(&name).is_none() {
                        return Err(perr("VariableUndefined", format!("Undefined variable: {}", name), npos));
                    }
                    if self.is_ident("as") {
                        self.next();
                        self.ident()?;
                    }
                    return Ok(Expr::Const(Value::Unit, pos));
                }
                "export" => {
                    return Err(perr("WrongExport", "Export statement can only appear at global level", pos));
                }
                "fn" => {
                    return Err(perr("WrongFnDefinition", "Function definitions must be at global level", pos));
                }
                _ => {}
            }
        }
        let lhs = self.expr()?;
        // Assignment.
        let op = match self.peek() {
            Tok::Punct(p) => match *p {
                "=" => Some(None),
                "+=" => Some(Some(BinOp::Add)),
                "-=" => Some(Some(BinOp::Sub)),
                "*=" => Some(Some(BinOp::Mul)),
                "/=" => Some(Some(BinOp::Div)),
                "%=" => Some(Some(BinOp::Rem)),
                "**=" => Some(Some(BinOp::Pow)),
                "<<=" => Some(Some(BinOp::Shl)),
                ">>=" => Some(Some(BinOp::Shr)),
                "&=" => Some(Some(BinOp::BitAnd)),
                "|=" => Some(Some(BinOp::BitOr)),
                "^=" => Some(Some(BinOp::BitXor)),
                _ => None,
            },
            _ => None,
        };
        let op = match op {
            Some(op) => op,
            None => return Ok(lhs),
        };
        let apos = self.next().pos;
        let rhs = self.expr()?;
        let lv = self.to_lvalue(lhs, apos)?;
        if let (Root::Local(slot), true) = (&lv.root, lv.steps.is_empty()) {
            return Ok(Expr::AssignLocal(*slot, op, Box::new(rhs), apos));
        }
        Ok(Expr::Assign(Box::new((lv, rhs)), op, apos))
    }

    fn to_lvalue(&mut self, e: Expr, apos: Pos) -> Result<LValue, EvalError> {
        let mut steps = Vec::new();
        let mut cur = e;
        loop {
            match cur {
                Expr::Local(slot, p) => {
                    if self.slot_is_const(slot) {
                        if steps.is_empty() {
                            return Err(perr("AssignmentToConstant", "Cannot assign to a constant", p));
                        }
                        steps.reverse();
                        return Ok(LValue { root: Root::Const(slot), steps });
                    }
                    steps.reverse();
                    return Ok(LValue { root: Root::Local(slot), steps });
                }
                Expr::This(_) => {
                    steps.reverse();
                    return Ok(LValue { root: Root::This, steps });
                }
                Expr::Missing(name, _) => {
                    steps.reverse();
                    return Ok(LValue { root: Root::Missing(name), steps });
                }
                Expr::Index(b, safe, p) => {
                    let (obj, idx) = *b;
                    if safe {
                        return Ok(LValue { root: Root::SafeUnit(Box::new(obj)), steps: Vec::new() });
                    }
                    steps.push(Step::Index(idx, p));
                    cur = obj;
                }
                Expr::Prop(obj, name, _, false, p) => {
                    steps.push(Step::Prop(name, p));
                    cur = *obj;
                }
                Expr::Const(_, p) => {
                    return Err(perr("AssignmentToConstant", "Cannot assign to a constant value", if steps.is_empty() { p } else { apos }));
                }
                other => {
                    return Err(perr("AssignmentToInvalidLHS", "Cannot assign to this expression", other.pos()));
                }
            }
        }
    }

    fn slot_is_const(&self, slot: Slot) -> bool {
        let ctx = self.ctxs.last().unwrap();
        for scope in ctx.scopes.iter().rev() {
            for v in scope.iter().rev() {
                if v.slot == slot {
                    return v.is_const;
                }
            }
        }
        false
    }

    fn fn_def(&mut self) -> Result<(), EvalError> {
        if self.is_ident("private") {
            self.next();
        }
        let fpos = self.next().pos; // `fn`
        let (name, mut npos) = match self.peek().clone() {
            Tok::Ident(s) => {
                let p = self.pos();
                self.next();
                (Rc::<str>::from(s.as_str()), p)
            }
            Tok::Reserved(s) => return Err(perr("Reserved", format!("'{}' is a reserved keyword", s), self.pos())),
            _ => return Err(perr("FnMissingName", "Expecting function name", self.pos())),
        };
        // `fn TYPE.name(...)`: a method for one type.
        let mut this_type: Option<Rc<str>> = None;
        let mut name = name;
        if self.is_punct(".") {
            self.next();
            let (m, mpos) = self.ident()?;
            npos = mpos;
            let t: &str = match &*name {
                "int" => "i64",
                "float" => "f64",
                "string" | "str" => "string",
                other => other,
            };
            this_type = Some(Rc::from(t));
            name = m;
        }
        let mut params: Vec<Rc<str>> = Vec::new();
        let mut param_pos: Vec<Pos> = Vec::new();
        if !self.eat("(") {
            return Err(perr("FnMissingParams", format!("Expecting parameters for function '{}'", name), self.pos()));
        }
        if !self.eat(")") {
            loop {
                let (p, ppos) = self.ident()?;
                if params.contains(&p) {
                    return Err(perr("FnDuplicatedParam", format!("Duplicated parameter '{}' for function '{}'", p, name), ppos));
                }
                params.push(p);
                param_pos.push(ppos);
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    return Err(self.unexpected(")", &format!("to close the parameters list of function '{}'", name)));
                }
                if self.eat(")") {
                    break;
                }
            }
        }
        let key = (name.clone(), params.len());
        if this_type.is_none() && self.fn_sigs.contains_key(&key) {
            return Err(perr(
                "FnDuplicatedDefinition",
                format!("Function {} with {} parameters already exists", name, params.len()),
                fpos,
            ));
        }
        if !self.is_punct("{") {
            return Err(perr("FnMissingBody", format!("Expecting body for function '{}'", name), self.pos()));
        }
        self.index.symbols.push(Symbol { name: name.clone(), kind: "function", pos: npos });
        self.index.fns.push((name.clone(), params.len(), self.index.symbols.len() - 1));
        let saved_depth = std::mem::replace(&mut self.depth, 0);
        self.ctxs.push(FnCtx::new(true, false));
        for (p, pp) in params.iter().zip(param_pos.iter()) {
            self.declare_sym(p.clone(), false, "parameter", *pp);
        }
        let body = self.block().map(simplify);
        let ctx = self.ctxs.pop().unwrap();
        self.depth = saved_depth;
        let body = body?;
        let idx = self.fns.len();
        self.fns.push(FnDef {
            name: name.clone(),
            params,
            nslots: ctx.next_slot,
            body,
            pos: fpos,
            capture_slots: Vec::new(),
            is_closure: false,
        });
        match this_type {
            Some(t) => self.typed.push((t, idx)),
            None => {
                self.fn_sigs.insert(key, idx);
            }
        }
        Ok(())
    }

    // ---- expressions ----

    pub fn expr(&mut self) -> Result<Expr, EvalError> {
        self.enter()?;
        let r = self.binary(0);
        self.leave();
        r
    }

    fn binop_info(&self) -> Option<(u8, &'static str)> {
        let p = match self.peek() {
            Tok::Punct(p) => *p,
            Tok::Ident(s) if s == "in" => "in",
            _ => return None,
        };
        let prec = match p {
            "??" => 10,
            "||" | "|" | "^" => 30,
            "&&" | "&" => 60,
            "==" | "!=" => 90,
            "in" | "!in" => 110,
            "<" | "<=" | ">" | ">=" => 130,
            ".." | "..=" => 140,
            "+" | "-" => 150,
            "*" | "/" | "%" => 180,
            "**" => 190,
            "<<" | ">>" => 210,
            _ => return None,
        };
        Some((prec, p))
    }

    fn binary(&mut self, min_prec: u8) -> Result<Expr, EvalError> {
        let mut lhs = self.unary()?;
        let mut chain = 0;
        loop {
            chain += 1;
            if chain > MAX_CHAIN {
                return Err(perr("ExprTooDeep", "Expression exceeds maximum complexity", self.pos()));
            }
            let (prec, op) = match self.binop_info() {
                Some(x) => x,
                None => return Ok(lhs),
            };
            if prec < min_prec {
                return Ok(lhs);
            }
            let pos = self.next().pos;
            if (op == ".." || op == "..=") && (self.is_punct("]") || self.is_punct(")") || self.is_punct(",")) {
                // An open-end range `a..`.
                let hi = Expr::Const(Value::Int(i64::MAX), pos);
                lhs = Expr::Range(Box::new((lhs, hi)), false, pos);
                continue;
            }
            // `**` is right-associative.
            let next_min = if op == "**" { prec } else { prec + 1 };
            self.enter()?;
            let rhs = self.binary(next_min);
            self.leave();
            let rhs = rhs?;
            lhs = self.make_binary(op, lhs, rhs, pos)?;
        }
    }

    fn make_binary(&mut self, op: &str, lhs: Expr, rhs: Expr, pos: Pos) -> Result<Expr, EvalError> {
        let b = match op {
            "??" => return Ok(Expr::Coalesce(Box::new((lhs, rhs)))),
            "&&" | "||" => {
                for e in [&lhs, &rhs] {
                    if let Expr::Const(v, p) = e {
                        if !matches!(v, Value::Bool(_)) {
                            return Err(perr("MismatchedType", "Expecting a boolean", *p));
                        }
                    }
                }
                if op == "&&" {
                    return Ok(Expr::And(Box::new((lhs, rhs)), pos));
                }
                return Ok(Expr::Or(Box::new((lhs, rhs)), pos));
            }
            ".." | "..=" => return Ok(Expr::Range(Box::new((lhs, rhs)), op == "..=", pos)),
            "!in" => return Ok(Expr::NotIn(Box::new((lhs, rhs)), pos)),
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "%" => BinOp::Rem,
            "**" => BinOp::Pow,
            "<<" => BinOp::Shl,
            ">>" => BinOp::Shr,
            "&" => BinOp::BitAnd,
            "|" => BinOp::BitOr,
            "^" => BinOp::BitXor,
            "==" => BinOp::Eq,
            "!=" => BinOp::Ne,
            "<" => BinOp::Lt,
            "<=" => BinOp::Le,
            ">" => BinOp::Gt,
            ">=" => BinOp::Ge,
            "in" => BinOp::In,
            _ => return Err(perr("UnknownOperator", format!("Unknown operator: '{}'", op), pos)),
        };
        // Constant folding of numeric operations, with the interpreter's own operators.
        if let (Expr::Const(a, _), Expr::Const(c, _)) = (&lhs, &rhs) {
            if matches!(a, Value::Int(_) | Value::Float(_)) && matches!(c, Value::Int(_) | Value::Float(_)) {
                if let Ok(v) = ops::binary(b, a, c) {
                    return Ok(Expr::Const(v, lhs.pos()));
                }
            }
        }
        if let (Expr::Local(slot, _), Expr::Const(Value::Int(k), _)) = (&lhs, &rhs) {
            if matches!(b, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne) {
                return Ok(Expr::LocalIntOp(b, *slot, *k, pos));
            }
        }
        Ok(Expr::Binary(b, Box::new((lhs, rhs)), pos))
    }

    fn unary(&mut self) -> Result<Expr, EvalError> {
        let pos = self.pos();
        let op = if self.is_punct("-") {
            Some(UnOp::Neg)
        } else if self.is_punct("+") {
            Some(UnOp::Plus)
        } else if self.is_punct("!") {
            Some(UnOp::Not)
        } else {
            None
        };
        if let Some(op) = op {
            self.next();
            if op == UnOp::Neg && matches!(self.peek(), Tok::IntMinAbs) {
                self.next();
                let e = Expr::Const(Value::Int(i64::MIN), pos);
                return self.postfix(e);
            }
            self.enter()?;
            let e = self.unary();
            self.leave();
            let e = e?;
            if let Expr::Const(v, _) = &e {
                match (op, v) {
                    (UnOp::Neg, Value::Int(i)) => {
                        if let Some(n) = i.checked_neg() {
                            return Ok(Expr::Const(Value::Int(n), pos));
                        }
                    }
                    (UnOp::Neg, Value::Float(f)) => return Ok(Expr::Const(Value::Float(-f), pos)),
                    (UnOp::Plus, Value::Int(_)) | (UnOp::Plus, Value::Float(_)) => {
                        return Ok(Expr::Const(v.clone(), pos))
                    }
                    (UnOp::Not, Value::Bool(b)) => return Ok(Expr::Const(Value::Bool(!b), pos)),
                    _ => {}
                }
            }
            return Ok(Expr::Unary(op, Box::new(e), pos));
        }
        let prim = self.primary()?;
        self.postfix(prim)
    }

    fn args(&mut self) -> Result<Vec<Expr>, EvalError> {
        // After `(`.
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(")") {
                return Ok(args);
            }
            if !self.is_punct(",") {
                return Err(self.unexpected(")", "to close the arguments list of this function call"));
            }
            self.next();
            if self.eat(")") {
                return Ok(args);
            }
        }
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, EvalError> {
        // After a `?.` or `?[`, the rest of the chain short-circuits on `()` too.
        let mut in_safe = false;
        let mut chain = 0;
        loop {
            chain += 1;
            if chain > MAX_CHAIN {
                return Err(perr("ExprTooDeep", "Expression exceeds maximum complexity", self.pos()));
            }
            let pos = self.pos();
            if self.is_punct("[") || self.is_punct("?[") {
                let safe = self.is_punct("?[") || in_safe;
                in_safe = safe;
                self.next();
                let idx = self.expr()?;
                self.expect("]", "for a matching '[' in this index expression")?;
                self.check_index(&e, &idx)?;
                e = Expr::Index(Box::new((e, idx)), safe, pos);
            } else if self.is_punct(".") || self.is_punct("?.") {
                let safe = self.is_punct("?.") || in_safe;
                in_safe = safe;
                self.next();
                let npos = self.pos();
                let name: Rc<str> = match self.peek().clone() {
                    Tok::Ident(s) => {
                        self.next();
                        Rc::from(s.as_str())
                    }
                    Tok::Reserved(s) => return Err(perr("Reserved", format!("'{}' is a reserved keyword", s), npos)),
                    _ => return Err(perr("PropertyExpected", "Expecting name of a property", npos)),
                };
                if self.is_punct("::") {
                    return Err(perr("BadInput", "Module paths are not allowed after '.'", self.pos()));
                }
                if self.is_punct("(") || self.is_punct("!") && matches!(self.peek_at(1), Tok::Punct("(")) {
                    if self.eat("!") {
                        return Err(perr("MalformedCapture", "Cannot capture in a method call", npos));
                    }
                    self.next();
                    let args = self.args()?;
                    let this_site = self.site(&name, args.len());
                    let site = self.site(&name, args.len() + 1);
                    let (target, obj) = match self.try_lvalue(e) {
                        Ok(lv) => (lv, None),
                        Err(e) => (LValue { root: Root::This, steps: Vec::new() }, Some(e)),
                    };
                    e = Expr::Method(Box::new(MethodCall { target, obj, name, args, this_site, site, safe, pos: npos }));
                } else {
                    let gname: Rc<str> = Rc::from(format!("get${}", name).as_str());
                    let getter = self.site(&gname, 1);
                    e = Expr::Prop(Box::new(e), name, getter, safe, npos);
                }
            } else {
                return Ok(e);
            }
        }
    }

    /// The place an expression denotes, if it is a variable path (a variable
    /// or `this`, then property and index steps); otherwise the expression
    /// back, to be used as a temporary.
    fn try_lvalue(&mut self, e: Expr) -> Result<LValue, Expr> {
        fn is_place(e: &Expr) -> bool {
            match e {
                Expr::Local(..) | Expr::This(_) => true,
                Expr::Prop(obj, _, _, false, _) => is_place(obj),
                Expr::Index(b, false, _) => is_place(&b.0),
                _ => false,
            }
        }
        if !is_place(&e) {
            return Err(e);
        }
        let mut steps = Vec::new();
        let mut cur = e;
        loop {
            match cur {
                Expr::Local(s, _) => {
                    steps.reverse();
                    return Ok(LValue { root: Root::Local(s), steps });
                }
                Expr::This(_) => {
                    steps.reverse();
                    return Ok(LValue { root: Root::This, steps });
                }
                Expr::Prop(obj, name, _, _, p) => {
                    steps.push(Step::Prop(name, p));
                    cur = *obj;
                }
                Expr::Index(b, _, p) => {
                    let (obj, key) = *b;
                    steps.push(Step::Index(key, p));
                    cur = obj;
                }
                _ => unreachable!(),
            }
        }
    }

    fn check_index(&self, obj: &Expr, idx: &Expr) -> Result<(), EvalError> {
        let bad = |p: Pos| Err(perr("MalformedIndexExpr", "Invalid index", p));
        match (obj, idx) {
            (Expr::Array(..), Expr::Const(v, p)) if !matches!(v, Value::Int(_)) => bad(*p),
            (Expr::Array(..), Expr::And(_, p)) | (Expr::Array(..), Expr::Or(_, p)) => bad(*p),
            (Expr::Map(..), Expr::Const(v, p)) if !matches!(v, Value::Str(_)) => bad(*p),
            (Expr::Map(..), Expr::And(_, p)) | (Expr::Map(..), Expr::Or(_, p)) => bad(*p),
            (Expr::Const(Value::Str(_), _), Expr::Const(v, p)) if !matches!(v, Value::Int(_)) => bad(*p),
            _ => Ok(()),
        }
    }

    fn primary(&mut self) -> Result<Expr, EvalError> {
        let pos = self.pos();
        let t = self.next();
        match t.tok {
            Tok::Int(i) => Ok(Expr::Const(Value::Int(i), pos)),
            Tok::IntMinAbs => Ok(Expr::Const(Value::Float(9223372036854775808.0), pos)),
            Tok::Float(f) => Ok(Expr::Const(Value::Float(f), pos)),
            Tok::Str(s) => Ok(Expr::Const(Value::string(s), pos)),
            Tok::Char(c) => Ok(Expr::Const(Value::Char(c), pos)),
            Tok::Interp(parts) => self.interp(parts, pos),
            Tok::Punct("(") => {
                if self.is_punct(")") {
                    let close = self.next().pos;
                    if close.line != pos.line || close.col != pos.col + 1 {
                        return Err(perr("BadInput", "Unexpected ')'", close));
                    }
                    return Ok(Expr::Const(Value::Unit, pos));
                }
                if self.is_punct(")") {
                    return Err(perr("BadInput", "Expecting an expression", self.pos()));
                }
                let e = self.expr()?;
                self.expect(")", "for a matching '(' in this expression")?;
                Ok(e)
            }
            Tok::Punct("[") => {
                let mut items = Vec::new();
                loop {
                    if self.eat("]") {
                        break;
                    }
                    items.push(self.expr()?);
                    if self.eat("]") {
                        break;
                    }
                    if !self.eat(",") {
                        return Err(self.unexpected("]", "to end this array literal"));
                    }
                }
                Ok(Expr::Array(items, pos))
            }
            Tok::Punct("#{") => {
                let mut items: Vec<(Rc<str>, Expr)> = Vec::new();
                loop {
                    if self.eat("}") {
                        break;
                    }
                    let kpos = self.pos();
                    let key: Rc<str> = match self.next().tok {
                        Tok::Ident(s) => Rc::from(s.as_str()),
                        Tok::Str(s) => Rc::from(s.as_str()),
                        Tok::Reserved(s) => Rc::from(s.as_str()),
                        Tok::Interp(parts) => match parts.as_slice() {
                            [InterpPart::Lit(s)] => Rc::from(s.as_str()),
                            _ => return Err(perr("PropertyExpected", "Expecting a property name", kpos)),
                        },
                        _ => return Err(perr("PropertyExpected", "Expecting a property name", kpos)),
                    };
                    if items.iter().any(|(k, _)| *k == key) {
                        return Err(perr("DuplicatedProperty", format!("Duplicated property '{}'", key), kpos));
                    }
                    if !self.is_punct(":") {
                        return Err(self.unexpected(":", &format!("to follow the property '{}' in this object map literal", key)));
                    }
                    self.next();
                    let v = self.expr()?;
                    items.push((key, v));
                    if self.eat("}") {
                        break;
                    }
                    if !self.eat(",") {
                        return Err(self.unexpected("}", "to end this object map literal"));
                    }
                }
                Ok(Expr::Map(items, pos))
            }
            Tok::Punct("{") => {
                if self.expr_only {
                    return Err(perr("BadInput", "Statement blocks are not allowed in expressions", pos));
                }
                self.i -= 1;
                self.block()
            }
            Tok::Punct("..") | Tok::Punct("..=") => {
                // An open-start range `..b`, or the full range `..`.
                let incl = matches!(t.tok, Tok::Punct("..="));
                let lo = Expr::Const(Value::Int(0), pos);
                if self.is_punct("]") || self.is_punct(")") || self.is_punct(",") {
                    return Ok(Expr::Range(Box::new((lo, Expr::Const(Value::Int(i64::MAX), pos))), false, pos));
                }
                self.enter()?;
                let hi = self.binary(141);
                self.leave();
                return Ok(Expr::Range(Box::new((lo, hi?)), incl, pos));
            }
            Tok::Punct("|") | Tok::Punct("||") => {
                let mut params = Vec::new();
                let mut param_pos = Vec::new();
                if matches!(t.tok, Tok::Punct("|")) && !self.eat("|") {
                    loop {
                        let (p, ppos) = self.ident()?;
                        if params.contains(&p) {
                            return Err(perr("FnDuplicatedParam", format!("Duplicated parameter '{}'", p), ppos));
                        }
                        params.push(p);
                        param_pos.push(ppos);
                        if self.eat("|") {
                            break;
                        }
                        self.expect(",", "to separate the parameters of this closure")?;
                    }
                }
                self.closure(params, param_pos, pos)
            }
            Tok::Ident(s) if matches!(s.as_str(), "break" | "continue" | "return" | "throw") => {
                self.i -= 1;
                self.stmt()
            }
            Tok::Ident(s) => self.ident_expr(s, pos),
            Tok::Reserved(s) => Err(perr("Reserved", format!("'{}' is a reserved keyword", s), pos)),
            Tok::Eof => Err(perr("MissingToken", "Script is incomplete", pos)),
            Tok::LexErr(v, m) => Err(perr(v, m, pos)),
            Tok::Punct(p) => Err(perr(
                if p == "#" { "UnknownOperator" } else { "BadInput" },
                format!("Unexpected '{}'", p),
                pos,
            )),
        }
    }

    fn closure(&mut self, params: Vec<Rc<str>>, param_pos: Vec<Pos>, pos: Pos) -> Result<Expr, EvalError> {
        self.ctxs.push(FnCtx::new(self.ctxs.iter().any(|c| c.is_fn), true));
        for (p, pp) in params.iter().zip(param_pos.iter()) {
            self.declare_sym(p.clone(), false, "parameter", *pp);
        }
        // A block body ends the closure (postfix calls apply to the closure);
        // otherwise the body is one statement (an assignment is allowed).
        let body = if self.is_punct("{") { self.block() } else { self.stmt() };
        let ctx = self.ctxs.pop().unwrap();
        let body = body?;
        if let Expr::Block(v) = &body {
            if v.is_empty() && !params.is_empty() {
                // `|x| {}` is rejected by Rhai as a bad input.
                return Err(perr("BadInput", "Empty closure body", pos));
            }
        }
        self.closure_count += 1;
        let idx = self.fns.len();
        let outer: Vec<Slot> = ctx.captures.iter().map(|c| c.1).collect();
        let inner: Vec<Slot> = ctx.captures.iter().map(|c| c.2).collect();
        self.fns.push(FnDef {
            name: Rc::from(format!("anon${}", self.closure_count).as_str()),
            params,
            nslots: ctx.next_slot,
            body,
            pos,
            capture_slots: inner,
            is_closure: true,
        });
        Ok(Expr::Closure(idx, Rc::new(outer), pos))
    }

    fn interp(&mut self, parts: Vec<InterpPart>, pos: Pos) -> Result<Expr, EvalError> {
        let mut out = Vec::new();
        for part in parts {
            match part {
                InterpPart::Lit(s) => out.push(Expr::Const(Value::string(s), pos)),
                InterpPart::Code(code, cpos) => {
                    let mut stmts = self.code_in_scope(&code, cpos)?;
                    if stmts.len() == 1 {
                        out.push(stmts.pop().unwrap());
                    } else {
                        out.push(Expr::Block(stmts));
                    }
                }
            }
        }
        Ok(Expr::Interp(out, pos))
    }

    /// Parses `code` as statements in the current scope (interpolations, and
    /// `eval` of a literal, which runs in the caller's scope).
    fn code_in_scope(&mut self, code: &str, cpos: Pos) -> Result<Vec<Expr>, EvalError> {
        let toks = tokenize(code, cpos)?;
        let saved = std::mem::replace(&mut self.toks, toks);
        let saved_i = std::mem::replace(&mut self.i, 0);
        let mut stmts = Vec::new();
        let r = (|| -> Result<(), EvalError> {
            loop {
                while self.eat(";") {}
                if matches!(self.peek(), Tok::Eof) {
                    return Ok(());
                }
                let s = self.stmt()?;
                let bl = is_block_like(&s);
                stmts.push(s);
                if self.eat(";") || matches!(self.peek(), Tok::Eof) || bl {
                    continue;
                }
                return Err(self.unexpected(";", "to terminate this statement"));
            }
        })();
        self.toks = saved;
        self.i = saved_i;
        r.map(|_| stmts)
    }

    /// The variables visible here, innermost last (for `f!(...)` calls).
    fn visible_vars(&self) -> Rc<Vec<(Rc<str>, Slot)>> {
        let ctx = self.ctxs.last().unwrap();
        let mut out: Vec<(Rc<str>, Slot)> = ctx.captures.iter().map(|c| (c.0.clone(), c.2)).collect();
        for scope in &ctx.scopes {
            for v in scope {
                out.push((v.name.clone(), v.slot));
            }
        }
        Rc::new(out)
    }

    fn loop_body(&mut self) -> Result<Expr, EvalError> {
        self.ctx().loop_depth += 1;
        let b = self.block();
        self.ctx().loop_depth -= 1;
        b.map(simplify)
    }

    fn ident_expr(&mut self, s: String, pos: Pos) -> Result<Expr, EvalError> {
        match s.as_str() {
            "true" => return Ok(Expr::Const(Value::Bool(true), pos)),
            "false" => return Ok(Expr::Const(Value::Bool(false), pos)),
            "this" => return Ok(Expr::This(pos)),
            "if" => {
                let cond = self.expr()?;
                if let Expr::Const(v, p) = &cond {
                    if !matches!(v, Value::Bool(_)) {
                        return Err(perr("MismatchedType", "Expecting a boolean condition", *p));
                    }
                }
                let then = simplify(self.block()?);
                let els = if self.is_ident("else") {
                    self.next();
                    if self.is_ident("if") {
                        let p = self.pos();
                        self.next();
                        self.else_ifs += 1;
                        if self.else_ifs > MAX_CHAIN {
                            return Err(perr("ExprTooDeep", "Expression exceeds maximum complexity", p));
                        }
                        let r = self.ident_expr("if".to_string(), p);
                        self.else_ifs -= 1;
                        r?
                    } else {
                        simplify(self.block()?)
                    }
                } else {
                    Expr::Const(Value::Unit, pos)
                };
                return Ok(Expr::If(Box::new((cond, then, els)), pos));
            }
            "while" | "loop" | "do" | "for" if self.expr_only => {
                return Err(perr("BadInput", "Loops are not allowed in expressions", pos));
            }
            "while" => {
                let cond = self.expr()?;
                let body = self.loop_body()?;
                return Ok(Expr::While(Box::new((cond, body)), pos));
            }
            "loop" => {
                let body = self.loop_body()?;
                return Ok(Expr::Loop(Box::new(body)));
            }
            "do" => {
                let body = self.loop_body()?;
                let until = if self.is_ident("while") {
                    false
                } else if self.is_ident("until") {
                    true
                } else {
                    return Err(self.unexpected("while", "or 'until' to end this 'do' loop"));
                };
                self.next();
                let cond = self.expr()?;
                return Ok(Expr::DoWhile(Box::new((body, cond)), until, pos));
            }
            "for" => return self.for_loop(pos),
            "switch" => return self.switch(pos),
            "fn" => {
                return Err(perr("WrongFnDefinition", "Function definitions must be at global level", pos));
            }
            "global" if self.is_punct("::") => {
                self.next();
                let (name, npos) = self.ident()?;
                for (n, slot) in self.global_consts.iter().rev() {
                    if *n == name {
                        let _ = npos;
                        if self.ctxs.len() == 1 {
                            return Ok(Expr::Local(*slot, pos));
                        }
                        // Inside a function: looked up by name when it runs (a
                        // later `const` of the same name may replace it).
                        break;
                    }
                }
                return Ok(Expr::Missing(Rc::from(format!("global::{}", name).as_str()), pos));
            }
            _ => {}
        }
        if self.is_punct("::") {
            // A module path: modules are not supported, so it fails when it runs.
            let mut path = s.clone();
            while self.eat("::") {
                let (seg, _) = self.ident()?;
                path.push_str("::");
                path.push_str(&seg);
            }
            if self.eat("(") {
                let args = self.args()?;
                let name: Rc<str> = Rc::from(path.as_str());
                let site = self.site(&name, args.len());
                return Ok(Expr::Call(Box::new(CallSite { name, site, args, pos, var: None, scope_names: None, bang: false })));
            }
            return Ok(Expr::Missing(Rc::from(path.as_str()), pos));
        }
        let name: Rc<str> = Rc::from(s.as_str());
        let bang = self.is_punct("!") && matches!(self.peek_at(1), Tok::Punct("("));
        if self.is_punct("(") || bang {
            if bang {
                self.next();
            }
            self.next();
            let args = self.args()?;
            if &*name == "eval" && args.len() == 1 && !bang {
                // `eval` of a literal runs in this scope: parse it in place
                // (a source that does not parse fails when it runs, as in Rhai).
                if let Expr::Const(Value::Str(code), cpos) = &args[0] {
                    let code = code.clone();
                    let cpos = *cpos;
                    let saved_scope = self.ctx().scopes.last().map(|s| s.len()).unwrap_or(0);
                    let saved_consts = self.global_consts.len();
                    match self.code_in_scope(&code, Pos::new(cpos.line, cpos.col + 1)) {
                        Ok(stmts) => return Ok(Expr::Block(stmts)),
                        Err(_) => {
                            self.ctx().scopes.last_mut().unwrap().truncate(saved_scope);
                            self.global_consts.truncate(saved_consts);
                        }
                    }
                }
            }
            if &*name == "is_def_var" && args.len() == 1 {
                if let Expr::Const(Value::Str(v), _) = &args[0] {
                    let found = self.resolve(v).is_some();
                    return Ok(Expr::Const(Value::Bool(found), pos));
                }
            }
            let var = match self.resolve(&name) {
                Some((slot, _, _)) => Some(slot),
                None => None,
            };
            self.index.calls.push((name.clone(), args.len(), pos));
            let site = self.site(&name, args.len());
            // `is_def_var(expr)` with a computed name, and `eval(expr)` of a
            // computed string: the names in scope here (parameters, locals
            // declared so far, captures made so far) are looked up at run time
            // (the literal cases were handled above).
            let scope_names = if bang || (matches!(&*name, "is_def_var" | "eval") && args.len() == 1) {
                Some(self.visible_vars())
            } else {
                None
            };
            return Ok(Expr::Call(Box::new(CallSite { name, site, args, pos, var, scope_names, bang })));
        }
        match self.resolve(&name) {
            Some((slot, _, sym)) => {
                self.reference(sym, &name, pos);
                Ok(Expr::Local(slot, pos))
            }
            None => Ok(Expr::Missing(name, pos)),
        }
    }

    fn for_loop(&mut self, pos: Pos) -> Result<Expr, EvalError> {
        let paren = self.eat("(");
        let (var, vpos) = self.ident()?;
        let mut counter = None;
        if paren {
            self.expect(",", "to separate the iteration variable and the counter")?;
            counter = Some(self.ident()?);
            self.expect(")", "to close the iteration variable and the counter")?;
        }
        if !self.is_ident("in") {
            return Err(self.unexpected("in", "after the iteration variable"));
        }
        self.next();
        let iter = self.expr()?;
        self.push_scope();
        let vslot = self.declare_sym(var, false, "variable", vpos);
        let cslot = match counter {
            Some((c, cpos)) => Some(self.declare_sym(c, false, "variable", cpos)),
            None => None,
        };
        let body = self.loop_body();
        self.pop_scope();
        let body = body?;
        Ok(Expr::For(vslot, cslot, Box::new((iter, body)), pos))
    }

    fn switch(&mut self, pos: Pos) -> Result<Expr, EvalError> {
        let subject = self.expr()?;
        self.expect("{", "to start a switch block")?;
        let mut cases: Vec<SwitchCase> = Vec::new();
        let mut default: Option<Expr> = None;
        let mut seen_range = false;
        loop {
            if self.eat("}") {
                break;
            }
            let cpos = self.pos();
            if default.is_some() {
                return Err(perr("WrongSwitchDefaultCase", "Default case must be the last", cpos));
            }
            let mut values = Vec::new();
            let mut ranges = Vec::new();
            let mut is_default = false;
            if matches!(self.peek(), Tok::Ident(s) if s == "_") {
                self.next();
                is_default = true;
            } else {
                loop {
                    let e = self.unary_no_range()?;
                    let e = if self.is_punct("..") || self.is_punct("..=") {
                        let incl = self.is_punct("..=");
                        self.next();
                        let hi = self.unary_no_range()?;
                        match (&e, &hi) {
                            (Expr::Const(Value::Int(a), _), Expr::Const(Value::Int(b), _)) => {
                                ranges.push((*a, *b, incl));
                                seen_range = true;
                            }
                            _ => return Err(perr("ExprExpected", "Expecting a constant range", cpos)),
                        }
                        None
                    } else {
                        Some(e)
                    };
                    if let Some(e) = e {
                        match e {
                            Expr::Const(v, p) => {
                                if seen_range && matches!(v, Value::Int(_) | Value::Float(_)) {
                                    return Err(perr("WrongSwitchIntegerCase", "Numeric switch case cannot follow a range case", p));
                                }
                                values.push(v);
                            }
                            Expr::Array(..) | Expr::Map(..) | Expr::Interp(..) | Expr::Unary(..) | Expr::Binary(..) => {
                                let v = const_value(&e).ok_or_else(|| perr("ExprExpected", "Expecting a constant", cpos))?;
                                values.push(v);
                            }
                            _ => return Err(perr("ExprExpected", "Expecting a constant", cpos)),
                        }
                    }
                    if !self.eat("|") {
                        break;
                    }
                }
            }
            let guard = if self.is_ident("if") {
                if is_default {
                    return Err(perr("WrongSwitchCaseCondition", "Default case cannot have a condition", self.pos()));
                }
                self.next();
                Some(self.expr()?)
            } else {
                None
            };
            self.expect("=>", "in this switch case")?;
            let body = if self.is_punct("{") { self.block()? } else { self.stmt_expr()? };
            let blocky = matches!(body, Expr::Block(_));
            if is_default {
                default = Some(body);
            } else {
                cases.push(SwitchCase { values, ranges, guard, body });
            }
            if self.eat("}") {
                break;
            }
            if !self.eat(",") && !blocky {
                return Err(self.unexpected(",", "to separate the items in this switch block"));
            }
        }
        Ok(Expr::Switch(
            Box::new(subject),
            cases,
            Box::new(default.unwrap_or(Expr::Const(Value::Unit, pos))),
            pos,
        ))
    }

    fn stmt_expr(&mut self) -> Result<Expr, EvalError> {
        if self.is_ident("break") || self.is_ident("continue") || self.is_ident("return") || self.is_ident("throw") {
            return self.stmt();
        }
        self.expr()
    }

    fn unary_no_range(&mut self) -> Result<Expr, EvalError> {
        // A switch case value: a unary expression (no binary operators at
        // range precedence or below).
        self.enter()?;
        let r = self.binary(150);
        self.leave();
        r
    }
}

fn const_value(e: &Expr) -> Option<Value> {
    match e {
        Expr::Const(v, _) => Some(v.clone()),
        Expr::Array(items, _) => {
            let mut out = Vec::new();
            for i in items {
                out.push(const_value(i)?);
            }
            Some(Value::array(out))
        }
        Expr::Interp(parts, _) if parts.len() == 1 => const_value(&parts[0]),
        _ => None,
    }
}
