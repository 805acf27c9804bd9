//! Elementwise kernels: unary maps, binary ops with numpy broadcasting,
//! variadic ops, `Where`, `Clip` and `Cast`.

use super::value::{bail, unsupported, with_dtype, with_f, with_int, Elem, KResult, Value};
pub(crate) use kiln_ir::fused::{erf_f32, exp_f32, sigmoid_f32};
use kiln_ir::{DType, GeluApprox, Op};
use rayon::prelude::*;

/// Below this many elements a loop stays serial: spawning tasks costs more than it saves.
pub(crate) const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task.
const CHUNK: usize = 1 << 13;

/// Maps every element, in parallel for large inputs.
pub(crate) fn par_map<T: Copy + Send + Sync, U: Copy + Send + Sync + Default>(
    src: &[T],
    f: impl Fn(T) -> U + Sync + Send,
) -> Vec<U> {
    if src.len() < PAR_MIN {
        return src.iter().map(|&x| f(x)).collect();
    }
    let mut out = vec![U::default(); src.len()];
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(o, s)| {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = f(s);
            }
        });
    out
}

/// The numpy broadcast of several shapes.
pub(crate) fn broadcast_shapes(shapes: &[&[usize]]) -> KResult<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                bail!("shapes {:?} cannot be broadcast together", shapes);
            }
        }
    }
    Ok(out)
}

/// How N broadcast inputs are walked to produce an output: rows of `inner`
/// contiguous output elements, each input advancing by 0 or 1 per element.
pub(crate) struct Plan<const N: usize> {
    outer: Vec<usize>,
    outer_strides: Vec<[usize; N]>,
    /// Output elements per row.
    pub inner: usize,
    /// Step of each input along the row (0 = broadcast, 1 = contiguous).
    pub steps: [usize; N],
}

impl<const N: usize> Plan<N> {
    /// Plans the walk; every input shape must broadcast to `out`.
    pub fn new(out: &[usize], ins: [&[usize]; N]) -> Plan<N> {
        let r = out.len();
        // Per input, the contiguous strides of the shape padded to rank r, 0 where broadcast.
        let mut st = [(); N].map(|_| vec![0usize; r]);
        for (k, s) in ins.iter().enumerate() {
            let off = r - s.len();
            let mut acc = 1;
            for i in (0..s.len()).rev() {
                st[k][off + i] = if s[i] == 1 { 0 } else { acc };
                acc *= s[i];
            }
        }
        // Dims of size 1 contribute nothing; merge neighbours that walk every input contiguously.
        let mut dims: Vec<(usize, [usize; N])> = Vec::new();
        for d in 0..r {
            if out[d] == 1 {
                continue;
            }
            let strides = std::array::from_fn(|k| st[k][d]);
            if let Some(last) = dims.last_mut() {
                let mergeable = (0..N).all(|k| last.1[k] == strides[k] * out[d]);
                if mergeable {
                    last.0 *= out[d];
                    last.1 = strides;
                    continue;
                }
            }
            dims.push((out[d], strides));
        }
        let (inner, steps) = dims.pop().unwrap_or((1, [0; N]));
        Plan {
            outer: dims.iter().map(|d| d.0).collect(),
            outer_strides: dims.iter().map(|d| d.1).collect(),
            inner,
            steps,
        }
    }

    fn offsets(&self, mut row: usize) -> [usize; N] {
        let mut off = [0usize; N];
        for d in (0..self.outer.len()).rev() {
            let i = row % self.outer[d];
            row /= self.outer[d];
            for (k, o) in off.iter_mut().enumerate() {
                *o += i * self.outer_strides[d][k];
            }
        }
        off
    }

    /// Calls `f(row_out, offsets)` for every output row, in parallel when large.
    pub fn for_rows<O: Send>(&self, out: &mut [O], f: impl Fn(&mut [O], [usize; N]) + Sync + Send) {
        let inner = self.inner.max(1);
        if out.is_empty() {
            return;
        }
        if out.len() < PAR_MIN {
            for (r, row) in out.chunks_mut(inner).enumerate() {
                f(row, self.offsets(r));
            }
        } else {
            let rows_per_task = (CHUNK / inner).max(1);
            out.par_chunks_mut(inner * rows_per_task)
                .enumerate()
                .for_each(|(t, rows)| {
                    for (j, row) in rows.chunks_mut(inner).enumerate() {
                        f(row, self.offsets(t * rows_per_task + j));
                    }
                });
        }
    }
}

/// Applies `f` to two broadcast operands.
pub(crate) fn binary<A: Elem, B: Elem, O: Elem>(
    a: &Value,
    b: &Value,
    f: impl Fn(A, B) -> O + Sync + Send,
) -> KResult<Value> {
    let (x, y) = (a.slice::<A>()?, b.slice::<B>()?);
    if a.shape == b.shape {
        let mut out = vec![O::default(); x.len()];
        let body = |o: &mut [O], x: &[A], y: &[B]| {
            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                *o = f(x, y);
            }
        };
        if x.len() < PAR_MIN {
            body(&mut out, x, y);
        } else {
            out.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
                .for_each(|(o, (x, y))| body(o, x, y));
        }
        return Ok(Value::new(a.shape.clone(), out));
    }
    let shape = broadcast_shapes(&[&a.shape, &b.shape])?;
    let n: usize = shape.iter().product();
    let mut out = vec![O::default(); n];
    let plan = Plan::new(&shape, [&a.shape, &b.shape]);
    let [sa, sb] = plan.steps;
    plan.for_rows(&mut out, |row, [oa, ob]| match (sa, sb) {
        (1, 1) => {
            for ((o, &x), &y) in row.iter_mut().zip(&x[oa..]).zip(&y[ob..]) {
                *o = f(x, y);
            }
        }
        (1, _) => {
            let y = y[ob];
            for (o, &x) in row.iter_mut().zip(&x[oa..]) {
                *o = f(x, y);
            }
        }
        (_, 1) => {
            let x = x[oa];
            for (o, &y) in row.iter_mut().zip(&y[ob..]) {
                *o = f(x, y);
            }
        }
        _ => row.fill(f(x[oa], y[ob])),
    });
    Ok(Value::new(shape, out))
}

/// Materialises `v` broadcast to `shape` (Expand).
pub(crate) fn broadcast_to(v: &Value, shape: &[usize]) -> KResult<Value> {
    let target = broadcast_shapes(&[&v.shape, shape])?;
    with_dtype!(v.dtype(), T => {
        let x = v.slice::<T>()?;
        let n: usize = target.iter().product();
        let mut out = vec![T::default(); n];
        let plan = Plan::new(&target, [&v.shape]);
        let [s] = plan.steps;
        plan.for_rows(&mut out, |row, [o]| {
            if s == 1 {
                row.copy_from_slice(&x[o..o + row.len()]);
            } else {
                row.fill(x[o]);
            }
        });
        Ok(Value::new(target, out))
    })
}

/// `Where(cond, a, b)` with broadcasting.
pub(crate) fn where_op(c: &Value, a: &Value, b: &Value) -> KResult<Value> {
    if a.dtype() != b.dtype() {
        bail!(
            "Where branches have different dtypes {} and {}",
            a.dtype(),
            b.dtype()
        );
    }
    let cond = c.slice::<bool>()?;
    let shape = broadcast_shapes(&[&c.shape, &a.shape, &b.shape])?;
    let n: usize = shape.iter().product();
    with_dtype!(a.dtype(), T => {
        let (x, y) = (a.slice::<T>()?, b.slice::<T>()?);
        let mut out = vec![T::default(); n];
        let plan = Plan::new(&shape, [&c.shape, &a.shape, &b.shape]);
        let [sc, sa, sb] = plan.steps;
        plan.for_rows(&mut out, |row, [oc, oa, ob]| {
            for (i, o) in row.iter_mut().enumerate() {
                *o = if cond[oc + i * sc] { x[oa + i * sa] } else { y[ob + i * sb] };
            }
        });
        Ok(Value::new(shape, out))
    })
}

/// Maps a float tensor with an f32 and an f64 version of the same function;
/// half-precision inputs compute in f32 and round back.
pub(crate) fn map_float(
    x: &Value,
    f32f: impl Fn(f32) -> f32 + Sync + Send,
    f64f: impl Fn(f64) -> f64 + Sync + Send,
) -> KResult<Value> {
    match x.dtype() {
        DType::F32 => Ok(Value::new(
            x.shape.clone(),
            par_map(x.slice::<f32>()?, f32f),
        )),
        DType::F64 => Ok(Value::new(
            x.shape.clone(),
            par_map(x.slice::<f64>()?, f64f),
        )),
        DType::F16 | DType::BF16 => {
            let y = Value::new(x.shape.clone(), par_map(&x.to_f32_vec()?, f32f));
            Ok(y.cast(x.dtype()))
        }
        d => bail!("expected a floating-point tensor, got {d}"),
    }
}

/// Defines a float unary map from one expression used at f32 and f64;
/// the listed f32 constants are converted for the f64 version.
macro_rules! float_unary {
    ($x:expr, [$($c:ident),*], $v:ident => $body:expr) => {{
        map_float(
            $x,
            { $(let $c: f32 = $c;)* move |$v: f32| -> f32 { $body } },
            { $(let $c: f64 = $c as f64;)* move |$v: f64| -> f64 { $body } },
        )
    }};
}

fn erf_f64(x: f64) -> f64 {
    libm::erf(x)
}

fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Unary ops on floats (and the numeric ones that also take integers).
pub(crate) fn unary(op: &Op, x: &Value) -> KResult<Value> {
    let dt = x.dtype();
    match op {
        Op::Abs => {
            with_int!(dt, T => Ok(int_map::<T>(x, |v| v.wrapping_abs_()) ?), _ => float_unary!(x, [], v => v.abs()))
        }
        Op::Neg => {
            with_int!(dt, T => Ok(int_map::<T>(x, |v| v.wrapping_neg())?), _ => float_unary!(x, [], v => -v))
        }
        Op::Sign => {
            with_int!(dt, T => Ok(int_map::<T>(x, |v| v.signum_())?), _ => float_unary!(x, [], v => if v > 0.0 { 1.0 } else if v < 0.0 { -1.0 } else { v * 0.0 }))
        }
        Op::Relu => {
            with_int!(dt, T => Ok(int_map::<T>(x, |v| if v > 0 { v } else { 0 })?), _ => float_unary!(x, [], v => if v > 0.0 { v } else if v.is_nan() { v } else { 0.0 }))
        }
        Op::Exp => match dt {
            DType::F32 => Ok(Value::new(
                x.shape.clone(),
                par_map(x.slice::<f32>()?, exp_f32),
            )),
            _ => float_unary!(x, [], v => v.exp()),
        },
        Op::Log => float_unary!(x, [], v => v.ln()),
        Op::Sqrt => float_unary!(x, [], v => v.sqrt()),
        Op::Reciprocal => float_unary!(x, [], v => 1.0 / v),
        Op::Sin => float_unary!(x, [], v => v.sin()),
        Op::Cos => float_unary!(x, [], v => v.cos()),
        Op::Tan => float_unary!(x, [], v => v.tan()),
        Op::Asin => float_unary!(x, [], v => v.asin()),
        Op::Acos => float_unary!(x, [], v => v.acos()),
        Op::Atan => float_unary!(x, [], v => v.atan()),
        Op::Sinh => float_unary!(x, [], v => v.sinh()),
        Op::Cosh => float_unary!(x, [], v => v.cosh()),
        Op::Asinh => float_unary!(x, [], v => v.asinh()),
        Op::Acosh => float_unary!(x, [], v => v.acosh()),
        Op::Atanh => float_unary!(x, [], v => v.atanh()),
        Op::Tanh => float_unary!(x, [], v => v.tanh()),
        Op::Sigmoid => map_float(x, sigmoid_f32, sigmoid_f64),
        Op::Erf => map_float(x, erf_f32, erf_f64),
        Op::Floor => float_unary!(x, [], v => v.floor()),
        Op::Ceil => float_unary!(x, [], v => v.ceil()),
        Op::Round => float_unary!(x, [], v => v.round_ties_even()),
        Op::Softplus => float_unary!(x, [], v => if v > 30.0 { v } else { v.exp().ln_1p() }),
        Op::Softsign => float_unary!(x, [], v => v / (1.0 + v.abs())),
        Op::Mish => {
            float_unary!(x, [], v => v * (if v > 30.0 { v } else { v.exp().ln_1p() }).tanh())
        }
        Op::HardSwish => float_unary!(x, [], v => v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
        Op::Swish { alpha } => {
            let a = alpha.0;
            map_float(
                x,
                move |v| v * sigmoid_f32(a * v),
                move |v| v * sigmoid_f64(a as f64 * v),
            )
        }
        Op::Gelu { approximate } => match approximate {
            GeluApprox::None => map_float(
                x,
                |v| 0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2)),
                |v| 0.5 * v * (1.0 + erf_f64(v * std::f64::consts::FRAC_1_SQRT_2)),
            ),
            GeluApprox::Tanh => {
                float_unary!(x, [], v => 0.5 * v * (1.0 + (0.797_884_6 * (v + 0.044715 * v * v * v)).tanh()))
            }
        },
        Op::LeakyRelu { alpha } => {
            let alpha = alpha.0;
            float_unary!(x, [alpha], v => if v >= 0.0 { v } else { alpha * v })
        }
        Op::Elu { alpha } => {
            let alpha = alpha.0;
            float_unary!(x, [alpha], v => if v > 0.0 { v } else { alpha * (v.exp() - 1.0) })
        }
        Op::Selu { alpha, gamma } => {
            let (alpha, gamma) = (alpha.0, gamma.0);
            float_unary!(x, [alpha, gamma], v => if v > 0.0 { gamma * v } else { gamma * alpha * (v.exp() - 1.0) })
        }
        Op::Celu { alpha } => {
            let alpha = alpha.0;
            float_unary!(x, [alpha], v => v.max(0.0) + (alpha * ((v / alpha).exp() - 1.0)).min(0.0))
        }
        Op::HardSigmoid { alpha, beta } => {
            let (alpha, beta) = (alpha.0, beta.0);
            float_unary!(x, [alpha, beta], v => (alpha * v + beta).clamp(0.0, 1.0))
        }
        Op::ThresholdedRelu { alpha } => {
            let alpha = alpha.0;
            float_unary!(x, [alpha], v => if v > alpha { v } else { 0.0 })
        }
        Op::Shrink { bias, lambd } => {
            let (bias, lambd) = (bias.0, lambd.0);
            with_int!(dt, T => {
                let (b, l) = (bias as f64, lambd as f64);
                Ok(Value::new(x.shape.clone(), par_map(x.slice::<T>()?, move |v| {
                    let f = v.to_f64();
                    if f < -l { T::from_f64(f + b) } else if f > l { T::from_f64(f - b) } else { T::zero() }
                })))
            }, _ => float_unary!(x, [bias, lambd], v => if v < -lambd { v + bias } else if v > lambd { v - bias } else { 0.0 }))
        }
        Op::Not => {
            let v = x.slice::<bool>()?;
            Ok(Value::new(x.shape.clone(), par_map(v, |b| !b)))
        }
        Op::BitwiseNot => {
            with_int!(dt, T => Ok(Value::new(x.shape.clone(), par_map(x.slice::<T>()?, |v| !v))), _ => bail!("BitwiseNot needs integers, got {dt}"))
        }
        Op::IsNaN => {
            with_dtype!(dt, T => Ok(Value::new(x.shape.clone(), par_map(x.slice::<T>()?, |v| v.is_nan()))))
        }
        Op::IsInf {
            detect_positive,
            detect_negative,
        } => {
            let (p, n) = (*detect_positive, *detect_negative);
            with_dtype!(dt, T => Ok(Value::new(x.shape.clone(), par_map(x.slice::<T>()?, move |v| {
                let f = v.to_f64();
                (p && f == f64::INFINITY) || (n && f == f64::NEG_INFINITY)
            }))))
        }
        _ => unsupported!("{} is not a unary elementwise op", op.name()),
    }
}

/// Integer helpers missing from std under one name for signed and unsigned types.
pub(crate) trait IntExt: Copy {
    fn wrapping_abs_(self) -> Self;
    fn signum_(self) -> Self;
}
macro_rules! int_ext_signed { ($($t:ty),*) => {$(
    impl IntExt for $t {
        fn wrapping_abs_(self) -> Self { self.wrapping_abs() }
        fn signum_(self) -> Self { self.signum() }
    }
)*}; }
macro_rules! int_ext_unsigned { ($($t:ty),*) => {$(
    impl IntExt for $t {
        fn wrapping_abs_(self) -> Self { self }
        fn signum_(self) -> Self { (self > 0) as $t }
    }
)*}; }
int_ext_signed!(i8, i16, i32, i64);
int_ext_unsigned!(u8, u16, u32, u64);

fn int_map<T: Elem>(x: &Value, f: impl Fn(T) -> T + Sync + Send) -> KResult<Value> {
    Ok(Value::new(x.shape.clone(), par_map(x.slice::<T>()?, f)))
}

/// Computes a half-precision binary op in f32 and rounds back.
fn via_f32(a: &Value, b: &Value, f: impl Fn(&Value, &Value) -> KResult<Value>) -> KResult<Value> {
    let dt = a.dtype();
    let r = f(&a.cast(DType::F32), &b.cast(DType::F32))?;
    Ok(if r.dtype() == DType::F32 {
        r.cast(dt)
    } else {
        r
    })
}

fn same_dtype(op: &Op, a: &Value, b: &Value) -> KResult<()> {
    if a.dtype() != b.dtype() {
        bail!(
            "{} operands have different dtypes {} and {}",
            op.name(),
            a.dtype(),
            b.dtype()
        );
    }
    Ok(())
}

/// Python-style integer floor modulo (sign follows the divisor); 0 for a zero divisor like numpy.
macro_rules! int_mod {
    ($x:expr, $y:expr) => {{
        let (x, y) = ($x, $y);
        if y == 0 {
            0
        } else {
            let r = x.wrapping_rem(y);
            #[allow(unused_comparisons)]
            let adjust = r != 0 && ((r < 0) != (y < 0));
            if adjust {
                r.wrapping_add(y)
            } else {
                r
            }
        }
    }};
}

/// Binary elementwise ops with broadcasting.
pub(crate) fn binary_op(op: &Op, a: &Value, b: &Value) -> KResult<Value> {
    let dt = a.dtype();
    if matches!(dt, DType::F16 | DType::BF16) && !matches!(op, Op::Equal) {
        if let Op::Pow = op {
            return via_f32(a, b, |a, b| binary_op(op, a, b));
        }
        same_dtype(op, a, b)?;
        return via_f32(a, b, |a, b| binary_op(op, a, b));
    }
    match op {
        Op::Pow => {
            // The exponent may have another dtype; numpy computes in the wider type and casts to the base's.
            if dt.is_integer() {
                let e = b.cast(DType::F64);
                return with_int!(dt, T => binary::<T, f64, T>(a, &e, |x, y| {
                    let yi = y as i64;
                    if y == yi as f64 && (0..=64).contains(&yi) { x.wrapping_pow(yi as u32) } else { T::from_f64(x.to_f64().powf(y)) }
                }), _ => unreachable!());
            }
            let e = b.cast(dt);
            // Exporters write x² as Pow(x, 2) (LayerNorm's variance): a
            // multiply is exact where powf is a slow library call.
            if e.len() == 1 && e.to_f64s()[0] == 2.0 && a.shape.len() >= e.shape.len() {
                return with_f!(dt, T => binary::<T, T, T>(a, &e, |x, _| x * x), _ => unreachable!());
            }
            with_f!(dt, T => binary::<T, T, T>(a, &e, |x, y| x.powf(y)), _ => bail!("Pow is not defined for {dt}"))
        }
        Op::PRelu => {
            same_dtype(op, a, b)?;
            with_int!(dt, T => binary::<T, T, T>(a, b, |x, s| if x < T::zero() { x.wrapping_mul(s) } else { x }),
                _ => with_f!(dt, T => binary::<T, T, T>(a, b, |x, s| if x < 0.0 { x * s } else { x }), _ => bail!("PRelu is not defined for {dt}")))
        }
        Op::BitShift { left } => {
            same_dtype(op, a, b)?;
            let left = *left;
            with_int!(dt, T => binary::<T, T, T>(a, b, move |x, s| {
                let bits = (std::mem::size_of::<T>() * 8) as i64;
                let s = s.to_i64();
                // Out-of-range counts follow the ONNX reference: 0, or -1
                // for a negative value shifted right (sign fill).
                if !(0..bits).contains(&s) {
                    if !left && x.to_i64() < 0 { T::from_i64(-1) } else { T::from_i64(0) }
                } else if left {
                    x << s
                } else {
                    x >> s
                }
            }), _ => bail!("BitShift needs integers, got {dt}"))
        }
        Op::And | Op::Or | Op::Xor => {
            same_dtype(op, a, b)?;
            let f: fn(bool, bool) -> bool = match op {
                Op::And => |x, y| x & y,
                Op::Or => |x, y| x | y,
                _ => |x, y| x ^ y,
            };
            binary::<bool, bool, bool>(a, b, f)
        }
        Op::Equal | Op::Less | Op::LessOrEqual | Op::Greater | Op::GreaterOrEqual => {
            same_dtype(op, a, b)?;
            with_dtype!(dt, T => {
                let f: fn(T, T) -> bool = match op {
                    Op::Equal => |x, y| x == y,
                    Op::Less => |x, y| x < y,
                    Op::LessOrEqual => |x, y| x <= y,
                    Op::Greater => |x, y| x > y,
                    _ => |x, y| x >= y,
                };
                binary::<T, T, bool>(a, b, f)
            })
        }
        Op::BitwiseAnd | Op::BitwiseOr | Op::BitwiseXor => {
            same_dtype(op, a, b)?;
            with_int!(dt, T => {
                let f: fn(T, T) -> T = match op {
                    Op::BitwiseAnd => |x, y| x & y,
                    Op::BitwiseOr => |x, y| x | y,
                    _ => |x, y| x ^ y,
                };
                binary::<T, T, T>(a, b, f)
            }, _ => if dt == DType::Bool {
                let f: fn(bool, bool) -> bool = match op {
                    Op::BitwiseAnd => |x, y| x & y,
                    Op::BitwiseOr => |x, y| x | y,
                    _ => |x, y| x ^ y,
                };
                binary::<bool, bool, bool>(a, b, f)
            } else { bail!("{} needs integers, got {dt}", op.name()) })
        }
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Mod { .. }
        | Op::Max
        | Op::Min
        | Op::Sum
        | Op::Mean => {
            same_dtype(op, a, b)?;
            arith(op, a, b)
        }
        _ => unsupported!("{} is not a binary elementwise op", op.name()),
    }
}

fn arith(op: &Op, a: &Value, b: &Value) -> KResult<Value> {
    let dt = a.dtype();
    // The hot f32 cases get a closure each, so `binary` is monomorphised per
    // op and its loops vectorise; the table below goes through a function
    // pointer per element (bias adds of a BERT layer ran 10x slower that way).
    if dt == DType::F32 {
        match op {
            Op::Add | Op::Sum | Op::Mean => return binary::<f32, f32, f32>(a, b, |x, y| x + y),
            Op::Sub => return binary::<f32, f32, f32>(a, b, |x, y| x - y),
            Op::Mul => return binary::<f32, f32, f32>(a, b, |x, y| x * y),
            Op::Div => return binary::<f32, f32, f32>(a, b, |x, y| x / y),
            _ => {}
        }
    }
    with_f!(dt, T => {
        let f: fn(T, T) -> T = match op {
            Op::Add | Op::Sum | Op::Mean => |x, y| x + y,
            Op::Sub => |x, y| x - y,
            Op::Mul => |x, y| x * y,
            Op::Div => |x, y| x / y,
            Op::Mod { fmod: true } => |x, y| x % y,
            Op::Mod { fmod: false } => |x, y| {
                // numpy.mod: the result takes the divisor's sign.
                let r = x % y;
                if r != 0.0 && ((r < 0.0) != (y < 0.0)) { r + y } else { r }
            },
            // numpy propagates NaN through maximum/minimum.
            Op::Max => |x, y| if x.is_nan() || y.is_nan() { T::NAN } else { x.max(y) },
            Op::Min => |x, y| if x.is_nan() || y.is_nan() { T::NAN } else { x.min(y) },
            _ => unreachable!(),
        };
        binary::<T, T, T>(a, b, f)
    }, _ => with_int!(dt, T => {
        let f: fn(T, T) -> T = match op {
            Op::Add | Op::Sum | Op::Mean => |x, y| x.wrapping_add(y),
            Op::Sub => |x, y| x.wrapping_sub(y),
            Op::Mul => |x, y| x.wrapping_mul(y),
            // Truncating division; a zero divisor gives 0 (numpy's behaviour) instead of a panic.
            Op::Div => |x, y| if y == 0 { 0 } else { x.wrapping_div(y) },
            Op::Mod { fmod: true } => |x, y| if y == 0 { 0 } else { x.wrapping_rem(y) },
            Op::Mod { fmod: false } => |x, y| int_mod!(x, y),
            Op::Max => |x, y| if x > y { x } else { y },
            Op::Min => |x, y| if x < y { x } else { y },
            _ => unreachable!(),
        };
        binary::<T, T, T>(a, b, f)
    }, _ => bail!("{} is not defined for {dt}", op.name())))
}

/// Variadic Max/Min/Sum/Mean with broadcasting.
pub(crate) fn variadic(op: &Op, xs: &[&Value]) -> KResult<Value> {
    let Some((first, rest)) = xs.split_first() else {
        bail!("{} needs at least one operand", op.name());
    };
    let mut acc = (*first).clone();
    for x in rest {
        acc = binary_op(op, &acc, x)?;
    }
    if matches!(op, Op::Mean) && xs.len() > 1 {
        let n = xs.len();
        let dt = acc.dtype();
        let d = Value::scalar(n as f64).cast(dt);
        acc = binary_op(&Op::Div, &acc, &d)?;
    }
    Ok(acc)
}

/// Clip(x, min?, max?).
pub(crate) fn clip(x: &Value, lo: Option<&Value>, hi: Option<&Value>) -> KResult<Value> {
    let dt = x.dtype();
    if matches!(dt, DType::F16 | DType::BF16) {
        let r = clip(
            &x.cast(DType::F32),
            lo.map(|v| v.cast(DType::F32)).as_ref(),
            hi.map(|v| v.cast(DType::F32)).as_ref(),
        )?;
        return Ok(r.cast(dt));
    }
    let bound = |v: Option<&Value>| -> KResult<Option<f64>> {
        match v {
            None => Ok(None),
            Some(v) if v.len() == 0 => Ok(None),
            Some(v) if v.len() == 1 => Ok(v.to_f64s().first().copied()),
            Some(v) => bail!("Clip bounds must be scalars, got shape {:?}", v.shape),
        }
    };
    let (lo, hi) = (bound(lo)?, bound(hi)?);
    with_dtype!(dt, T => {
        let l = lo.map(T::from_f64);
        let h = hi.map(T::from_f64);
        Ok(Value::new(x.shape.clone(), par_map(x.slice::<T>()?, move |v| {
            let mut v = v;
            if let Some(l) = l { if v < l { v = l; } }
            if let Some(h) = h { if v > h { v = h; } }
            v
        })))
    })
}
