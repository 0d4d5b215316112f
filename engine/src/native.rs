//! The interface between the interpreter and native (built-in) functions.
//!
//! The compiler resolves a call's name and arity to a `NativeFn` once, at
//! compile time (`stdlib::resolve`); at run time a call is an indirect jump.
//! A native function receives its arguments as a mutable slice: for a method
//! call (`x.push(1)`) `args[0]` is the receiver and any change a function
//! makes to it is written back to the variable by the interpreter.
//! A native function that does not accept the argument types it was given
//! returns `Err(NativeError::NoMatch)`, and the interpreter reports
//! `ErrorFunctionNotFound` with the signature.

use crate::error::EvalError;
use crate::value::{FnPtr, Value};

/// What a native function can ask of the interpreter that called it.
pub trait Caller {
    /// Calls a function pointer (script function, closure, or built-in) with
    /// the given arguments; curried arguments are prepended by the callee.
    fn call_fn_ptr(&mut self, f: &FnPtr, args: Vec<Value>) -> Result<Value, EvalError>;
    /// Whether a script function with this name and arity is defined.
    fn has_script_fn(&self, name: &str, arity: usize) -> bool;
    /// Sends one line of `print` (debug = false) or `debug` output to the host.
    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError>;

    /// How many parameters the target of `f` declares, not counting the
    /// arguments already curried into `f`; `None` if unknown (a built-in).
    /// Callbacks use it as Rhai does: `map(|v| ..)` gets the element,
    /// `map(|v, i| ..)` also the index, and `map(|| this ..)` gets the element
    /// as `this`. The default answers `None` (callbacks then get one argument).
    fn fn_ptr_arity(&self, f: &FnPtr) -> Option<usize> {
        let _ = f;
        None
    }

    /// Calls `f` in method-call style: inside the callee `this` is `this`,
    /// and what the callee does to `this` is seen by the caller afterwards
    /// (`arr.for_each(|| this += 1)`). The default reports that the
    /// interpreter does not support it.
    fn call_fn_ptr_this(&mut self, f: &FnPtr, this: &mut Value, args: Vec<Value>) -> Result<Value, EvalError> {
        let _ = (this, args);
        Err(EvalError::runtime(
            "ErrorFunctionNotFound",
            format!("Function not found: {} (with `this`)", f.name),
            crate::error::Pos::NONE,
        ))
    }
}

pub enum NativeError {
    /// The argument types do not fit this function: report "function not found".
    NoMatch,
    Error(EvalError),
}

impl From<EvalError> for NativeError {
    fn from(e: EvalError) -> NativeError {
        NativeError::Error(e)
    }
}

pub type NativeResult = Result<Value, NativeError>;
pub type NativeFn = fn(&mut dyn Caller, &mut [Value]) -> NativeResult;
