//! Float64 references of 2-D convolution with PyTorch's semantics (cross-correlation, zero
//! padding, weight [Cout, Cin/groups, KH, KW]), for any group count that divides both channel
//! counts. Tensors are row-major NCHW slices passed with their shapes.
//!
//! A convolution is a bilinear map: every output element is a sum of input × weight products.
//! `for_each_product` enumerates those (input, weight, output) index triples once; the forward
//! pass and both gradients are the three ways of contracting them.

use cenet::kernels::conv::Conv2d;

/// Shape [N, Cout, OH, OW] of the output of `conv` on an input of shape `xs` with a weight of
/// shape `ws`. Panics when they do not fit together.
pub fn conv2d_output_shape(xs: [usize; 4], ws: [usize; 4], conv: &Conv2d) -> [usize; 4] {
    let [n, cin, h, w] = xs;
    let [cout, cin_per_group, kh, kw] = ws;
    assert!(conv.groups > 0 && cin % conv.groups == 0 && cout % conv.groups == 0);
    assert_eq!(
        cin_per_group * conv.groups,
        cin,
        "weight {ws:?} for input {xs:?}"
    );
    let [ph, pw] = conv.padding;
    let [sh, sw] = conv.stride;
    assert!(
        kh <= h + 2 * ph && kw <= w + 2 * pw,
        "kernel larger than padded input"
    );
    [
        n,
        cout,
        (h + 2 * ph - kh) / sh + 1,
        (w + 2 * pw - kw) / sw + 1,
    ]
}

/// Calls `f(x_index, w_index, y_index)` for every product x[x_index]·w[w_index] that is summed
/// into y[y_index]. Taps that fall in the zero padding contribute nothing and are skipped.
fn for_each_product(
    xs: [usize; 4],
    ws: [usize; 4],
    conv: &Conv2d,
    mut f: impl FnMut(usize, usize, usize),
) {
    let [n, cin, h, w] = xs;
    let [cout, cin_per_group, kh, kw] = ws;
    let [_, _, oh, ow] = conv2d_output_shape(xs, ws, conv);
    let cout_per_group = cout / conv.groups;
    for b in 0..n {
        for co in 0..cout {
            let group = co / cout_per_group;
            for oy in 0..oh {
                for ox in 0..ow {
                    let y_index = ((b * cout + co) * oh + oy) * ow + ox;
                    for j in 0..cin_per_group {
                        let ci = group * cin_per_group + j;
                        for ky in 0..kh {
                            let iy = (oy * conv.stride[0] + ky) as isize - conv.padding[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix =
                                    (ox * conv.stride[1] + kx) as isize - conv.padding[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let x_index = ((b * cin + ci) * h + iy as usize) * w + ix as usize;
                                let w_index = ((co * cin_per_group + j) * kh + ky) * kw + kx;
                                f(x_index, w_index, y_index);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y[n, co, oy, ox] = bias[co] + Σ_{j, ky, kx} w[co, j, ky, kx] · x[n, g·Cin/G + j,
/// oy·stride + ky − pad, ox·stride + kx − pad], with g the group of co and x zero outside.
pub fn conv2d_forward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    bias: Option<&[f64]>,
    conv: &Conv2d,
) -> Vec<f64> {
    let ys = conv2d_output_shape(xs, ws, conv);
    let plane = ys[2] * ys[3];
    let mut y: Vec<f64> = (0..ys.iter().product())
        .map(|i| bias.map_or(0.0, |b| b[i / plane % ys[1]]))
        .collect();
    for_each_product(xs, ws, conv, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
    y
}

/// ∂L/∂x of shape `xs` given the output gradient `dy`: each product x·w passes dy back to x.
pub fn conv2d_backward_data(
    dy: &[f64],
    w: &[f64],
    ws: [usize; 4],
    xs: [usize; 4],
    conv: &Conv2d,
) -> Vec<f64> {
    let mut dx = vec![0.0; xs.iter().product()];
    for_each_product(xs, ws, conv, |xi, wi, yi| dx[xi] += w[wi] * dy[yi]);
    dx
}

/// ∂L/∂w of shape `ws` given the input `x` of shape `xs` and the output gradient `dy`.
pub fn conv2d_backward_weight(
    x: &[f64],
    xs: [usize; 4],
    dy: &[f64],
    ws: [usize; 4],
    conv: &Conv2d,
) -> Vec<f64> {
    let mut dw = vec![0.0; ws.iter().product()];
    for_each_product(xs, ws, conv, |xi, wi, yi| dw[wi] += x[xi] * dy[yi]);
    dw
}

/// ∂L/∂bias[c] = Σ_{n, oy, ox} dy[n, c, oy, ox], for `dy` of shape `ys`.
pub fn conv2d_backward_bias(dy: &[f64], ys: [usize; 4]) -> Vec<f64> {
    let [_, c, oh, ow] = ys;
    let mut db = vec![0.0; c];
    for (i, g) in dy.iter().enumerate() {
        db[i / (oh * ow) % c] += g;
    }
    db
}
