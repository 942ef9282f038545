//! Global average pooling and 2-D max pooling (PyTorch's `AdaptiveAvgPool2d(1)` followed by
//! a flatten, and `MaxPool2d` without dilation, floor mode), forward and backward, in float64
//! on row-major NCHW data.

/// `y[n, c] = (1 / HW) Σ_{h,w} x[n, c, h, w]`, returned as `[N, C]`.
pub fn global_avg_pool_forward(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    assert_eq!(x.len(), n * c * h * w, "global_avg_pool reference: x");
    x.chunks(h * w)
        .map(|plane| plane.iter().sum::<f64>() / (h * w) as f64)
        .collect()
}

/// `dx[n, c, h, w] = dy[n, c] / HW`.
pub fn global_avg_pool_backward(dy: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    assert_eq!(dy.len(), n * c, "global_avg_pool reference: dy");
    dy.iter()
        .flat_map(|&g| std::iter::repeat_n(g / (h * w) as f64, h * w))
        .collect()
}

/// Output height and width of max pooling: `(in + 2·padding − kernel) / stride + 1`.
pub fn max_pool2d_output_size(
    [h, w]: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> [usize; 2] {
    [
        (h + 2 * padding[0] - kernel[0]) / stride[0] + 1,
        (w + 2 * padding[1] - kernel[1]) / stride[1] + 1,
    ]
}

/// Max pooling: each output is the largest input in its window (padding never wins) and
/// `argmax` the flat position `h·W + w` of the first such input in row-major window order.
/// Returns `(y, argmax)`, both `[N, C, OH, OW]`.
pub fn max_pool2d_forward(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> (Vec<f64>, Vec<usize>) {
    assert_eq!(x.len(), n * c * h * w, "max_pool2d reference: x");
    let [oh, ow] = max_pool2d_output_size([h, w], kernel, stride, padding);
    let mut y = Vec::with_capacity(n * c * oh * ow);
    let mut argmax = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks(h * w) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = (f64::NEG_INFINITY, usize::MAX);
                for ky in 0..kernel[0] {
                    for kx in 0..kernel[1] {
                        // Position in the padded input, then in the real one.
                        let (py, px) = (oy * stride[0] + ky, ox * stride[1] + kx);
                        if py < padding[0] || px < padding[1] {
                            continue;
                        }
                        let (iy, ix) = (py - padding[0], px - padding[1]);
                        if iy >= h || ix >= w {
                            continue;
                        }
                        let v = plane[iy * w + ix];
                        if best.1 == usize::MAX || v > best.0 {
                            best = (v, iy * w + ix);
                        }
                    }
                }
                y.push(best.0);
                argmax.push(best.1);
            }
        }
    }
    (y, argmax)
}

/// The max-pooling gradient: each `dy` flows to the input element that was its window's
/// maximum; elements that were the maximum of several windows collect them all.
pub fn max_pool2d_backward(
    dy: &[f64],
    argmax: &[usize],
    [n, c, h, w]: [usize; 4],
    [oh, ow]: [usize; 2],
) -> Vec<f64> {
    assert_eq!(dy.len(), n * c * oh * ow, "max_pool2d reference: dy");
    let mut dx = vec![0.0; n * c * h * w];
    for (plane, (dy, argmax)) in dy.chunks(oh * ow).zip(argmax.chunks(oh * ow)).enumerate() {
        for (&g, &at) in dy.iter().zip(argmax) {
            dx[plane * h * w + at] += g;
        }
    }
    dx
}
