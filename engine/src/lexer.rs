//! The lexer: source text to tokens, each with its 1-based line and column.

use crate::error::{EvalError, Pos};

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Int(i64),
    /// `9223372036854775808`: a float, unless negated (then `i64::MIN`).
    IntMinAbs,
    Float(f64),
    Str(String),
    /// A back-tick string: literal parts and `${...}` code parts (with the
    /// position where the code starts).
    Interp(Vec<InterpPart>),
    Char(char),
    Ident(String),
    /// A reserved word that is not a keyword of the language.
    Reserved(String),
    Punct(&'static str),
    /// A lexical error (variant, message): reported when the parser reaches
    /// it, so that earlier syntax errors are found first, as Rhai does.
    LexErr(&'static str, String),
    Eof,
}

#[derive(Clone, Debug, PartialEq)]
pub enum InterpPart {
    Lit(String),
    Code(String, Pos),
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
    /// Whether a newline separates this token from the previous one.
    pub nl_before: bool,
}

const PUNCTS: &[&str] = &[
    "**=", "<<=", ">>=", "...", "..=", "!in", "?.", "?[", "??", "::", "=>", "->", "==", "!=",
    "<=", ">=", "&&", "||", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "**", "<<", ">>",
    "..", "#{", "+", "-", "*", "/", "%", "=", "<", ">", "!", "&", "|", "^", "(", ")", "[", "]",
    "{", "}", ",", ";", ":", ".", "@", "#", "$", "?", "~",
];

const KEYWORDS: &[&str] = &[
    "let", "const", "if", "else", "switch", "while", "loop", "do", "until", "for", "in", "break",
    "continue", "return", "throw", "try", "catch", "fn", "private", "true", "false", "this",
    "import", "export", "as", "global", "Fn", "call", "curry", "is_def_var", "is_def_fn",
    "type_of", "print", "debug", "eval", "is_shared",
];

const RESERVED: &[&str] = &[
    "var", "static", "shared", "goto", "exit", "match", "case", "public", "protected", "new",
    "use", "with", "module", "package", "super", "thread", "spawn", "go", "await", "async",
    "sync", "yield", "default", "void", "null", "nil",
];

pub fn is_keyword(s: &str) -> bool {
    KEYWORDS.contains(&s)
}

pub struct Lexer<'a> {
    src: &'a [char],
    i: usize,
    line: u32,
    col: u32,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

pub fn tokenize(src: &str, start: Pos) -> Result<Vec<Token>, EvalError> {
    let chars: Vec<char> = src.chars().collect();
    let mut lx = Lexer { src: &chars, i: 0, line: start.line.max(1), col: start.col.max(1) };
    let mut out = Vec::new();
    let mut nl = true;
    // A shebang line.
    if chars.len() >= 2 && chars[0] == '#' && chars[1] == '!' {
        while lx.i < chars.len() && chars[lx.i] != '\n' {
            lx.bump();
        }
    }
    loop {
        nl |= lx.skip_space()?;
        let pos = Pos::new(lx.line, lx.col);
        if lx.i >= chars.len() {
            out.push(Token { tok: Tok::Eof, pos, nl_before: nl });
            return Ok(out);
        }
        match lx.next_tok(pos) {
            Ok(tok) => out.push(Token { tok, pos, nl_before: nl }),
            Err(e) => {
                out.push(Token { tok: Tok::LexErr(e.variant, e.message), pos: e.pos, nl_before: nl });
                out.push(Token { tok: Tok::Eof, pos: e.pos, nl_before: false });
                return Ok(out);
            }
        }
        nl = false;
    }
}

impl<'a> Lexer<'a> {
    fn peek(&self, k: usize) -> char {
        *self.src.get(self.i + k).unwrap_or(&'\0')
    }

    fn bump(&mut self) -> char {
        let c = self.src[self.i];
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        c
    }

    fn skip_space(&mut self) -> Result<bool, EvalError> {
        let mut nl = false;
        loop {
            let c = self.peek(0);
            if self.i >= self.src.len() {
                return Ok(nl);
            }
            if c == '\n' {
                nl = true;
                self.bump();
            } else if c.is_whitespace() {
                self.bump();
            } else if c == '/' && self.peek(1) == '/' {
                while self.i < self.src.len() && self.peek(0) != '\n' {
                    self.bump();
                }
            } else if c == '/' && self.peek(1) == '*' {
                let pos = Pos::new(self.line, self.col);
                self.bump();
                self.bump();
                let mut depth = 1;
                while depth > 0 {
                    if self.i >= self.src.len() {
                        let _ = pos;
                        return Ok(nl);
                    }
                    if self.peek(0) == '/' && self.peek(1) == '*' {
                        self.bump();
                        self.bump();
                        depth += 1;
                    } else if self.peek(0) == '*' && self.peek(1) == '/' {
                        self.bump();
                        self.bump();
                        depth -= 1;
                    } else {
                        self.bump();
                    }
                }
            } else {
                return Ok(nl);
            }
        }
    }

    fn next_tok(&mut self, pos: Pos) -> Result<Tok, EvalError> {
        let c = self.peek(0);
        if c.is_ascii_digit() {
            return self.number(pos);
        }
        if is_ident_start(c) {
            let mut s = String::new();
            while self.i < self.src.len() && is_ident_char(self.peek(0)) {
                s.push(self.bump());
            }
            if RESERVED.contains(&s.as_str()) {
                return Ok(Tok::Reserved(s));
            }
            return Ok(Tok::Ident(s));
        }
        if c == '"' {
            self.bump();
            return Ok(Tok::Str(self.string_body('"', pos)?));
        }
        if c == '#' && (self.peek(1) == '"' || self.peek(1) == '#') {
            // A raw string: `#"..."#`, `##"..."##`, ...
            let mut n = 0;
            while self.peek(n) == '#' {
                n += 1;
            }
            if self.peek(n) == '"' {
                for _ in 0..=n {
                    self.bump();
                }
                let mut s = String::new();
                loop {
                    if self.i >= self.src.len() {
                        return Err(EvalError::parse("BadInput", "Open string is not terminated", pos));
                    }
                    if self.peek(0) == '"' && (1..=n).all(|k| self.peek(k) == '#') {
                        for _ in 0..=n {
                            self.bump();
                        }
                        return Ok(Tok::Str(s));
                    }
                    s.push(self.bump());
                }
            }
        }
        if c == '`' {
            self.bump();
            return self.interp(pos);
        }
        if c == '\'' {
            self.bump();
            let s = self.string_body('\'', pos)?;
            let mut it = s.chars();
            return match (it.next(), it.next()) {
                (Some(ch), None) => Ok(Tok::Char(ch)),
                _ => Err(EvalError::parse(
                    "BadInput",
                    format!("Invalid character literal: '{}'", s),
                    pos,
                )),
            };
        }
        for p in PUNCTS {
            let pc: Vec<char> = p.chars().collect();
            if (0..pc.len()).all(|k| self.peek(k) == pc[k]) {
                if *p == "!in" && is_ident_char(self.peek(3)) {
                    continue;
                }
                for _ in 0..pc.len() {
                    self.bump();
                }
                return Ok(Tok::Punct(p));
            }
        }
        Err(EvalError::parse("BadInput", format!("Unexpected character '{}'", c), pos))
    }

    fn number(&mut self, pos: Pos) -> Result<Tok, EvalError> {
        let mut s = String::new();
        if self.peek(0) == '0' && matches!(self.peek(1), 'x' | 'X' | 'o' | 'O' | 'b' | 'B') {
            self.bump();
            let radix = match self.bump() {
                'x' | 'X' => 16,
                'o' | 'O' => 8,
                _ => 2,
            };
            while self.peek(0).is_ascii_alphanumeric() || self.peek(0) == '_' {
                let c = self.bump();
                if c != '_' {
                    s.push(c);
                }
            }
            return match u64::from_str_radix(&s, radix) {
                Ok(v) => Ok(Tok::Int(v as i64)),
                Err(_) => Err(EvalError::parse(
                    "BadInput",
                    format!("Invalid number: {}", s),
                    pos,
                )),
            };
        }
        let mut is_float = false;
        while self.peek(0).is_ascii_digit() || self.peek(0) == '_' {
            let c = self.bump();
            if c != '_' {
                s.push(c);
            }
        }
        if self.peek(0) == '.' && self.peek(1).is_ascii_digit() {
            is_float = true;
            s.push(self.bump());
            while self.peek(0).is_ascii_digit() || self.peek(0) == '_' {
                let c = self.bump();
                if c != '_' {
                    s.push(c);
                }
            }
        } else if self.peek(0) == '.'
            && !matches!(self.peek(1), '.')
            && !is_ident_start(self.peek(1))
        {
            // `1.` is a float.
            is_float = true;
            self.bump();
            s.push_str(".0");
        }
        if matches!(self.peek(0), 'e' | 'E')
            && (self.peek(1).is_ascii_digit()
                || (matches!(self.peek(1), '+' | '-') && self.peek(2).is_ascii_digit()))
        {
            is_float = true;
            s.push(self.bump());
            if matches!(self.peek(0), '+' | '-') {
                s.push(self.bump());
            }
            while self.peek(0).is_ascii_digit() {
                s.push(self.bump());
            }
        }
        if is_ident_char(self.peek(0)) {
            while is_ident_char(self.peek(0)) {
                s.push(self.bump());
            }
            return Err(EvalError::parse("BadInput", format!("Invalid number: {}", s), pos));
        }
        if is_float {
            return s
                .parse::<f64>()
                .map(Tok::Float)
                .map_err(|_| EvalError::parse("BadInput", format!("Invalid number: {}", s), pos));
        }
        if s == "9223372036854775808" {
            return Ok(Tok::IntMinAbs);
        }
        match s.parse::<i64>() {
            Ok(v) => Ok(Tok::Int(v)),
            Err(_) => s
                .parse::<f64>()
                .map(Tok::Float)
                .map_err(|_| EvalError::parse("BadInput", format!("Invalid number: {}", s), pos)),
        }
    }

    fn escape(&mut self, pos: Pos) -> Result<Option<char>, EvalError> {
        if self.i >= self.src.len() {
            return Err(EvalError::parse("BadInput", "Open string is not terminated", pos));
        }
        let c = self.bump();
        let hex = |lx: &mut Lexer, n: usize| -> Result<char, EvalError> {
            let mut v: u32 = 0;
            for _ in 0..n {
                let d = lx.peek(0).to_digit(16).ok_or_else(|| {
                    EvalError::parse("BadInput", "Invalid escape sequence", pos)
                })?;
                lx.bump();
                v = v * 16 + d;
            }
            std::char::from_u32(v).ok_or_else(|| {
                EvalError::parse("BadInput", "Invalid escape sequence", pos)
            })
        };
        Ok(Some(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '0' => '\0',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            '`' => '`',
            '$' => '$',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '\n' => {
                // Line continuation: skip leading whitespace of the next line.
                while self.peek(0) == ' ' || self.peek(0) == '\t' {
                    self.bump();
                }
                return Ok(None);
            }
            _ => {
                return Err(EvalError::parse("BadInput",
                    format!("Invalid escape sequence: \\{}", c),
                    pos,
                ))
            }
        }))
    }

    fn string_body(&mut self, q: char, pos: Pos) -> Result<String, EvalError> {
        let mut s = String::new();
        loop {
            if self.i >= self.src.len() {
                return Err(EvalError::parse("BadInput",
                    "Open string is not terminated",
                    pos,
                ));
            }
            let c = self.bump();
            if c == q {
                if q == '"' && self.peek(0) == '"' {
                    self.bump();
                    s.push('"');
                    continue;
                }
                return Ok(s);
            }
            if c == '\n' && q == '"' {
                return Err(EvalError::parse("BadInput",
                    "Open string is not terminated",
                    pos,
                ));
            }
            if c == '\\' {
                if self.peek(0) == '\n' || (self.peek(0) == '\r' && self.peek(1) == '\n') {
                    // Line continuation: skip the line break and the next line's
                    // indentation up to the column of the opening quote.
                    if self.peek(0) == '\r' {
                        self.bump();
                    }
                    self.bump();
                    let mut skip = pos.col;
                    while skip > 0 && (self.peek(0) == ' ' || self.peek(0) == '\t') {
                        self.bump();
                        skip -= 1;
                    }
                    continue;
                }
                if let Some(e) = self.escape(pos)? {
                    s.push(e);
                }
            } else {
                s.push(c);
            }
        }
    }

    fn interp(&mut self, pos: Pos) -> Result<Tok, EvalError> {
        let mut parts = Vec::new();
        let mut s = String::new();
        if self.peek(0) == '\r' && self.peek(1) == '\n' {
            self.bump();
            self.bump();
        } else if self.peek(0) == '\n' {
            self.bump();
        }
        loop {
            if self.i >= self.src.len() {
                return Err(EvalError::parse("BadInput",
                    "Open string is not terminated",
                    pos,
                ));
            }
            let c = self.bump();
            if c == '`' {
                // A doubled back-tick is a literal back-tick.
                if self.peek(0) == '`' {
                    self.bump();
                    s.push('`');
                    continue;
                }
                if !s.is_empty() || parts.is_empty() {
                    parts.push(InterpPart::Lit(s));
                }
                return Ok(Tok::Interp(parts));
            }
            if c == '\\' && self.peek(0) == '$' && self.peek(1) == '{' {
                self.bump();
                self.bump();
                s.push_str("${");
                continue;
            }
            if c == '$' && self.peek(0) == '{' {
                self.bump();
                if !s.is_empty() {
                    parts.push(InterpPart::Lit(std::mem::take(&mut s)));
                }
                let cpos = Pos::new(self.line, self.col);
                let mut code = String::new();
                let mut depth = 1;
                loop {
                    if self.i >= self.src.len() {
                        return Err(EvalError::parse("BadInput",
                            "Open string is not terminated",
                            pos,
                        ));
                    }
                    let d = self.bump();
                    match d {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        '"' | '\'' => {
                            code.push(d);
                            while self.i < self.src.len() && self.peek(0) != d {
                                let e = self.bump();
                                code.push(e);
                                if e == '\\' && self.i < self.src.len() {
                                    code.push(self.bump());
                                }
                            }
                            if self.i < self.src.len() {
                                code.push(self.bump());
                            }
                            continue;
                        }
                        _ => {}
                    }
                    code.push(d);
                }
                parts.push(InterpPart::Code(code, cpos));
                continue;
            }
            s.push(c);
        }
    }
}
