//! A native runner for the engine, for fast iteration and scoring:
//!
//! - `rhai-native FILE.rhai`: runs the script; `print` to stdout, `debug` to
//!   stderr, an error to stderr with exit status 1.
//! - `rhai-native --analyze FILE.rhai`: prints the `pi_analyze` answer.
//! - `rhai-native --batch`: reads JSON lines `{"id", "source", "mode"}` from
//!   stdin and writes one line `{"id", "ok", "value", "stdout", "error"}` each.

use std::io::{BufRead, Write};

use picloud_engine::abi::NativeHost;
use picloud_engine::engine::{error_json, execute, Mode, Request};
use picloud_engine::json::{self, Json};

fn batch() {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in stdin.lock().lines() {
        let line = match line {
            Ok(l) => l,
            Err(_) => break,
        };
        if line.trim().is_empty() {
            continue;
        }
        let mut resp = String::from("{\"id\":");
        let doc = match json::parse(&line) {
            Ok(d) => d,
            Err(e) => {
                resp.push_str("null,\"ok\":false,\"stdout\":\"\",\"error\":{\"kind\":\"runtime\",\"type\":\"ErrorRuntime\",\"message\":");
                json::write_str(&mut resp, &format!("bad request: {}", e));
                resp.push_str(",\"line\":0,\"column\":0}}");
                let _ = writeln!(out, "{}", resp);
                continue;
            }
        };
        match doc.get("id") {
            Some(id) => id.write(&mut resp),
            None => resp.push_str("null"),
        }
        let mode = doc.get("mode").and_then(Json::as_str).and_then(Mode::from_name).unwrap_or(Mode::Script);
        let source = doc.get("source").and_then(Json::as_str).unwrap_or("");
        let req = Request::new(mode, source);
        let mut host = NativeHost::default();
        let r = execute(&req, &mut host);
        match &r {
            Ok(v) => {
                resp.push_str(",\"ok\":true,\"value\":");
                json::write_typed(&mut resp, v);
            }
            Err(e) => {
                resp.push_str(",\"ok\":false,\"error\":");
                error_json(&mut resp, e);
            }
        }
        resp.push_str(",\"stdout\":");
        json::write_str(&mut resp, &host.stdout);
        resp.push('}');
        let _ = writeln!(out, "{}", resp);
        let _ = out.flush();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 2 && args[1] == "--batch" {
        batch();
        return;
    }
    if args.len() == 3 && args[1] == "--analyze" {
        let source = std::fs::read_to_string(&args[2]).unwrap_or_default();
        println!("{}", picloud_engine::analyze::analyze(&source));
        return;
    }
    if args.len() != 2 {
        eprintln!("usage: rhai-native FILE.rhai | --batch");
        std::process::exit(2);
    }
    let source = match std::fs::read_to_string(&args[1]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read {}: {}", args[1], e);
            std::process::exit(2);
        }
    };
    let req = Request::new(Mode::Script, &source);
    let mut host = NativeHost { passthrough: true, ..NativeHost::default() };
    if let Err(e) = execute(&req, &mut host) {
        eprintln!("{} error: {} ({}) at line {}, column {}", e.kind.as_str(), e.variant, e.message, e.pos.line, e.pos.col);
        std::process::exit(1);
    }
}
