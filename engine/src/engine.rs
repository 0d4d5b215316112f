//! One request, end to end: parse, bind, run, and answer in the ABI's JSON.

use std::rc::Rc;

use crate::error::{EvalError, Pos};
use crate::interp::{Host, Interp};
use crate::json::{self, Json};
use crate::parser::parse_program;
use crate::value::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Script,
    Expression,
    Parse,
    ParseExpression,
}

impl Mode {
    pub fn from_name(s: &str) -> Option<Mode> {
        Some(match s {
            "script" | "eval" | "run" => Mode::Script,
            "expression" | "eval_expression" => Mode::Expression,
            "parse" | "compile" => Mode::Parse,
            "parse_expression" | "compile_expression" => Mode::ParseExpression,
            _ => return None,
        })
    }
}

pub struct Request {
    pub mode: Mode,
    pub source: String,
    pub vars: Vec<(String, Value)>,
    pub host_functions: Vec<(String, usize)>,
}

impl Request {
    pub fn new(mode: Mode, source: &str) -> Request {
        Request { mode, source: source.to_string(), vars: Vec::new(), host_functions: Vec::new() }
    }

    /// Reads a `pi_eval` request document.
    pub fn from_json(text: &str) -> Result<Request, String> {
        let doc = json::parse(text)?;
        let mode = doc.get("mode").and_then(Json::as_str).unwrap_or("script");
        let mode = Mode::from_name(mode).ok_or_else(|| format!("unknown mode '{}'", mode))?;
        let source = doc.get("source").and_then(Json::as_str).ok_or("missing 'source'")?.to_string();
        let mut vars = Vec::new();
        if let Some(Json::Object(members)) = doc.get("vars") {
            for (k, v) in members {
                vars.push((k.clone(), json::typed_from_json(v)?));
            }
        }
        let mut host_functions = Vec::new();
        if let Some(Json::Array(items)) = doc.get("host_functions") {
            for item in items {
                let name = item.get("name").and_then(Json::as_str).ok_or("host function without a name")?;
                let arity = match item.get("arity") {
                    Some(Json::Int(n)) if *n >= 0 => *n as usize,
                    _ => return Err("host function without an arity".to_string()),
                };
                host_functions.push((name.to_string(), arity));
            }
        }
        Ok(Request { mode, source, vars, host_functions })
    }
}

/// Runs one request to its value or error.
pub fn execute(req: &Request, host: &mut dyn Host) -> Result<Value, EvalError> {
    let names: Vec<Rc<str>> = req.vars.iter().map(|(k, _)| Rc::from(k.as_str())).collect();
    let expression_only = matches!(req.mode, Mode::Expression | Mode::ParseExpression);
    let prog = parse_program(&req.source, &names, expression_only)?;
    if matches!(req.mode, Mode::Parse | Mode::ParseExpression) {
        return Ok(Value::Unit);
    }
    let inputs: Vec<Value> = req.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut interp = Interp::new(&prog, &req.host_functions, host);
    interp.run_main(inputs)
}

pub fn error_json(out: &mut String, e: &EvalError) {
    out.push_str("{\"kind\":");
    json::write_str(out, e.kind.as_str());
    out.push_str(",\"type\":");
    json::write_str(out, e.variant);
    out.push_str(",\"message\":");
    json::write_str(out, &e.message);
    let pos = if e.pos.is_none() { Pos::NONE } else { e.pos };
    out.push_str(&format!(",\"line\":{},\"column\":{}}}", pos.line, pos.col));
}

/// The ABI response document for a result.
pub fn response_json(r: &Result<Value, EvalError>) -> String {
    let mut out = String::new();
    match r {
        Ok(v) => {
            out.push_str("{\"ok\":true,\"value\":");
            json::write_typed(&mut out, v);
            out.push('}');
        }
        Err(e) => {
            out.push_str("{\"ok\":false,\"error\":");
            error_json(&mut out, e);
            out.push('}');
        }
    }
    out
}
