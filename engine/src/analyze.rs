//! Editor support: diagnostics (placeholder until the symbol index lands).

use crate::json;
use crate::parser::parse_program;

pub fn analyze(source: &str) -> String {
    let mut out = String::from("{\"diagnostics\":[");
    if let Err(e) = parse_program(source, &[], false) {
        out.push_str(&format!("{{\"line\":{},\"column\":{},\"message\":", e.pos.line, e.pos.col));
        json::write_str(&mut out, &e.message);
        out.push_str(",\"type\":");
        json::write_str(&mut out, e.variant);
        out.push('}');
    }
    out.push_str("],\"symbols\":[],\"references\":[]}");
    out
}
