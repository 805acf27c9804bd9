//! `LayerNorm` and `RmsNorm`: one workgroup per row of the normalised
//! (trailing) axes, statistics folded in workgroup memory.
//!
//! Semantics follow the CPU executor (`runtime/src/cpu/norm.rs`): the mean
//! (LayerNorm only), then the mean square of the deviations, then
//! `(x - mean) / √(var + ε) · scale (+ bias)` with scale and bias
//! broadcast to the normalised axes. Only the first result is computed: a
//! LayerNorm asking for its Mean and InvStdDev results runs on the host.

use super::reduce::{enable, tree_start, wgsl_type};
use crate::kernel::{broadcast_strides, linear_grid, strides, word};
use crate::template::render;
use crate::wgsl::program::f32_literal;
use crate::{CodegenError, Kernel, Launch, NodeCtx, Schedule};
use kiln_ir::{DType, Op};
use serde::{Deserialize, Serialize};

const NORM: &str = include_str!("../../templates/wgsl/norm.wgsl");

/// What a norm kernel needs from its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// RMSNorm (no mean subtracted, no bias) instead of LayerNorm.
    pub rms: bool,
    /// Element type of X, scale, bias and Y (`F32`, or `F16` with
    /// `shader-f16`; the arithmetic is f32).
    pub dtype: DType,
    /// Rank of X.
    pub rank: usize,
    /// First normalised axis (resolved, `< rank`).
    pub axis: usize,
    /// Whether a bias operand is bound.
    pub bias: bool,
    /// Added to the variance (the mean square for RMSNorm).
    pub epsilon: f32,
}

impl Spec {
    /// The kernel for a `LayerNorm` (result Y only) or `RmsNorm` node whose
    /// operands are all f32 (or all f16 on devices with `shader-f16`).
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        let (rms, axis, epsilon) = match cx.op {
            Op::LayerNorm { axis, epsilon } => (false, *axis, epsilon.0),
            Op::RmsNorm { axis, epsilon } => (true, *axis, epsilon.0),
            _ => return None,
        };
        let x = (*cx.inputs.first()?)?;
        let dtype = x.dtype;
        if !(dtype == DType::F32 || (dtype == DType::F16 && cx.caps.shader_f16)) {
            return None;
        }
        // Mean and InvStdDev (LayerNorm's optional results) are not computed.
        if cx.outputs.len() != 1 || cx.outputs[0].dtype != dtype {
            return None;
        }
        let scale = cx.inputs.get(1).copied().flatten()?;
        // RMSNorm has no bias operand; the CPU ignores anything after scale.
        let bias = if rms {
            None
        } else {
            cx.inputs.get(2).copied().flatten()
        };
        if scale.dtype != dtype || bias.is_some_and(|b| b.dtype != dtype) {
            return None;
        }
        let rank = x.shape.rank();
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..r).contains(&a) {
            return None;
        }
        let buffers = 3 + u32::from(bias.is_some()) + 1;
        if buffers > cx.caps.max_storage_buffers_per_stage {
            return None;
        }
        Some(Spec {
            rms,
            dtype,
            rank,
            axis: a as usize,
            bias: bias.is_some(),
            epsilon,
        })
    }

    fn stem(&self) -> &'static str {
        if self.rms {
            "rms_norm"
        } else {
            "layer_norm"
        }
    }

    /// The WGSL for `schedule` (its invocations form one flat workgroup).
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        let wg = schedule.invocations();
        if wg == 0 {
            return Err(CodegenError::Template(format!(
                "{}: empty workgroup {:?}",
                self.stem(),
                schedule.workgroup
            )));
        }
        let t = wgsl_type(self.dtype);
        let mut names = vec!["x", "scale"];
        if self.bias {
            names.push("bias");
        }
        let mut bindings = String::new();
        for (i, n) in names.iter().enumerate() {
            bindings.push_str(&format!(
                "@group(0) @binding({i}) var<storage, read> {n}: array<{t}>;\n"
            ));
        }
        let k = names.len();
        bindings.push_str(&format!(
            "@group(0) @binding({k}) var<storage, read_write> y: array<{t}>;\n\
             @group(0) @binding({}) var<storage, read> params: array<u32>;",
            k + 1
        ));
        let [sx, sy, sz] = schedule.workgroup;
        let bias = if self.bias {
            "v + f32(bias[param_offset(j, 1u)])"
        } else {
            "v"
        };
        let wgsl = render(
            "norm.wgsl",
            NORM,
            &[
                ("ENABLE", enable(self.dtype)),
                ("BINDINGS", bindings),
                ("WG", wg.to_string()),
                ("TREE", tree_start(wg).to_string()),
                ("TAIL", (self.rank - self.axis).to_string()),
                ("RMS", self.rms.to_string()),
                ("EPSILON", f32_literal(self.epsilon)),
                ("WORKGROUP", format!("{sx}, {sy}, {sz}")),
                ("T", t.to_string()),
                ("BIAS", bias.to_string()),
            ],
        )?;
        Ok(Kernel::new(self.stem(), wgsl, k as u32, 1, wg * 4))
    }

    /// X, scale and (LayerNorm with a bias) bias.
    pub fn bound_inputs(&self) -> Vec<usize> {
        if self.bias {
            vec![0, 1, 2]
        } else {
            vec![0, 1]
        }
    }

    /// One workgroup per row; params hold the row count and length and the
    /// broadcast strides of scale and bias over the normalised axes.
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        _schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        let name = self.stem();
        let err = |message: String| CodegenError::Launch {
            kernel: name.to_string(),
            message,
        };
        let operand = |i: usize, what: &str| {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| err(format!("operand {i} ({what}) is missing")))
        };
        let x = operand(0, "X")?;
        if x.len() != self.rank {
            return Err(err(format!(
                "the kernel was generated for rank {}, X has shape {x:?}",
                self.rank
            )));
        }
        let y = outputs
            .first()
            .ok_or_else(|| err("the output is missing".into()))?;
        if *y != x {
            return Err(err(format!("Y has shape {y:?}, X has shape {x:?}")));
        }
        let tail = &x[self.axis..];
        let rows: usize = x[..self.axis].iter().product();
        let n: usize = tail.iter().product();
        // Strides of a scale or bias over the normalised axes, and whether
        // it is a full row (indexed directly).
        let view = |dims: &[usize], what: &str| -> Result<(Vec<usize>, bool), CodegenError> {
            let fits = dims.len() <= tail.len()
                && dims
                    .iter()
                    .zip(&tail[tail.len() - dims.len()..])
                    .all(|(&d, &t)| d == t || d == 1);
            if !fits {
                return Err(err(format!(
                    "{what} of shape {dims:?} does not broadcast to the normalised axes {tail:?}"
                )));
            }
            let st = broadcast_strides(dims, tail);
            Ok((st.clone(), st == strides(tail)))
        };
        let (scale_st, scale_full) = view(operand(1, "scale")?, "scale")?;
        let (bias_st, bias_full) = if self.bias {
            view(operand(2, "bias")?, "bias")?
        } else {
            (vec![0; tail.len()], true)
        };
        let mut params = vec![
            word(name, "rows", rows)?,
            word(name, "row length", n)?,
            u32::from(scale_full),
            u32::from(bias_full),
        ];
        for k in 0..tail.len() {
            params.push(word(name, "dim", tail[k])?);
            params.push(word(name, "scale stride", scale_st[k])?);
            params.push(word(name, "bias stride", bias_st[k])?);
        }
        Ok(Launch {
            params,
            workgroups: linear_grid(rows as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_msl, to_spirv, validate};
    use crate::{DeviceCaps, Family};
    use kiln_ir::{Dim, Float, Shape, ValueType};

    fn ty(dt: DType, rank: usize) -> ValueType {
        ValueType::new(
            dt,
            Shape((0..rank).map(|i| Dim::Sym(format!("d{i}"))).collect()),
        )
    }

    fn sel(op: &Op, dts: &[Option<DType>], outputs: usize, caps: &DeviceCaps) -> Option<Spec> {
        let tys: Vec<Option<ValueType>> = dts
            .iter()
            .enumerate()
            .map(|(i, d)| d.map(|d| ty(d, if i == 0 { 3 } else { 1 })))
            .collect();
        let y = ty(dts[0].unwrap_or(DType::F32), 3);
        let stat = ty(DType::F32, 3);
        let mut outs = vec![&y];
        outs.extend(std::iter::repeat_n(&stat, outputs - 1));
        let cx = NodeCtx {
            name: "n",
            op,
            inputs: tys.iter().map(|t| t.as_ref()).collect(),
            consts: vec![None; tys.len()],
            outputs: outs,
            caps,
        };
        Spec::select(&cx)
    }

    fn ln(axis: i64) -> Op {
        Op::LayerNorm {
            axis,
            epsilon: Float(1e-5),
        }
    }

    #[test]
    fn selects_first_output_float_norms() {
        let caps = DeviceCaps::webgpu();
        let f = Some(DType::F32);
        let s = sel(&ln(-1), &[f, f, f], 1, &caps).unwrap();
        assert_eq!((s.axis, s.bias, s.rms), (2, true, false));
        assert!(!sel(&ln(1), &[f, f], 1, &caps).unwrap().bias);
        assert!(!sel(&ln(1), &[f, f, None], 1, &caps).unwrap().bias);
        // Mean / InvStdDev results, mixed dtypes, bad axes, missing scale.
        assert!(sel(&ln(-1), &[f, f, f], 3, &caps).is_none());
        assert!(sel(&ln(-1), &[f, Some(DType::F16), f], 1, &caps).is_none());
        assert!(sel(&ln(3), &[f, f, f], 1, &caps).is_none());
        assert!(sel(&ln(-4), &[f, f, f], 1, &caps).is_none());
        assert!(sel(&ln(-1), &[f, None], 1, &caps).is_none());
        let h = Some(DType::F16);
        assert!(sel(&ln(-1), &[h, h, h], 1, &caps).is_none());
        assert!(sel(&ln(-1), &[h, h, h], 1, &DeviceCaps::metal()).is_some());
        assert!(sel(&ln(-1), &[Some(DType::I32), f], 1, &caps).is_none());
        let rms = Op::RmsNorm {
            axis: -1,
            epsilon: Float(1e-6),
        };
        let s = sel(&rms, &[f, f], 1, &caps).unwrap();
        assert!(s.rms && !s.bias);
        assert_eq!(s.bound_inputs(), vec![0, 1]);
        assert!(sel(&Op::Softmax { axis: 1 }, &[f], 1, &caps).is_none());
    }

    #[test]
    fn every_variant_validates_and_translates() {
        let caps = DeviceCaps::webgpu();
        let sched = Schedule::default_for(Family::Norm, &caps);
        for (rms, bias) in [(false, true), (false, false), (true, false)] {
            for dtype in [DType::F32, DType::F16] {
                for axis in [0, 1, 2] {
                    let spec = Spec {
                        rms,
                        dtype,
                        rank: 3,
                        axis,
                        bias,
                        epsilon: 1e-5,
                    };
                    for wg in [[256, 1, 1], [7, 1, 1], [32, 2, 1]] {
                        let s = Schedule {
                            workgroup: wg,
                            ..sched.clone()
                        };
                        let k = spec.emit(&s).unwrap();
                        validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
                        let msl = to_msl(&k).unwrap();
                        assert!(msl.contains(&format!("[[buffer({})]]", k.inputs + 1)));
                        assert_eq!(to_spirv(&k).unwrap()[0], 0x0723_0203);
                        assert_eq!(k.inputs as usize, spec.bound_inputs().len());
                        assert_eq!(k.uses_f16, dtype == DType::F16);
                    }
                }
            }
        }
    }

    #[test]
    fn launch_reads_broadcast_strides() {
        let sched = Schedule::default_for(Family::Norm, &DeviceCaps::webgpu());
        let spec = Spec {
            rms: false,
            dtype: DType::F32,
            rank: 3,
            axis: 1,
            bias: true,
            epsilon: 1e-5,
        };
        let x: &[usize] = &[2, 3, 4];
        let l = spec
            .launch(&[Some(x), Some(&[3, 4]), Some(&[4])], &[x], &sched)
            .unwrap();
        assert_eq!(l.params, vec![2, 12, 1, 0, 3, 4, 0, 4, 1, 1]);
        assert_eq!(l.workgroups, [2, 1, 1]);
        let e = spec
            .launch(&[Some(x), Some(&[2, 4]), Some(&[4])], &[x], &sched)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not broadcast"), "{e}");
    }
}
