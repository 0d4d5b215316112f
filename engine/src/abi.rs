//! The wasm surface (see `ABI.md`): exports `pi_alloc`, `pi_free`, `pi_eval`,
//! `pi_analyze`; imports `picloud.output`, `picloud.host_call`,
//! `picloud.host_result`. Off wasm, `NativeHost` stands in for the imports.

use crate::engine::{execute, response_json, Request};
use crate::error::{EvalError, Pos};
use crate::interp::Host;
use crate::json::{self, Json};
use crate::value::Value;

/// Hands a byte buffer to the host as `(ptr << 32) | len`.
fn leak(bytes: Vec<u8>) -> i64 {
    let b = bytes.into_boxed_slice();
    let len = b.len();
    let ptr = Box::into_raw(b) as *mut u8 as usize;
    ((ptr as u64) << 32 | len as u64) as i64
}

/// # Safety
/// Called by the host only; returns a buffer of `len` bytes it may write into.
#[no_mangle]
pub extern "C" fn pi_alloc(len: i32) -> i32 {
    let b = vec![0u8; len.max(0) as usize].into_boxed_slice();
    Box::into_raw(b) as *mut u8 as usize as i32
}

/// # Safety
/// `ptr`/`len` must come from `pi_alloc` or a `pi_*` response.
#[no_mangle]
pub unsafe extern "C" fn pi_free(ptr: i32, len: i32) {
    if ptr == 0 {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as usize as *mut u8, len.max(0) as usize);
    drop(Box::from_raw(slice));
}

unsafe fn read_input(ptr: i32, len: i32) -> String {
    let bytes = std::slice::from_raw_parts(ptr as usize as *const u8, len.max(0) as usize);
    String::from_utf8_lossy(bytes).into_owned()
}

/// # Safety
/// `ptr`/`len` must be a buffer from `pi_alloc` holding the request.
#[no_mangle]
pub unsafe extern "C" fn pi_eval(ptr: i32, len: i32) -> i64 {
    let text = read_input(ptr, len);
    let mut host = WasmHost;
    leak(eval_request(&text, &mut host).into_bytes())
}

/// # Safety
/// `ptr`/`len` must be a buffer from `pi_alloc` holding the request.
#[no_mangle]
pub unsafe extern "C" fn pi_analyze(ptr: i32, len: i32) -> i64 {
    let text = read_input(ptr, len);
    let source = match json::parse(&text) {
        Ok(doc) => doc.get("source").and_then(Json::as_str).unwrap_or("").to_string(),
        Err(_) => String::new(),
    };
    leak(crate::analyze::analyze(&source).into_bytes())
}

/// Answers one `pi_eval` request document.
pub fn eval_request(text: &str, host: &mut dyn Host) -> String {
    match Request::from_json(text) {
        Ok(req) => response_json(&execute(&req, host)),
        Err(msg) => response_json(&Err(EvalError::runtime(
            "ErrorRuntime",
            format!("bad request: {}", msg),
            Pos::NONE,
        ))),
    }
}

fn reply_to_result(reply: &str) -> Result<Value, EvalError> {
    let doc = json::parse(reply).map_err(|e| EvalError::runtime("ErrorRuntime", format!("bad host reply: {}", e), Pos::NONE))?;
    if let Some(v) = doc.get("ok") {
        return json::typed_from_json(v).map_err(|e| EvalError::runtime("ErrorRuntime", e, Pos::NONE));
    }
    let msg = doc.get("error").and_then(Json::as_str).unwrap_or("host function failed").to_string();
    if let Some(Json::Bool(true)) = doc.get("limit") {
        return Err(EvalError::limit("ErrorTooMuchOutput", msg, Pos::NONE).with_limit_variant(&doc));
    }
    Err(EvalError::runtime("ErrorRuntime", msg, Pos::NONE))
}

trait LimitVariant {
    fn with_limit_variant(self, doc: &Json) -> Self;
}

impl LimitVariant for EvalError {
    fn with_limit_variant(mut self, doc: &Json) -> Self {
        // A host limit may name its cause; keep a known name, else a generic one.
        self.variant = match doc.get("type").and_then(Json::as_str) {
            Some("ErrorTooMuchOutput") => "ErrorTooMuchOutput",
            Some("ErrorTooManyOperations") => "ErrorTooManyOperations",
            Some("ErrorDataTooLarge") => "ErrorDataTooLarge",
            Some("ErrorTerminated") => "ErrorTerminated",
            _ => "ErrorTerminated",
        };
        self
    }
}

fn args_json(args: &[Value]) -> String {
    let mut out = String::from("[");
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_typed(&mut out, a);
    }
    out.push(']');
    out
}

fn output_limit() -> EvalError {
    EvalError::limit("ErrorTooMuchOutput", "Output limit reached", Pos::NONE)
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "picloud")]
    extern "C" {
        pub fn output(kind: i32, ptr: i32, len: i32) -> i32;
        pub fn host_call(name_ptr: i32, name_len: i32, args_ptr: i32, args_len: i32) -> i32;
        pub fn host_result(ptr: i32);
    }
}

/// The host behind the wasm imports.
pub struct WasmHost;

#[cfg(target_arch = "wasm32")]
impl Host for WasmHost {
    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError> {
        let r = unsafe { imports::output(debug as i32, text.as_ptr() as i32, text.len() as i32) };
        if r != 0 {
            return Err(output_limit());
        }
        Ok(())
    }

    fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        let a = args_json(args);
        let n = unsafe { imports::host_call(name.as_ptr() as i32, name.len() as i32, a.as_ptr() as i32, a.len() as i32) };
        let mut buf = vec![0u8; n.max(0) as usize];
        unsafe { imports::host_result(buf.as_mut_ptr() as i32) };
        reply_to_result(&String::from_utf8_lossy(&buf))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Host for WasmHost {
    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError> {
        NativeHost::default().output(text, debug)
    }

    fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        NativeHost::default().call(name, args)
    }
}

/// A native stand-in for the host: collects (or prints) output, with an
/// optional output limit; host functions answer through `reply`.
#[derive(Default)]
pub struct NativeHost {
    pub stdout: String,
    pub stderr: String,
    /// Print `print` output to the process stdout instead of collecting it.
    pub passthrough: bool,
    pub limit: Option<usize>,
    /// Stand-in host functions: name -> JSON reply for given JSON args.
    pub reply: Option<fn(&str, &str) -> String>,
}

impl Host for NativeHost {
    fn output(&mut self, text: &str, debug: bool) -> Result<(), EvalError> {
        if let Some(limit) = self.limit {
            if self.stdout.len() + self.stderr.len() + text.len() + 1 > limit {
                return Err(output_limit());
            }
        }
        if self.passthrough {
            if debug {
                eprintln!("{}", text);
            } else {
                println!("{}", text);
            }
            return Ok(());
        }
        let buf = if debug { &mut self.stderr } else { &mut self.stdout };
        buf.push_str(text);
        buf.push('\n');
        Ok(())
    }

    fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        match self.reply {
            Some(f) => reply_to_result(&f(name, &args_json(args))),
            None => Err(EvalError::runtime(
                "ErrorFunctionNotFound",
                format!("Function not found: {} (host function unavailable natively)", name),
                Pos::NONE,
            )),
        }
    }
}
