//! Gather kernels: `Gather` along any axis (embedding lookups are axis 0 of
//! a `[vocab, hidden]` table) and `GatherElements`
//! (`templates/wgsl/gather.wgsl`, `gather_elements.wgsl`).
//!
//! Data of any plain dtype travels as bits in 32-bit words, as in the
//! movement kernels ([`Width`]); indices are i64 (read as the low word of
//! each pair) or i32. Negative indices count from the end of the axis, as on
//! the CPU; an index outside the axis yields zeros where the CPU executor
//! reports an error, since a kernel cannot fail. Packed quantized tables
//! (whose columns the CPU decodes on the fly) stay on the host.

use super::movement::{grid, launch_err, norm_axis, operand, result, workgroup, Width};
use crate::kernel::{strides, word};
use crate::schedule::Schedule;
use crate::template::render;
use crate::{CodegenError, Kernel, Launch, NodeCtx};
use kiln_ir::{DType, Op};
use serde::{Deserialize, Serialize};

const GATHER: &str = include_str!("../../templates/wgsl/gather.wgsl");
const ELEMENTS: &str = include_str!("../../templates/wgsl/gather_elements.wgsl");

/// Which gather a kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `Gather`: whole slices along the axis.
    Gather,
    /// `GatherElements`: one element per index.
    Elements,
}

/// What a gather kernel needs from its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Gather or GatherElements.
    pub kind: Kind,
    /// Width of the data's elements.
    pub width: Width,
    /// Whether the indices are i64 (else i32).
    pub i64_indices: bool,
    /// Rank of the data.
    pub rank: usize,
    /// Normalised axis.
    pub axis: usize,
}

impl Spec {
    /// The kernel for the node, if this family has one: `Gather` and
    /// `GatherElements` of plain data with i64 or i32 indices.
    pub fn select(cx: &NodeCtx) -> Option<Spec> {
        let (kind, axis) = match cx.op {
            Op::Gather { axis } => (Kind::Gather, *axis),
            Op::GatherElements { axis } => (Kind::Elements, *axis),
            _ => return None,
        };
        let data = (*cx.inputs.first()?)?;
        let indices = (*cx.inputs.get(1)?)?;
        let out = cx.outputs.first()?;
        let width = Width::of(data.dtype)?;
        if out.dtype != data.dtype || cx.caps.max_storage_buffers_per_stage < 4 {
            return None;
        }
        let i64_indices = match indices.dtype {
            DType::I64 => true,
            DType::I32 => false,
            _ => return None,
        };
        let rank = data.shape.rank();
        if kind == Kind::Elements && indices.shape.rank() != rank {
            return None;
        }
        Some(Spec {
            kind,
            width,
            i64_indices,
            rank,
            axis: norm_axis(axis, rank)?,
        })
    }

    /// The WGSL for `schedule`.
    pub fn emit(&self, schedule: &Schedule) -> Result<Kernel, CodegenError> {
        let (wg, invocations) = workgroup(schedule);
        let at = match self.kind {
            Kind::Gather => "t % count",
            Kind::Elements => "o",
        };
        let read_index = if self.i64_indices {
            // The low word of the little-endian pair: exact for indices that
            // fit in 31 bits, negative ones included.
            format!("indices[2u * ({at})]")
        } else {
            format!("indices[{at}]")
        };
        let store = self.width.store("y", &|e| format!("value_at({e})"), "    ");
        let mut vars = vec![
            ("LOAD", self.width.load_fn("load_x", "x")),
            ("ELEM", self.width.elem_type().to_string()),
            ("READ_INDEX", read_index),
            ("ZERO", self.width.zero().to_string()),
            ("WORKGROUP", wg),
            ("INVOCATIONS", invocations.to_string()),
            ("STORE", store),
        ];
        let (stem, src) = match self.kind {
            Kind::Gather => ("gather", render("gather", GATHER, &vars)?),
            Kind::Elements => {
                vars.push(("RANK", self.rank.to_string()));
                vars.push(("AXIS", self.axis.to_string()));
                (
                    "gather_elements",
                    render("gather_elements", ELEMENTS, &vars)?,
                )
            }
        };
        Ok(Kernel::new(stem, src, 2, 1, 0))
    }

    /// Node operands bound as inputs: data, then indices.
    pub fn bound_inputs(&self) -> Vec<usize> {
        vec![0, 1]
    }

    /// Params and grid for concrete shapes.
    pub fn launch(
        &self,
        inputs: &[Option<&[usize]>],
        outputs: &[&[usize]],
        schedule: &Schedule,
    ) -> Result<Launch, CodegenError> {
        let k = match self.kind {
            Kind::Gather => "gather",
            Kind::Elements => "gather_elements",
        };
        let data = operand(k, inputs, 0)?;
        let idx = operand(k, inputs, 1)?;
        let y = result(k, outputs, 0)?;
        if data.len() != self.rank {
            return Err(launch_err(
                k,
                format!("data {data:?} should have rank {}", self.rank),
            ));
        }
        let a = self.axis;
        let n: usize = y.iter().product();
        let units = self.width.units(n);
        let params = match self.kind {
            Kind::Gather => {
                let mut want = data[..a].to_vec();
                want.extend(idx);
                want.extend(&data[a + 1..]);
                if y != want.as_slice() {
                    return Err(launch_err(
                        k,
                        format!("the result should be {want:?}, got {y:?}"),
                    ));
                }
                let inner: usize = data[a + 1..].iter().product();
                vec![
                    word(k, "elements", n)?,
                    word(k, "units", units)?,
                    // Never 0, so `o / inner` stays defined when nothing is gathered.
                    word(k, "inner", inner.max(1))?,
                    word(k, "indices", idx.iter().product::<usize>().max(1))?,
                    word(k, "axis length", data[a])?,
                ]
            }
            Kind::Elements => {
                let fits =
                    idx.len() == self.rank && (0..self.rank).all(|d| d == a || idx[d] <= data[d]);
                if !fits || y != idx {
                    return Err(launch_err(
                        k,
                        format!(
                            "indices {idx:?} and result {y:?} do not fit data {data:?} on axis {a}"
                        ),
                    ));
                }
                let st = strides(data);
                let mut p = vec![
                    word(k, "elements", n)?,
                    word(k, "units", units)?,
                    word(k, "axis length", data[a])?,
                ];
                for d in 0..self.rank {
                    p.push(word(k, "dim", idx[d])?);
                    p.push(word(k, "stride", st[d])?);
                }
                p
            }
        };
        Ok(Launch {
            params,
            workgroups: grid(units, schedule),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_msl, to_spirv, validate};
    use crate::{DeviceCaps, Family};
    use kiln_ir::{Shape, ValueType};

    fn vt(dtype: DType, dims: &[u64]) -> ValueType {
        ValueType::new(dtype, Shape::fixed(dims))
    }

    fn select(op: &Op, data: &ValueType, idx: &ValueType, out: &ValueType) -> Option<Spec> {
        Spec::select(&NodeCtx {
            name: "g",
            op,
            inputs: vec![Some(data), Some(idx)],
            consts: vec![None, None],
            outputs: vec![out],
            caps: &DeviceCaps::webgpu(),
        })
    }

    fn check(spec: &Spec) {
        let caps = DeviceCaps::webgpu();
        for schedule in [
            Schedule::default_for(Family::Gather, &caps),
            Schedule {
                workgroup: [16, 2, 1],
                tile: [1, 1, 1],
                vector: 1,
            },
        ] {
            let k = spec.emit(&schedule).unwrap();
            validate(&k).unwrap_or_else(|e| panic!("{e}\n{}", k.wgsl));
            assert!(to_msl(&k).unwrap().contains("[[buffer(3)]]"));
            assert_eq!(to_spirv(&k).unwrap()[0], 0x0723_0203);
            assert_eq!(k.storage_buffers(), 4);
        }
    }

    #[test]
    fn embeddings_and_every_width_validate() {
        for dt in [DType::F32, DType::I64, DType::F16, DType::Bool, DType::I32] {
            for idt in [DType::I64, DType::I32] {
                let table = vt(dt, &[100, 8]);
                let ids = vt(idt, &[2, 3]);
                let out = vt(dt, &[2, 3, 8]);
                let s = select(&Op::Gather { axis: 0 }, &table, &ids, &out).unwrap();
                assert_eq!(s.bound_inputs(), vec![0, 1]);
                assert_eq!(s.i64_indices, idt == DType::I64);
                check(&s);
                let s = select(
                    &Op::GatherElements { axis: -1 },
                    &table,
                    &vt(idt, &[100, 2]),
                    &vt(dt, &[100, 2]),
                )
                .unwrap();
                assert_eq!((s.kind, s.axis), (Kind::Elements, 1));
                check(&s);
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let table = vt(DType::F32, &[10, 4]);
        let out = vt(DType::F32, &[3, 4]);
        // Float indices, an axis out of range, a packed table, GatherElements of another rank.
        assert!(select(&Op::Gather { axis: 0 }, &table, &vt(DType::F32, &[3]), &out).is_none());
        assert!(select(&Op::Gather { axis: 2 }, &table, &vt(DType::I64, &[3]), &out).is_none());
        let q = vt(
            DType::Quant(kiln_ir::quant::QuantFormat::new(8, None, true).unwrap()),
            &[10, 4],
        );
        assert!(select(&Op::Gather { axis: 1 }, &q, &vt(DType::I64, &[3]), &out).is_none());
        assert!(select(
            &Op::GatherElements { axis: 0 },
            &table,
            &vt(DType::I64, &[3]),
            &out
        )
        .is_none());
        assert!(select(
            &Op::GatherNd { batch_dims: 0 },
            &table,
            &vt(DType::I64, &[3, 1]),
            &out
        )
        .is_none());
    }

    #[test]
    fn launch_splits_around_the_axis() {
        let s = Spec {
            kind: Kind::Gather,
            width: Width::B4,
            i64_indices: true,
            rank: 3,
            axis: 1,
        };
        let sch = Schedule::default_for(Family::Gather, &DeviceCaps::webgpu());
        let l = s
            .launch(&[Some(&[2, 7, 3]), Some(&[4, 5])], &[&[2, 4, 5, 3]], &sch)
            .unwrap();
        assert_eq!(l.params, vec![120, 120, 3, 20, 7]);
        assert!(s
            .launch(&[Some(&[2, 7, 3]), Some(&[4, 5])], &[&[2, 20, 3]], &sch)
            .is_err());
        // A scalar index removes the axis.
        let l = s
            .launch(&[Some(&[2, 7, 3]), Some(&[])], &[&[2, 3]], &sch)
            .unwrap();
        assert_eq!(l.params, vec![6, 6, 3, 1, 7]);
    }
}
