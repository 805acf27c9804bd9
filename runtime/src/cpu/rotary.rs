//! Rotary position embedding (ONNX `RotaryEmbedding`, opset 23).
//!
//! Each head vector is rotated pairwise by the angle of its position:
//! `(x1, x2) → (cos·x1 - sin·x2, sin·x1 + cos·x2)`, the pairs being the two
//! halves of the rotated part or adjacent elements (`interleaved`). Rows
//! are independent and run in parallel. f16 and bf16 compute in f32 and round
//! after every operation, as the reference does in their own type.

use super::elementwise::PAR_MIN;
use super::value::{arg, bail, opt, unsupported, KResult, Value};
use half::{bf16, f16};
use kiln_ir::DType;
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Runs `RotaryEmbedding(X, cos_cache, sin_cache, position_ids?)`.
pub(crate) fn rotary_embedding(
    inputs: &[Option<&Value>],
    interleaved: bool,
    num_heads: i64,
    rotary_dim: i64,
) -> KResult<Value> {
    let (x, cos, sin) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
    let ids = opt(inputs, 3);
    let dt = x.dtype();
    if !dt.is_float() {
        unsupported!("RotaryEmbedding on {dt} (floating-point types only)");
    }
    if cos.dtype() != dt || sin.dtype() != dt {
        bail!(
            "cos_cache ({}) and sin_cache ({}) must have X's dtype {dt}",
            cos.dtype(),
            sin.dtype()
        );
    }
    // Rows of one head vector: index r ↦ (batch, seq) position, in X's element order.
    let (b, s, h, d, four_d) = match *x.shape.as_slice() {
        [b, h, s, d] => (b, s, h, d, true),
        [b, s, hidden] => {
            if num_heads <= 0 {
                bail!("num_heads must be positive for a 3-d X, got {num_heads}");
            }
            let h = num_heads as usize;
            if hidden % h != 0 {
                bail!("X hidden size {hidden} is not a multiple of {h} heads");
            }
            (b, s, h, hidden / h, false)
        }
        _ => bail!(
            "X must be 4-d [batch, heads, seq, head_size] or 3-d [batch, seq, hidden], got shape {:?}",
            x.shape
        ),
    };
    let rot = if rotary_dim == 0 {
        d
    } else {
        rotary_dim as usize
    };
    if rotary_dim < 0 || rot > d || rot % 2 != 0 {
        bail!("rotary_embedding_dim {rotary_dim} must be even and at most the head size {d}");
    }
    let half = rot / 2;
    // The cache row of each (batch, seq) position.
    let cache_rows = match ids {
        Some(p) => {
            if cos.rank() != 2 || sin.shape != cos.shape || cos.shape[1] != half {
                bail!(
                    "with position_ids, cos_cache {:?} and sin_cache {:?} must be [max_position, {half}]",
                    cos.shape,
                    sin.shape
                );
            }
            if p.shape != [b, s] {
                bail!("position_ids must be [{b}, {s}], got {:?}", p.shape);
            }
            let max = cos.shape[0];
            let ids = p.to_i64s();
            if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= max) {
                bail!("position id {bad} is outside the caches' {max} positions");
            }
            ids.into_iter().map(|i| i as usize).collect::<Vec<_>>()
        }
        None => {
            if cos.shape != [b, s, half] || sin.shape != cos.shape {
                bail!(
                    "without position_ids, cos_cache {:?} and sin_cache {:?} must be [{b}, {s}, {half}]",
                    cos.shape,
                    sin.shape
                );
            }
            (0..b * s).collect()
        }
    };
    let pos_of = |r: usize| -> usize {
        let (bi, si) = if four_d {
            (r / (h * s), r % s)
        } else {
            (r / (s * h), (r / h) % s)
        };
        cache_rows[bi * s + si]
    };
    let geo = Geo {
        d,
        half,
        interleaved,
    };
    match dt {
        DType::F32 => {
            let out = rotate(
                x.slice::<f32>()?,
                cos.slice::<f32>()?,
                sin.slice::<f32>()?,
                geo,
                &pos_of,
                |v| v,
            );
            Ok(Value::new(x.shape.clone(), out))
        }
        DType::F64 => {
            let out = rotate(
                x.slice::<f64>()?,
                cos.slice::<f64>()?,
                sin.slice::<f64>()?,
                geo,
                &pos_of,
                |v| v,
            );
            Ok(Value::new(x.shape.clone(), out))
        }
        DType::F16 | DType::BF16 => {
            let round: fn(f32) -> f32 = if dt == DType::F16 {
                |v| f16::from_f32(v).to_f32()
            } else {
                |v| bf16::from_f32(v).to_f32()
            };
            let out = rotate(
                &x.to_f32_vec()?,
                &cos.to_f32_vec()?,
                &sin.to_f32_vec()?,
                geo,
                &pos_of,
                round,
            );
            Ok(Value::new(x.shape.clone(), out).cast(dt))
        }
        _ => unsupported!("RotaryEmbedding on {dt}"),
    }
}

/// Head size, half the rotated size, and the pairing.
#[derive(Clone, Copy)]
struct Geo {
    d: usize,
    half: usize,
    interleaved: bool,
}

/// Rotates every head vector of `x`; `round` is applied after each operation.
fn rotate<F>(
    x: &[F],
    cos: &[F],
    sin: &[F],
    g: Geo,
    pos_of: &(dyn Fn(usize) -> usize + Sync),
    round: impl Fn(F) -> F + Sync + Send,
) -> Vec<F>
where
    F: Copy
        + Send
        + Sync
        + Default
        + std::ops::Mul<Output = F>
        + std::ops::Add<Output = F>
        + std::ops::Sub<Output = F>,
{
    let mut out = x.to_vec();
    if g.d == 0 || g.half == 0 {
        return out;
    }
    let row = |r: usize, o: &mut [F]| {
        let p = pos_of(r) * g.half;
        let (c, s) = (&cos[p..p + g.half], &sin[p..p + g.half]);
        for j in 0..g.half {
            let (i1, i2) = if g.interleaved {
                (2 * j, 2 * j + 1)
            } else {
                (j, j + g.half)
            };
            let (x1, x2) = (o[i1], o[i2]);
            o[i1] = round(round(c[j] * x1) - round(s[j] * x2));
            o[i2] = round(round(s[j] * x1) + round(c[j] * x2));
        }
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(g.d * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(t, rows)| {
                for (i, o) in rows.chunks_mut(g.d).enumerate() {
                    row(t * ROWS_PER_TASK + i, o);
                }
            });
    } else {
        for (r, o) in out.chunks_mut(g.d).enumerate() {
            row(r, o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotation by the definition: X as [b, s, h, d] (3-d), caches as
    /// angle tables `theta[pos][j]`.
    #[test]
    fn halves_and_interleaved_match_the_definition() {
        let (b, s, h, d, rot) = (2, 3, 2, 8, 6);
        let half = rot / 2;
        let x: Vec<f32> = (0..b * s * h * d)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let max_pos = 5;
        let theta = |p: usize, j: usize| p as f32 * 0.5 / (1.0 + j as f32);
        let cos: Vec<f32> = (0..max_pos * half)
            .map(|i| theta(i / half, i % half).cos())
            .collect();
        let sin: Vec<f32> = (0..max_pos * half)
            .map(|i| theta(i / half, i % half).sin())
            .collect();
        let ids: Vec<i64> = vec![4, 0, 2, 1, 3, 3];
        let xv = Value::new(vec![b, s, h * d], x.clone());
        let cv = Value::new(vec![max_pos, half], cos);
        let sv = Value::new(vec![max_pos, half], sin);
        let iv = Value::new(vec![b, s], ids.clone());
        for interleaved in [false, true] {
            let y = rotary_embedding(
                &[Some(&xv), Some(&cv), Some(&sv), Some(&iv)],
                interleaved,
                h as i64,
                rot as i64,
            )
            .unwrap();
            let y = y.slice::<f32>().unwrap();
            for bi in 0..b {
                for si in 0..s {
                    let p = ids[bi * s + si] as usize;
                    for hi in 0..h {
                        let o = ((bi * s + si) * h + hi) * d;
                        let mut want = x[o..o + d].to_vec();
                        for j in 0..half {
                            let (i1, i2) = if interleaved {
                                (2 * j, 2 * j + 1)
                            } else {
                                (j, j + half)
                            };
                            let (x1, x2) = (x[o + i1], x[o + i2]);
                            let (c, sn) = (theta(p, j).cos(), theta(p, j).sin());
                            want[i1] = c * x1 - sn * x2;
                            want[i2] = sn * x1 + c * x2;
                        }
                        for k in 0..d {
                            assert!(
                                (y[o + k] - want[k]).abs() < 1e-6,
                                "{interleaved} {bi} {si} {hi} {k}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn out_of_range_position_is_an_error() {
        let xv = Value::new(vec![1, 1, 1, 4], vec![1f32; 4]);
        let c = Value::new(vec![2, 2], vec![1f32; 4]);
        let iv = Value::new(vec![1, 1], vec![2i64]);
        let e = rotary_embedding(&[Some(&xv), Some(&c), Some(&c), Some(&iv)], false, 0, 0);
        match e {
            Err(crate::cpu::value::KernelError::Invalid(m)) => {
                assert!(m.contains("position id 2"), "{m}")
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
