//! Filling the matmul templates for one spec and schedule.

use super::{Elem, Geometry, Spec, Weight, HEADER_WORDS};
use crate::template::render;
use crate::wgsl::program::{statements, MATH};
use crate::{CodegenError, Kernel, Schedule};

const MAIN: &str = include_str!("../../../templates/wgsl/matmul.wgsl");
const DECODE: &str = include_str!("../../../templates/wgsl/matmul_decode.wgsl");
const DENSE: &str = include_str!("../../../templates/wgsl/matmul_dense.wgsl");
const PACKED: &str = include_str!("../../../templates/wgsl/qmatmul.wgsl");

/// The kernel of `spec` for `schedule`.
pub(super) fn emit(spec: &Spec, schedule: &Schedule) -> Result<Kernel, CodegenError> {
    let g = spec.geometry(schedule)?;
    let elem = spec.elem.wgsl();
    let enable = if spec.elem == Elem::F16 {
        "enable f16;\n\n"
    } else {
        ""
    };
    let epilogue = epilogue(spec);
    // The scalar functions, only when the epilogue calls one of them.
    let math = if epilogue.contains("kiln_") {
        format!("{MATH}\n")
    } else {
        String::new()
    };
    let mut decode = String::new();
    for rp in [1, 4] {
        decode.push_str(&render(
            "matmul_decode",
            DECODE,
            &[
                ("RP", rp.to_string()),
                ("DEC_COL", dec_col(&g).into()),
                ("DEC_SLICE", dec_slice(&g).into()),
            ],
        )?);
    }
    let a_index = if spec.trans_a {
        "base + p * params[0] + row"
    } else {
        "base + row * params[2] + p"
    };
    let a_tile = if spec.trans_a {
        "let p = e / TM;\n            let i = e % TM;"
    } else {
        "let i = e / TK;\n            let p = e % TK;"
    };
    let b_tile = b_tile(spec, &g);
    let b_access = match spec.weight {
        Weight::Dense => render(
            "matmul_dense",
            DENSE,
            &[
                (
                    "B_INDEX",
                    if spec.trans_b {
                        "base + j * params[2] + p"
                    } else {
                        "base + p * params[1] + j"
                    }
                    .into(),
                ),
                ("UC", g.uc.to_string()),
            ],
        )?,
        Weight::Packed(f) => {
            let bits = u32::from(f.bits());
            let (zero, zeros_doc) = if f.symmetric() {
                (
                    format!("{}.0", f.symmetric_zero()),
                    format!(
                        "no zero points (symmetric: every zero point is {})",
                        f.symmetric_zero()
                    ),
                )
            } else {
                (
                    "f32(q_byte(params[9] + j * params[6] + g))".to_string(),
                    "one zero point byte per group (j·groups + g)".to_string(),
                )
            };
            render(
                "qmatmul",
                PACKED,
                &[
                    ("FORMAT", f.to_string()),
                    ("BITS", bits.to_string()),
                    ("MASK", ((1u32 << bits) - 1).to_string()),
                    ("UB", (g.uc * bits / 8).to_string()),
                    ("UC", g.uc.to_string()),
                    ("ZERO", zero),
                    ("ZEROS_DOC", zeros_doc),
                ],
            )?
        }
    };
    let (rm, rn) = (g.tm / g.wgy, g.tn / g.wgx);
    let wgsl = render(
        "matmul",
        MAIN,
        &[
            ("ENABLE", enable.into()),
            ("BINDINGS", format!("{math}{}", bindings(spec))),
            ("TM", g.tm.to_string()),
            ("TN", g.tn.to_string()),
            ("TK", g.tk.to_string()),
            ("WGX", g.wgx.to_string()),
            ("WGY", g.wgy.to_string()),
            ("INV", g.invocations().to_string()),
            ("RM", rm.to_string()),
            ("RN", rn.to_string()),
            ("RMN", (rm * rn).to_string()),
            ("DC", g.dc.to_string()),
            ("DT", g.dt.to_string()),
            ("UC", g.uc.to_string()),
            ("BATCH_RANK", spec.batch_rank.to_string()),
            ("SHARED", g.shared_words().to_string()),
            ("A_INDEX", a_index.into()),
            ("A_TILE", a_tile.into()),
            ("B_TILE", b_tile),
            ("B_ACCESS", b_access),
            ("EPILOGUE", epilogue),
            ("OUT_ELEM", elem.into()),
            ("DECODE_PASSES", decode),
        ],
    )?;
    let inputs = 2 + spec.extras.len() as u32;
    Ok(Kernel::new(
        &spec.stem(),
        wgsl,
        inputs,
        1,
        4 * g.shared_words(),
    ))
}

/// The tiled path's loop filling the B tile (`TK × TN` floats after the A
/// tile) for the step at depth `k0`.
fn b_tile(spec: &Spec, g: &Geometry) -> String {
    const STORE: &str =
        "            tile[TM * TK + p * TN + j] = b_at(base.y, k0 + p, col0 + j);\n        }";
    match spec.weight {
        // Whole units: one load of packed bytes, one scale and one zero
        // point for UC values (the tile's depth is whole units, so units
        // never straddle two steps).
        Weight::Packed(_) if g.tk.is_multiple_of(g.uc) => "        \
        for (var e = lid; e < TN * (TK / UC); e += INV) {
            let j = e / (TK / UC);
            let p = (e % (TK / UC)) * UC;
            let col = col0 + j;
            var w: Unit;
            if (col < n && k0 + p < k) {
                w = b_unit(base.y, col, (k0 + p) / UC);
            }
            for (var q = 0u; q < UC; q++) {
                tile[TM * TK + (p + q) * TN + j] = w.w[q] * w.s;
            }
        }"
        .to_string(),
        // Neighbouring invocations load neighbouring values: along a row of
        // a row-major B, down a column of a transposed or packed one.
        _ if g.lanes_on_columns => format!(
            "        for (var e = lid; e < TK * TN; e += INV) {{\n            let p = e / TN;\n            let j = e % TN;\n{STORE}"
        ),
        _ => format!(
            "        for (var e = lid; e < TK * TN; e += INV) {{\n            let j = e / TK;\n            let p = e % TK;\n{STORE}"
        ),
    }
}

/// The decode path's column (within the workgroup's block) of invocation `lid`.
fn dec_col(g: &Geometry) -> &'static str {
    if g.lanes_on_columns {
        "lid % DC"
    } else {
        "lid / DT"
    }
}

/// The decode path's slice of the inner dimension of invocation `lid`.
fn dec_slice(g: &Geometry) -> &'static str {
    if g.lanes_on_columns {
        "lid / DC"
    } else {
        "lid % DT"
    }
}

/// The binding declarations: A, B, the extra operands, the result, params.
fn bindings(spec: &Spec) -> String {
    let elem = spec.elem.wgsl();
    let b_elem = match spec.weight {
        Weight::Dense => elem,
        Weight::Packed(_) => "u32",
    };
    let mut s = format!(
        "@group(0) @binding(0) var<storage, read> a: array<{elem}>;\n\
         @group(0) @binding(1) var<storage, read> b: array<{b_elem}>;\n"
    );
    for e in 0..spec.extras.len() {
        s.push_str(&format!(
            "@group(0) @binding({}) var<storage, read> e{e}: array<{elem}>;\n",
            2 + e
        ));
    }
    let n = 2 + spec.extras.len();
    s.push_str(&format!(
        "@group(0) @binding({n}) var<storage, read_write> y: array<{elem}>;\n\
         @group(0) @binding({}) var<storage, read> params: array<u32>;\n",
        n + 1
    ));
    s
}

/// The body of `fn epilogue(acc, row, col) -> f32`: each extra operand read
/// at the output's coordinates through its broadcast strides, then the
/// program.
fn epilogue(spec: &Spec) -> String {
    let mut s = String::new();
    let k = spec.extras.len();
    let br = spec.batch_rank as usize;
    if k > 0 {
        s.push_str("    let m = params[0];\n    let i = row % m;\n");
        if br > 0 {
            s.push_str("    var rem = row / m;\n");
        }
        let at = |e: usize| HEADER_WORDS + 3 * br + e * (br + 2);
        for e in 0..k {
            s.push_str(&format!(
                "    var o{e} = i * params[{}u] + col * params[{}u];\n",
                at(e) + br,
                at(e) + br + 1
            ));
        }
        if br > 0 {
            s.push_str(
                "    for (var d = BR; d > 0u; d--) {\n        let dim = params[HDR + 3u * (d - 1u)];\n        let c = rem % dim;\n        rem = rem / dim;\n",
            );
            for e in 0..k {
                s.push_str(&format!(
                    "        o{e} += c * params[{}u + d - 1u];\n",
                    at(e)
                ));
            }
            s.push_str("    }\n");
        }
        for e in 0..k {
            s.push_str(&format!("    let x{e} = f32(e{e}[o{e}]);\n"));
        }
    }
    let inputs: Vec<String> = std::iter::once("acc".to_string())
        .chain((0..k).map(|e| format!("x{e}")))
        .collect();
    let (body, result) = statements(&spec.epilogue, &inputs, "t");
    s.push_str(&body);
    s.push_str(&format!("    return {result};\n"));
    s
}
