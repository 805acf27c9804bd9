// Scalar helpers of the elementwise kernels. Each follows the CPU executor's
// formula (runtime/src/cpu/elementwise.rs, value.rs) and gives the value C
// and Rust give where WGSL leaves a builtin undefined (log of 0 or of a
// negative number, out-of-range conversions). A kernel carries only the
// functions it calls.

// A quiet NaN: WGSL has no NaN literal.
fn ew_nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// Whether x is NaN, from its bits: a WGSL compiler may assume x != x is false.
fn ew_isnan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// x != 0 from the bits, so NaN counts as true (numpy's bool of NaN).
fn ew_nonzero(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) != 0u;
}

// ln x, with -inf at 0 and NaN below it.
fn ew_log(x: f32) -> f32 {
    if (x < 0.0) {
        return ew_nan();
    }
    if (x == 0.0) {
        return bitcast<f32>(0xff800000u);
    }
    return log(x);
}

fn ew_sqrt(x: f32) -> f32 {
    return select(sqrt(x), ew_nan(), x < 0.0);
}

// Trigonometric functions by Cephes' single-precision polynomials (a few
// ulp): WGSL only promises sin and cos to 2^-11 absolute and the inverse
// functions to thousands of ulp, and drivers take it at its word. sin, cos
// and tan reduce the argument by π/4 in three parts (exact products up to
// |x| = 8192) and leave larger arguments to the builtins.
fn ew_sin(x: f32) -> f32 {
    let a = abs(x);
    if (a > 8192.0) {
        return sin(x);
    }
    var j = u32(a * 1.2732395);
    j = j + (j & 1u);
    let y = f32(j);
    let r = ((a - y * 0.78515625) - y * 2.4187564849853515625e-4) - y * 3.77489497744594108e-8;
    let z = r * r;
    var v: f32;
    if ((j & 2u) != 0u) {
        v = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    } else {
        v = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    }
    let negate = (x < 0.0) != ((j & 4u) != 0u);
    return select(v, -v, negate);
}

fn ew_cos(x: f32) -> f32 {
    let a = abs(x);
    if (a > 8192.0) {
        return cos(x);
    }
    var j = u32(a * 1.2732395);
    j = j + (j & 1u);
    let y = f32(j);
    let r = ((a - y * 0.78515625) - y * 2.4187564849853515625e-4) - y * 3.77489497744594108e-8;
    let z = r * r;
    var v: f32;
    if ((j & 2u) != 0u) {
        v = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    } else {
        v = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    }
    // cos(r + jπ/4) for j = 0, 2, 4, 6: cos r, -sin r, -cos r, sin r.
    let negate = ((j + 2u) & 4u) != 0u;
    return select(v, -v, negate);
}

fn ew_tan(x: f32) -> f32 {
    let a = abs(x);
    if (a > 8192.0) {
        return tan(x);
    }
    var j = u32(a * 1.2732395);
    j = j + (j & 1u);
    let y = f32(j);
    let r = ((a - y * 0.78515625) - y * 2.4187564849853515625e-4) - y * 3.77489497744594108e-8;
    let z = r * r;
    var v = r;
    if (a > 1.0e-4) {
        v = (((((9.38540185543e-3 * z + 3.11992232697e-3) * z + 2.44301354525e-2) * z
            + 5.34112807005e-2) * z + 1.33387994085e-1) * z + 3.33331568548e-1) * z * r + r;
    }
    if ((j & 2u) != 0u) {
        v = -1.0 / v;
    }
    return select(v, -v, x < 0.0);
}

fn ew_asin(x: f32) -> f32 {
    let a = abs(x);
    if (a > 1.0) {
        return ew_nan();
    }
    var r: f32;
    if (a > 0.5) {
        let z = 0.5 * (1.0 - a);
        let s = sqrt(z);
        let p = (((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z + 7.4953002686e-2) * z + 1.6666752422e-1;
        r = 1.5707963267948966 - 2.0 * (s + s * z * p);
    } else {
        let z = a * a;
        let p = (((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z + 7.4953002686e-2) * z + 1.6666752422e-1;
        r = a + a * z * p;
    }
    return select(r, -r, x < 0.0);
}

fn ew_acos(x: f32) -> f32 {
    if (abs(x) > 1.0) {
        return ew_nan();
    }
    if (x < -0.5) {
        return 3.1415926535897932 - 2.0 * ew_asin(sqrt(0.5 * (1.0 + x)));
    }
    if (x > 0.5) {
        return 2.0 * ew_asin(sqrt(0.5 * (1.0 - x)));
    }
    return 1.5707963267948966 - ew_asin(x);
}

fn ew_atan(x: f32) -> f32 {
    let a = abs(x);
    var base = 0.0;
    var t = a;
    // Reduce to |t| <= tan(π/8) with atan(a) = π/2 + atan(-1/a) or π/4 + atan((a-1)/(a+1)).
    if (a > 2.414213562373095) {
        base = 1.5707963267948966;
        t = -1.0 / a;
    } else if (a > 0.4142135623730950) {
        base = 0.7853981633974483;
        t = (a - 1.0) / (a + 1.0);
    }
    let z = t * t;
    let r = base + ((((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z * t + t);
    return select(r, -r, x < 0.0);
}

// max(x, 0) keeping NaN, and numpy's NaN-propagating maximum and minimum,
// with NaN found from the bits (a compiler may fold x != x to false).
fn ew_relu(x: f32) -> f32 {
    return select(0.0, x, x > 0.0 || ew_isnan(x));
}

fn ew_max(x: f32, y: f32) -> f32 {
    if (ew_isnan(x) || ew_isnan(y)) {
        return ew_nan();
    }
    return max(x, y);
}

fn ew_min(x: f32, y: f32) -> f32 {
    if (ew_isnan(x) || ew_isnan(y)) {
        return ew_nan();
    }
    return min(x, y);
}

// e^x - 1, accurate near 0 where exp(x) - 1 cancels: the Taylor series to
// x^9 below |x| = 0.5 (relative error under 1e-9).
fn ew_expm1(x: f32) -> f32 {
    if (abs(x) < 0.5) {
        var p = 1.0 / 362880.0;
        p = p * x + 1.0 / 40320.0;
        p = p * x + 1.0 / 5040.0;
        p = p * x + 1.0 / 720.0;
        p = p * x + 1.0 / 120.0;
        p = p * x + 1.0 / 24.0;
        p = p * x + 1.0 / 6.0;
        p = p * x + 0.5;
        p = p * x + 1.0;
        return p * x;
    }
    return exp(x) - 1.0;
}

// ln(1 + x), accurate near 0: 2·atanh(s), s = x / (2 + x), as a series
// below |x| = 0.5 (|s| <= 1/3, relative error under 1e-8).
fn ew_log1p(x: f32) -> f32 {
    if (abs(x) < 0.5) {
        let s = x / (2.0 + x);
        let s2 = s * s;
        var p = 1.0 / 15.0;
        p = p * s2 + 1.0 / 13.0;
        p = p * s2 + 1.0 / 11.0;
        p = p * s2 + 1.0 / 9.0;
        p = p * s2 + 1.0 / 7.0;
        p = p * s2 + 1.0 / 5.0;
        p = p * s2 + 1.0 / 3.0;
        p = p * s2 + 1.0;
        return 2.0 * s * p;
    }
    return ew_log(1.0 + x);
}

// tanh x = -expm1(-2|x|) / (2 + expm1(-2|x|)), signed: accurate near 0
// (where 1 - e^-2|x| cancels) and exactly ±1 for large |x|.
fn ew_tanh(x: f32) -> f32 {
    let e = ew_expm1(-2.0 * abs(x));
    let t = -e / (2.0 + e);
    return select(t, -t, x < 0.0);
}

// sinh through expm1 near 0; beyond |x| = 20 as (e^(|x|/2) / 2) · e^(|x|/2),
// which stays finite as far as f32 does.
fn ew_sinh(x: f32) -> f32 {
    let a = abs(x);
    var r: f32;
    if (a > 20.0) {
        let h = exp(0.5 * a);
        r = (0.5 * h) * h;
    } else {
        let e = ew_expm1(a);
        r = 0.5 * (e + e / (e + 1.0));
    }
    return select(r, -r, x < 0.0);
}

fn ew_cosh(x: f32) -> f32 {
    let a = abs(x);
    if (a > 20.0) {
        let h = exp(0.5 * a);
        return (0.5 * h) * h;
    }
    let e = exp(a);
    return 0.5 * (e + 1.0 / e);
}

// asinh x = sign(x) · ln(|x| + √(x² + 1)), through log1p near 0, and as
// ln|x| + ln 2 where x² would overflow.
fn ew_asinh(x: f32) -> f32 {
    let a = abs(x);
    var r: f32;
    if (a > 1.0e10) {
        r = ew_log(a) + 0.6931472;
    } else {
        r = ew_log1p(a + a * a / (1.0 + sqrt(1.0 + a * a)));
    }
    return select(r, -r, x < 0.0);
}

// acosh x = ln(x + √(x² - 1)) = log1p(t + √(2t + t²)), t = x - 1 (exact
// near 1, where the direct form cancels).
fn ew_acosh(x: f32) -> f32 {
    if (x < 1.0) {
        return ew_nan();
    }
    if (x > 1.0e10) {
        return ew_log(x) + 0.6931472;
    }
    let t = x - 1.0;
    return ew_log1p(t + sqrt(2.0 * t + t * t));
}

// atanh x = sign(x) · ½ log1p(2|x| / (1 - |x|)).
fn ew_atanh(x: f32) -> f32 {
    let a = abs(x);
    if (a > 1.0) {
        return ew_nan();
    }
    let r = 0.5 * ew_log1p(2.0 * a / (1.0 - a));
    return select(r, -r, x < 0.0);
}

// -1, 0 or 1; NaN and signed zeros are returned as they are (the CPU's
// x · 0, which a compiler assuming no NaN may fold to 0).
fn ew_sign(x: f32) -> f32 {
    if (ew_isnan(x)) {
        return x;
    }
    if (x > 0.0) {
        return 1.0;
    }
    if (x < 0.0) {
        return -1.0;
    }
    return x;
}

// ln(1 + e^x), and x itself above 30 where the two agree in f32.
fn ew_softplus(x: f32) -> f32 {
    if (x > 30.0) {
        return x;
    }
    return ew_log1p(exp(x));
}

fn ew_gelu_tanh(x: f32) -> f32 {
    return 0.5 * x * (1.0 + ew_tanh(0.7978846 * (x + 0.044715 * x * x * x)));
}

// Whether a < b for i64 values held as (low, high) words.
fn ew_i64_lt(a: vec2<i32>, b: vec2<i32>) -> bool {
    return a.y < b.y || (a.y == b.y && bitcast<u32>(a.x) < bitcast<u32>(b.x));
}

// x truncated toward zero to an i64 (low, high words) as Rust's `as i64`:
// NaN gives 0 and values beyond the range saturate. Above 2^31 the value is
// an integer multiple of 2^8, so the split into words below is exact.
fn ew_f32_to_i64(x: f32) -> vec2<i32> {
    if (ew_isnan(x)) {
        return vec2<i32>(0, 0);
    }
    let t = trunc(x);
    if (t >= 9223372036854775808.0) {
        return vec2<i32>(-1, 2147483647);
    }
    if (t <= -9223372036854775808.0) {
        return vec2<i32>(0, bitcast<i32>(0x80000000u));
    }
    if (abs(t) < 2147483648.0) {
        let s = i32(t);
        return vec2<i32>(s, s >> 31u);
    }
    let hi = floor(t / 4294967296.0);
    let lo = t - hi * 4294967296.0;
    return vec2<i32>(bitcast<i32>(u32(lo)), i32(hi));
}

// The f32 nearest to an i64 held as (low, high) words, ties to even, as
// Rust's `as f32` (WGSL leaves the rounding of f32(i32) open, so the
// rounding is done here on the bits).
fn ew_i64_to_f32(v: vec2<i32>) -> f32 {
    var lo = bitcast<u32>(v.x);
    var hi = bitcast<u32>(v.y);
    let neg = v.y < 0;
    if (neg) {
        lo = ~lo + 1u;
        hi = ~hi + select(0u, 1u, lo == 0u);
    }
    if (hi == 0u && lo < 0x1000000u) {
        let m = f32(lo);
        return select(m, -m, neg);
    }
    // Shift the leading one to bit 63, keep 24 bits, round on the rest.
    var lz = countLeadingZeros(hi);
    if (hi == 0u) {
        lz = 32u + countLeadingZeros(lo);
    }
    if (lz >= 32u) {
        hi = lo << (lz - 32u);
        lo = 0u;
    } else if (lz > 0u) {
        hi = (hi << lz) | (lo >> (32u - lz));
        lo = lo << lz;
    }
    var m = hi >> 8u;
    let half_bit = (hi & 0x80u) != 0u;
    let sticky = (hi & 0x7fu) != 0u || lo != 0u;
    if (half_bit && (sticky || (m & 1u) == 1u)) {
        m = m + 1u;
    }
    var e = 63u - lz;
    if (m == 0x1000000u) {
        m = 0x800000u;
        e = e + 1u;
    }
    let bits = ((e + 127u) << 23u) | (m & 0x7fffffu);
    return bitcast<f32>(bits | select(0u, 0x80000000u, neg));
}

// The bits of the f16 nearest to x, ties to even, overflowing to ±inf as
// the CPU executor's conversion does (WGSL leaves an out-of-range f16()
// undefined and its rounding open).
fn ew_f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    // 65520, halfway between the largest f16 (65504) and 2^16, rounds up.
    if (a >= 0x477ff000u) {
        return sign | 0x7c00u;
    }
    // Normal f16 from 2^-14 on: rebias the exponent, round off 13 bits.
    if (a >= 0x38800000u) {
        let r = a - 0x38000000u;
        return sign | ((r + 0x0fffu + ((r >> 13u) & 1u)) >> 13u);
    }
    // Up to 2^-25 (half the smallest subnormal, a tie to the even 0): zero.
    if (a <= 0x33000000u) {
        return sign;
    }
    // Subnormal: the value in units of 2^-24, rounded.
    let s = 126u - (a >> 23u);
    let m = (a & 0x7fffffu) | 0x800000u;
    let q = m >> s;
    let rem = m & ((1u << s) - 1u);
    let half = 1u << (s - 1u);
    let up = rem > half || (rem == half && (q & 1u) == 1u);
    return sign | (q + select(0u, 1u, up));
}

// x rounded to f16 precision and back (exact: every f16 is an f32); the
// CPU executor rounds each step of a half-precision variadic op.
fn ew_round_f16(x: f32) -> f32 {
    let h = ew_f16_bits(x);
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Subnormal or zero: m · 2^-24, exact.
        return bitcast<f32>(bitcast<u32>(ldexp(f32(m), -24)) | sign);
    }
    if (e == 0x1fu) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// x as f16, rounded here: f16() of a value it represents exactly (or of
// ±inf, NaN) is exact.
fn ew_f16(x: f32) -> f16 {
    return f16(ew_round_f16(x));
}
