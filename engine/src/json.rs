//! A small JSON reader and writer (std only), the typed value form that
//! crosses the wasm boundary (see `ABI.md`), and Rhai's `parse_json` /
//! `to_json`.

use std::fmt::Write;
use std::rc::Rc;

use crate::format::write_float_debug;
use crate::value::{FnPtr, Map, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    /// Members in document order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Writes this document in compact form.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{}", i);
            }
            Json::Float(f) => write_json_float(out, *f),
            Json::Str(s) => write_str(out, s),
            Json::Array(items) => {
                out.push('[');
                write_separated(out, items, |out, item| item.write(out));
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                write_separated(out, members, |out, (k, v)| {
                    write_str(out, k);
                    out.push(':');
                    v.write(out);
                });
                out.push('}');
            }
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

/// Deepest nesting `parse` accepts (keeps the reader off the end of the stack).
pub const MAX_DEPTH: usize = 256;

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Json, String> {
    let mut p = Parser { s: text.as_bytes(), i: 0, text };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &str) -> String {
        format!("{} at position {}", what, self.i)
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("JSON nested too deeply"));
        }
        match self.peek() {
            None => Err(self.err("unexpected end of JSON")),
            Some(b'n') => self.lit("null", Json::Null),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.err("expected a string key"));
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err("expected ':'"));
                    }
                    self.i += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |p: &mut Parser| {
            let from = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - from
        };
        let int_start = self.i;
        if digits(self) == 0 {
            return Err(self.err("invalid number"));
        }
        if self.s[int_start] == b'0' && self.i - int_start > 1 {
            return Err(self.err("invalid number (leading zero)"));
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            is_float = true;
            if digits(self) == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e') | Some(b'E')) {
            self.i += 1;
            is_float = true;
            if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err("invalid number"));
            }
        }
        let text = &self.text[start..self.i];
        if !is_float {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Json::Int(i));
            }
        }
        text.parse::<f64>().map(Json::Float).map_err(|_| self.err("invalid number"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        if self.i + 4 > self.s.len() {
            return Err(self.err("bad \\u escape"));
        }
        let h = std::str::from_utf8(&self.s[self.i..self.i + 4]).map_err(|_| self.err("bad \\u escape"))?;
        let v = u32::from_str_radix(h, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let run = self.i;
            while self.i < self.s.len() && self.s[self.i] != b'"' && self.s[self.i] != b'\\' && self.s[self.i] >= 0x20 {
                self.i += 1;
            }
            out.push_str(&self.text[run..self.i]);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.s[self.i..].starts_with(b"\\u") {
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return Err(self.err("bad surrogate pair"));
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    return Err(self.err("lone surrogate"));
                                }
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code).ok_or_else(|| self.err("bad \\u escape"))?);
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }
}

/// Appends `s` as a JSON string literal (quoted and escaped).
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[run..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// A finite float as a JSON number that reads back as a float (`1.0`,
/// `1e20`, `0.1`); non-finite ones have no JSON form and write `null`.
fn write_json_float(out: &mut String, f: f64) {
    if f.is_finite() {
        write_float_debug(out, f);
    } else {
        out.push_str("null");
    }
}

// ---------------------------------------------------------------------------
// The typed form: {"type": T, "value": V}

/// A value in the typed JSON form of `ABI.md`.
pub fn typed_to_json(v: &Value) -> String {
    let mut s = String::new();
    write_typed(&mut s, v);
    s
}

/// Appends a value in the typed JSON form.
pub fn write_typed(out: &mut String, v: &Value) {
    out.push_str("{\"type\":\"");
    match v {
        Value::Unit => out.push_str("unit\",\"value\":null"),
        Value::Bool(b) => {
            out.push_str("bool\",\"value\":");
            out.push_str(if *b { "true" } else { "false" });
        }
        Value::Int(i) => {
            let _ = write!(out, "int\",\"value\":{}", i);
        }
        Value::Float(f) => {
            out.push_str("float\",\"value\":");
            write_typed_float(out, *f);
        }
        Value::Char(c) => {
            out.push_str("char\",\"value\":");
            let mut buf = [0u8; 4];
            write_str(out, c.encode_utf8(&mut buf));
        }
        Value::Str(s) => {
            out.push_str("string\",\"value\":");
            write_str(out, s);
        }
        Value::Array(items) => {
            out.push_str("array\",\"value\":[");
            write_separated(out, items.iter(), write_typed);
            out.push(']');
        }
        Value::Blob(bytes) => {
            out.push_str("blob\",\"value\":[");
            write_blob_bytes(out, bytes);
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map\",\"value\":{");
            write_separated(out, m.iter(), |out, (k, item)| {
                write_str(out, k);
                out.push(':');
                write_typed(out, item);
            });
            out.push('}');
        }
        Value::FnPtr(p) => {
            out.push_str("fn\",\"value\":");
            write_str(out, &p.name);
        }
        Value::Timestamp(ms) => {
            out.push_str("timestamp\",\"value\":");
            write_typed_float(out, *ms);
        }
        Value::Shared(cell) => {
            // Undo the opening and write the inner value instead.
            out.truncate(out.len() - "{\"type\":\"".len());
            write_typed(out, &cell.borrow());
            return;
        }
    }
    out.push('}');
}

fn write_typed_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f == f64::INFINITY {
        out.push_str("\"inf\"");
    } else if f == f64::NEG_INFINITY {
        out.push_str("\"-inf\"");
    } else {
        write_float_debug(out, f);
    }
}

fn typed_float(j: &Json) -> Result<f64, String> {
    match j {
        Json::Float(f) => Ok(*f),
        Json::Int(i) => Ok(*i as f64),
        Json::Str(s) => match s.as_str() {
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => Err(format!("not a float: {:?}", s)),
        },
        _ => Err("a float value must be a number".to_string()),
    }
}

/// Reads a value from the typed JSON form.
pub fn typed_from_json(j: &Json) -> Result<Value, String> {
    let t = j.get("type").and_then(Json::as_str).ok_or("a typed value needs a \"type\" string")?;
    let v = j.get("value").unwrap_or(&Json::Null);
    Ok(match t {
        "unit" => Value::Unit,
        "bool" => match v {
            Json::Bool(b) => Value::Bool(*b),
            _ => return Err("a bool value must be true or false".into()),
        },
        "int" => match v {
            Json::Int(i) => Value::Int(*i),
            Json::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Value::Int(*f as i64),
            _ => return Err("an int value must be an integer".into()),
        },
        "float" => Value::Float(typed_float(v)?),
        "timestamp" => Value::Timestamp(typed_float(v)?),
        "string" => match v {
            Json::Str(s) => Value::str(s),
            _ => return Err("a string value must be a string".into()),
        },
        "char" => {
            let s = v.as_str().ok_or("a char value must be a string")?;
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => Value::Char(c),
                _ => return Err("a char value must be one character".into()),
            }
        }
        "array" => match v {
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(typed_from_json(item)?);
                }
                Value::array(out)
            }
            _ => return Err("an array value must be a list".into()),
        },
        "blob" => match v {
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Json::Int(b) if (0..=255).contains(b) => out.push(*b as u8),
                        _ => return Err("a blob value must be a list of bytes".into()),
                    }
                }
                Value::Blob(Rc::new(out))
            }
            _ => return Err("a blob value must be a list".into()),
        },
        "map" => match v {
            Json::Object(members) => {
                let mut m = Map::new();
                for (k, item) in members {
                    m.insert(Rc::from(k.as_str()), typed_from_json(item)?);
                }
                Value::map(m)
            }
            _ => return Err("a map value must be an object".into()),
        },
        "fn" => {
            let name = v.as_str().ok_or("a fn value must be a function name")?;
            Value::FnPtr(Rc::new(FnPtr { name: Rc::from(name), curry: Vec::new(), env: None }))
        }
        other => return Err(format!("unknown value type {:?}", other)),
    })
}

// ---------------------------------------------------------------------------
// Rhai's parse_json / to_json

/// A plain JSON document as a Rhai value: objects become maps, integers
/// `int`, other numbers `float`, `null` unit.
pub fn json_to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Unit,
        Json::Bool(b) => Value::Bool(*b),
        Json::Int(i) => Value::Int(*i),
        Json::Float(f) => Value::Float(*f),
        Json::Str(s) => Value::str(s),
        Json::Array(items) => Value::array(items.iter().map(json_to_value).collect()),
        Json::Object(members) => {
            let mut m = Map::new();
            for (k, v) in members {
                m.insert(Rc::from(k.as_str()), json_to_value(v));
            }
            Value::map(m)
        }
    }
}

/// Rhai's `parse_json(text)`.
pub fn parse_json(text: &str) -> Result<Value, String> {
    parse(text).map(|j| json_to_value(&j))
}

/// Rhai's `to_json(value)`: compact JSON. Chars and strings become strings,
/// unit `null`, blobs lists of bytes, function pointers their name;
/// non-finite floats have no JSON form and become `null`.
pub fn to_json(v: &Value) -> String {
    let mut s = String::new();
    write_plain(&mut s, v);
    s
}

fn write_plain(out: &mut String, v: &Value) {
    match v {
        Value::Unit => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{}", i);
        }
        Value::Float(f) | Value::Timestamp(f) => write_json_float(out, *f),
        Value::Char(c) => {
            let mut buf = [0u8; 4];
            write_str(out, c.encode_utf8(&mut buf));
        }
        Value::Str(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            write_separated(out, items.iter(), write_plain);
            out.push(']');
        }
        Value::Blob(bytes) => {
            out.push('[');
            write_blob_bytes(out, bytes);
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            write_separated(out, m.iter(), |out, (k, item)| {
                write_str(out, k);
                out.push(':');
                write_plain(out, item);
            });
            out.push('}');
        }
        Value::FnPtr(p) => {
            // A curried pointer writes as `[name, arg, ...]`, as Rhai does.
            if p.curry.is_empty() {
                write_str(out, &p.name);
            } else {
                out.push('[');
                write_str(out, &p.name);
                for item in &p.curry {
                    out.push(',');
                    write_plain(out, item);
                }
                out.push(']');
            }
        }
        Value::Shared(cell) => write_plain(out, &cell.borrow()),
    }
}

/// Writes `items` separated by commas, each with `write_one`.
fn write_separated<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut write_one: impl FnMut(&mut String, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_one(out, item);
    }
}

/// A blob's bytes as comma-separated integers (both JSON forms write them so).
fn write_blob_bytes(out: &mut String, bytes: &[u8]) {
    write_separated(out, bytes, |out, b| {
        let _ = write!(out, "{}", b);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::to_debug;

    #[test]
    fn parses_documents() {
        let j = parse(r#" {"a": [1, -2.5, 1e3, true, null], "b\n": "x\"\u00e9\ud83d\ude03"} "#).unwrap();
        assert_eq!(
            j,
            Json::Object(vec![
                (
                    "a".into(),
                    Json::Array(vec![Json::Int(1), Json::Float(-2.5), Json::Float(1000.0), Json::Bool(true), Json::Null])
                ),
                ("b\n".into(), Json::Str("x\"é😃".into())),
            ])
        );
        assert_eq!(parse("99999999999999999999").unwrap(), Json::Float(1e20));
        assert_eq!(parse("-0").unwrap(), Json::Int(0));
    }

    #[test]
    fn rejects_bad_documents() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "\"\\x\"", "tru", "1 2", "\"a\nb\"", "\"\\ud800\""] {
            assert!(parse(bad).is_err(), "accepted {:?}", bad);
        }
        let deep = "[".repeat(MAX_DEPTH + 5) + &"]".repeat(MAX_DEPTH + 5);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn writes_and_reads_back() {
        let text = r#"{"a":[1,-2.5,1e20,true,null],"b":"x\"\\\n\u0001é"}"#;
        assert_eq!(parse(text).unwrap().to_text(), text);
    }

    #[test]
    fn typed_round_trip() {
        let mut m = Map::new();
        m.insert(Rc::from("z"), Value::Float(f64::NEG_INFINITY));
        m.insert(Rc::from("a"), Value::Blob(Rc::new(vec![0, 255])));
        let v = Value::array(vec![
            Value::Unit,
            Value::Int(i64::MIN),
            Value::Float(1.0),
            Value::Char('❤'),
            Value::str("s\"q"),
            Value::Bool(false),
            Value::map(m),
        ]);
        let text = typed_to_json(&v);
        assert_eq!(
            text,
            r#"{"type":"array","value":[{"type":"unit","value":null},{"type":"int","value":-9223372036854775808},{"type":"float","value":1.0},{"type":"char","value":"❤"},{"type":"string","value":"s\"q"},{"type":"bool","value":false},{"type":"map","value":{"a":{"type":"blob","value":[0,255]},"z":{"type":"float","value":"-inf"}}}]}"#
        );
        let back = typed_from_json(&parse(&text).unwrap()).unwrap();
        assert_eq!(typed_to_json(&back), text);
        assert!(typed_from_json(&parse(r#"{"type":"char","value":"ab"}"#).unwrap()).is_err());
        assert!(typed_from_json(&parse(r#"{"type":"wat"}"#).unwrap()).is_err());
    }

    #[test]
    fn rhai_parse_json_and_to_json() {
        let v = parse_json(r#"{"b": 1, "a": [2.0, null, "x"], "c": {"d": false}}"#).unwrap();
        assert_eq!(to_debug(&v), r#"#{"a": [2.0, (), "x"], "b": 1, "c": #{"d": false}}"#);
        assert_eq!(to_json(&v), r#"{"a":[2.0,null,"x"],"b":1,"c":{"d":false}}"#);
        assert!(parse_json("{").is_err());
    }
}

