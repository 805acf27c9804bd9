//! Convolution kernels: direct 1-D and 2-D `Conv` on f32, NCHW, with
//! strides, pads (explicit or SAME/VALID), dilations, groups and an
//! optional bias (`templates/wgsl/conv.wgsl`).
//!
//! A direct loop instead of im2col + matmul: the im2col matrix of a ViT
//! patch embedding is as large as the image, and a direct kernel needs no
//! scratch buffer. Each invocation computes `schedule.vector` output
//! channels (1 to 8) at one output position, which is the reuse that
//! matters for patch embeddings: every input element loaded feeds that many
//! products. 3-D convolutions stay on the host.

use super::movement::{grid, launch_err, operand, result, workgroup};
use crate::kernel::word;
use crate::schedule::Schedule;
use crate::template::render;
use crate::{CodegenError, Kernel, Launch, NodeCtx};
use kiln_ir::{AutoPad, DType, Op};
use serde::{Deserialize, Serialize};

const CONV: &str = include_str!("../../templates/wgsl/conv.wgsl");

/// Most output channels one invocation accumulates.
const MAX_LANES: u32 = 8;

/// What a conv kernel needs from its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Spatial axes: 1 or 2.
    pub spatial: usize,
    /// Stride per spatial axis.
    pub strides: Vec<u64>,
    /// Dilation per spatial axis.
    pub dilations: Vec<u64>,
    /// Begin pads, then end pads (used when `auto_pad` is `NotSet`).
    pub pads: Vec<u64>,
    /// Automatic padding rule.
    pub auto_pad: AutoPad,
    /// Groups.
    pub group: usize,
    /// Whether a bias is bound.
    pub bias: bool,
}

/// `v`, or all ones when empty; `None` when its length is wrong or an entry is 0.
fn or_ones(v: &[u64], n: usize) -> Option<Vec<u64>> {
    if v.is_empty() {
        return Some(vec![1; n]);
    }
    (v.len() == n && !v.contains(&0)).then(|| v.to_vec())
}

impl Spec {
    /// The kernel for the node, if this family has one: f32 `Conv` with one
    /// or two spatial axes.
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        let Op::Conv { window, group } = cx.op else {
            return None;
        };
        let x = (*cx.inputs.first()?)?;
        let w = (*cx.inputs.get(1)?)?;
        let b = cx.inputs.get(2).copied().flatten();
        let y = cx.outputs.first()?;
        let rank = x.shape.rank();
        let f32s = [Some(x), Some(w), b, Some(*y)]
            .iter()
            .flatten()
            .all(|t| t.dtype == DType::F32);
        if !f32s || !(3..=4).contains(&rank) || w.shape.rank() != rank {
            return None;
        }
        let n = rank - 2;
        let pads = if window.pads.is_empty() {
            vec![0; 2 * n]
        } else if window.pads.len() == 2 * n {
            window.pads.clone()
        } else {
            return None;
        };
        if !window.kernel_shape.is_empty() && window.kernel_shape.len() != n {
            return None;
        }
        let bias = b.is_some();
        if 3 + usize::from(bias) > cx.caps.max_storage_buffers_per_stage as usize {
            return None;
        }
        let strides = or_ones(&window.strides, n)?;
        let dilations = or_ones(&window.dilations, n)?;
        if strides
            .iter()
            .chain(&dilations)
            .any(|&v| v > u64::from(u32::MAX))
        {
            return None;
        }
        Some(Spec {
            spatial: n,
            strides,
            dilations,
            pads,
            auto_pad: window.auto_pad,
            group: (*group).max(1) as usize,
            bias,
        })
    }

    /// Output channels per invocation for `schedule`.
    fn lanes(schedule: &Schedule) -> u32 {
        schedule.vector.clamp(1, MAX_LANES)
    }

    /// (height, width) of a per-axis attribute; 1-D runs as a height of 1.
    fn hw(&self, v: &[u64]) -> (u64, u64) {
        if self.spatial == 1 {
            (1, v[0])
        } else {
            (v[0], v[1])
        }
    }

    /// The WGSL for `schedule`.
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        let (wg, invocations) = workgroup(schedule);
        let (sh, sw) = self.hw(&self.strides);
        let (dh, dw) = self.hw(&self.dilations);
        let inputs = 2 + u32::from(self.bias);
        let (bias_binding, bias) = if self.bias {
            (
                "@group(0) @binding(2) var<storage, read> b: array<f32>;".to_string(),
                "b[m]".to_string(),
            )
        } else {
            (String::new(), "0.0".to_string())
        };
        let src = render(
            "conv",
            CONV,
            &[
                ("BIAS_BINDING", bias_binding),
                ("Y_BINDING", inputs.to_string()),
                ("PARAMS_BINDING", (inputs + 1).to_string()),
                ("LANES", Self::lanes(schedule).to_string()),
                ("STRIDE_H", sh.to_string()),
                ("STRIDE_W", sw.to_string()),
                ("DILATION_H", dh.to_string()),
                ("DILATION_W", dw.to_string()),
                ("WORKGROUP", wg),
                ("INVOCATIONS", invocations.to_string()),
                ("BIAS", bias),
            ],
        )?;
        let stem = if self.spatial == 1 {
            "conv1d"
        } else {
            "conv2d"
        };
        Ok(Kernel::new(stem, src, inputs, 1, 0))
    }

    /// Node operands bound as inputs: X, W and the bias when present.
    pub fn bound_inputs(&self) -> Vec<usize> {
        if self.bias {
            vec![0, 1, 2]
        } else {
            vec![0, 1]
        }
    }

    /// Params and grid for concrete shapes.
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        let k = if self.spatial == 1 {
            "conv1d"
        } else {
            "conv2d"
        };
        let x = operand(k, inputs, 0)?;
        let w = operand(k, inputs, 1)?;
        let y = result(k, outputs, 0)?;
        let rank = self.spatial + 2;
        if x.len() != rank || w.len() != rank {
            return Err(launch_err(
                k,
                format!("X {x:?} and W {w:?} should have rank {rank}"),
            ));
        }
        let g = self.group;
        let (n, c, m, cg) = (x[0], x[1], w[0], w[1]);
        if c != cg * g || !m.is_multiple_of(g) {
            return Err(launch_err(
                k,
                format!("channels do not match: X {x:?}, W {w:?}, group {g}"),
            ));
        }
        if self.bias {
            let b = operand(k, inputs, 2)?;
            if b.iter().product::<usize>() != m {
                return Err(launch_err(k, format!("bias {b:?} should hold {m} values")));
            }
        }
        let (pad_begin, out) = self.geometry(k, &x[2..], &w[2..])?;
        let mut want = vec![n, m];
        want.extend(&out);
        if y != want.as_slice() {
            return Err(launch_err(
                k,
                format!("the result should be {want:?}, got {y:?}"),
            ));
        }
        let hw = |v: &[usize]| {
            if self.spatial == 1 {
                (1, v[0])
            } else {
                (v[0], v[1])
            }
        };
        let (h, wd) = hw(&x[2..]);
        let (oh, ow) = hw(&out);
        let (kh, kw) = hw(&w[2..]);
        // A 1-D convolution's height is 1 and unpadded.
        let (ph, pw) = if self.spatial == 1 {
            (0, pad_begin[0])
        } else {
            (pad_begin[0], pad_begin[1])
        };
        let mg = m / g;
        let blocks = mg.div_ceil(Self::lanes(schedule) as usize);
        let invocations = n * g * blocks * oh * ow;
        let params = vec![
            word(k, "invocations", invocations)?,
            word(k, "input channels per group", cg)?,
            word(k, "output channels per group", mg)?,
            word(k, "groups", g)?,
            word(k, "height", h)?,
            word(k, "width", wd)?,
            word(k, "output height", oh)?,
            word(k, "output width", ow)?,
            word(k, "kernel height", kh)?,
            word(k, "kernel width", kw)?,
            word(k, "top pad", ph)?,
            word(k, "left pad", pw)?,
            word(k, "channel blocks", blocks)?,
        ];
        Ok(Launch {
            params,
            workgroups: grid(invocations, schedule),
        })
    }

    /// Begin pads and output sizes per spatial axis, as the CPU executor
    /// computes them (`runtime/src/cpu/conv.rs`).
    fn geometry(
        &self,
        k: &str,
        input: &[usize],
        kernel: &[usize],
    ) -> Result<(Vec<usize>, Vec<usize>), CodegenError> {
        let n = self.spatial;
        let mut pad_begin = vec![0; n];
        let mut out = vec![0; n];
        for i in 0..n {
            let stride = self.strides[i] as usize;
            let span = self.dilations[i] as usize * (kernel[i].max(1) - 1) + 1;
            match self.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let o = input[i].div_ceil(stride);
                    let total = ((o.max(1) - 1) * stride + span).saturating_sub(input[i]);
                    pad_begin[i] = if self.auto_pad == AutoPad::SameUpper {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    out[i] = o;
                }
                AutoPad::Valid | AutoPad::NotSet => {
                    let (pb, pe) = if self.auto_pad == AutoPad::Valid {
                        (0, 0)
                    } else {
                        (self.pads[i] as usize, self.pads[i + n] as usize)
                    };
                    let padded = input[i] + pb + pe;
                    if padded < span {
                        return Err(launch_err(
                            k,
                            format!(
                                "window of extent {span} is larger than the padded input {padded}"
                            ),
                        ));
                    }
                    pad_begin[i] = pb;
                    out[i] = (padded - span) / stride + 1;
                }
            }
        }
        Ok((pad_begin, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_msl, to_spirv, validate};
    use crate::{DeviceCaps, Family};
    use kiln_ir::{Shape, ValueType, Window};

    fn vt(dtype: DType, dims: &[u64]) -> ValueType {
        ValueType::new(dtype, Shape::fixed(dims))
    }

    fn window(strides: &[u64], pads: &[u64], dilations: &[u64], auto_pad: AutoPad) -> Window {
        Window {
            kernel_shape: Vec::new(),
            strides: strides.to_vec(),
            pads: pads.to_vec(),
            dilations: dilations.to_vec(),
            auto_pad,
        }
    }

    fn select(op: &Op, ins: &[Option<&ValueType>], out: &ValueType) -> Option<Spec> {
        Spec::select(&NodeCtx {
            name: "conv",
            op,
            inputs: ins.to_vec(),
            consts: vec![None; ins.len()],
            outputs: vec![out],
            caps: &DeviceCaps::webgpu(),
        })
    }

    fn check(spec: &Spec) {
        let caps = DeviceCaps::webgpu();
        for schedule in [
            Schedule::default_for(Family::Conv, &caps),
            Schedule {
                workgroup: [64, 1, 1],
                tile: [1, 1, 1],
                vector: 1,
            },
        ] {
            let k = spec.emit(&schedule).unwrap();
            validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
            let msl = to_msl(&k).unwrap();
            assert!(msl.contains(&format!("[[buffer({})]]", k.storage_buffers() - 1)));
            assert_eq!(to_spirv(&k).unwrap()[0], 0x0723_0203);
        }
    }

    #[test]
    fn patch_embedding_and_variants_validate() {
        let x = vt(DType::F32, &[1, 3, 28, 28]);
        let w = vt(DType::F32, &[8, 3, 14, 14]);
        let b = vt(DType::F32, &[8]);
        let y = vt(DType::F32, &[1, 8, 2, 2]);
        let op = Op::Conv {
            window: window(&[14, 14], &[], &[], AutoPad::NotSet),
            group: 1,
        };
        let s = select(&op, &[Some(&x), Some(&w), Some(&b)], &y).unwrap();
        assert_eq!(s.bound_inputs(), vec![0, 1, 2]);
        assert_eq!(s.strides, vec![14, 14]);
        check(&s);
        let s = select(&op, &[Some(&x), Some(&w), None], &y).unwrap();
        assert_eq!(s.bound_inputs(), vec![0, 1]);
        check(&s);
        for auto_pad in [AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid] {
            let op = Op::Conv {
                window: window(&[2, 1], &[], &[1, 2], auto_pad),
                group: 2,
            };
            let s = select(&op, &[Some(&x), Some(&w), None], &y).unwrap();
            check(&s);
        }
        // 1-D.
        let x1 = vt(DType::F32, &[1, 4, 10]);
        let w1 = vt(DType::F32, &[6, 4, 3]);
        let op = Op::Conv {
            window: window(&[2], &[1, 1], &[], AutoPad::NotSet),
            group: 1,
        };
        let s = select(&op, &[Some(&x1), Some(&w1)], &vt(DType::F32, &[1, 6, 5])).unwrap();
        assert_eq!(s.spatial, 1);
        check(&s);
    }

    #[test]
    fn refuses_3d_f16_and_malformed_windows() {
        let x = vt(DType::F32, &[1, 3, 4, 4, 4]);
        let w = vt(DType::F32, &[8, 3, 2, 2, 2]);
        let op = Op::Conv {
            window: window(&[], &[], &[], AutoPad::NotSet),
            group: 1,
        };
        assert!(select(&op, &[Some(&x), Some(&w)], &x).is_none());
        let h = vt(DType::F16, &[1, 3, 4, 4]);
        let hw = vt(DType::F16, &[8, 3, 2, 2]);
        assert!(select(&op, &[Some(&h), Some(&hw)], &h).is_none());
        let x = vt(DType::F32, &[1, 3, 4, 4]);
        let w = vt(DType::F32, &[8, 3, 2, 2]);
        let bad = Op::Conv {
            window: window(&[1, 1, 1], &[], &[], AutoPad::NotSet),
            group: 1,
        };
        assert!(select(&bad, &[Some(&x), Some(&w)], &x).is_none());
        let bad = Op::Conv {
            window: window(&[0, 1], &[], &[], AutoPad::NotSet),
            group: 1,
        };
        assert!(select(&bad, &[Some(&x), Some(&w)], &x).is_none());
        assert!(select(&Op::Relu, &[Some(&x)], &x).is_none());
    }

    #[test]
    fn launch_matches_the_cpu_geometry() {
        let s = Spec {
            spatial: 2,
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            auto_pad: AutoPad::NotSet,
            group: 2,
            bias: false,
        };
        let sch = Schedule::default_for(Family::Conv, &DeviceCaps::webgpu());
        // 7×9 input, 3×3 window, pad 1, stride 2 → 4×5.
        let l = s
            .launch(
                &[Some(&[1, 4, 7, 9]), Some(&[6, 2, 3, 3])],
                &[&[1, 6, 4, 5]],
                &sch,
            )
            .unwrap();
        assert_eq!(
            l.params,
            // 2 groups × 1 block of 3 channels × 20 positions.
            vec![40, 2, 3, 2, 7, 9, 4, 5, 3, 3, 1, 1, 1]
        );
        assert!(s
            .launch(
                &[Some(&[1, 4, 7, 9]), Some(&[6, 2, 3, 3])],
                &[&[1, 6, 3, 5]],
                &sch
            )
            .is_err());
        assert!(s
            .launch(
                &[Some(&[1, 3, 7, 9]), Some(&[6, 2, 3, 3])],
                &[&[1, 6, 4, 5]],
                &sch
            )
            .is_err());
        // SAME_UPPER on 7 with stride 2: 4 outputs, 2 pads in all, 1 before.
        let s = Spec {
            auto_pad: AutoPad::SameUpper,
            pads: vec![0; 4],
            ..s
        };
        let l = s
            .launch(
                &[Some(&[1, 4, 7, 7]), Some(&[6, 2, 3, 3])],
                &[&[1, 6, 4, 4]],
                &sch,
            )
            .unwrap();
        assert_eq!(&l.params[10..12], &[1, 1]);
        // 1-D runs with a height of 1 and no top pad.
        let s = Spec {
            spatial: 1,
            strides: vec![3],
            dilations: vec![2],
            pads: vec![2, 1],
            auto_pad: AutoPad::NotSet,
            group: 1,
            bias: true,
        };
        let l = s
            .launch(
                &[Some(&[2, 3, 17]), Some(&[5, 3, 4]), Some(&[5])],
                &[&[2, 5, 5]],
                &sch,
            )
            .unwrap();
        assert_eq!(l.params, vec![20, 3, 5, 1, 1, 17, 1, 5, 1, 4, 0, 2, 2]);
    }
}
