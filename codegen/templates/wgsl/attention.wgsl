// Scaled dot-product attention: one workgroup per (batch, query head,
// query row), streaming over the keys in blocks of WG (one key per
// invocation) with an online softmax, so any sequence length runs in a
// fixed amount of workgroup memory.
//
// Per block: each invocation scores its key (q · k · scale, softcap, then
// the mask), the block maximum moves the running maximum `m`, the running
// sum `l` and the output accumulators are rescaled by e^(m_old - m_new),
// and the block's probabilities weight the value rows (each invocation
// owns output channels tid, tid + WG, ...). Keys past the row's limit
// (causal frontier, `nonpad_kv_seqlen`, a short mask) are never read. A row
// that may see no key is written as zeros, as on the CPU.
//
// params: [0] rows (batch · heads · q_seq), [1] q heads, [2] q_seq,
// [3] head size, [4] value head size, [5] q heads per kv head, [6] keys
// (past + new), [7] past keys, [8] scale (f32 bits), [9..12] Q strides
// (batch, head, row), [12..15] K, [15..18] V, [18..21] Y, [21..24] mask
// strides (batch, head, row), [24] mask length.
{{BINDINGS}}
{{MATH}}
const WG: u32 = {{WG}}u;
// Largest power of two below WG: the first stride of the tree.
const TREE: u32 = {{TREE}}u;
// Largest head size the kernel was generated for.
const MAX_HEAD: u32 = {{MAX_HEAD}}u;
// Output channels per invocation: ceil(MAX_HEAD / WG).
const PER: u32 = {{PER}}u;
const CAUSAL: bool = {{CAUSAL}};

// -inf (WGSL has no literal for it, nor a constant bitcast).
fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

var<workgroup> qs: array<f32, MAX_HEAD>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

{{ACCESS}}

// Maximum (is_max) or sum of one value per invocation; every invocation
// gets the result.
fn wg_reduce(is_max: bool, v: f32, tid: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = TREE; s > 0u; s = s >> 1u) {
        if (tid < s && tid + s < WG) {
            let a = red[tid];
            let b = red[tid + s];
            red[tid] = select(a + b, max(a, b), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params[0]) {
        return;
    }
    let hq = params[1];
    let sq = params[2];
    let d = params[3];
    let dv = params[4];
    let t = params[6];
    let scale = bitcast<f32>(params[8]);
    let i = row % sq;
    let b = (row / sq) / hq;
    let h = (row / sq) % hq;
    let hk = h / params[5];
    let hkv = hq / params[5];

    // Keys this row may see: 0 .. lim.
    var lim = batch_keys(b);
    if (CAUSAL) {
        let c = clamp(i32(i) + causal_offset(b) + 1, 0, i32(t));
        lim = min(lim, u32(c));
    }

    let qbase = b * params[9] + h * params[10] + i * params[11];
    for (var c = tid; c < d; c += WG) {
        qs[c] = f32(q[qbase + c]);
    }
    workgroupBarrier();

    let kbase = b * params[12] + hk * params[13];
    let vbase = b * params[15] + hk * params[16];
    // Past caches are [batch, kv heads, past, size].
    let past_k = (b * hkv + hk) * params[7] * d;
    let past_v = (b * hkv + hk) * params[7] * dv;
    let mrow = b * params[21] + h * params[22] + i * params[23];

    var m = neg_inf();
    var l = 0.0;
    var acc: array<f32, PER>;
    for (var j0 = 0u; j0 < lim; j0 += WG) {
        let j = j0 + tid;
        var s = neg_inf();
        if (j < lim) {
            var dot = 0.0;
            for (var c = 0u; c < d; c++) {
                dot += qs[c] * load_k(j, c, kbase, past_k, d);
            }
            s = dot * scale;
{{SOFTCAP}}            s = apply_mask(s, mrow, j);
        }
        let m_new = max(m, wg_reduce(true, s, tid));
        // Masked keys weigh nothing; while every key so far is masked,
        // m_new is -inf and everything stays zero.
        let p = select(0.0, exp(s - m_new), s > neg_inf());
        let corr = select(0.0, exp(m - m_new), m > neg_inf());
        ps[tid] = p;
        // The reduction's barriers also publish `ps`.
        l = l * corr + wg_reduce(false, p, tid);
        let count = min(WG, lim - j0);
        for (var r = 0u; r < PER; r++) {
            let c = tid + r * WG;
            if (c < dv) {
                var a = acc[r] * corr;
                for (var jj = 0u; jj < count; jj++) {
                    a += ps[jj] * load_v(j0 + jj, c, vbase, past_v, dv);
                }
                acc[r] = a;
            }
        }
        m = m_new;
        // `ps` is rewritten by the next block.
        workgroupBarrier();
    }

    let inv = select(0.0, 1.0 / l, l > 0.0);
    let ybase = b * params[18] + h * params[19] + i * params[20];
    for (var r = 0u; r < PER; r++) {
        let c = tid + r * WG;
        if (c < dv) {
            y[ybase + c] = acc[r] * inv;
        }
    }
}
