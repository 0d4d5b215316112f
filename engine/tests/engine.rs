//! End-to-end tests of the engine core through its public entry points.

use picloud_engine::abi::{eval_request, NativeHost};
use picloud_engine::analyze::analyze;
use picloud_engine::engine::{execute, Mode, Request};
use picloud_engine::error::ErrorKind;
use picloud_engine::format::to_debug;
use picloud_engine::value::Value;

type Outcome = Result<Value, (ErrorKind, &'static str)>;

fn run(src: &str) -> (Outcome, String) {
    let mut host = NativeHost::default();
    let r = execute(&Request::new(Mode::Script, src), &mut host).map_err(|e| (e.kind, e.variant));
    (r, host.stdout)
}

fn value(src: &str) -> String {
    match run(src).0 {
        Ok(v) => to_debug(&v),
        Err((k, v)) => panic!("{} failed: {:?} {}", src, k, v),
    }
}

fn error(src: &str) -> (ErrorKind, &'static str) {
    match run(src).0 {
        Ok(v) => panic!("{} succeeded with {}", src, to_debug(&v)),
        Err(e) => e,
    }
}

#[test]
fn integer_semantics() {
    assert_eq!(error("9223372036854775807 + 1"), (ErrorKind::Runtime, "ErrorArithmetic"));
    assert_eq!(error("let x = -9223372036854775808; x / -1"), (ErrorKind::Runtime, "ErrorArithmetic"));
    assert_eq!(error("2 ** 64"), (ErrorKind::Runtime, "ErrorArithmetic"));
    assert_eq!(error("1 / 0"), (ErrorKind::Runtime, "ErrorArithmetic"));
    assert_eq!(value("-7 / 2"), "-3");
    assert_eq!(value("-7 % 2"), "-1");
    assert_eq!(value("-5 ** 2"), "25");
    assert_eq!(value("2 ** 3 ** 2"), "512");
    assert_eq!(value("1 << -1"), "0");
    assert_eq!(value("8 >> -1"), "16");
    assert_eq!(value("1 << 64"), "0");
    assert_eq!(value("type_of(9223372036854775808)"), "\"f64\"");
}

#[test]
fn mixed_types() {
    assert_eq!(value("1 + 2.5"), "3.5");
    assert_eq!(value("1 == \"1\""), "false");
    assert_eq!(value("1 != \"1\""), "true");
    assert_eq!(value("\"a\" + 1 + true"), "\"a1true\"");
    assert_eq!(value("1.0 / 0.0 > 1e300"), "true");
}

#[test]
fn strings_and_chars() {
    assert_eq!(value("\"héllo\"[1]"), "'é'");
    assert_eq!(value("\"hello\"[-1]"), "'o'");
    assert_eq!(value("let s = \"hello\"; s[0] = 'J'; s"), "\"Jello\"");
    assert_eq!(value("let x = 7; `a ${x * 6} b`"), "\"a 42 b\"");
    assert_eq!(value("let y = \"hello\"; y[1..3]"), "\"el\"");
}

#[test]
fn control_flow() {
    assert_eq!(value("let n = 0; for x in 5..1 { n += 1 } n"), "0");
    assert_eq!(value("let n = 0; for x in 1..=3 { n += x } n"), "6");
    assert_eq!(value("let s = 0; for (x, i) in [10, 20] { s += x * i } s"), "20");
    assert_eq!(value("let x = loop { break 42; }; x"), "42");
    assert_eq!(value("let i = 0; do { i += 1 } until i >= 3; i"), "3");
    assert_eq!(value("switch 5 { 1 | 2 => 'a', 3..=6 if true => 'b', _ => 'c' }"), "'b'");
    assert_eq!(value("switch 1.0 { 1 => 'i', _ => 'f' }"), "'f'");
    assert_eq!(value("switch 9 { 1 => 2 }"), "()");
    assert_eq!(error("if 1 {}"), (ErrorKind::Parse, "MismatchedType"));
    assert_eq!(error("let x = 0; break;"), (ErrorKind::Parse, "LoopBreak"));
}

#[test]
fn functions_and_closures() {
    assert_eq!(value("fn f(x) { x + 1 } fn f(x, y) { x + y } f(1) + f(2, 3)"), "7");
    assert_eq!(value("let r = g(); fn g() { 5 } r"), "5");
    assert_eq!(error("let a = 1; fn f() { a } f()"), (ErrorKind::Runtime, "ErrorInFunctionCall"));
    assert_eq!(value("fn inc() { this += 1 } let x = 41; x.inc(); x"), "42");
    assert_eq!(value("let x = 1; let f = || x; x = 5; f.call()"), "5");
    assert_eq!(value("let x = 1; let f = || { x += 1 }; f.call(); f.call(); x"), "3");
    assert_eq!(value("let add = |a, b| a + b; let inc = add.curry(1); inc.call(41)"), "42");
    assert_eq!(value("fn dbl(x) { x * 2 } let f = Fn(\"dbl\"); call(f, 21)"), "42");
    assert_eq!(value("fn f(a) {} is_def_fn(\"f\", 1) && !is_def_fn(\"f\", 2)"), "true");
    assert_eq!(value("let a = 1; is_def_var(\"a\") && !is_def_var(\"b\")"), "true");
    assert_eq!(error("fn f(n) { f(n + 1) } f(0)"), (ErrorKind::Runtime, "ErrorStackOverflow"));
    assert_eq!(error("fn f(x) {} fn f(y) {}"), (ErrorKind::Parse, "FnDuplicatedDefinition"));
}

#[test]
fn errors_and_catch() {
    assert_eq!(value("try { throw 42 } catch (e) { e }"), "42");
    assert_eq!(value("try { 1 / 0 } catch (e) { type_of(e.message) }"), "\"string\"");
    assert_eq!(error("throw \"x\""), (ErrorKind::Runtime, "ErrorRuntime"));
    assert_eq!(error("try { 1 / 0 } catch { throw }"), (ErrorKind::Runtime, "ErrorArithmetic"));
    let (r, out) = run("print(\"before\"); undefined_var + 1");
    assert_eq!(r.err(), Some((ErrorKind::Runtime, "ErrorVariableNotFound")));
    assert_eq!(out, "before\n");
    assert_eq!(error("const X = 1; X = 2;"), (ErrorKind::Parse, "AssignmentToConstant"));
    assert_eq!(error("let a = [1]; a[5]"), (ErrorKind::Runtime, "ErrorArrayBounds"));
}

#[test]
fn maps_and_null_safety() {
    assert_eq!(value("let m = #{a: 1}; m.b"), "()");
    assert_eq!(value("let m = #{b: 1, a: 2}; let k = []; for x in m.keys() { k.push(x) } k"), "[\"a\", \"b\"]");
    assert_eq!(value("let m = (); m?.a?.b ?? 7"), "7");
    assert_eq!(value("\"a\" in #{a: 1}"), "true");
    assert_eq!(value("3 in [1, 2, 3]"), "true");
    assert_eq!(value("let m = #{a: #{b: [1, 2]}}; m.a.b[1] = 5; m.a.b[1]"), "5");
}

#[test]
fn expression_depth_is_limited() {
    let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(error(&deep), (ErrorKind::Parse, "ExprTooDeep"));
    let ok = format!("{}1{}", "(".repeat(20), ")".repeat(20));
    assert_eq!(value(&ok), "1");
}

#[test]
fn output_limit_is_a_limit_error() {
    let mut host = NativeHost { limit: Some(100), ..NativeHost::default() };
    let r = execute(&Request::new(Mode::Script, "loop { print(\"0123456789\") }"), &mut host);
    let e = r.err().expect("must fail");
    assert_eq!((e.kind, e.variant), (ErrorKind::Limit, "ErrorTooMuchOutput"));
    // A limit error cannot be caught.
    let mut host = NativeHost { limit: Some(100), ..NativeHost::default() };
    let r = execute(&Request::new(Mode::Script, "try { loop { print(\"x\") } } catch { 1 }"), &mut host);
    assert_eq!(r.err().map(|e| e.kind), Some(ErrorKind::Limit));
}

#[test]
fn abi_request_with_vars_and_host_functions() {
    fn reply(name: &str, args: &str) -> String {
        assert_eq!(name, "twice");
        assert_eq!(args, "[{\"type\":\"int\",\"value\":21}]");
        "{\"ok\":{\"type\":\"int\",\"value\":42}}".to_string()
    }
    let mut host = NativeHost { reply: Some(reply), ..NativeHost::default() };
    let req = r#"{"mode":"script","source":"twice(request.n)","vars":{"request":{"type":"map","value":{"n":{"type":"int","value":21}}}},"host_functions":[{"name":"twice","arity":1}]}"#;
    assert_eq!(eval_request(req, &mut host), r#"{"ok":true,"value":{"type":"int","value":42}}"#);
    // A script function of the same name and arity wins.
    let req = r#"{"mode":"script","source":"fn twice(x) { 0 } twice(1)","host_functions":[{"name":"twice","arity":1}]}"#;
    assert_eq!(eval_request(req, &mut host), r#"{"ok":true,"value":{"type":"int","value":0}}"#);
    let req = r#"{"mode":"parse","source":"let = 1"}"#;
    assert!(eval_request(req, &mut host).starts_with(r#"{"ok":false,"error":{"kind":"parse""#));
}

#[test]
fn analyze_resolves_references() {
    let out = analyze("let x = 1;\nfn f(a) { a }\nlet y = f(x);\n{ let x = 2; x }\n");
    // x(0), f(1), a(2), y(3), inner x(4)
    assert!(out.contains(r#"{"id":0,"name":"x","kind":"variable","range":{"line":1,"column":5,"end_line":1,"end_column":6}}"#), "{}", out);
    assert!(out.contains(r#"{"id":1,"name":"f","kind":"function""#), "{}", out);
    assert!(out.contains(r#"{"id":2,"name":"a","kind":"parameter""#), "{}", out);
    // `a` in the body, `x` as the argument, the inner `x`, and the call of `f`.
    assert!(out.contains(r#"{"symbol":2,"range":{"line":2,"column":11,"end_line":2,"end_column":12}}"#), "{}", out);
    assert!(out.contains(r#"{"symbol":0,"range":{"line":3,"column":11,"end_line":3,"end_column":12}}"#), "{}", out);
    assert!(out.contains(r#"{"symbol":4,"range":{"line":4,"column":14,"end_line":4,"end_column":15}}"#), "{}", out);
    assert!(out.contains(r#"{"symbol":1,"range":{"line":3,"column":9,"end_line":3,"end_column":10}}"#), "{}", out);
    let bad = analyze("let x = ;");
    assert!(bad.contains(r#""diagnostics":[{"line":1,"column":9"#), "{}", bad);
}

#[test]
fn eval_bang_calls_and_global_constants() {
    assert_eq!(value("let x = 1; eval(\"let x = x + 41\"); x"), "42");
    assert_eq!(value("let x = 1; { eval(\"let x = 5\"); } x"), "1");
    assert_eq!(value("eval(\"40 + 2\")"), "42");
    assert_eq!(value("fn f() { a + b } let a = 40; let b = 2; f!()"), "42");
    assert_eq!(value("fn f() { a = 5; } let a = 1; f!(); a"), "5");
    assert_eq!(value("fn f() { let a = 5; } let a = 1; f!(); a"), "1");
    assert_eq!(value("fn f() { global::K * 2 } const K = 21; f()"), "42");
}

#[test]
fn ranges_are_values() {
    assert_eq!(value("let r = 1..4; let s = 0; for x in r { s += x } s"), "6");
    assert_eq!(value("type_of(1..=3)"), "\"range=\""); // the Rhai book: type_of an inclusive range is "range="
    assert_eq!(value("2 in 1..3 && !(3 in 1..3)"), "true");
    assert_eq!(value("let y = \"hello\"; y[1..=-1]"), "\"ello\"");
    assert_eq!(value("let x = 10; x[1..3]"), "1");
}

#[test]
fn methods_change_places_with_computed_keys() {
    assert_eq!(value("let a = [[1], [2]]; let i = 0; a[i + 1].push(5); a"), "[[1], [2, 5]]");
    assert_eq!(value("let m = #{x: #{y: []}}; let k = \"x\"; m[k].y.push(1); m.x.y"), "[1]");
    assert_eq!(value("let a = [1, 2]; a.len() + [3].len()"), "3");
}

fn error_full(src: &str) -> (&'static str, String, u32, u32) {
    let mut host = NativeHost::default();
    match execute(&Request::new(Mode::Script, src), &mut host) {
        Ok(v) => panic!("{} succeeded with {}", src, to_debug(&v)),
        Err(e) => (e.variant, e.message, e.pos.line, e.pos.col),
    }
}

#[test]
fn parse_errors_read_like_rhai_and_show_tokens_as_written() {
    let (v, m, l, c) = error_full("let x = 1\nlet y = 2;");
    assert_eq!((v, l, c), ("MissingToken", 2, 1));
    assert_eq!(m, "Expecting ';' to terminate this statement (found 'let')");
    let (v, m, _, _) = error_full("int_max := 1");
    assert_eq!(v, "MissingToken");
    assert_eq!(m, "Expecting ';' to terminate this statement (found ':')");
    let (_, m, _, _) = error_full("foo(1 2)");
    assert_eq!(m, "Expecting ')' to close the arguments list of this function call (found '2')");
    let (_, m, _, _) = error_full("let a = [1 \"x\"];");
    assert_eq!(m, "Expecting ']' to end this array literal (found \"x\")");
    let (_, m, _, _) = error_full("let m = #{a 1};");
    assert_eq!(m, "Expecting ':' to follow the property 'a' in this object map literal (found '1')");
    let (_, m, _, _) = error_full("fn f(a b) { a }");
    assert_eq!(m, "Expecting ')' to close the parameters list of function 'f' (found 'b')");
    let (_, m, _, _) = error_full("for x [1] {}");
    assert_eq!(m, "Expecting 'in' after the iteration variable (found '[')");
    let (_, m, _, _) = error_full("let x = (1 + 2;");
    assert_eq!(m, "Expecting ')' for a matching '(' in this expression (found ';')");
    let (_, m, _, _) = error_full("if true { 1");
    assert_eq!(m, "Expecting '}' to end this statement block");
    let (_, m, _, _) = error_full("let x = 1 'c'");
    assert_eq!(m, "Expecting ';' to terminate this statement (found 'c')");
    // No message anywhere shows a Rust token representation.
    for src in ["let x = 1\nlet y = 2;", "x 1.5", "x \"s\"", "x `a${1}`", "switch 1 { 1 2 }", "do {} x", "try {} x"] {
        let (_, m, _, _) = error_full(src);
        for internal in ["Ident(", "Punct(", "Int(", "Float(", "Str(", "Char(", "Interp(", "Reserved(", "Eof"] {
            assert!(!m.contains(internal), "{:?} -> {}", src, m);
        }
    }
}

#[test]
fn ranges_are_named_range_in_messages() {
    let (v, m, _, _) = error_full("(1..5).foo()");
    assert_eq!(v, "ErrorFunctionNotFound");
    assert_eq!(m, "Function not found: foo (range)");
    let (_, m, _, _) = error_full("(1..=5).foo(2)");
    assert_eq!(m, "Function not found: foo (range=, i64)");
    let (_, m, _, _) = error_full("let r = 1..5; r + 1");
    assert!(m.contains("range") && !m.contains("Fn"), "{}", m);
    let (_, m, _, _) = error_full("if 1..2 { 1 }");
    assert!(m.contains("range") && !m.contains("Fn"), "{}", m);
    assert_eq!(value("type_of(1..5)"), "\"range\"");
    assert_eq!(value("type_of(1..=5)"), "\"range=\"");
    assert_eq!(value("type_of(Fn(\"range\"))"), "\"Fn\"");
    assert_eq!(value("type_of(|x| x)"), "\"Fn\"");
    // A range is carried internally as a function pointer: it must not act as one.
    let (v, m, _, _) = error_full("call(1..5)");
    assert_eq!((v, m.as_str()), ("ErrorMismatchDataType", "Data type incorrect: range (expecting Fn)"));
    let (_, m, _, _) = error_full("let r = 1..=5; r.call(1)");
    assert_eq!(m, "Data type incorrect: range= (expecting Fn)");
    let (_, m, _, _) = error_full("curry(1..5, 1)");
    assert_eq!(m, "Data type incorrect: range (expecting Fn)");
    let (v, m, _, _) = error_full("let r = 1..5; r(1)");
    assert_eq!((v, m.as_str()), ("ErrorFunctionNotFound", "Function not found: r (i64)"));
}

#[test]
fn is_def_var_with_a_computed_name() {
    assert_eq!(value("let x = 1; let n = \"x\"; is_def_var(n)"), "true");
    assert_eq!(value("let n = \"x\"; is_def_var(n)"), "false");
    assert_eq!(value("let x = 1; is_def_var(\"x\" + \"\")"), "true");
    assert_eq!(value("let x = 1; is_def_var(`${\"x\"}`)"), "true");
    // Only variables declared so far and still in scope.
    assert_eq!(value("let n = \"y\"; let a = is_def_var(n); let y = 2; [a, is_def_var(n)]"), "[false, true]");
    assert_eq!(value("let n = \"z\"; { let z = 1; } is_def_var(n)"), "false");
    assert_eq!(value("let r = []; for i in 0..2 { let n = \"w\"; r.push(is_def_var(n)); let w = i; } r"), "[false, false]");
    // Functions see their parameters and locals, not the caller's variables.
    assert_eq!(value("fn f(a, n) { is_def_var(n) } let x = 1; [f(1, \"a\"), f(1, \"x\")]"), "[true, false]");
    // Closures see their parameters and what they captured.
    assert_eq!(value("let x = 1; let f = |n| { x; is_def_var(n) }; [f(\"x\"), f(\"n\"), f(\"q\")]"), "[true, true, false]");
    let (v, m, _, _) = error_full("is_def_var(42)");
    assert_eq!((v, m.as_str()), ("ErrorFunctionNotFound", "Function not found: is_def_var (i64)"));
}

#[test]
fn deeply_nested_values_drop_without_recursion() {
    // Each would overflow the test thread's stack if dropped recursively.
    let scripts = [
        "let a = []; for i in 0..200000 { a = [a]; } a = (); 1",
        "let m = #{}; for i in 0..100000 { m = #{x: m, y: [m]}; } 1",
        "fn id(x) { x } let f = Fn(\"id\"); for i in 0..100000 { f = Fn(\"id\").curry(f); } 1",
        "let b = []; for i in 0..100000 { let c = b; b = [|| c]; } 1",
    ];
    for src in scripts {
        assert_eq!(value(src), "1", "{}", src);
    }
}

#[test]
fn eval_of_a_computed_string_sees_and_changes_the_callers_variables() {
    let plus = "\"x = x + \" + \"41\"";
    assert_eq!(value(&format!("let x = 1; eval({}); x", plus)), "42");
    assert_eq!(value("let y = [1, 2]; eval(\"y.push\" + \"(3)\"); y"), "[1, 2, 3]");
    assert_eq!(value("fn f(a) { let b = 10; eval(\"a + b\" + \" + 0\") } f(5)"), "15");
    // Inside a closure: a captured variable is changed through its shared cell.
    assert_eq!(value("let z = 0; let g = || { z; eval(\"z += \" + \"5\"); z }; [g(), z]"), "[5, 5]");
    // Shadowing: the innermost variable of that name is the one `eval` sees.
    assert_eq!(value("let x = 1; { let x = 100; eval(\"x += \" + \"1\"); x } + x * 1000"), "1101");
    // Changes made before an error stay.
    assert_eq!(value("let k = 7; try { eval(\"k = 8; throw \" + \"1\"); } catch { } k"), "8");
    // Variables the evaluated script declares stay inside it.
    assert_eq!(value("eval(\"let w = \" + \"5\"); is_def_var(\"w\")"), "false");
    assert_eq!(error("let s = 5; eval(s)"), (ErrorKind::Runtime, "ErrorMismatchDataType"));
    // The caller's script functions can be called (the Rhai book's example).
    let book = "let x = 10; fn foo(x) { x += 12; x } let script = \"let y = x;\"; \
                script += \"y += foo(y);\"; script += \"x + y\"; [eval(script), x]";
    assert_eq!(value(book), "[42, 10]");
    assert_eq!(value("fn rec(n) { if n == 0 { 0 } else { eval(\"rec(\" + (n - 1) + \")\") + 1 } } rec(20)"), "20");
    // A script function named `eval` (or `is_def_var`) is an ordinary function: it sees the
    // caller's variables only when called with `!`.
    assert_eq!(error("fn eval(x) { x + y } let y = 1; eval(1)"), (ErrorKind::Runtime, "ErrorInFunctionCall"));
    assert_eq!(value("fn eval(x) { x + y } let y = 1; eval!(1)"), "2");
    assert_eq!(error("fn is_def_var(x) { y } let y = 1; is_def_var(1)"), (ErrorKind::Runtime, "ErrorInFunctionCall"));
    // Output and host calls from the evaluated script reach the caller's host.
    let (r, out) = run("fn hi(n) { print(\"hi \" + n); n } eval(\"print(1); \" + \"hi(2)\")");
    assert_eq!((to_debug(&r.unwrap()), out), ("2".to_string(), "1\nhi 2\n".to_string()));
    assert_eq!(error("fn boom(n) { eval(\"boom(\" + (n + 1) + \")\") } boom(0)"), (ErrorKind::Runtime, "ErrorStackOverflow"));
}
