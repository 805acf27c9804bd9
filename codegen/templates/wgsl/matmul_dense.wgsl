// op(B)[p, j] of a dense B, 0 outside the matrix.
fn b_at(base: u32, p: u32, j: u32) -> f32 {
    if (p >= params[2] || j >= params[1]) {
        return 0.0;
    }
    return f32(b[{{B_INDEX}}]);
}

// UC consecutive values of column j along the inner dimension, with the
// scale their sum is multiplied by (1 for dense weights).
struct Unit {
    w: array<f32, {{UC}}>,
    s: f32,
}

fn b_unit(base: u32, j: u32, u: u32) -> Unit {
    var r: Unit;
    for (var q = 0u; q < UC; q++) {
        r.w[q] = b_at(base, u * UC + q, j);
    }
    r.s = 1.0;
    return r;
}

