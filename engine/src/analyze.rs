//! Editor support (`pi_analyze`): diagnostics and a symbol index. Every
//! declaration (variable, constant, function, parameter) gets an id and a
//! range; every reference is resolved to its declaration by the same scope
//! rules the compiler uses.

use crate::error::Pos;
use crate::json;
use crate::parser::parse_with_index;

fn write_range(out: &mut String, pos: Pos, len: usize) {
    out.push_str(&format!(
        "{{\"line\":{},\"column\":{},\"end_line\":{},\"end_column\":{}}}",
        pos.line,
        pos.col,
        pos.line,
        pos.col as usize + len
    ));
}

/// The `pi_analyze` response for a source text.
pub fn analyze(source: &str) -> String {
    let (result, index) = parse_with_index(source, &[], false);
    let mut out = String::from("{\"diagnostics\":[");
    if let Err(e) = &result {
        out.push_str(&format!("{{\"line\":{},\"column\":{},\"message\":", e.pos.line, e.pos.col));
        json::write_str(&mut out, &e.message);
        out.push_str(",\"type\":");
        json::write_str(&mut out, e.variant);
        out.push('}');
    }
    out.push_str("],\"symbols\":[");
    for (id, s) in index.symbols.iter().enumerate() {
        if id > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"id\":{},\"name\":", id));
        json::write_str(&mut out, &s.name);
        out.push_str(",\"kind\":");
        json::write_str(&mut out, s.kind);
        out.push_str(",\"range\":");
        write_range(&mut out, s.pos, s.name.chars().count());
        out.push('}');
    }
    out.push_str("],\"references\":[");
    for (i, (sym, pos, len)) in index.references.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"symbol\":{},\"range\":", sym));
        write_range(&mut out, *pos, *len);
        out.push('}');
    }
    out.push_str("]}");
    out
}
