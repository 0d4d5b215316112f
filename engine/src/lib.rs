//! PiCloud's Rhai engine.

pub mod error;
pub mod native;
pub mod value;
pub mod format;
pub mod json;
pub mod stdlib;
pub mod abi;
pub mod analyze;
pub mod ast;
pub mod engine;
pub mod interp;
pub mod lexer;
pub mod ops;
pub mod parser;
