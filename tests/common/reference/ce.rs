//! The Channel Equilibrium block in float64, forward (training and evaluation) and backward,
//! as the CE spec states the released code's arithmetic: the batch-decorrelation branch
//! applies P_T to the uncentred input without a trace rescale, unless `centred` asks for the
//! IterNorm-style form P_T/sqrt(tr Σ)·(x − μ).
//!
//! Layouts: x, y: [N, C, H, W] row-major; W1: [C/r, C]; W2: [C, C/r]; per-group matrices
//! [G, d, d] row-major; per-sample tables [N, C] or [N, C/r].

/// Hyper-parameters of one block.
#[derive(Clone, Copy, Debug)]
pub struct CeConfig {
    /// Group size d (must divide C).
    pub d: usize,
    /// Newton–Schulz steps T.
    pub iterations: usize,
    /// ε added to the covariance diagonal.
    pub eps: f64,
    /// IterNorm-style variant: P_T/sqrt(tr Σ) applied to x − μ.
    pub centred: bool,
    /// Channel reduction of the reweighting MLP (hidden = C / reduction).
    pub reduction: usize,
}

impl CeConfig {
    /// The defaults of the released code for a given group size.
    pub fn with_group(d: usize) -> Self {
        CeConfig {
            d,
            iterations: 3,
            eps: 1e-5,
            centred: false,
            reduction: 4,
        }
    }
}

/// Learnable parameters.
#[derive(Clone, Debug)]
pub struct CeParams {
    /// θ, the gate's logit (`x_weight`).
    pub theta: f64,
    /// W1: [C/r, C] (`AR.fc.0.weight`).
    pub w1: Vec<f64>,
    /// γ of the LayerNorm: [C/r] (`AR.fc.1.weight`).
    pub gamma: Vec<f64>,
    /// β of the LayerNorm: [C/r] (`AR.fc.1.bias`).
    pub beta: Vec<f64>,
    /// W2: [C, C/r] (`AR.fc.3.weight`).
    pub w2: Vec<f64>,
}

/// Running statistics used by evaluation.
#[derive(Clone, Debug)]
pub struct CeRunning {
    /// [G, d, d], starts at I.
    pub wm: Vec<f64>,
    /// [G, d], starts at 0.
    pub mean: Vec<f64>,
    /// Starts at 0.
    pub scale: f64,
}

impl CeRunning {
    /// The initial running statistics of a fresh block.
    pub fn new(groups: usize, d: usize) -> Self {
        let mut wm = vec![0.0; groups * d * d];
        for g in 0..groups {
            for i in 0..d {
                wm[(g * d + i) * d + i] = 1.0;
            }
        }
        CeRunning {
            wm,
            mean: vec![0.0; groups * d],
            scale: 0.0,
        }
    }

    /// One momentum update from a training forward pass.
    pub fn update(&mut self, cache: &CeCache, momentum: f64) {
        for (r, w) in self.wm.iter_mut().zip(&cache.wm) {
            *r = (1.0 - momentum) * *r + momentum * w;
        }
        for (r, m) in self.mean.iter_mut().zip(&cache.mu) {
            *r = (1.0 - momentum) * *r + momentum * m;
        }
        self.scale = (1.0 - momentum) * self.scale + momentum * cache.kappa;
    }
}

/// Everything the training forward pass computed that the backward pass needs.
#[derive(Clone, Debug)]
pub struct CeCache {
    pub shape: [usize; 4],
    pub cfg: CeConfig,
    pub x: Vec<f64>,
    /// μ: [G, d].
    pub mu: Vec<f64>,
    /// Σ (with εI): [G, d, d].
    pub sigma: Vec<f64>,
    /// 1 / tr Σ per group.
    pub r: Vec<f64>,
    /// S = Σ r: [G, d, d].
    pub s_mat: Vec<f64>,
    /// P_0 .. P_T, each [G, d, d].
    pub p: Vec<Vec<f64>>,
    /// The applied whitening matrix (P_T, or P_T sqrt(r) when centred): [G, d, d].
    pub wm: Vec<f64>,
    /// Per-(n, c) spatial mean and unbiased variance: [N, C].
    pub xbar: Vec<f64>,
    pub v: Vec<f64>,
    /// LayerNorm output ĥ, its pre-ReLU affine hl, ReLU output a: [N, C/r]; 1/std per sample.
    pub hhat: Vec<f64>,
    pub hl: Vec<f64>,
    pub a: Vec<f64>,
    pub inv_std: Vec<f64>,
    /// The sigmoid gate per (n, c): [N, C].
    pub s: Vec<f64>,
    /// κ = sqrt(mean v) (or running_scale in evaluation).
    pub kappa: f64,
    /// λ = sigmoid(θ).
    pub lambda: f64,
    /// y_bd and y_ar: [N, C, H, W].
    pub y_bd: Vec<f64>,
    pub y_ar: Vec<f64>,
}

/// Gradients of every input and parameter.
#[derive(Clone, Debug)]
pub struct CeGradients {
    pub x: Vec<f64>,
    pub theta: f64,
    pub w1: Vec<f64>,
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub w2: Vec<f64>,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// a·b for d×d row-major matrices.
fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            let aij = a[i * d + j];
            for k in 0..d {
                c[i * d + k] += aij * b[j * d + k];
            }
        }
    }
    c
}

fn transpose(a: &[f64], d: usize) -> Vec<f64> {
    let mut t = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            t[k * d + i] = a[i * d + k];
        }
    }
    t
}

fn identity(d: usize) -> Vec<f64> {
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = 1.0;
    }
    m
}

/// Index of X[n, c, p] (p = h·W + w).
fn at(shape: [usize; 4], n: usize, c: usize, p: usize) -> usize {
    let [_, ch, h, w] = shape;
    (n * ch + c) * h * w + p
}

/// The reweighting branch shared by both modes: per-(n,c) statistics, the MLP and the gate.
struct Reweight {
    xbar: Vec<f64>,
    v: Vec<f64>,
    hhat: Vec<f64>,
    hl: Vec<f64>,
    a: Vec<f64>,
    inv_std: Vec<f64>,
    s: Vec<f64>,
}

fn reweight(x: &[f64], shape: [usize; 4], p: &CeParams, hidden: usize) -> Reweight {
    let [n_batch, c_n, h, w] = shape;
    let hw = h * w;
    let mut xbar = vec![0.0; n_batch * c_n];
    let mut v = vec![0.0; n_batch * c_n];
    for n in 0..n_batch {
        for c in 0..c_n {
            let plane = &x[at(shape, n, c, 0)..at(shape, n, c, 0) + hw];
            let mean = plane.iter().sum::<f64>() / hw as f64;
            let var = plane.iter().map(|&q| (q - mean).powi(2)).sum::<f64>() / (hw - 1) as f64;
            xbar[n * c_n + c] = mean;
            v[n * c_n + c] = var;
        }
    }
    let mut hhat = vec![0.0; n_batch * hidden];
    let mut hl = vec![0.0; n_batch * hidden];
    let mut a = vec![0.0; n_batch * hidden];
    let mut inv_std = vec![0.0; n_batch];
    let mut s = vec![0.0; n_batch * c_n];
    for n in 0..n_batch {
        let vn = &v[n * c_n..(n + 1) * c_n];
        let hrow: Vec<f64> = (0..hidden)
            .map(|f| (0..c_n).map(|c| p.w1[f * c_n + c] * vn[c]).sum())
            .collect();
        let mean = hrow.iter().sum::<f64>() / hidden as f64;
        let var = hrow.iter().map(|&q| (q - mean).powi(2)).sum::<f64>() / hidden as f64;
        let inv = 1.0 / (var + 1e-5).sqrt();
        inv_std[n] = inv;
        for f in 0..hidden {
            let hh = (hrow[f] - mean) * inv;
            let l = p.gamma[f] * hh + p.beta[f];
            hhat[n * hidden + f] = hh;
            hl[n * hidden + f] = l;
            a[n * hidden + f] = l.max(0.0);
        }
        for c in 0..c_n {
            let z: f64 = (0..hidden)
                .map(|f| p.w2[c * hidden + f] * a[n * hidden + f])
                .sum();
            s[n * c_n + c] = sigmoid(z);
        }
    }
    Reweight {
        xbar,
        v,
        hhat,
        hl,
        a,
        inv_std,
        s,
    }
}

/// y[n, g d + i, p] = Σ_k W[g][i, k] (x[n, g d + k, p] − offset[g][k]) for every group.
fn apply_groups(x: &[f64], shape: [usize; 4], d: usize, wm: &[f64], offset: &[f64]) -> Vec<f64> {
    let [n_batch, c_n, h, w] = shape;
    let hw = h * w;
    let mut y = vec![0.0; x.len()];
    for n in 0..n_batch {
        for g in 0..c_n / d {
            for i in 0..d {
                for k in 0..d {
                    let wik = wm[(g * d + i) * d + k];
                    let off = offset[g * d + k];
                    let src = at(shape, n, g * d + k, 0);
                    let dst = at(shape, n, g * d + i, 0);
                    for q in 0..hw {
                        y[dst + q] += wik * (x[src + q] - off);
                    }
                }
            }
        }
    }
    y
}

fn combine(
    x: &[f64],
    y_bd: &[f64],
    shape: [usize; 4],
    rw: &Reweight,
    kappa: f64,
    lambda: f64,
) -> (Vec<f64>, Vec<f64>) {
    let [n_batch, c_n, h, w] = shape;
    let hw = h * w;
    let mut y_ar = vec![0.0; x.len()];
    for n in 0..n_batch {
        for c in 0..c_n {
            let f = rw.s[n * c_n + c] / kappa;
            let base = at(shape, n, c, 0);
            for q in 0..hw {
                y_ar[base + q] = x[base + q] * f;
            }
        }
    }
    let y = y_bd
        .iter()
        .zip(&y_ar)
        .map(|(b, r)| lambda * b + (1.0 - lambda) * r)
        .collect();
    (y, y_ar)
}

/// Training-mode forward pass: batch statistics, Newton–Schulz whitening, reweighting.
pub fn ce_forward_train(
    x: &[f64],
    shape: [usize; 4],
    p: &CeParams,
    cfg: &CeConfig,
) -> (Vec<f64>, CeCache) {
    let [n_batch, c_n, h, w] = shape;
    let d = cfg.d;
    let groups = c_n / d;
    let hw = h * w;
    let m = n_batch * hw;
    let mut mu = vec![0.0; groups * d];
    let mut sigma = vec![0.0; groups * d * d];
    for g in 0..groups {
        for i in 0..d {
            let mut sum = 0.0;
            for n in 0..n_batch {
                sum += x[at(shape, n, g * d + i, 0)..][..hw].iter().sum::<f64>();
            }
            mu[g * d + i] = sum / m as f64;
        }
        for i in 0..d {
            for k in 0..d {
                let mut sum = 0.0;
                for n in 0..n_batch {
                    let xi = &x[at(shape, n, g * d + i, 0)..][..hw];
                    let xk = &x[at(shape, n, g * d + k, 0)..][..hw];
                    for q in 0..hw {
                        sum += (xi[q] - mu[g * d + i]) * (xk[q] - mu[g * d + k]);
                    }
                }
                sigma[(g * d + i) * d + k] = sum / m as f64 + if i == k { cfg.eps } else { 0.0 };
            }
        }
    }
    let mut r = vec![0.0; groups];
    let mut s_mat = vec![0.0; groups * d * d];
    let mut p_all = vec![Vec::new(); cfg.iterations + 1];
    let mut wm = vec![0.0; groups * d * d];
    for g in 0..groups {
        let sg = &sigma[g * d * d..(g + 1) * d * d];
        let tr: f64 = (0..d).map(|i| sg[i * d + i]).sum();
        r[g] = 1.0 / tr;
        let sn: Vec<f64> = sg.iter().map(|v| v * r[g]).collect();
        let mut pk = identity(d);
        p_all[0].extend_from_slice(&pk);
        for slot in p_all.iter_mut().skip(1) {
            let p3 = matmul(&matmul(&pk, &pk, d), &pk, d);
            let p3s = matmul(&p3, &sn, d);
            pk = pk
                .iter()
                .zip(&p3s)
                .map(|(a, b)| 1.5 * a - 0.5 * b)
                .collect();
            slot.extend_from_slice(&pk);
        }
        let scale = if cfg.centred { r[g].sqrt() } else { 1.0 };
        for (dst, v) in wm[g * d * d..(g + 1) * d * d].iter_mut().zip(&pk) {
            *dst = v * scale;
        }
        s_mat[g * d * d..(g + 1) * d * d].copy_from_slice(&sn);
    }
    let offset = if cfg.centred {
        mu.clone()
    } else {
        vec![0.0; groups * d]
    };
    let y_bd = apply_groups(x, shape, d, &wm, &offset);

    let hidden = c_n / cfg.reduction;
    let rw = reweight(x, shape, p, hidden);
    let kappa = (rw.v.iter().sum::<f64>() / (n_batch * c_n) as f64).sqrt();
    let lambda = sigmoid(p.theta);
    let (y, y_ar) = combine(x, &y_bd, shape, &rw, kappa, lambda);
    let cache = CeCache {
        shape,
        cfg: *cfg,
        x: x.to_vec(),
        mu,
        sigma,
        r,
        s_mat,
        p: p_all,
        wm,
        xbar: rw.xbar,
        v: rw.v,
        hhat: rw.hhat,
        hl: rw.hl,
        a: rw.a,
        inv_std: rw.inv_std,
        s: rw.s,
        kappa,
        lambda,
        y_bd,
        y_ar,
    };
    (y, cache)
}

/// Evaluation-mode forward pass: running_wm (applied to x, or to x − running_mean in the
/// centred variant) and running_scale instead of batch statistics.
pub fn ce_forward_eval(
    x: &[f64],
    shape: [usize; 4],
    p: &CeParams,
    cfg: &CeConfig,
    running: &CeRunning,
) -> Vec<f64> {
    let c_n = shape[1];
    let groups = c_n / cfg.d;
    let offset = if cfg.centred {
        running.mean.clone()
    } else {
        vec![0.0; groups * cfg.d]
    };
    let y_bd = apply_groups(x, shape, cfg.d, &running.wm, &offset);
    let rw = reweight(x, shape, p, c_n / cfg.reduction);
    combine(x, &y_bd, shape, &rw, running.scale, sigmoid(p.theta)).0
}

/// Backward pass of the training forward pass, for upstream gradient `dy`.
pub fn ce_backward(dy: &[f64], c: &CeCache, p: &CeParams) -> CeGradients {
    let [n_batch, c_n, h, w] = c.shape;
    let d = c.cfg.d;
    let t = c.cfg.iterations;
    let groups = c_n / d;
    let hw = h * w;
    let m = (n_batch * hw) as f64;
    let hidden = c_n / c.cfg.reduction;
    let lam = c.lambda;
    let theta = lam
        * (1.0 - lam)
        * dy.iter()
            .zip(c.y_bd.iter().zip(&c.y_ar))
            .map(|(g, (b, r))| g * (b - r))
            .sum::<f64>();

    // Batch decorrelation, one group at a time.
    let mut dx = vec![0.0; dy.len()];
    for g in 0..groups {
        let gm = |v: &Vec<f64>| v[g * d * d..(g + 1) * d * d].to_vec();
        let (wm, s_mat, sigma) = (gm(&c.wm), gm(&c.s_mat), gm(&c.sigma));
        let r = c.r[g];
        let mu = &c.mu[g * d..(g + 1) * d];
        // dWm = G xinᵀ with G = λ dY and xin = x (or x − μ).
        let mut dwm = vec![0.0; d * d];
        let mut gsum = vec![0.0; d];
        for n in 0..n_batch {
            for i in 0..d {
                let gi = &dy[at(c.shape, n, g * d + i, 0)..][..hw];
                gsum[i] += lam * gi.iter().sum::<f64>();
                for k in 0..d {
                    let xk = &c.x[at(c.shape, n, g * d + k, 0)..][..hw];
                    let off = if c.cfg.centred { mu[k] } else { 0.0 };
                    let mut acc = 0.0;
                    for q in 0..hw {
                        acc += gi[q] * (xk[q] - off);
                    }
                    dwm[i * d + k] += lam * acc;
                }
            }
        }
        let (mut a, dr_extra) = if c.cfg.centred {
            let pt = gm(&c.p[t]);
            let inner: f64 = dwm.iter().zip(&pt).map(|(u, v)| u * v).sum();
            (
                dwm.iter().map(|v| v * r.sqrt()).collect(),
                inner * 0.5 / r.sqrt(),
            )
        } else {
            (dwm.clone(), 0.0)
        };
        let mut ds = vec![0.0; d * d];
        for k in (0..t).rev() {
            let pk = gm(&c.p[k]);
            let pk2 = matmul(&pk, &pk, d);
            let pk3 = matmul(&pk2, &pk, d);
            let term = matmul(&transpose(&pk3, d), &a, d);
            for (s, v) in ds.iter_mut().zip(&term) {
                *s -= 0.5 * v;
            }
            if k > 0 {
                let t1 = matmul(&a, &transpose(&matmul(&pk2, &s_mat, d), d), d);
                let t2 = matmul(
                    &matmul(&transpose(&pk, d), &a, d),
                    &transpose(&matmul(&pk, &s_mat, d), d),
                    d,
                );
                let t3 = matmul(
                    &matmul(&transpose(&pk2, d), &a, d),
                    &transpose(&s_mat, d),
                    d,
                );
                a = (0..d * d)
                    .map(|e| 1.5 * a[e] - 0.5 * (t1[e] + t2[e] + t3[e]))
                    .collect();
            }
        }
        let dr: f64 = ds.iter().zip(&sigma).map(|(u, v)| u * v).sum::<f64>() + dr_extra;
        let mut dsigma: Vec<f64> = ds.iter().map(|v| v * r).collect();
        for i in 0..d {
            dsigma[i * d + i] -= dr * r * r;
        }
        let dsym: Vec<f64> = (0..d * d)
            .map(|e| dsigma[e] + dsigma[(e % d) * d + e / d])
            .collect();
        // dx = Wmᵀ G (minus its mean over m when centred) + dsym (x − μ) / m.
        let direct_mean: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|k| wm[k * d + i] * gsum[k]).sum::<f64>() / m)
            .collect();
        for n in 0..n_batch {
            for i in 0..d {
                let dst = at(c.shape, n, g * d + i, 0);
                for k in 0..d {
                    let src = at(c.shape, n, g * d + k, 0);
                    let wki = lam * wm[k * d + i];
                    let bik = dsym[i * d + k] / m;
                    for q in 0..hw {
                        dx[dst + q] += wki * dy[src + q] + bik * (c.x[src + q] - mu[k]);
                    }
                }
                if c.cfg.centred {
                    for q in 0..hw {
                        dx[dst + q] -= direct_mean[i];
                    }
                }
            }
        }
    }

    // Adaptive reweighting.
    let kappa = c.kappa;
    let mut ds = vec![0.0; n_batch * c_n];
    for n in 0..n_batch {
        for ch in 0..c_n {
            let base = at(c.shape, n, ch, 0);
            let s = c.s[n * c_n + ch];
            let mut acc = 0.0;
            for q in 0..hw {
                let g_ar = (1.0 - lam) * dy[base + q];
                dx[base + q] += g_ar * s / kappa;
                acc += g_ar * c.x[base + q];
            }
            ds[n * c_n + ch] = acc / kappa;
        }
    }
    let dkappa = -ds.iter().zip(&c.s).map(|(a, b)| a * b).sum::<f64>() / kappa;
    let dz: Vec<f64> = (0..n_batch * c_n)
        .map(|e| ds[e] * c.s[e] * (1.0 - c.s[e]))
        .collect();
    let mut w2 = vec![0.0; c_n * hidden];
    let mut w1 = vec![0.0; hidden * c_n];
    let mut gamma = vec![0.0; hidden];
    let mut beta = vec![0.0; hidden];
    let mut dv = vec![0.0; n_batch * c_n];
    for n in 0..n_batch {
        let mut dhhat = vec![0.0; hidden];
        for f in 0..hidden {
            let e = n * hidden + f;
            let mut da = 0.0;
            for ch in 0..c_n {
                w2[ch * hidden + f] += dz[n * c_n + ch] * c.a[e];
                da += dz[n * c_n + ch] * p.w2[ch * hidden + f];
            }
            let dhl = if c.hl[e] > 0.0 { da } else { 0.0 };
            gamma[f] += dhl * c.hhat[e];
            beta[f] += dhl;
            dhhat[f] = dhl * p.gamma[f];
        }
        let hh = &c.hhat[n * hidden..(n + 1) * hidden];
        let mean1 = dhhat.iter().sum::<f64>() / hidden as f64;
        let mean2 = dhhat.iter().zip(hh).map(|(a, b)| a * b).sum::<f64>() / hidden as f64;
        for f in 0..hidden {
            let dh = (dhhat[f] - mean1 - hh[f] * mean2) * c.inv_std[n];
            for ch in 0..c_n {
                w1[f * c_n + ch] += dh * c.v[n * c_n + ch];
                dv[n * c_n + ch] += dh * p.w1[f * c_n + ch];
            }
        }
    }
    let dv_kappa = dkappa / (2.0 * kappa * (n_batch * c_n) as f64);
    for n in 0..n_batch {
        for ch in 0..c_n {
            let coef = 2.0 * (dv[n * c_n + ch] + dv_kappa) / (hw - 1) as f64;
            let xbar = c.xbar[n * c_n + ch];
            let base = at(c.shape, n, ch, 0);
            for q in 0..hw {
                dx[base + q] += coef * (c.x[base + q] - xbar);
            }
        }
    }
    CeGradients {
        x: dx,
        theta,
        w1,
        gamma,
        beta,
        w2,
    }
}
