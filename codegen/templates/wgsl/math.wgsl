// Scalar functions shared by the elementwise, matmul-epilogue and norm
// kernels. Each follows the CPU executor's formula (kiln_ir::fused) so both
// executors agree to within float rounding.

// erf by the rational approximation the CPU executor uses (|error| < 2e-7).
fn kiln_erf(x_in: f32) -> f32 {
    let x = clamp(x_in, -4.0, 4.0);
    let x2 = x * x;
    var p = -2.7261423e-10;
    p = p * x2 + 2.7706814e-8;
    p = p * x2 - 2.101024e-6;
    p = p * x2 - 5.6925064e-5;
    p = p * x2 - 7.349906e-4;
    p = p * x2 - 2.9546001e-3;
    p = p * x2 - 1.6096033e-2;
    var q = -1.4566072e-5;
    q = q * x2 - 2.1337406e-4;
    q = q * x2 - 1.682827e-3;
    q = q * x2 - 7.3733293e-3;
    q = q * x2 - 1.426474e-2;
    return x * p / q;
}

// exp that saturates (to 0 below -104, to 3.4e38 above 88.7) instead of
// producing inf or NaN from a large negative or positive argument.
fn kiln_exp(x: f32) -> f32 {
    return exp(clamp(x, -104.0, 88.7));
}

fn kiln_sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + kiln_exp(-x));
}

// NaN from the bits: some compilers fold `x != x` to false.
fn kiln_isnan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// tanh through exp (WGSL's tanh may be inaccurate for large |x| on some
// drivers), with its Taylor series near 0, where 1 - e^(-2|x|) would cancel.
fn kiln_tanh(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.2) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-0.33333334 + x2 * (0.13333334 + x2 * (-0.05396825 + x2 * 0.021869488))));
    }
    let e = kiln_exp(-2.0 * a);
    return sign(x) * (1.0 - e) / (1.0 + e);
}

fn kiln_relu(x: f32) -> f32 {
    return select(0.0, x, x > 0.0 || kiln_isnan(x));
}

fn kiln_gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + kiln_erf(x * 0.70710677));
}

fn kiln_gelu_tanh(x: f32) -> f32 {
    return 0.5 * x * (1.0 + kiln_tanh(0.7978846 * (x + 0.044715 * x * x * x)));
}

// x^y as the CPU executor computes it: an exact multiply for y = 2, and
// WGSL's pow (defined for x >= 0) made to follow C's powf for negative x
// with an integer exponent.
fn kiln_pow(x: f32, y: f32) -> f32 {
    if (y == 2.0) {
        return x * x;
    }
    if (x < 0.0 && y == floor(y)) {
        let m = pow(-x, y);
        let odd = abs(y - 2.0 * floor(y * 0.5)) == 1.0;
        return select(m, -m, odd);
    }
    return pow(x, y);
}

// NaN-propagating max and min (numpy's maximum and minimum).
fn kiln_max(x: f32, y: f32) -> f32 {
    if (kiln_isnan(x) || kiln_isnan(y)) {
        return x + y;
    }
    return max(x, y);
}

fn kiln_min(x: f32, y: f32) -> f32 {
    if (kiln_isnan(x) || kiln_isnan(y)) {
        return x + y;
    }
    return min(x, y);
}
