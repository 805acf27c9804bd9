//! Reductions (`Reduce`), `Softmax` and `LogSoftmax`: one workgroup per
//! output element (reductions) or per row (softmax), each folding its
//! elements with a strided loop and a tree in workgroup memory.
//!
//! Any set of axes is accepted. The axes are grouped into runs of adjacent
//! kept and adjacent reduced axes (a run is contiguous in memory, so it acts
//! as one dimension); the kernel turns a linear output index into an offset
//! through the kept runs and a linear reduced index through the reduced
//! runs, with dims and strides from `params`. The common cases (trailing
//! axes, one middle axis) have one or two runs of each, so the index
//! arithmetic stays a division or two per element. Semantics follow the CPU
//! executor (`runtime/src/cpu/reduce.rs`, `norm.rs`), computing in f32.

use super::program::MATH;
use crate::kernel::{linear_grid, strides, word};
use crate::template::render;
use crate::{CodegenError, Kernel, Launch, NodeCtx, Schedule};
use kiln_ir::{DType, Op, ReduceKind};
use serde::{Deserialize, Serialize};

const REDUCE: &str = include_str!("../../templates/wgsl/reduce.wgsl");
const SOFTMAX: &str = include_str!("../../templates/wgsl/softmax.wgsl");

/// What the kernel computes over each group of reduced elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// One output element per group: the fold of `kind`.
    Reduce(ReduceKind),
    /// Softmax along the (single) reduced axis, same shape as the input.
    Softmax,
    /// Log-softmax along the (single) reduced axis.
    LogSoftmax,
}

/// What a reduce or softmax kernel needs from its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The computation.
    pub mode: Mode,
    /// Element type of the input and output (`F32`, or `F16` on devices
    /// with `shader-f16`; the arithmetic is f32 either way).
    pub dtype: DType,
    /// Rank of the input.
    pub rank: usize,
    /// Reduced axes, sorted and distinct (empty: each element is its own
    /// group, as for `noop_with_empty_axes` or a rank-0 input).
    pub axes: Vec<usize>,
}

/// Runs of adjacent axes of one class, outermost first: (is_reduced, axes).
fn runs(rank: usize, axes: &[usize]) -> Vec<(bool, Vec<usize>)> {
    let mut out: Vec<(bool, Vec<usize>)> = Vec::new();
    for a in 0..rank {
        let r = axes.contains(&a);
        match out.last_mut() {
            Some((cls, v)) if *cls == r => v.push(a),
            _ => out.push((r, vec![a])),
        }
    }
    out
}

/// Resolves an axis against `rank` (negative counts from the end).
fn norm_axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

impl Spec {
    /// The kernel for `Reduce` (float kinds with constant axes),
    /// `Softmax` and `LogSoftmax` on f32 (or f16 with `shader-f16`).
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        let x = (*cx.inputs.first()?)?;
        let dtype = x.dtype;
        let dtype_ok = dtype == DType::F32 || (dtype == DType::F16 && cx.caps.shader_f16);
        if !dtype_ok || cx.outputs.len() != 1 || cx.outputs[0].dtype != dtype {
            return None;
        }
        if cx.caps.max_storage_buffers_per_stage < 3 {
            return None;
        }
        let rank = x.shape.rank();
        let (mode, axes) = match cx.op {
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let a = norm_axis(*axis, rank)?;
                let mode = if matches!(cx.op, Op::Softmax { .. }) {
                    Mode::Softmax
                } else {
                    Mode::LogSoftmax
                };
                (mode, vec![a])
            }
            Op::Reduce {
                kind,
                axes,
                noop_with_empty_axes,
                ..
            } => {
                let given: Vec<i64> = match axes {
                    Some(a) => a.clone(),
                    None => match cx.inputs.get(1).copied().flatten() {
                        None => Vec::new(),
                        // Axes computed at run time would change the kernel.
                        Some(_) => cx.consts.get(1).copied().flatten()?.to_i64_vec(),
                    },
                };
                if given.is_empty() && *noop_with_empty_axes {
                    // The identity: a sum over one element is the element.
                    (Mode::Reduce(ReduceKind::Sum), Vec::new())
                } else if given.is_empty() {
                    (Mode::Reduce(*kind), (0..rank).collect())
                } else {
                    let mut a = given
                        .iter()
                        .map(|&a| norm_axis(a, rank))
                        .collect::<Option<Vec<_>>>()?;
                    a.sort_unstable();
                    a.dedup();
                    (Mode::Reduce(*kind), a)
                }
            }
            _ => return None,
        };
        Some(Spec {
            mode,
            dtype,
            rank,
            axes,
        })
    }

    /// The prelude functions the kernel calls.
    fn prelude(&self) -> &'static [&'static str] {
        match self.mode {
            Mode::Reduce(_) => &["kiln_max", "kiln_min"],
            Mode::Softmax | Mode::LogSoftmax => &["kiln_max", "kiln_exp"],
        }
    }

    fn stem(&self) -> &'static str {
        match self.mode {
            Mode::Reduce(_) => "reduce",
            Mode::Softmax => "softmax",
            Mode::LogSoftmax => "log_softmax",
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
        let [sx, sy, sz] = schedule.workgroup;
        let common = vec![
            ("ENABLE", enable(self.dtype)),
            ("MATH", math_subset(self.prelude())),
            ("T", wgsl_type(self.dtype).to_string()),
            ("WG", wg.to_string()),
            ("TREE", tree_start(wg).to_string()),
            ("INDEX", index_fns(&runs(self.rank, &self.axes))),
            ("WORKGROUP", format!("{sx}, {sy}, {sz}")),
        ];
        let wgsl = match self.mode {
            Mode::Reduce(kind) => {
                let f = fold(kind);
                let mut vars = common;
                vars.extend([
                    ("OP", f.op.to_string()),
                    ("SHIFTED", (kind == ReduceKind::LogSumExp).to_string()),
                    ("IDENTITY", f.identity.to_string()),
                    ("MAP", f.map.to_string()),
                    ("FINISH", f.finish.to_string()),
                ]);
                render("reduce.wgsl", REDUCE, &vars)?
            }
            Mode::Softmax | Mode::LogSoftmax => {
                let mut vars = common;
                vars.push(("LOG", (self.mode == Mode::LogSoftmax).to_string()));
                render("softmax.wgsl", SOFTMAX, &vars)?
            }
        };
        Ok(Kernel::new(self.stem(), wgsl, 1, 1, wg * 4))
    }

    /// Only the input tensor is bound (a `Reduce`'s axes operand is baked in).
    pub fn bound_inputs(&self) -> Vec<usize> {
        vec![0]
    }

    /// One workgroup per output element (per row for softmax); params are
    /// the group count, the group length, and (dim, stride) per run.
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
        let x = inputs
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| err("the input operand is missing".into()))?;
        if x.len() != self.rank {
            return Err(err(format!(
                "the kernel was generated for rank {}, the input has shape {x:?}",
                self.rank
            )));
        }
        let y = outputs
            .first()
            .ok_or_else(|| err("the output is missing".into()))?;
        let st = strides(x);
        let mut groups = 1usize;
        let mut len = 1usize;
        let mut kept_words = Vec::new();
        let mut red_words = Vec::new();
        for (reduced, axes) in runs(self.rank, &self.axes) {
            let dim: usize = axes.iter().map(|&a| x[a]).product();
            let stride = st[*axes.last().unwrap_or(&0)];
            let words = if reduced {
                len *= dim;
                &mut red_words
            } else {
                groups *= dim;
                &mut kept_words
            };
            words.push(word(name, "run length", dim)?);
            words.push(word(name, "run stride", stride)?);
        }
        let y_len: usize = y.iter().product();
        let want = match self.mode {
            Mode::Reduce(_) => groups,
            Mode::Softmax | Mode::LogSoftmax => groups * len,
        };
        if y_len != want {
            return Err(err(format!(
                "input {x:?} reduced over axes {:?} has {want} elements, the output {y:?} has {y_len}",
                self.axes
            )));
        }
        let mut params = vec![
            word(name, "groups", groups)?,
            word(name, "group length", len)?,
        ];
        params.extend(kept_words);
        params.extend(red_words);
        Ok(Launch {
            params,
            workgroups: linear_grid(groups as u64),
        })
    }
}

/// The functions of the math prelude named in `names`, with the prelude
/// functions they call, in prelude order: kernels carry only what they use.
pub(crate) fn math_subset(names: &[&str]) -> String {
    // Prelude items are separated by blank lines; each holds one function
    // and its comment.
    let items: Vec<&str> = MATH
        .split("\n\n")
        .filter(|b| b.contains("fn kiln_"))
        .collect();
    let name_of = |item: &str| -> String {
        let at = item.find("fn ").map_or(0, |i| i + 3);
        item[at..]
            .split('(')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    loop {
        let before = want.len();
        for item in &items {
            if want.contains(&name_of(item)) {
                for other in &items {
                    let n = name_of(other);
                    if !want.contains(&n) && item.contains(&format!("{n}(")) {
                        want.push(n);
                    }
                }
            }
        }
        if want.len() == before {
            break;
        }
    }
    let mut out = String::new();
    for item in items {
        if want.contains(&name_of(item)) {
            out.push_str(item.trim_matches('\n'));
            out.push_str("\n\n");
        }
    }
    out
}

/// `enable f16;` for half kernels.
pub(crate) fn enable(dt: DType) -> String {
    if dt == DType::F16 {
        "enable f16;".into()
    } else {
        String::new()
    }
}

/// The WGSL storage type of a float tensor.
pub(crate) fn wgsl_type(dt: DType) -> &'static str {
    if dt == DType::F16 {
        "f16"
    } else {
        "f32"
    }
}

/// First stride of a tree reduction over `wg` values: the largest power of
/// two below `wg` (0 for one invocation), so any workgroup size works.
pub(crate) fn tree_start(wg: u32) -> u32 {
    wg.next_power_of_two() / 2
}

/// `row_base(row)` (offset of the first element of group `row`, through the
/// kept runs) and `elem_offset(r)` (offset of the `r`-th element of a group,
/// through the reduced runs), reading (dim, stride) pairs from `params`
/// after the two leading words, kept runs first.
fn index_fns(runs: &[(bool, Vec<usize>)]) -> String {
    let nk = runs.iter().filter(|(reduced, _)| !reduced).count();
    let nr = runs.len() - nk;
    let kept: Vec<usize> = (0..nk).map(|i| 2 + 2 * i).collect();
    let red: Vec<usize> = (0..nr).map(|i| 2 + 2 * (nk + i)).collect();
    format!(
        "{}\n\n{}",
        decompose("row_base", "row", &kept),
        decompose("elem_offset", "r", &red)
    )
}

/// A WGSL function mapping a linear index over runs (outermost first, each
/// a (dim, stride) pair at `params[p]`, `params[p + 1]`) to an offset.
fn decompose(name: &str, arg: &str, runs: &[usize]) -> String {
    let body = match runs {
        [] => "    return 0u;\n".to_string(),
        [one] => format!("    return {arg} * params[{}u];\n", one + 1),
        [outer, inner @ ..] => {
            let mut b = format!("    var rem = {arg};\n    var off = 0u;\n");
            for &p in inner.iter().rev() {
                b.push_str(&format!(
                    "    off += (rem % params[{p}u]) * params[{}u];\n    rem = rem / params[{p}u];\n",
                    p + 1
                ));
            }
            b.push_str(&format!("    return off + rem * params[{}u];\n", outer + 1));
            b
        }
    };
    format!("fn {name}({arg}: u32) -> u32 {{\n{body}}}")
}

/// How a reduce kind folds: the combining op, its identity, the per-element
/// map and the final transform (WGSL over `v`, `shift`, `acc`, `n`).
struct Fold {
    op: u32,
    identity: &'static str,
    map: &'static str,
    finish: &'static str,
}

fn fold(kind: ReduceKind) -> Fold {
    const NEG_INF: &str = "bitcast<f32>(0xff800000u)";
    const POS_INF: &str = "bitcast<f32>(0x7f800000u)";
    let sum = |map, finish| Fold {
        op: 0,
        identity: "0.0",
        map,
        finish,
    };
    match kind {
        ReduceKind::Sum => sum("v", "acc"),
        ReduceKind::Mean => sum("v", "acc / f32(n)"),
        ReduceKind::L1 => sum("abs(v)", "acc"),
        ReduceKind::L2 => sum("v * v", "sqrt(acc)"),
        ReduceKind::SumSquare => sum("v * v", "acc"),
        ReduceKind::LogSum => sum("v", "log(acc)"),
        ReduceKind::LogSumExp => sum("exp(v - shift)", "log(acc) + shift"),
        ReduceKind::Max => Fold {
            op: 1,
            identity: NEG_INF,
            map: "v",
            finish: "acc",
        },
        ReduceKind::Min => Fold {
            op: 2,
            identity: POS_INF,
            map: "v",
            finish: "acc",
        },
        ReduceKind::Prod => Fold {
            op: 3,
            identity: "1.0",
            map: "v",
            finish: "acc",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_msl, to_spirv, validate};
    use crate::{DeviceCaps, Family, KernelSpec};
    use kiln_ir::{Dim, Shape, Tensor, ValueType};

    const KINDS: [ReduceKind; 10] = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
        ReduceKind::SumSquare,
    ];

    fn ty(dt: DType, rank: usize) -> ValueType {
        ValueType::new(
            dt,
            Shape((0..rank).map(|i| Dim::Sym(format!("d{i}"))).collect()),
        )
    }

    fn reduce_op(kind: ReduceKind, axes: Option<Vec<i64>>, noop: bool) -> Op {
        Op::Reduce {
            kind,
            axes,
            keepdims: true,
            noop_with_empty_axes: noop,
        }
    }

    /// Selects with an f32 input of `rank` and the given axes operand.
    fn sel(
        op: &Op,
        rank: usize,
        dt: DType,
        axes: Option<&Tensor>,
        caps: &DeviceCaps,
    ) -> Option<Spec> {
        let x = ty(dt, rank);
        let a = ValueType::new(DType::I64, Shape::fixed(&[1]));
        let cx = NodeCtx {
            name: "n",
            op,
            inputs: if axes.is_some() {
                vec![Some(&x), Some(&a)]
            } else {
                vec![Some(&x)]
            },
            consts: if axes.is_some() {
                vec![None, axes]
            } else {
                vec![None]
            },
            outputs: vec![&x],
            caps,
        };
        Spec::select(&cx)
    }

    fn check(spec: &Spec, schedule: &Schedule) -> Kernel {
        let k = spec.emit(schedule).unwrap();
        validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
        to_msl(&k).unwrap();
        assert_eq!(to_spirv(&k).unwrap()[0], 0x0723_0203);
        k
    }

    #[test]
    fn selects_float_reductions_and_refuses_the_rest() {
        let caps = DeviceCaps::webgpu();
        let op = reduce_op(ReduceKind::Sum, Some(vec![-1, 0]), false);
        let s = sel(&op, 3, DType::F32, None, &caps).unwrap();
        assert_eq!(s.axes, vec![0, 2]);
        assert_eq!(s.mode, Mode::Reduce(ReduceKind::Sum));
        // Integer reductions and f16 without shader-f16 stay on the host.
        assert!(sel(&op, 3, DType::I64, None, &caps).is_none());
        assert!(sel(&op, 3, DType::F16, None, &caps).is_none());
        assert!(sel(&op, 3, DType::F16, None, &DeviceCaps::metal()).is_some());
        // Out-of-range axes are refused.
        assert!(sel(
            &reduce_op(ReduceKind::Sum, Some(vec![3]), false),
            3,
            DType::F32,
            None,
            &caps
        )
        .is_none());
        // Axes from an operand: baked when constant, refused when computed.
        let op = reduce_op(ReduceKind::Max, None, false);
        let axes = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert_eq!(
            sel(&op, 3, DType::F32, Some(&axes), &caps).unwrap().axes,
            vec![1]
        );
        let x = ty(DType::F32, 3);
        let a = ValueType::new(DType::I64, Shape::fixed(&[1]));
        let cx = NodeCtx {
            name: "n",
            op: &op,
            inputs: vec![Some(&x), Some(&a)],
            consts: vec![None, None],
            outputs: vec![&x],
            caps: &caps,
        };
        assert!(Spec::select(&cx).is_none());
        // No axes: everything, or the identity with noop_with_empty_axes.
        assert_eq!(
            sel(&op, 3, DType::F32, None, &caps).unwrap().axes,
            vec![0, 1, 2]
        );
        let noop = sel(
            &reduce_op(ReduceKind::L1, None, true),
            3,
            DType::F32,
            None,
            &caps,
        )
        .unwrap();
        assert_eq!(noop.axes, Vec::<usize>::new());
        assert_eq!(noop.mode, Mode::Reduce(ReduceKind::Sum));
        // Softmax: one axis, negative counted from the end.
        let s = sel(&Op::Softmax { axis: -2 }, 3, DType::F32, None, &caps).unwrap();
        assert_eq!((s.mode, s.axes), (Mode::Softmax, vec![1]));
        assert!(sel(&Op::LogSoftmax { axis: 3 }, 3, DType::F32, None, &caps).is_none());
        assert!(sel(&Op::Hardmax { axis: 1 }, 3, DType::F32, None, &caps).is_none());
        assert!(sel(&Op::Relu, 3, DType::F32, None, &caps).is_none());
    }

    #[test]
    fn every_variant_validates_and_translates() {
        let caps = DeviceCaps::webgpu();
        let sched = Schedule::default_for(Family::Reduce, &caps);
        for kind in KINDS {
            for axes in [
                vec![],
                vec![0],
                vec![2],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2],
            ] {
                let spec = Spec {
                    mode: Mode::Reduce(kind),
                    dtype: DType::F32,
                    rank: 3,
                    axes,
                };
                check(&spec, &sched);
            }
        }
        for mode in [Mode::Softmax, Mode::LogSoftmax] {
            for axis in 0..3 {
                check(
                    &Spec {
                        mode,
                        dtype: DType::F32,
                        rank: 3,
                        axes: vec![axis],
                    },
                    &sched,
                );
            }
        }
        // Half storage, a rank-0 input and odd workgroup shapes.
        let half = Spec {
            mode: Mode::Softmax,
            dtype: DType::F16,
            rank: 2,
            axes: vec![1],
        };
        assert!(check(&half, &sched).uses_f16);
        check(
            &Spec {
                mode: Mode::Reduce(ReduceKind::Sum),
                dtype: DType::F32,
                rank: 0,
                axes: vec![],
            },
            &sched,
        );
        for wg in [[1, 1, 1], [3, 1, 1], [64, 1, 1], [96, 2, 1], [100, 1, 1]] {
            let s = Schedule {
                workgroup: wg,
                ..sched.clone()
            };
            let spec = Spec {
                mode: Mode::Reduce(ReduceKind::LogSumExp),
                dtype: DType::F32,
                rank: 2,
                axes: vec![1],
            };
            check(&spec, &s);
        }
        // Through the family dispatch.
        let k = KernelSpec::Reduce(Spec {
            mode: Mode::LogSoftmax,
            dtype: DType::F32,
            rank: 1,
            axes: vec![0],
        });
        assert_eq!(k.family(), Family::Reduce);
        assert_eq!(k.bound_inputs(), vec![0]);
    }

    #[test]
    fn math_subset_brings_dependencies() {
        let m = math_subset(&["kiln_tanh"]);
        assert!(
            m.contains("fn kiln_tanh(") && m.contains("fn kiln_exp("),
            "{m}"
        );
        assert!(!m.contains("fn kiln_erf("), "{m}");
        assert!(math_subset(&[]).is_empty());
    }

    #[test]
    fn tree_covers_any_workgroup() {
        for (wg, t) in [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (64, 32),
            (96, 64),
            (256, 128),
            (257, 256),
        ] {
            assert_eq!(tree_start(wg), t, "wg {wg}");
        }
    }

    #[test]
    fn launch_groups_runs() {
        let sched = Schedule::default_for(Family::Reduce, &DeviceCaps::webgpu());
        let spec = Spec {
            mode: Mode::Reduce(ReduceKind::Sum),
            dtype: DType::F32,
            rank: 4,
            axes: vec![0, 2, 3],
        };
        let l = spec
            .launch(&[Some(&[2, 3, 4, 5])], &[&[3]], &sched)
            .unwrap();
        // groups, length, kept run (3, 20), reduced runs (2, 60) and (20, 1).
        assert_eq!(l.params, vec![3, 40, 3, 20, 2, 60, 20, 1]);
        assert_eq!(l.workgroups, [3, 1, 1]);
        let e = spec
            .launch(&[Some(&[2, 3, 4, 5])], &[&[4]], &sched)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 3 elements"), "{e}");
        let e = spec
            .launch(&[Some(&[2, 3])], &[&[3]], &sched)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 4"), "{e}");
        let soft = Spec {
            mode: Mode::Softmax,
            dtype: DType::F32,
            rank: 3,
            axes: vec![1],
        };
        let l = soft
            .launch(&[Some(&[2, 3, 4])], &[&[2, 3, 4]], &sched)
            .unwrap();
        assert_eq!(l.params, vec![8, 3, 2, 12, 4, 1, 3, 4]);
    }
}
