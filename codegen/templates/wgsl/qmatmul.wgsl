// B is a packed {{FORMAT}} weight, logically [K, N] (docs/quant-formats.md),
// bound as its raw bytes: output-major codes (column j at byte j·stride,
// {{BITS}}-bit codes least significant bits first, so code p of a column sits
// at bit {{BITS}}·p from the column's first byte), then one little-endian f16
// scale per group (j·groups + g), then {{ZEROS_DOC}}.
// A code decodes to (code − zero) · scale, which f32 holds exactly.
const BITS: u32 = {{BITS}}u;
const MASK: u32 = {{MASK}}u;
// Bytes of one unit of UC codes.
const UB: u32 = {{UB}}u;

// 32 bits of the packed bytes starting at byte `at` (any alignment).
fn q_window(at: u32) -> u32 {
    let w = at >> 2u;
    let sh = (at & 3u) * 8u;
    let lo = b[w] >> sh;
    if (sh == 0u) {
        return lo;
    }
    let hi = b[min(w + 1u, arrayLength(&b) - 1u)];
    return lo | (hi << (32u - sh));
}

fn q_byte(at: u32) -> u32 {
    return (b[at >> 2u] >> ((at & 3u) * 8u)) & 0xffu;
}

// The f16 with bits h, exactly (scales are finite; subnormals included).
fn q_half(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let mant = h & 0x3ffu;
    if (e == 0u) {
        let v = ldexp(f32(mant), -24);
        return select(v, -v, sign != 0u);
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (mant << 13u));
}

// Scale of group g of column j.
fn q_scale(j: u32, g: u32) -> f32 {
    let at = params[8] + 2u * (j * params[6] + g);
    return q_half(q_byte(at) | (q_byte(at + 1u) << 8u));
}

// Zero point of group g of column j.
fn q_zero(j: u32, g: u32) -> f32 {
    return {{ZERO}};
}

// B[p, j], decoded; 0 outside the matrix.
fn b_at(base: u32, p: u32, j: u32) -> f32 {
    if (p >= params[2] || j >= params[1]) {
        return 0.0;
    }
    let bit = BITS * p;
    let code = (q_window(j * params[5] + (bit >> 3u)) >> (bit & 7u)) & MASK;
    let g = p / params[7];
    return (f32(code) - q_zero(j, g)) * q_scale(j, g);
}

// Codes u·UC .. u·UC + UC of column j (a whole number of bytes, inside one
// group because groups are whole units) less their zero point, and the
// group's scale. Codes past the column's end are padding or the next
// column's; the caller multiplies them by zeros.
struct Unit {
    w: array<f32, {{UC}}>,
    s: f32,
}

fn b_unit(base: u32, j: u32, u: u32) -> Unit {
    var r: Unit;
    let v = q_window(j * params[5] + u * UB);
    let g = (u * UC) / params[7];
    let z = q_zero(j, g);
    for (var q = 0u; q < UC; q++) {
        r.w[q] = f32((v >> (BITS * q)) & MASK) - z;
    }
    r.s = q_scale(j, g);
    return r;
}

