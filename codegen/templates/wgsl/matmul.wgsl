{{ENABLE}}// Matrix product with a fused epilogue: y = epilogue(op(A) · op(B), E1 .. Ek)
// with numpy matmul semantics (batch axes broadcast, 1-d operands promoted).
// Accumulation is f32 whatever the element type.
//
// One module, two paths; the launch picks one per run from params[4], so a
// node with a symbolic row count gets both:
// - tiled (0): a workgroup computes a TM × TN tile of one batch's output,
//   staging TM × TK of A and TK × TN of B through workgroup memory per step;
//   each invocation accumulates RM × RN outputs, rows ly + r·WGY and columns
//   lx + c·WGX, so neighbouring invocations write neighbouring columns.
// - decode (1), for few rows: a workgroup owns DC output columns and DT
//   invocations share each column's inner dimension in units of UC values,
//   so a column's weights stream through once per pass of rows (matrix-vector
//   products are bound by reading B); partial sums meet in workgroup memory.
//
// params: [0] M, rows of one product; [1] N; [2] K; [3] rows the grid covers
// in one batch (M, or every batch's rows when A's batches fold into one
// product with a shared B); [4] path; [5..10) packed B: column stride in
// bytes, groups per column, rows per group, byte offsets of the scales and of
// the zero points; then per batch axis d: [dim, A stride, B stride]; then per
// epilogue operand: a stride per batch axis, the row stride, the column stride.

{{BINDINGS}}
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const TK: u32 = {{TK}}u;
const WGY: u32 = {{WGY}}u;
const WGX: u32 = {{WGX}}u;
const INV: u32 = {{INV}}u;
const RM: u32 = {{RM}}u;
const RN: u32 = {{RN}}u;
const DC: u32 = {{DC}}u;
const DT: u32 = {{DT}}u;
const UC: u32 = {{UC}}u;
const BR: u32 = {{BATCH_RANK}}u;
const HDR: u32 = 10u;

// The A and B tiles of the tiled path, or the partial sums of the decode path.
var<workgroup> tile: array<f32, {{SHARED}}>;

// Element offsets of A's and B's matrices in batch z (0 on broadcast axes).
fn batch_offsets(z: u32) -> vec2<u32> {
    var rem = z;
    var off = vec2<u32>(0u, 0u);
    for (var d = BR; d > 0u; d--) {
        let at = HDR + 3u * (d - 1u);
        let dim = params[at];
        let c = rem % dim;
        rem = rem / dim;
        off += c * vec2<u32>(params[at + 1u], params[at + 2u]);
    }
    return off;
}

// op(A)[row, p], 0 outside the matrix.
fn a_at(base: u32, row: u32, p: u32) -> f32 {
    if (row >= params[3] || p >= params[2]) {
        return 0.0;
    }
    return f32(a[{{A_INDEX}}]);
}

{{B_ACCESS}}
// The epilogue at output row `row` (counted over all batches) and column `col`.
fn epilogue(acc: f32, row: u32, col: u32) -> f32 {
{{EPILOGUE}}}

fn store(acc: f32, row: u32, col: u32) {
    y[row * params[1] + col] = {{OUT_ELEM}}(epilogue(acc, row, col));
}

fn tiled(lx: u32, ly: u32, lid: u32, wid: vec3<u32>) {
    let n = params[1];
    let k = params[2];
    let rows = params[3];
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let base = batch_offsets(wid.z);
    var acc: array<f32, {{RMN}}>;
    for (var k0 = 0u; k0 < k; k0 += TK) {
        for (var e = lid; e < TM * TK; e += INV) {
            {{A_TILE}}
            tile[p * TM + i] = a_at(base.x, row0 + i, k0 + p);
        }
{{B_TILE}}
        workgroupBarrier();
        for (var p = 0u; p < TK; p++) {
            var ar: array<f32, {{RM}}>;
            var br: array<f32, {{RN}}>;
            for (var r = 0u; r < RM; r++) {
                ar[r] = tile[p * TM + ly + r * WGY];
            }
            for (var c = 0u; c < RN; c++) {
                br[c] = tile[TM * TK + p * TN + lx + c * WGX];
            }
            for (var r = 0u; r < RM; r++) {
                for (var c = 0u; c < RN; c++) {
                    acc[r * RN + c] += ar[r] * br[c];
                }
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < RM; r++) {
        let row = row0 + ly + r * WGY;
        for (var c = 0u; c < RN; c++) {
            let col = col0 + lx + c * WGX;
            if (row < rows && col < n) {
                store(acc[r * RN + c], wid.z * params[0] + row, col);
            }
        }
    }
}

{{DECODE_PASSES}}
fn decode(lid: u32, wid: vec3<u32>) {
    let base = batch_offsets(wid.z);
    let rows = params[3];
    var m0 = 0u;
    loop {
        if (m0 >= rows) {
            break;
        }
        if (rows - m0 == 1u) {
            decode_rows1(lid, wid, base, m0);
            m0 += 1u;
        } else {
            decode_rows4(lid, wid, base, m0);
            m0 += 4u;
        }
    }
}

@compute @workgroup_size({{WGX}}, {{WGY}}, 1)
fn main(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    if (params[4] == 0u) {
        tiled(lid3.x, lid3.y, lid, wid);
    } else {
        decode(lid, wid);
    }
}
