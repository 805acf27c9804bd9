// One pass of the decode path over rows m0 .. m0 + {{RP}}: invocation (c, s)
// sums units s, s + DT, .. of column c into one partial sum per row; the
// partial sums of each column then add up in workgroup memory.
fn decode_rows{{RP}}(lid: u32, wid: vec3<u32>, base: vec2<u32>, m0: u32) {
    let n = params[1];
    let units = (params[2] + UC - 1u) / UC;
    let c = {{DEC_COL}};
    let s = {{DEC_SLICE}};
    let col = wid.x * DC + c;
    var acc: array<f32, {{RP}}>;
    if (col < n) {
        for (var u = s; u < units; u += DT) {
            let w = b_unit(base.y, col, u);
            let k0 = u * UC;
            for (var m = 0u; m < {{RP}}u; m++) {
                var t = 0.0;
                for (var q = 0u; q < UC; q++) {
                    t += w.w[q] * a_at(base.x, m0 + m, k0 + q);
                }
                acc[m] += w.s * t;
            }
        }
    }
    // The previous pass may still be reading the partial sums.
    workgroupBarrier();
    for (var m = 0u; m < {{RP}}u; m++) {
        tile[m * INV + c * DT + s] = acc[m];
    }
    workgroupBarrier();
    let rows = params[3];
    for (var o = lid; o < {{RP}}u * DC; o += INV) {
        let m = o / DC;
        let cc = o % DC;
        let row = m0 + m;
        let cl = wid.x * DC + cc;
        if (row < rows && cl < n) {
            var t = 0.0;
            for (var q = 0u; q < DT; q++) {
                t += tile[m * INV + cc * DT + q];
            }
            store(t, wid.z * params[0] + row, cl);
        }
    }
}

