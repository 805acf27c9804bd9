//! `Attention` (ONNX opsets 23/24) as one kernel: a workgroup per (batch,
//! query head, query row) with an online (flash-style) softmax over blocks
//! of keys, so any key length fits the same workgroup memory: the query
//! row, one probability and one reduction slot per invocation.
//!
//! Covered, as the CPU executor computes them (`runtime/src/cpu/attention.rs`):
//! 3-d `[batch, seq, heads·size]` and 4-d `[batch, heads, seq, size]`
//! operands, grouped-query heads, the bottom-right aligned causal mask, a
//! bool (keep) or f32 (additive) mask broadcast from rank 1 to 4 and
//! shorter than the keys, past key/value caches prepended to the keys,
//! `nonpad_kv_seqlen`, the scale and softcap attributes. Only the output Y
//! is computed: nodes asking for present key/value or the Q·Kᵀ output,
//! non-f32 operands and half-precision softmax run on the host.

use super::reduce::{math_subset, tree_start};
use crate::kernel::{linear_grid, word};
use crate::template::render;
use crate::wgsl::program::f32_literal;
use crate::{CodegenError, Kernel, Launch, NodeCtx, Schedule};
use kiln_ir::{DType, Dim, Op, ValueType};
use serde::{Deserialize, Serialize};

const ATTENTION: &str = include_str!("../../templates/wgsl/attention.wgsl");

/// Head size assumed when the shapes do not fix it (launch refuses more).
const DEFAULT_MAX_HEAD: u32 = 256;

/// How the optional `attn_mask` operand is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskKind {
    /// No mask operand.
    None,
    /// Bool: true keeps the key (bytes, four per word).
    Bool,
    /// f32: added to the scores.
    Add,
}

/// What an attention kernel needs from its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Rank of Q, K and V (3 or 4).
    pub rank: usize,
    /// Q heads of 3-d operands (0 for 4-d).
    pub q_heads: u32,
    /// K/V heads of 3-d operands (0 for 4-d).
    pub kv_heads: u32,
    /// Apply the causal mask.
    pub causal: bool,
    /// Scale of Q·Kᵀ; `None` is 1/√head_size, computed at launch.
    pub scale: Option<f32>,
    /// Softcap (0 is off).
    pub softcap: f32,
    /// The mask operand, if any.
    pub mask: MaskKind,
    /// Past key and value caches are bound.
    pub past: bool,
    /// `nonpad_kv_seqlen` is bound.
    pub nonpad: bool,
    /// Largest head size (of Q/K and of V) the kernel holds; from the
    /// shapes when they fix it.
    pub max_head: u32,
}

/// The head size of a 3-d (split in `heads`) or 4-d operand, when fixed.
fn head_size(t: &ValueType, heads: u32) -> Option<u64> {
    let last = match t.shape.0.last()? {
        Dim::Fixed(n) => *n,
        _ => return None,
    };
    if t.shape.rank() == 3 {
        (heads > 0 && last.is_multiple_of(u64::from(heads))).then(|| last / u64::from(heads))
    } else {
        Some(last)
    }
}

impl Spec {
    /// The kernel for an f32 `Attention` node with one result.
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        let Op::Attention {
            is_causal,
            q_num_heads,
            kv_num_heads,
            scale,
            softcap,
            qk_matmul_output_mode: _,
            softmax_precision,
        } = cx.op
        else {
            return None;
        };
        if cx.outputs.len() != 1 || cx.outputs[0].dtype != DType::F32 {
            return None;
        }
        if !matches!(softmax_precision, None | Some(DType::F32)) {
            return None;
        }
        let operand = |i: usize| cx.inputs.get(i).copied().flatten();
        let (q, k, v) = (operand(0)?, operand(1)?, operand(2)?);
        let rank = q.shape.rank();
        if !matches!(rank, 3 | 4)
            || [q, k, v]
                .iter()
                .any(|t| t.dtype != DType::F32 || t.shape.rank() != rank)
        {
            return None;
        }
        let (q_heads, kv_heads) = if rank == 3 {
            let h = u32::try_from(*q_num_heads).ok().filter(|&h| h > 0)?;
            let kh = u32::try_from(*kv_num_heads).ok().filter(|&h| h > 0)?;
            if !h.is_multiple_of(kh) {
                return None;
            }
            (h, kh)
        } else {
            (0, 0)
        };
        let mask = match operand(3) {
            None => MaskKind::None,
            Some(m) if !(1..=4).contains(&m.shape.rank()) => return None,
            Some(m) if m.dtype == DType::Bool => MaskKind::Bool,
            Some(m) if m.dtype == DType::F32 => MaskKind::Add,
            Some(_) => return None,
        };
        let past = match (operand(4), operand(5)) {
            (None, None) => false,
            (Some(pk), Some(pv)) => {
                if [pk, pv]
                    .iter()
                    .any(|t| t.dtype != DType::F32 || t.shape.rank() != 4)
                {
                    return None;
                }
                true
            }
            _ => return None,
        };
        let nonpad = match operand(6) {
            None => false,
            // The CPU refuses nonpad lengths together with a past cache.
            Some(n) if n.dtype == DType::I64 && n.shape.rank() == 1 && !past => true,
            Some(_) => return None,
        };
        if cx.inputs.len() > 7 {
            return None;
        }
        let max_head = match (head_size(q, q_heads), head_size(v, kv_heads)) {
            (Some(d), Some(dv)) => u32::try_from(d.max(dv).max(1).next_multiple_of(4)).ok()?,
            _ => DEFAULT_MAX_HEAD,
        };
        let spec = Spec {
            rank,
            q_heads,
            kv_heads,
            causal: *is_causal,
            scale: scale.map(|s| s.0),
            softcap: softcap.0,
            mask,
            past,
            nonpad,
            max_head,
        };
        let buffers = spec.bound_inputs().len() as u32 + 2;
        (buffers <= cx.caps.max_storage_buffers_per_stage).then_some(spec)
    }

    /// The WGSL for `schedule` (its invocations form one flat workgroup).
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        let wg = schedule.invocations();
        if wg == 0 || self.max_head == 0 {
            return Err(CodegenError::Template(format!(
                "attention: empty workgroup {:?} or head size {}",
                schedule.workgroup, self.max_head
            )));
        }
        let mut names: Vec<(&str, &str)> = vec![("q", "f32"), ("k", "f32"), ("v", "f32")];
        match self.mask {
            MaskKind::None => {}
            MaskKind::Bool => names.push(("mask", "u32")),
            MaskKind::Add => names.push(("mask", "f32")),
        }
        if self.past {
            names.push(("past_key", "f32"));
            names.push(("past_value", "f32"));
        }
        if self.nonpad {
            names.push(("nonpad", "i32"));
        }
        let mut bindings = String::new();
        for (i, (n, t)) in names.iter().enumerate() {
            bindings.push_str(&format!(
                "@group(0) @binding({i}) var<storage, read> {n}: array<{t}>;\n"
            ));
        }
        let n = names.len();
        bindings.push_str(&format!(
            "@group(0) @binding({n}) var<storage, read_write> y: array<f32>;\n\
             @group(0) @binding({}) var<storage, read> params: array<u32>;",
            n + 1
        ));
        let [sx, sy, sz] = schedule.workgroup;
        let (math, softcap) = if self.softcap > 0.0 {
            let c = f32_literal(self.softcap);
            (
                format!("\n{}", math_subset(&["kiln_tanh"])),
                format!("            // Softcap: c · tanh(s / c).\n            s = {c} * kiln_tanh(s / {c});\n"),
            )
        } else {
            (String::new(), String::new())
        };
        let wgsl = render(
            "attention.wgsl",
            ATTENTION,
            &[
                ("BINDINGS", bindings),
                ("MATH", math),
                ("WG", wg.to_string()),
                ("TREE", tree_start(wg).to_string()),
                ("MAX_HEAD", self.max_head.to_string()),
                ("PER", self.max_head.div_ceil(wg).to_string()),
                ("CAUSAL", self.causal.to_string()),
                ("SOFTCAP", softcap),
                ("ACCESS", self.access()),
                ("WORKGROUP", format!("{sx}, {sy}, {sz}")),
            ],
        )?;
        let bytes = (self.max_head + 2 * wg) * 4;
        Ok(Kernel::new("attention", wgsl, n as u32, 1, bytes))
    }

    /// The operand accessors, which depend on the bound optional operands.
    fn access(&self) -> String {
        let load = |name: &str, cache: &str, stride: usize| {
            let fresh = format!("{name}[base + j_new * params[{stride}u] + c]");
            if self.past {
                format!(
                    "fn load_{name}(j: u32, c: u32, base: u32, past: u32, size: u32) -> f32 {{\n    \
                     if (j < params[7u]) {{\n        return {cache}[past + j * size + c];\n    }}\n    \
                     let j_new = j - params[7u];\n    return {fresh};\n}}\n"
                )
            } else {
                format!(
                    "fn load_{name}(j_new: u32, c: u32, base: u32, past: u32, size: u32) -> f32 {{\n    \
                     return {fresh};\n}}\n"
                )
            }
        };
        let mut s = load("k", "past_key", 14);
        s.push_str(&load("v", "past_value", 17));
        s.push_str(match self.mask {
            MaskKind::None => "fn apply_mask(s: f32, mrow: u32, j: u32) -> f32 {\n    return s;\n}\n",
            MaskKind::Add => {
                "fn apply_mask(s: f32, mrow: u32, j: u32) -> f32 {\n    return s + mask[mrow + j];\n}\n"
            }
            MaskKind::Bool => {
                "// Bool masks are bytes, four to a word; a zero byte masks the key.\n\
                 fn apply_mask(s: f32, mrow: u32, j: u32) -> f32 {\n    \
                 let at = mrow + j;\n    \
                 let byte = (mask[at / 4u] >> (8u * (at % 4u))) & 0xffu;\n    \
                 return select(neg_inf(), s, byte != 0u);\n}\n"
            }
        });
        // Keys any row of batch b may see, and the causal offset (query i
        // sees keys j <= i + offset).
        let mut keys = String::from("params[6u]");
        if self.mask != MaskKind::None {
            keys = format!("min({keys}, params[24u])");
        }
        if self.nonpad {
            // i64 lengths are read as their low word.
            s.push_str(&format!(
                "fn batch_keys(b: u32) -> u32 {{\n    \
                 let n = clamp(nonpad[2u * b], 0, i32(params[6u]));\n    \
                 return min({keys}, u32(n));\n}}\n\
                 fn causal_offset(b: u32) -> i32 {{\n    \
                 return nonpad[2u * b] - i32(params[2u]);\n}}\n"
            ));
        } else {
            s.push_str(&format!(
                "fn batch_keys(b: u32) -> u32 {{\n    return {keys};\n}}\n\
                 fn causal_offset(b: u32) -> i32 {{\n    return i32(params[7u]);\n}}\n"
            ));
        }
        s
    }

    /// Q, K, V, then whichever of the mask, past key and value, and
    /// `nonpad_kv_seqlen` the node has.
    pub fn bound_inputs(&self) -> Vec<usize> {
        let mut v = vec![0, 1, 2];
        if self.mask != MaskKind::None {
            v.push(3);
        }
        if self.past {
            v.extend([4, 5]);
        }
        if self.nonpad {
            v.push(6);
        }
        v
    }

    /// One workgroup per (batch, query head, query row).
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        _schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        let name = "attention";
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
        // [batch, heads, seq, size] of Q, K or V.
        let dims = |s: &[usize], heads: u32, what: &str| -> Result<[usize; 4], CodegenError> {
            match (s, self.rank) {
                (&[b, h, n, d], 4) => Ok([b, h, n, d]),
                (&[b, n, hidden], 3) if heads > 0 && hidden.is_multiple_of(heads as usize) => {
                    Ok([b, heads as usize, n, hidden / heads as usize])
                }
                _ => Err(err(format!(
                    "{what} of shape {s:?} does not fit a rank-{} kernel with {heads} heads",
                    self.rank
                ))),
            }
        };
        let [b, hq, sq, d] = dims(operand(0, "Q")?, self.q_heads, "Q")?;
        let [kb, hkv, skv, kd] = dims(operand(1, "K")?, self.kv_heads, "K")?;
        let [vb, vh, vs, dv] = dims(operand(2, "V")?, self.kv_heads, "V")?;
        if kb != b || vb != b || vh != hkv || vs != skv || kd != d {
            return Err(err(format!(
                "Q [{b}, {hq}, {sq}, {d}], K [{kb}, {hkv}, {skv}, {kd}] and V [{vb}, {vh}, {vs}, {dv}] disagree"
            )));
        }
        if hkv == 0 || !hq.is_multiple_of(hkv) {
            return Err(err(format!(
                "{hq} query heads are not a multiple of {hkv} key/value heads"
            )));
        }
        if d.max(dv) > self.max_head as usize {
            return Err(err(format!(
                "head sizes {d} and {dv} exceed the {} the kernel was generated for",
                self.max_head
            )));
        }
        let p = if self.past {
            let pk = operand(4, "past_key")?;
            let pv = operand(5, "past_value")?;
            let p = pk.get(2).copied().unwrap_or(0);
            if pk != [b, hkv, p, d] || pv != [b, hkv, p, dv] {
                return Err(err(format!(
                    "past_key {pk:?} and past_value {pv:?} must be [{b}, {hkv}, past, {d}] and [{b}, {hkv}, past, {dv}]"
                )));
            }
            p
        } else {
            0
        };
        let t = p + skv;
        if self.nonpad {
            let n = operand(6, "nonpad_kv_seqlen")?;
            if n != [b] {
                return Err(err(format!("nonpad_kv_seqlen must be [{b}], got {n:?}")));
            }
        }
        let mut mask = [0usize; 4];
        if self.mask != MaskKind::None {
            let m = operand(3, "attn_mask")?;
            if !(1..=4).contains(&m.len()) {
                return Err(err(format!("attn_mask must have rank 1 to 4, got {m:?}")));
            }
            let mut m4 = [1usize; 4];
            m4[4 - m.len()..].copy_from_slice(m);
            let target = [b, hq, sq, t];
            let full = [m4[1] * m4[2] * m4[3], m4[2] * m4[3], m4[3]];
            for k in 0..3 {
                if m4[k] == target[k] {
                    mask[k] = if m4[k] == 1 { 0 } else { full[k] };
                } else if m4[k] != 1 {
                    return Err(err(format!(
                        "attn_mask of shape {m:?} does not broadcast to {target:?}"
                    )));
                }
            }
            if m4[3] > t {
                return Err(err(format!(
                    "attn_mask of shape {m:?} has more keys than the {t} keys (past and new)"
                )));
            }
            mask[3] = m4[3];
        }
        // Strides (batch, head, row) of a 3-d or 4-d operand.
        let lay = |heads: usize, seq: usize, size: usize| -> [usize; 3] {
            if self.rank == 3 {
                [seq * heads * size, size, heads * size]
            } else {
                [heads * seq * size, seq * size, size]
            }
        };
        let want_y: Vec<usize> = if self.rank == 3 {
            vec![b, sq, hq * dv]
        } else {
            vec![b, hq, sq, dv]
        };
        let y = outputs
            .first()
            .ok_or_else(|| err("the output is missing".into()))?;
        if *y != want_y.as_slice() {
            return Err(err(format!("Y has shape {y:?}, expected {want_y:?}")));
        }
        let scale = match self.scale {
            Some(s) => s,
            None => (1.0 / (d as f64).sqrt()) as f32,
        };
        let rows = b * hq * sq;
        let mut params = vec![
            word(name, "rows", rows)?,
            word(name, "q heads", hq)?,
            word(name, "q_seq", sq)?,
            word(name, "head size", d)?,
            word(name, "value head size", dv)?,
            word(name, "group", hq / hkv)?,
            word(name, "keys", t)?,
            word(name, "past", p)?,
            scale.to_bits(),
        ];
        let strides = [
            lay(hq, sq, d),
            lay(hkv, skv, d),
            lay(hkv, skv, dv),
            lay(hq, sq, dv),
            [mask[0], mask[1], mask[2]],
        ];
        for s in strides.iter().flatten() {
            params.push(word(name, "stride", *s)?);
        }
        params.push(word(name, "mask length", mask[3])?);
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
    use kiln_ir::{Float, Shape};

    fn op(causal: bool, heads: i64, kv: i64) -> Op {
        Op::Attention {
            is_causal: causal,
            q_num_heads: heads,
            kv_num_heads: kv,
            scale: None,
            softcap: Float(0.0),
            qk_matmul_output_mode: 0,
            softmax_precision: None,
        }
    }

    fn ty(dt: DType, dims: &[u64]) -> ValueType {
        ValueType::new(dt, Shape::fixed(dims))
    }

    fn sel(
        op: &Op,
        inputs: &[Option<ValueType>],
        outputs: usize,
        caps: &DeviceCaps,
    ) -> Option<Spec> {
        let y = ty(DType::F32, &[1, 7, 576]);
        let cx = NodeCtx {
            name: "attn",
            op,
            inputs: inputs.iter().map(|t| t.as_ref()).collect(),
            consts: vec![None; inputs.len()],
            outputs: vec![&y; outputs],
            caps,
        };
        Spec::select(&cx)
    }

    #[test]
    fn selects_supported_nodes_only() {
        let caps = DeviceCaps::webgpu();
        let q = Some(ty(DType::F32, &[1, 7, 576]));
        let kv = Some(ty(DType::F32, &[1, 7, 192]));
        let s = sel(
            &op(true, 9, 3),
            &[q.clone(), kv.clone(), kv.clone()],
            1,
            &caps,
        )
        .unwrap();
        assert_eq!((s.rank, s.q_heads, s.kv_heads, s.max_head), (3, 9, 3, 64));
        assert!(s.causal && s.mask == MaskKind::None && !s.past);
        // Extra outputs, missing head counts, bad grouping, non-f32 operands.
        assert!(sel(
            &op(true, 9, 3),
            &[q.clone(), kv.clone(), kv.clone()],
            2,
            &caps
        )
        .is_none());
        assert!(sel(
            &op(true, 0, 0),
            &[q.clone(), kv.clone(), kv.clone()],
            1,
            &caps
        )
        .is_none());
        assert!(sel(
            &op(true, 9, 2),
            &[q.clone(), kv.clone(), kv.clone()],
            1,
            &caps
        )
        .is_none());
        let h = Some(ty(DType::F16, &[1, 7, 192]));
        assert!(sel(
            &op(true, 9, 3),
            &[q.clone(), h.clone(), kv.clone()],
            1,
            &caps
        )
        .is_none());
        // Masks: bool or f32, never integer.
        let with_mask = |m: DType| {
            sel(
                &op(false, 9, 3),
                &[q.clone(), kv.clone(), kv.clone(), Some(ty(m, &[1, 7]))],
                1,
                &caps,
            )
        };
        assert_eq!(with_mask(DType::Bool).unwrap().mask, MaskKind::Bool);
        assert_eq!(with_mask(DType::F32).unwrap().mask, MaskKind::Add);
        assert!(with_mask(DType::I64).is_none());
        // 4-d with a past cache and a half softmax.
        let q4 = Some(ty(DType::F32, &[1, 4, 7, 32]));
        let k4 = Some(ty(DType::F32, &[1, 2, 7, 32]));
        let pk = Some(ty(DType::F32, &[1, 2, 5, 32]));
        let s = sel(
            &op(true, 0, 0),
            &[
                q4.clone(),
                k4.clone(),
                k4.clone(),
                None,
                pk.clone(),
                pk.clone(),
            ],
            1,
            &caps,
        )
        .unwrap();
        assert!(s.past && s.rank == 4);
        assert_eq!(s.bound_inputs(), vec![0, 1, 2, 4, 5]);
        assert!(sel(
            &op(true, 0, 0),
            &[q4.clone(), k4.clone(), k4.clone(), None, pk.clone(), None],
            1,
            &caps
        )
        .is_none());
        let half = Op::Attention {
            is_causal: false,
            q_num_heads: 0,
            kv_num_heads: 0,
            scale: None,
            softcap: Float(0.0),
            qk_matmul_output_mode: 0,
            softmax_precision: Some(DType::F16),
        };
        assert!(sel(&half, &[q4.clone(), k4.clone(), k4.clone()], 1, &caps).is_none());
        // Mixed ranks.
        assert!(sel(
            &op(true, 9, 3),
            &[q.clone(), k4.clone(), k4.clone()],
            1,
            &caps
        )
        .is_none());
        // A mask and nonpad lengths together.
        let np = Some(ty(DType::I64, &[1]));
        let all = [
            q4.clone(),
            k4.clone(),
            k4.clone(),
            Some(ty(DType::Bool, &[7, 7])),
            None,
            None,
            np,
        ];
        assert_eq!(
            sel(&op(true, 0, 0), &all, 1, &caps).unwrap().bound_inputs(),
            vec![0, 1, 2, 3, 6]
        );
        assert!(sel(&Op::Softmax { axis: 1 }, &[q], 1, &caps).is_none());
    }

    #[test]
    fn every_variant_validates_and_translates() {
        let caps = DeviceCaps::webgpu();
        let sched = Schedule::default_for(Family::Attention, &caps);
        for rank in [3, 4] {
            for causal in [false, true] {
                for mask in [MaskKind::None, MaskKind::Bool, MaskKind::Add] {
                    for (past, nonpad) in [(false, false), (true, false), (false, true)] {
                        for softcap in [0.0, 30.0] {
                            let spec = Spec {
                                rank,
                                q_heads: if rank == 3 { 9 } else { 0 },
                                kv_heads: if rank == 3 { 3 } else { 0 },
                                causal,
                                scale: None,
                                softcap,
                                mask,
                                past,
                                nonpad,
                                max_head: 64,
                            };
                            let k = spec.emit(&sched).unwrap();
                            validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
                            let msl = to_msl(&k).unwrap();
                            assert!(
                                msl.contains(&format!("[[buffer({})]]", k.inputs + 1)),
                                "{msl}"
                            );
                            assert_eq!(to_spirv(&k).unwrap()[0], 0x0723_0203);
                            assert_eq!(k.inputs as usize, spec.bound_inputs().len());
                            assert!(k.workgroup_bytes <= caps.max_workgroup_storage_bytes);
                        }
                    }
                }
            }
        }
        // Small and odd workgroups, heads wider than the workgroup.
        for wg in [[1, 1, 1], [7, 1, 1], [64, 1, 1], [32, 4, 1]] {
            let spec = Spec {
                rank: 4,
                q_heads: 0,
                kv_heads: 0,
                causal: true,
                scale: Some(0.5),
                softcap: 0.0,
                mask: MaskKind::Bool,
                past: false,
                nonpad: false,
                max_head: 256,
            };
            let k = spec
                .emit(&Schedule {
                    workgroup: wg,
                    ..sched.clone()
                })
                .unwrap();
            validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
        }
    }

    #[test]
    fn launch_fills_strides_and_checks_shapes() {
        let sched = Schedule::default_for(Family::Attention, &DeviceCaps::webgpu());
        let spec = Spec {
            rank: 3,
            q_heads: 4,
            kv_heads: 2,
            causal: true,
            scale: None,
            softcap: 0.0,
            mask: MaskKind::Bool,
            past: false,
            nonpad: false,
            max_head: 8,
        };
        let q: &[usize] = &[2, 5, 32];
        let kv: &[usize] = &[2, 5, 16];
        let l = spec
            .launch(
                &[Some(q), Some(kv), Some(kv), Some(&[2, 1, 1, 5])],
                &[q],
                &sched,
            )
            .unwrap();
        assert_eq!(l.workgroups, [40, 1, 1]);
        assert_eq!(&l.params[..8], &[40, 4, 5, 8, 8, 2, 5, 0]);
        assert_eq!(f32::from_bits(l.params[8]), (1.0 / 8f64.sqrt()) as f32);
        // Q strides (3-d), then the mask's: batch 5, head and row broadcast.
        assert_eq!(&l.params[9..12], &[160, 8, 32]);
        assert_eq!(&l.params[21..], &[5, 0, 0, 5]);
        let e = spec
            .launch(
                &[Some(q), Some(kv), Some(kv), Some(&[3, 1, 1, 5])],
                &[q],
                &sched,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not broadcast"), "{e}");
        let e = spec
            .launch(
                &[
                    Some(&[2, 5, 64]),
                    Some(&[2, 5, 32]),
                    Some(&[2, 5, 32]),
                    Some(&[5]),
                ],
                &[&[2, 5, 64]],
                &sched,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("exceed"), "{e}");
    }
}
