// Direct 2-D convolution, NCHW (1-D runs as 2-D with a height of 1). Each
// invocation computes LANES consecutive output channels of one group at
// one output position, so every input element it loads feeds LANES
// products; neighbouring invocations take neighbouring output columns and
// read the same weights. Strides and dilations are baked in; sizes and the
// begin pads (which depend on the input size under SAME padding) arrive in
// params.
//
// params: [0] invocations, [1] input channels per group, [2] output
// channels per group, [3] groups, [4] input height, [5] input width,
// [6] output height, [7] output width, [8] kernel height, [9] kernel width,
// [10] top pad, [11] left pad, [12] channel blocks per group.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
{{BIAS_BINDING}}
@group(0) @binding({{Y_BINDING}}) var<storage, read_write> y: array<f32>;
@group(0) @binding({{PARAMS_BINDING}}) var<storage, read> params: array<u32>;

const LANES: u32 = {{LANES}}u;
const STRIDE_H: u32 = {{STRIDE_H}}u;
const STRIDE_W: u32 = {{STRIDE_W}}u;
const DILATION_H: u32 = {{DILATION_H}}u;
const DILATION_W: u32 = {{DILATION_W}}u;

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = (wid.x + wid.y * nwg.x) * {{INVOCATIONS}}u + lid;
    if (t >= params[0]) {
        return;
    }
    let cg = params[1];
    let mg = params[2];
    let groups = params[3];
    let h = params[4];
    let wd = params[5];
    let ow_n = params[7];
    let kh_n = params[8];
    let kw_n = params[9];
    let pad_h = i32(params[10]);
    let pad_w = i32(params[11]);
    let blocks = params[12];

    let plane = params[6] * ow_n;
    let pos = t % plane;
    var rest = t / plane;
    let blk = rest % blocks;
    rest = rest / blocks;
    let g = rest % groups;
    let n = rest / groups;
    let oh = pos / ow_n;
    let ow = pos % ow_n;
    let first = blk * LANES;
    let taps = kh_n * kw_n;

    // Lanes past the group's last channel read its weights and are not
    // written, so the loops need no per-lane test.
    var wrow: array<u32, LANES>;
    var acc: array<f32, LANES>;
    for (var j = 0u; j < LANES; j++) {
        let m = g * mg + min(first + j, mg - 1u);
        wrow[j] = m * cg * taps;
        acc[j] = {{BIAS}};
    }
    let x_base = (n * groups + g) * cg * h * wd;
    let ih0 = i32(oh * STRIDE_H) - pad_h;
    let iw0 = i32(ow * STRIDE_W) - pad_w;
    for (var ci = 0u; ci < cg; ci++) {
        for (var kh = 0u; kh < kh_n; kh++) {
            let ih = ih0 + i32(kh * DILATION_H);
            if (ih < 0 || ih >= i32(h)) {
                continue;
            }
            let x_row = x_base + (ci * h + u32(ih)) * wd;
            let tap_row = (ci * kh_n + kh) * kw_n;
            for (var kw = 0u; kw < kw_n; kw++) {
                let iw = iw0 + i32(kw * DILATION_W);
                if (iw < 0 || iw >= i32(wd)) {
                    continue;
                }
                let xv = x[x_row + u32(iw)];
                for (var j = 0u; j < LANES; j++) {
                    acc[j] += xv * w[wrow[j] + tap_row + kw];
                }
            }
        }
    }
    let out_base = (n * groups + g) * mg;
    for (var j = 0u; j < LANES; j++) {
        if (first + j < mg) {
            y[(out_base + first + j) * plane + pos] = acc[j];
        }
    }
}
