//! Unit tests for the standard library. A small `Caller` runs callbacks as
//! Rust closures registered by name (with their declared parameter count),
//! and falls back to the library itself for built-in names.

use std::collections::HashMap;
use std::rc::Rc;

use super::resolve;
use crate::error::{EvalError, Pos};
use crate::format::to_debug;
use crate::native::{Caller, NativeError};
use crate::value::{FnPtr, Map, Value};

type Callback = Box<dyn Fn(&mut Value, &[Value]) -> Result<Value, EvalError>>;

#[derive(Default)]
struct Host {
    fns: HashMap<String, (usize, Callback)>,
    out: Vec<(String, bool)>,
}

impl Host {
    fn with(mut self, name: &str, params: usize, f: impl Fn(&mut Value, &[Value]) -> Result<Value, EvalError> + 'static) -> Host {
        self.fns.insert(name.to_string(), (params, Box::new(f)));
        self
    }
}

impl Caller for Host {
    fn call_fn_ptr(&mut self, f: &FnPtr, args: Vec<Value>) -> Result<Value, EvalError> {
        let mut this = Value::Unit;
        self.call_fn_ptr_this(f, &mut this, args)
    }

    fn has_script_fn(&self, name: &str, arity: usize) -> bool {
        self.fns.get(name).map(|(n, _)| *n == arity).unwrap_or(false)
    }

    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError> {
        self.out.push((text.to_string(), debug));
        Ok(())
    }

    fn fn_ptr_arity(&self, f: &FnPtr) -> Option<usize> {
        self.fns.get(&*f.name).map(|(n, _)| n.saturating_sub(f.curry.len()))
    }

    fn call_fn_ptr_this(&mut self, f: &FnPtr, this: &mut Value, args: Vec<Value>) -> Result<Value, EvalError> {
        let mut all = f.curry.clone();
        all.extend(args);
        if let Some((n, cb)) = self.fns.get(&*f.name) {
            if *n != all.len() {
                return Err(EvalError::runtime("ErrorFunctionNotFound", format!("{} with {}", f.name, all.len()), Pos::NONE));
            }
            return cb(this, &all);
        }
        match resolve(&f.name, all.len()) {
            Some(native) => match native(self, &mut all) {
                Ok(v) => Ok(v),
                Err(NativeError::Error(e)) => Err(e),
                Err(NativeError::NoMatch) => Err(EvalError::runtime("ErrorFunctionNotFound", f.name.to_string(), Pos::NONE)),
            },
            None => Err(EvalError::runtime("ErrorFunctionNotFound", f.name.to_string(), Pos::NONE)),
        }
    }
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn ints(v: &[i64]) -> Value {
    Value::array(v.iter().map(|i| Value::Int(*i)).collect())
}

fn fp(name: &str) -> Value {
    Value::FnPtr(Rc::new(FnPtr { name: Rc::from(name), curry: Vec::new(), env: None }))
}

fn as_int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an int: {}", to_debug(other)),
    }
}

/// Calls library function `name` with `args`; answers the result and the
/// arguments afterwards (to see in-place changes).
fn call_on(h: &mut Host, name: &str, mut args: Vec<Value>) -> (Result<Value, String>, Vec<Value>) {
    let f = resolve(name, args.len()).unwrap_or_else(|| panic!("no {}/{}", name, args.len()));
    let r = match f(h, &mut args) {
        Ok(v) => Ok(v),
        Err(NativeError::NoMatch) => Err("NoMatch".to_string()),
        Err(NativeError::Error(e)) => Err(e.variant.to_string()),
    };
    (r, args)
}

fn call(name: &str, args: Vec<Value>) -> (Result<Value, String>, Vec<Value>) {
    call_on(&mut Host::default(), name, args)
}

/// The debug text of the result (or the error variant).
fn dbg(name: &str, args: Vec<Value>) -> String {
    match call(name, args).0 {
        Ok(v) => to_debug(&v),
        Err(e) => e,
    }
}

/// The debug text of the receiver after the call.
fn after(name: &str, args: Vec<Value>) -> String {
    let (r, args) = call(name, args);
    if let Err(e) = r {
        return e;
    }
    to_debug(&args[0])
}

#[test]
fn resolve_answers_known_names_only() {
    assert!(resolve("len", 1).is_some());
    assert!(resolve("get$len", 1).is_some());
    assert!(resolve("len", 2).is_none());
    assert!(resolve("no_such_function", 1).is_none());
    assert_eq!(dbg("len", vec![int(3)]), "NoMatch");
}

#[test]
fn strings_by_character() {
    let hearts = Value::str("\u{2764}\u{2764}\u{2764} hello! \u{2764}\u{2764}\u{2764}");
    assert_eq!(dbg("len", vec![Value::str("héllo")]), "5");
    assert_eq!(dbg("bytes", vec![Value::str("héllo")]), "6");
    assert_eq!(dbg("sub_string", vec![Value::str("hello! ❤❤❤"), int(-2), int(2)]), "\"❤❤\"");
    assert_eq!(dbg("sub_string", vec![hearts.clone(), int(1), int(5)]), "\"❤❤ he\"");
    assert_eq!(dbg("sub_string", vec![hearts.clone(), int(99)]), "\"\"");
    assert_eq!(dbg("sub_string", vec![hearts.clone(), int(1), int(-1)]), "\"\"");
    assert_eq!(after("crop", vec![hearts.clone(), int(4), int(6)]), "\"hello!\"");
    assert_eq!(dbg("index_of", vec![hearts.clone(), Value::Char('❤')]), "0");
    assert_eq!(dbg("index_of", vec![hearts.clone(), Value::Char('❤'), int(5)]), "11");
    assert_eq!(dbg("index_of", vec![hearts.clone(), Value::Char('❤'), int(-6)]), "11");
    assert_eq!(dbg("index_of", vec![hearts.clone(), Value::Char('❤'), int(999)]), "-1");
    assert_eq!(dbg("index_of", vec![hearts, Value::str("hello")]), "4");
    assert_eq!(dbg("get", vec![Value::str("héllo"), int(1)]), "'é'");
    assert_eq!(dbg("get", vec![Value::str("héllo"), int(-1)]), "'o'");
    assert_eq!(dbg("get", vec![Value::str("héllo"), int(9)]), "()");
    assert_eq!(after("set", vec![Value::str("héllo"), int(1), Value::Char('e')]), "\"hello\"");
}

#[test]
fn strings_change_in_place() {
    assert_eq!(after("trim", vec![Value::str("  a b \n")]), "\"a b\"");
    assert_eq!(after("pad", vec![Value::str("ab"), int(5), Value::Char('*')]), "\"ab***\"");
    assert_eq!(after("pad", vec![Value::str("ab"), int(6), Value::str("xy")]), "\"abxyxy\"");
    assert_eq!(after("pad", vec![Value::str("abc"), int(2), Value::Char('*')]), "\"abc\"");
    assert_eq!(after("truncate", vec![Value::str("héllo"), int(2)]), "\"hé\"");
    assert_eq!(after("replace", vec![Value::str("a-b-c"), Value::Char('-'), Value::str("+")]), "\"a+b+c\"");
    assert_eq!(after("replace", vec![Value::str("aXXb"), Value::str("XX"), Value::Char('y')]), "\"ayb\"");
    assert_eq!(after("remove", vec![Value::str("hello"), Value::Char('l')]), "\"heo\"");
    assert_eq!(after("clear", vec![Value::str("hello")]), "\"\"");
    assert_eq!(after("make_upper", vec![Value::str("abc")]), "\"ABC\"");
    assert_eq!(dbg("to_upper", vec![Value::str("abc")]), "\"ABC\"");
    assert_eq!(dbg("to_lower", vec![Value::Char('Q')]), "'q'");
    assert_eq!(after("make_upper", vec![Value::Char('q')]), "'Q'");
    assert_eq!(after("append", vec![Value::str("a"), Value::Float(1.0)]), "\"a1.0\"");
    let (r, args) = call("pop", vec![Value::str("héllo"), int(4)]);
    assert_eq!(to_debug(&r.unwrap()), "\"éllo\"");
    assert_eq!(to_debug(&args[0]), "\"h\"");
    assert_eq!(dbg("pop", vec![Value::str("")]), "()");
    assert_eq!(dbg("+", vec![Value::str("a"), Value::Blob(Rc::new(b"bc".to_vec()))]), "\"abc\"");
    // A shared receiver: the change reaches the cell.
    let cell = Rc::new(std::cell::RefCell::new(Value::str(" x ")));
    let (r, _) = call("trim", vec![Value::Shared(cell.clone())]);
    assert!(r.is_ok());
    assert_eq!(to_debug(&cell.borrow()), "\"x\"");
}

#[test]
fn string_split_and_parse() {
    assert_eq!(dbg("split", vec![Value::str("a,b,c"), Value::str(",")]), "[\"a\", \"b\", \"c\"]");
    assert_eq!(dbg("split", vec![Value::str("a,b,c"), Value::Char(','), int(2)]), "[\"a\", \"b,c\"]");
    assert_eq!(dbg("split", vec![Value::str("a,b,c"), int(3)]), "[\"a,b\", \",c\"]");
    assert_eq!(dbg("split", vec![Value::str(" a  b c ")]), "[\"a\", \"b\", \"c\"]");
    assert_eq!(dbg("split_rev", vec![Value::str("a,b,c"), Value::str(","), int(2)]), "[\"c\", \"a,b\"]");
    assert_eq!(dbg("parse_int", vec![Value::str("42")]), "42");
    assert_eq!(dbg("parse_int", vec![Value::str("abcdef"), int(16)]), "11259375");
    assert_eq!(dbg("parse_int", vec![Value::str("4x")]), "ErrorArithmetic");
    assert_eq!(dbg("parse_float", vec![Value::str("9.9999")]), "9.9999");
    assert_eq!(dbg("chars", vec![Value::str("héllo"), Value::range_parts(2, 3, true)]), "['l', 'l']");
    assert_eq!(dbg("to_string", vec![Value::Float(1.0)]), "\"1.0\"");
    assert_eq!(dbg("to_debug", vec![Value::str("a")]), "\"\\\"a\\\"\"");
}

#[test]
fn arrays_positions_and_changes() {
    assert_eq!(after("insert", vec![ints(&[1, 2, 3]), int(-2), int(4)]), "[1, 4, 2, 3]");
    assert_eq!(after("insert", vec![ints(&[1, 2, 3]), int(999), int(4)]), "[1, 2, 3, 4]");
    assert_eq!(after("insert", vec![ints(&[1, 2, 3]), int(-999), int(4)]), "[4, 1, 2, 3]");
    assert_eq!(dbg("extract", vec![ints(&[1, 2, 3]), int(1), int(10)]), "[2, 3]");
    assert_eq!(dbg("extract", vec![ints(&[1, 2, 3]), int(-99), int(2)]), "[1, 2]");
    assert_eq!(dbg("extract", vec![ints(&[1, 2, 3]), int(99), int(1)]), "[]");
    assert_eq!(after("pad", vec![ints(&[1, 2, 3]), int(5), ints(&[42])]), "[1, 2, 3, [42], [42]]");
    assert_eq!(dbg("remove", vec![ints(&[1, 2, 3]), int(-1)]), "3");
    assert_eq!(dbg("remove", vec![ints(&[1, 2, 3]), int(3)]), "()");
    assert_eq!(dbg("pop", vec![ints(&[])]), "()");
    assert_eq!(after("chop", vec![ints(&[1, 2, 3, 4]), int(2)]), "[3, 4]");
    assert_eq!(after("truncate", vec![ints(&[1, 2, 3, 4]), int(2)]), "[1, 2]");
    assert_eq!(after("splice", vec![ints(&[1, 2, 3, 4]), int(1), int(2), ints(&[9])]), "[1, 9, 4]");
    assert_eq!(after("append", vec![ints(&[1]), ints(&[2, 3])]), "[1, 2, 3]");
    let (r, args) = call("split", vec![ints(&[1, 2, 3, 4]), int(1)]);
    assert_eq!(to_debug(&r.unwrap()), "[2, 3, 4]");
    assert_eq!(to_debug(&args[0]), "[1]");
    let (r, args) = call("drain", vec![ints(&[1, 2, 3, 4]), int(1), int(2)]);
    assert_eq!(to_debug(&r.unwrap()), "[2, 3]");
    assert_eq!(to_debug(&args[0]), "[1, 4]");
    let (r, args) = call("retain", vec![ints(&[1, 2, 3, 4]), int(1), int(2)]);
    assert_eq!(to_debug(&r.unwrap()), "[1, 4]");
    assert_eq!(to_debug(&args[0]), "[2, 3]");
    assert_eq!(dbg("contains", vec![ints(&[1, 2, 3]), Value::Float(2.0)]), "true");
    assert_eq!(dbg("index_of", vec![ints(&[1, 2, 3]), int(3)]), "2");
    assert_eq!(dbg("index_of", vec![ints(&[1, 2, 3]), Value::str("foo")]), "-1");
}

#[test]
fn arrays_sort() {
    assert_eq!(after("sort", vec![ints(&[3, 1, 2, -5])]), "[-5, 1, 2, 3]");
    let strs = Value::array(vec![Value::str("b"), Value::str("a"), Value::str("c")]);
    assert_eq!(after("sort", vec![strs]), "[\"a\", \"b\", \"c\"]");
    let mixed = Value::array(vec![int(2), Value::Float(1.5), int(1)]);
    assert_eq!(after("sort", vec![mixed]), "[1, 1.5, 2]");
    let bad = Value::array(vec![int(2), Value::str("x")]);
    assert_eq!(after("sort", vec![bad]), "ErrorFunctionNotFound");
    let mut h = Host::default().with("desc", 2, |_, a| Ok(int(as_int(&a[1]) - as_int(&a[0]))));
    let (r, args) = call_on(&mut h, "sort", vec![ints(&[3, 1, 2]), fp("desc")]);
    assert!(r.is_ok());
    assert_eq!(to_debug(&args[0]), "[3, 2, 1]");
    assert_eq!(after("dedup", vec![ints(&[1, 1, 2, 2, 1])]), "[1, 2, 1]");
}

#[test]
fn array_callbacks_follow_the_callee_arity() {
    let mut h = Host::default()
        .with("plus41", 1, |_, a| Ok(int(as_int(&a[0]) + 41)))
        .with("times_index", 2, |_, a| Ok(int(as_int(&a[0]) * as_int(&a[1]))))
        .with("this_times2", 0, |this, _| Ok(int(as_int(this) * 2)))
        .with("bump_this", 1, |this, a| {
            *this = int(as_int(this) + as_int(&a[0]));
            Ok(Value::Unit)
        })
        .with("gt1", 1, |_, a| Ok(Value::Bool(as_int(&a[0]) > 1)))
        .with("sum_sq", 2, |_, a| {
            let v = as_int(&a[1]);
            Ok(match &a[0] {
                Value::Unit => int(v * v),
                acc => int(as_int(acc) + v * v),
            })
        })
        .with("sub", 2, |_, a| Ok(int(as_int(&a[0]) - as_int(&a[1]))))
        .with("add_this", 1, |this, a| Ok(int(as_int(&a[0]) + as_int(this))))
        .with("is_two", 1, |_, a| Ok(Value::Bool(as_int(&a[0]) == 2)));
    let x = ints(&[1, 2, 3]);
    let mut run = |name: &str, args: Vec<Value>| -> String {
        match call_on(&mut h, name, args).0 {
            Ok(v) => to_debug(&v),
            Err(e) => e,
        }
    };
    assert_eq!(run("map", vec![x.clone(), fp("plus41")]), "[42, 43, 44]");
    assert_eq!(run("map", vec![x.clone(), fp("times_index")]), "[0, 2, 6]");
    assert_eq!(run("map", vec![x.clone(), fp("this_times2")]), "[2, 4, 6]");
    assert_eq!(run("filter", vec![x.clone(), fp("gt1")]), "[2, 3]");
    assert_eq!(run("reduce", vec![x.clone(), fp("sum_sq")]), "14");
    assert_eq!(run("reduce_rev", vec![x.clone(), fp("sum_sq")]), "14");
    assert_eq!(run("reduce", vec![x.clone(), fp("sub"), int(10)]), "4");
    assert_eq!(run("reduce_rev", vec![x.clone(), fp("add_this"), int(100)]), "106");
    assert_eq!(run("some", vec![x.clone(), fp("gt1")]), "true");
    assert_eq!(run("all", vec![x.clone(), fp("gt1")]), "false");
    assert_eq!(run("find", vec![x.clone(), fp("gt1")]), "2");
    assert_eq!(run("index_of", vec![ints(&[1, 2, 3, 2]), Value::str("is_two")]), "1");
    assert_eq!(run("index_of", vec![ints(&[1, 2, 3, 2]), Value::str("is_two"), int(2)]), "3");
    assert_eq!(run("zip", vec![x.clone(), ints(&[10, 20]), fp("sub")]), "[-9, -18]");
    // A built-in named as the callback.
    assert_eq!(run("map", vec![ints(&[-1, 2]), Value::str("abs")]), "[1, 2]");
    // Curried: `sub(10, v)`.
    let curried = Value::FnPtr(Rc::new(FnPtr { name: Rc::from("sub"), curry: vec![int(10)], env: None }));
    assert_eq!(run("map", vec![x.clone(), curried]), "[9, 8, 7]");
    // for_each binds `this` and keeps its changes.
    let (r, args) = call_on(&mut h, "for_each", vec![x.clone(), fp("bump_this")]);
    assert!(r.is_ok());
    assert_eq!(to_debug(&args[0]), "[1, 3, 5]");
    // drain/retain with a callback.
    let (r, args) = call_on(&mut h, "drain", vec![x.clone(), fp("gt1")]);
    assert_eq!(to_debug(&r.unwrap()), "[2, 3]");
    assert_eq!(to_debug(&args[0]), "[1]");
    let (r, args) = call_on(&mut h, "retain", vec![x, fp("gt1")]);
    assert_eq!(to_debug(&r.unwrap()), "[1]");
    assert_eq!(to_debug(&args[0]), "[2, 3]");
}

#[test]
fn maps() {
    let mut m = Map::new();
    m.insert(Rc::from("b"), int(2));
    m.insert(Rc::from("a"), int(1));
    let m = Value::map(m);
    assert_eq!(dbg("keys", vec![m.clone()]), "[\"a\", \"b\"]");
    assert_eq!(dbg("values", vec![m.clone()]), "[1, 2]");
    assert_eq!(dbg("len", vec![m.clone()]), "2");
    assert_eq!(dbg("contains", vec![m.clone(), Value::str("a")]), "true");
    assert_eq!(dbg("get", vec![m.clone(), Value::str("zz")]), "()");
    let (r, args) = call("remove", vec![m.clone(), Value::str("a")]);
    assert_eq!(to_debug(&r.unwrap()), "1");
    assert_eq!(to_debug(&args[0]), "#{\"b\": 2}");
    let mut other = Map::new();
    other.insert(Rc::from("b"), int(42));
    other.insert(Rc::from("d"), int(9));
    let other = Value::map(other);
    assert_eq!(after("mixin", vec![m.clone(), other.clone()]), "#{\"a\": 1, \"b\": 42, \"d\": 9}");
    assert_eq!(after("fill_with", vec![m.clone(), other]), "#{\"a\": 1, \"b\": 2, \"d\": 9}");
    assert_eq!(dbg("to_json", vec![m]), "\"{\\\"a\\\":1,\\\"b\\\":2}\"");
}

#[test]
fn blobs_and_bytes() {
    let counting = Value::Blob(Rc::new((0u8..16).collect()));
    assert_eq!(dbg("parse_le_int", vec![counting.clone(), int(2), int(9)]), "650777868590383874");
    assert_eq!(dbg("parse_le_int", vec![counting.clone(), Value::range_parts(2, 11, true)]), "650777868590383874");
    assert_eq!(dbg("parse_be_int", vec![counting.clone(), int(2), int(10)]), "144964032628459529");
    assert_eq!(dbg("parse_le_int", vec![counting.clone(), int(-5), int(99)]), "64660245515");
    assert_eq!(dbg("parse_le_int", vec![counting.clone(), int(-5), int(2)]), "3083");
    assert_eq!(dbg("parse_le_int", vec![counting.clone(), int(-99), int(99)]), "506097522914230528");
    let (_, args) = call("write_be", vec![counting.clone(), int(3), int(3), int(-98765432)]);
    assert_eq!(dbg("parse_be_int", vec![args[0].clone(), int(3), int(3)]), "-1099511627776");
    let (_, args) = call("write_le", vec![counting, int(3), int(3), int(-98765432)]);
    assert_eq!(dbg("parse_le_int", vec![args[0].clone(), int(3), int(3)]), "1897864");
    let ten = || Value::Blob(Rc::new(vec![0; 10]));
    assert_eq!(
        after("write_ascii", vec![ten(), Value::range(0, 9), Value::str("❤ hello, ❤ world! ❤❤❤")]),
        "[2068656c6c6f2c20 2000]"
    );
    assert_eq!(after("write_utf8", vec![ten(), int(3), int(4), Value::str("❤❤❤❤")]), "[000000e29da4e200 0000]");
    assert_eq!(dbg("blob", vec![int(3), int(0x1ff)]), "[ffffff]");
    assert_eq!(dbg("to_array", vec![Value::Blob(Rc::new(vec![1, 255]))]), "[1, 255]");
    assert_eq!(dbg("as_string", vec![Value::Blob(Rc::new(b"hi".to_vec()))]), "\"hi\"");
    assert_eq!(dbg("get", vec![Value::Blob(Rc::new(vec![7])), int(5)]), "0");
}

#[test]
fn bit_fields() {
    assert_eq!(dbg("get_bit", vec![int(10), int(1)]), "true");
    assert_eq!(dbg("get_bit", vec![int(10), int(-1)]), "false");
    assert_eq!(dbg("get_bit", vec![int(10), int(64)]), "ErrorBitFieldBounds");
    assert_eq!(dbg("get_bits", vec![int(10), int(1), int(3)]), "5");
    assert_eq!(dbg("get_bits", vec![int(255), int(-60), int(2)]), "3");
    assert_eq!(after("set_bits", vec![int(10), int(1), int(3), int(7)]), "14");
    assert_eq!(after("set_bits", vec![int(0), int(-64), int(1), int(15)]), "1");
    assert_eq!(after("set_bits", vec![int(0), int(-60), int(2), int(15)]), "48");
    assert_eq!(after("set_bit", vec![int(10), int(0), Value::Bool(true)]), "11");
    let (r, _) = call("bits", vec![int(0b001101101010001), int(2), int(10)]);
    let n = match &r.unwrap() {
        Value::Array(a) => a.iter().filter(|b| matches!(b, Value::Bool(true))).count(),
        _ => 99,
    };
    assert_eq!(n, 5);
}

#[test]
fn math() {
    assert_eq!(dbg("abs", vec![int(i64::MIN)]), "ErrorArithmetic");
    assert_eq!(dbg("abs", vec![int(-9)]), "9");
    assert_eq!(dbg("sign", vec![Value::Float(-0.5)]), "-1");
    assert_eq!(dbg("min", vec![int(3), Value::Float(2.5)]), "2.5");
    assert_eq!(dbg("max", vec![int(3), int(7)]), "7");
    assert_eq!(dbg("sqrt", vec![Value::Float(16.0)]), "4.0");
    assert_eq!(dbg("sqrt", vec![int(16)]), "NoMatch");
    assert_eq!(dbg("floor", vec![Value::Float(-1.5)]), "-2.0");
    assert_eq!(dbg("round", vec![Value::Float(2.5)]), "3.0");
    assert_eq!(dbg("int", vec![Value::Float(-2.7)]), "-2.0");
    assert_eq!(dbg("to_int", vec![Value::Float(-2.7)]), "-2");
    assert_eq!(dbg("to_int", vec![Value::Float(1e30)]), "ErrorArithmetic");
    assert_eq!(dbg("to_int", vec![Value::Char('a')]), "97");
    assert_eq!(dbg("to_float", vec![int(2)]), "2.0");
    assert_eq!(dbg("to_hex", vec![int(255)]), "\"ff\"");
    assert_eq!(dbg("to_binary", vec![int(5)]), "\"101\"");
    assert_eq!(dbg("is_odd", vec![int(-3)]), "true");
    let (r, _) = call("PI", vec![]);
    assert!(matches!(r, Ok(Value::Float(f)) if (f - std::f64::consts::PI).abs() < 1e-15));
}

#[test]
fn misc() {
    let mut h = Host::default();
    let (r, _) = call_on(&mut h, "print", vec![Value::array(vec![Value::str("a")])]);
    assert!(r.is_ok());
    let (r, _) = call_on(&mut h, "debug", vec![Value::str("a")]);
    assert!(r.is_ok());
    assert_eq!(h.out, vec![("[\"a\"]".to_string(), false), ("\"a\"".to_string(), true)]);
    assert_eq!(dbg("type_of", vec![Value::Float(1.0)]), "\"f64\"");
    assert_eq!(dbg("Fn", vec![Value::str("foo")]), "Fn(foo)");
    assert_eq!(dbg("Fn", vec![Value::str("1foo")]), "ErrorFunctionNotFound");
    assert_eq!(dbg("curry", vec![fp("f"), int(1), int(2)]), "Fn(\"f\", [1, 2])");
    assert_eq!(dbg("range", vec![int(10), int(1), int(-2)]), "[10, 8, 6, 4, 2]");
    assert_eq!(dbg("range", vec![int(1), int(4)]), "1..4");
    assert_eq!(dbg("type_of", vec![Value::range_parts(1, 4, true)]), "\"range=\"");
    assert_eq!(dbg("contains", vec![Value::range(1, 4), int(4)]), "false");
    assert_eq!(dbg("is_empty", vec![Value::range(4, 4)]), "true");
    assert_eq!(dbg("end", vec![Value::range_parts(1, 4, true)]), "4");
    assert_eq!(dbg("range", vec![int(i64::MAX), int(0), int(i64::MAX)]), "[]");
    assert_eq!(dbg("range", vec![int(1), int(5), int(0)]), "ErrorArithmetic");
    assert_eq!(dbg("range", vec![Value::Float(10.0), Value::Float(1.0), Value::Float(-2.0)]), "[10.0, 8.0, 6.0, 4.0, 2.0]");
    assert_eq!(dbg("parse_json", vec![Value::str("{\"a\": [1, 2.5, null]}")]), "#{\"a\": [1, 2.5, ()]}");
    assert_eq!(dbg("parse_json", vec![Value::str("{")]), "ErrorRuntime");
    assert_eq!(dbg("+", vec![Value::str("foo"), int(123)]), "\"foo123\"");
    assert_eq!(dbg("+", vec![ints(&[1]), ints(&[2])]), "[1, 2]");
    assert_eq!(dbg("-", vec![Value::Timestamp(5000.0), Value::Timestamp(2500.0)]), "2.5");
    assert_eq!(dbg("in", vec![int(2), ints(&[1, 2])]), "true");
    let t = call("timestamp", vec![]).0.unwrap();
    assert!(matches!(call("elapsed", vec![t]).0, Ok(Value::Float(s)) if s >= 0.0));
}

#[test]
fn shared_receivers() {
    use std::cell::RefCell;
    // A callback that reads the captured variable the method runs on sees
    // its value (the receiver is copied, not moved, for callback functions).
    let cell = Rc::new(RefCell::new(ints(&[1, 2])));
    let seen = cell.clone();
    let mut h = Host::default().with("plus_len", 1, move |_, a| {
        let n = match &*seen.borrow() {
            Value::Array(v) => v.len() as i64,
            _ => -100,
        };
        Ok(int(as_int(&a[0]) + n))
    });
    let (r, args) = call_on(&mut h, "map", vec![Value::Shared(cell.clone()), fp("plus_len")]);
    assert_eq!(to_debug(&r.unwrap()), "[3, 4]");
    assert!(matches!(args[0], Value::Shared(_)));
    // A mutating function changes the value inside the cell.
    let (r, _) = call_on(&mut h, "push", vec![Value::Shared(cell.clone()), Value::Shared(Rc::new(RefCell::new(int(3))))]);
    assert!(r.is_ok());
    assert_eq!(to_debug(&cell.borrow()), "[1, 2, 3]");
    let (r, _) = call_on(&mut h, "sort", vec![Value::Shared(cell.clone()), fp("no_such_fn")]);
    assert!(r.is_ok());
    assert_eq!(to_debug(&cell.borrow()), "[1, 2, 3]");
}
