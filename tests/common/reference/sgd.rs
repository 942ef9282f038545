//! One step of `torch.optim.SGD` (dampening 0) on one parameter, in float64.

/// SGD hyperparameters.
#[derive(Clone, Copy, Debug)]
pub struct SgdRef {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// Updates `param` in place from `grad`. `momentum_buf` is the optimizer state: `None`
/// before the first step with momentum (it is then created), and left `None` when
/// `momentum` is 0.
pub fn sgd_step(
    cfg: &SgdRef,
    param: &mut [f64],
    grad: &[f64],
    momentum_buf: &mut Option<Vec<f64>>,
) {
    assert_eq!(
        param.len(),
        grad.len(),
        "parameter and gradient differ in length"
    );
    let mut d: Vec<f64> = grad
        .iter()
        .zip(param.iter())
        .map(|(&g, &w)| g + cfg.weight_decay * w)
        .collect();
    if cfg.momentum != 0.0 {
        let buf = match momentum_buf.take() {
            None => d.clone(),
            Some(b) => b
                .iter()
                .zip(&d)
                .map(|(&b, &d)| cfg.momentum * b + d)
                .collect(),
        };
        if cfg.nesterov {
            for (d, &b) in d.iter_mut().zip(&buf) {
                *d += cfg.momentum * b;
            }
        } else {
            d = buf.clone();
        }
        *momentum_buf = Some(buf);
    }
    for (w, d) in param.iter_mut().zip(&d) {
        *w -= cfg.lr * d;
    }
}
