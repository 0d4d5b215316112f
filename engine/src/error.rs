//! Errors, named after Rhai's own variants so that callers (and the
//! conformance corpus) can match on them.

use crate::value::Value;

/// A 1-based line and column; `Pos::NONE` (0, 0) where no position applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const NONE: Pos = Pos { line: 0, col: 0 };

    pub fn new(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    pub fn is_none(&self) -> bool {
        self.line == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The script did not parse; `variant` is a Rhai `ParseErrorType` name.
    Parse,
    /// The script failed while running; `variant` is a Rhai `EvalAltResult` name.
    Runtime,
    /// A sandbox limit ended the script (output size, operations, memory...).
    Limit,
}

impl ErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Parse => "parse",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Limit => "limit",
        }
    }
}

#[derive(Clone)]
pub struct EvalError {
    pub kind: ErrorKind,
    /// Rhai's variant name, e.g. `ErrorArithmetic` or `MalformedIndexExpr`.
    pub variant: &'static str,
    pub message: String,
    pub pos: Pos,
    /// The value of a `throw` (or the error turned into a value for `catch`).
    pub value: Option<Value>,
}

impl EvalError {
    pub fn runtime(variant: &'static str, message: impl Into<String>, pos: Pos) -> EvalError {
        EvalError { kind: ErrorKind::Runtime, variant, message: message.into(), pos, value: None }
    }

    pub fn parse(variant: &'static str, message: impl Into<String>, pos: Pos) -> EvalError {
        EvalError { kind: ErrorKind::Parse, variant, message: message.into(), pos, value: None }
    }

    pub fn limit(variant: &'static str, message: impl Into<String>, pos: Pos) -> EvalError {
        EvalError { kind: ErrorKind::Limit, variant, message: message.into(), pos, value: None }
    }

    /// Sets the position if none is set yet (errors from native functions
    /// get the call site's position).
    pub fn at(mut self, pos: Pos) -> EvalError {
        if self.pos.is_none() {
            self.pos = pos;
        }
        self
    }

    pub fn arithmetic(message: impl Into<String>) -> EvalError {
        EvalError::runtime("ErrorArithmetic", message, Pos::NONE)
    }

    pub fn mismatch(expected: &str, actual: &str) -> EvalError {
        EvalError::runtime(
            "ErrorMismatchDataType",
            format!("Data type incorrect: {} (expecting {})", actual, expected),
            Pos::NONE,
        )
    }
}

pub type EvalResult<T> = Result<T, EvalError>;
