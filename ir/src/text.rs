//! The stable text form of a graph: printed, diffed, parsed back.
//!
//! ```text
//! graph "tiny" {
//!   input %x: f32[batch,4]
//!   const %w: f32[4,4] = weight
//!   const %axes: i64[1] = [0]
//!   %y: f32[batch,4] = MatMul(%x, %w) @"layer0"
//!   output %y
//! }
//! ```
//!
//! Op attributes are written in RON, so every typed attribute prints and
//! parses without a hand-written case per op. Constants with at most
//! [`INLINE_LIMIT`] elements are written inline; larger ones are `weight`
//! and their bytes come from the weight map given to [`parse`].

use crate::{DType, Dim, Graph, Node, Op, Shape, Tensor, ValueId, ValueType};
use half::{bf16, f16};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// Constants with at most this many elements are printed inline.
pub const INLINE_LIMIT: usize = 16;

/// Error from [`parse`], with the 1-based line it was found on.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value_ref(name: &str) -> String {
    if is_plain_name(name) {
        format!("%{name}")
    } else {
        format!("%{}", quote(name))
    }
}

/// The op (with attributes) in the text form's RON notation.
pub fn op_to_string(op: &Op) -> String {
    ron::to_string(op).expect("ops always serialize")
}

/// Small plain constants are printed inline; packed weights never are,
/// because their elements are codes, not values.
fn is_inline(t: &Tensor) -> bool {
    t.len() <= INLINE_LIMIT && !t.dtype().is_quant()
}

fn inline_values(t: &Tensor) -> String {
    let items: Vec<String> = match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .unwrap_or_default()
            .iter()
            .map(|v| format!("{v:?}"))
            .collect(),
        DType::F64 => t
            .to_vec::<f64>()
            .unwrap_or_default()
            .iter()
            .map(|v| format!("{v:?}"))
            .collect(),
        DType::F16 => t
            .to_vec::<f16>()
            .unwrap_or_default()
            .iter()
            .map(|v| format!("{:?}", v.to_f32()))
            .collect(),
        DType::BF16 => t
            .to_vec::<bf16>()
            .unwrap_or_default()
            .iter()
            .map(|v| format!("{:?}", v.to_f32()))
            .collect(),
        DType::U64 => t
            .to_vec::<u64>()
            .unwrap_or_default()
            .iter()
            .map(|v| v.to_string())
            .collect(),
        DType::Bool => t.bytes().iter().map(|&b| (b != 0).to_string()).collect(),
        _ => t.to_i64_vec().iter().map(|v| v.to_string()).collect(),
    };
    format!("[{}]", items.join(", "))
}

/// Prints a graph in the text form.
pub fn print(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {} {{", quote(&g.name));
    for (k, v) in &g.metadata {
        let _ = writeln!(s, "  meta {} = {}", quote(k), quote(v));
    }
    for &i in &g.inputs {
        let v = g.value(i);
        let _ = writeln!(s, "  input {}: {}", value_ref(&v.name), v.ty);
    }
    for (&id, t) in &g.constants {
        let v = g.value(id);
        let body = if is_inline(t) {
            inline_values(t)
        } else {
            "weight".to_string()
        };
        let _ = writeln!(s, "  const {}: {} = {}", value_ref(&v.name), v.ty, body);
    }
    for n in &g.nodes {
        let outs: Vec<String> = n
            .outputs
            .iter()
            .map(|&o| format!("{}: {}", value_ref(&g.value(o).name), g.value(o).ty))
            .collect();
        let ins: Vec<String> = n
            .inputs
            .iter()
            .map(|i| match i {
                Some(v) => value_ref(&g.value(*v).name),
                None => "_".to_string(),
            })
            .collect();
        let _ = write!(
            s,
            "  {} = {}({})",
            outs.join(", "),
            op_to_string(&n.op),
            ins.join(", ")
        );
        if !n.name.is_empty() {
            let _ = write!(s, " @{}", quote(&n.name));
        }
        s.push('\n');
    }
    for &o in &g.outputs {
        let _ = writeln!(s, "  output {}", value_ref(&g.value(o).name));
    }
    s.push_str("}\n");
    s
}

/// The constants that [`print`] writes as `weight`, by value name: what
/// [`parse`] needs beside the text to rebuild the graph.
pub fn external_weights(g: &Graph) -> BTreeMap<String, Tensor> {
    g.constants
        .iter()
        .filter(|(_, t)| !is_inline(t))
        .map(|(&id, t)| (g.value(id).name.clone(), t.clone()))
        .collect()
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, token: &str) -> Result<(), ParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            let r: String = self.rest().chars().take(24).collect();
            self.err(format!("expected `{token}`, found `{r}`"))
        }
    }
    fn word(&mut self) -> Result<&'a str, ParseError> {
        self.skip_ws();
        let r = self.rest();
        let n = r
            .find(|c: char| {
                !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '+' | '?'))
            })
            .unwrap_or(r.len());
        if n == 0 {
            return self.err(format!(
                "expected a word, found `{}`",
                r.chars().take(24).collect::<String>()
            ));
        }
        self.pos += n;
        Ok(&r[..n])
    }
    fn string(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        if !self.rest().starts_with('"') {
            return self.err("expected a quoted string");
        }
        let mut out = String::new();
        let mut chars = self.rest()[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 2;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, c)) => out.push(c),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.err("unterminated string")
    }
    fn name(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        if self.rest().starts_with('"') {
            self.string()
        } else {
            Ok(self.word()?.to_string())
        }
    }
    fn value_name(&mut self) -> Result<String, ParseError> {
        self.expect("%")?;
        self.name()
    }
    fn value_type(&mut self) -> Result<ValueType, ParseError> {
        let w = self.word()?;
        let dtype: DType = w
            .parse()
            .or_else(|e: crate::dtype::UnknownDType| self.err(e.to_string()))?;
        self.expect("[")?;
        let mut dims = Vec::new();
        if !self.eat("]") {
            loop {
                let d = self.word()?;
                dims.push(if d == "?" {
                    Dim::Unknown
                } else if let Ok(n) = d.parse::<u64>() {
                    Dim::Fixed(n)
                } else {
                    Dim::Sym(d.to_string())
                });
                if self.eat("]") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(ValueType::new(dtype, Shape(dims)))
    }
    /// The RON text of an op: an identifier and, if present, its balanced parenthesised body.
    fn op_text(&mut self) -> Result<&'a str, ParseError> {
        self.skip_ws();
        let start = self.pos;
        self.word()?;
        let r = self.rest();
        // A body starts with `(` that is not the operand list: operands start with `%`, `_` or `)`.
        let body_follows = r.starts_with('(') && {
            let inner = r[1..].trim_start();
            !(inner.starts_with('%') || inner.starts_with('_') || inner.starts_with(')'))
        };
        if body_follows {
            let mut depth = 0i32;
            let mut in_str = false;
            let mut escaped = false;
            for (i, c) in r.char_indices() {
                if in_str {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => in_str = false,
                        _ => {}
                    }
                    continue;
                }
                match c {
                    '"' => in_str = true,
                    '(' | '[' => depth += 1,
                    ')' | ']' => {
                        depth -= 1;
                        if depth == 0 {
                            self.pos += i + 1;
                            return Ok(&self.s[start..self.pos]);
                        }
                    }
                    _ => {}
                }
            }
            return self.err("unbalanced parentheses in op attributes");
        }
        Ok(&self.s[start..self.pos])
    }
}

fn parse_inline(dtype: DType, dims: Vec<usize>, text: &str) -> Result<Tensor, String> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or("inline constant must be `[v, ...]`")?;
    let items: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let e = |x: &str| format!("bad {dtype} literal `{x}`");
    let floats = || -> Result<Vec<f64>, String> {
        items
            .iter()
            .map(|x| x.parse::<f64>().map_err(|_| e(x)))
            .collect()
    };
    let ints = || -> Result<Vec<i64>, String> {
        items
            .iter()
            .map(|x| x.parse::<i64>().map_err(|_| e(x)))
            .collect()
    };
    let t = match dtype {
        DType::Quant(_) => return Err(format!("a {dtype} constant must be `weight`")),
        DType::F32 => {
            let v: Result<Vec<f32>, String> = items
                .iter()
                .map(|x| x.parse::<f32>().map_err(|_| e(x)))
                .collect();
            Tensor::from_vec(dims, v?)
        }
        DType::F64 => Tensor::from_vec(dims, floats()?),
        DType::F16 => Tensor::from_vec(dims, floats()?.into_iter().map(f16::from_f64).collect()),
        DType::BF16 => Tensor::from_vec(dims, floats()?.into_iter().map(bf16::from_f64).collect()),
        DType::I64 => Tensor::from_vec(dims, ints()?),
        DType::I32 => Tensor::from_vec(dims, ints()?.into_iter().map(|v| v as i32).collect()),
        DType::I16 => Tensor::from_vec(dims, ints()?.into_iter().map(|v| v as i16).collect()),
        DType::I8 => Tensor::from_vec(dims, ints()?.into_iter().map(|v| v as i8).collect()),
        DType::U64 => {
            let v: Result<Vec<u64>, String> = items
                .iter()
                .map(|x| x.parse::<u64>().map_err(|_| e(x)))
                .collect();
            Tensor::from_vec(dims, v?)
        }
        DType::U32 => Tensor::from_vec(dims, ints()?.into_iter().map(|v| v as u32).collect()),
        DType::U16 => Tensor::from_vec(dims, ints()?.into_iter().map(|v| v as u16).collect()),
        DType::U8 => Tensor::from_vec(dims, ints()?.into_iter().map(|v| v as u8).collect()),
        DType::Bool => {
            let v: Result<Vec<bool>, String> = items
                .iter()
                .map(|x| x.parse::<bool>().map_err(|_| e(x)))
                .collect();
            Tensor::from_bools(dims, &v?)
        }
    };
    t.map_err(|e| e.to_string())
}

/// Parses the text form; `weights` supplies the constants printed as `weight`.
pub fn parse(text: &str, weights: &BTreeMap<String, Tensor>) -> Result<Graph, ParseError> {
    let mut g = Graph::default();
    let mut by_name: HashMap<String, ValueId> = HashMap::new();
    let mut header_seen = false;
    let mut closed = false;
    for (i, raw) in text.lines().enumerate() {
        let mut c = Cursor {
            s: raw,
            pos: 0,
            line: i + 1,
        };
        c.skip_ws();
        if c.rest().is_empty() || c.rest().starts_with('#') {
            continue;
        }
        if closed {
            return c.err("text after the closing `}`");
        }
        if !header_seen {
            c.expect("graph")?;
            g.name = c.string()?;
            c.expect("{")?;
            header_seen = true;
            continue;
        }
        if c.eat("}") {
            closed = true;
            continue;
        }
        let define = |c: &Cursor,
                      g: &mut Graph,
                      by_name: &mut HashMap<String, ValueId>,
                      name: String,
                      ty| {
            if by_name.contains_key(&name) {
                return c.err(format!("value %{name} is defined twice"));
            }
            let id = g.add_value(name.clone(), ty);
            by_name.insert(name, id);
            Ok(id)
        };
        let lookup = |c: &Cursor, by_name: &HashMap<String, ValueId>, name: &str| {
            by_name
                .get(name)
                .copied()
                .ok_or(())
                .or_else(|_| c.err(format!("value %{name} is used before it is defined")))
        };
        if c.eat("meta ") {
            let k = c.string()?;
            c.expect("=")?;
            let v = c.string()?;
            g.metadata.insert(k, v);
        } else if c.eat("input ") {
            let name = c.value_name()?;
            c.expect(":")?;
            let ty = c.value_type()?;
            let id = define(&c, &mut g, &mut by_name, name, ty)?;
            g.inputs.push(id);
        } else if c.eat("output ") {
            let name = c.value_name()?;
            let id = lookup(&c, &by_name, &name)?;
            g.outputs.push(id);
        } else if c.eat("const ") {
            let name = c.value_name()?;
            c.expect(":")?;
            let ty = c.value_type()?;
            c.expect("=")?;
            let dims: Vec<usize> = match ty.shape.as_fixed() {
                Some(d) => d.iter().map(|&x| x as usize).collect(),
                None => return c.err(format!("constant %{name} must have a fixed shape")),
            };
            let tensor = if c.eat("weight") {
                let t = weights
                    .get(&name)
                    .cloned()
                    .ok_or(())
                    .or_else(|_| c.err(format!("no weight data for constant %{name}")))?;
                if t.dtype() != ty.dtype || t.dims() != dims.as_slice() {
                    return c.err(format!(
                        "weight data for %{name} is {}{:?}, the text says {}",
                        t.dtype(),
                        t.dims(),
                        ty
                    ));
                }
                t
            } else {
                parse_inline(ty.dtype, dims, c.rest()).or_else(|m| c.err(m))?
            };
            let id = define(&c, &mut g, &mut by_name, name, ty)?;
            g.constants.insert(id, tensor);
        } else {
            let mut outs = Vec::new();
            loop {
                let name = c.value_name()?;
                c.expect(":")?;
                let ty = c.value_type()?;
                outs.push((name, ty));
                if c.eat("=") {
                    break;
                }
                c.expect(",")?;
            }
            let op_text = c.op_text()?;
            let op: Op =
                ron::from_str(op_text).or_else(|e| c.err(format!("bad op `{op_text}`: {e}")))?;
            c.expect("(")?;
            let mut inputs = Vec::new();
            if !c.eat(")") {
                loop {
                    if c.eat("_") {
                        inputs.push(None);
                    } else {
                        let name = c.value_name()?;
                        inputs.push(Some(lookup(&c, &by_name, &name)?));
                    }
                    if c.eat(")") {
                        break;
                    }
                    c.expect(",")?;
                }
            }
            let name = if c.eat("@") {
                c.string()?
            } else {
                String::new()
            };
            c.skip_ws();
            if !c.rest().is_empty() {
                return c.err(format!("unexpected `{}` after the node", c.rest()));
            }
            let mut outputs = Vec::new();
            for (n, ty) in outs {
                outputs.push(define(&c, &mut g, &mut by_name, n, ty)?);
            }
            g.add_node(Node {
                name,
                op,
                inputs,
                outputs,
            });
        }
    }
    if !closed {
        return Err(ParseError {
            line: text.lines().count(),
            message: "missing closing `}`".into(),
        });
    }
    Ok(g)
}
