//! `BatchNorm2d` over row-major NCHW tensors, in float64: normalisation with the batch mean
//! and biased variance over (N, H, W) in training, with the running statistics in evaluation;
//! running statistics updated with the unbiased variance, as PyTorch does.

/// Parameters and running statistics of one layer.
#[derive(Clone, Debug)]
pub struct BatchNorm2dRef {
    /// Scale γ, one per channel.
    pub weight: Vec<f64>,
    /// Shift β, one per channel.
    pub bias: Vec<f64>,
    pub running_mean: Vec<f64>,
    /// Running unbiased variance.
    pub running_var: Vec<f64>,
    pub num_batches_tracked: u64,
    pub eps: f64,
    pub momentum: f64,
}

/// What a training forward pass produces.
#[derive(Clone, Debug)]
pub struct BatchNormTrainOutput {
    pub y: Vec<f64>,
    /// Batch mean per channel.
    pub mean: Vec<f64>,
    /// Biased batch variance per channel (divided by N·H·W).
    pub var: Vec<f64>,
    /// Running statistics after this batch.
    pub running_mean: Vec<f64>,
    pub running_var: Vec<f64>,
}

/// Gradients of a training-mode backward pass.
#[derive(Clone, Debug)]
pub struct BatchNormGradsRef {
    pub dx: Vec<f64>,
    pub dweight: Vec<f64>,
    pub dbias: Vec<f64>,
}

/// Flat indices of channel `c`'s values in an NCHW tensor of shape `xs`.
pub fn channel_indices(xs: [usize; 4], c: usize) -> impl Iterator<Item = usize> {
    let [n, ch, h, w] = xs;
    let plane = h * w;
    (0..n).flat_map(move |b| {
        let base = (b * ch + c) * plane;
        base..base + plane
    })
}

/// Batch mean and biased variance of each channel (two passes, float64).
pub fn batch_stats(x: &[f64], xs: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(
        x.len(),
        xs.iter().product::<usize>(),
        "x does not match its shape"
    );
    let count = (xs[0] * xs[2] * xs[3]) as f64;
    (0..xs[1])
        .map(|c| {
            let mean = channel_indices(xs, c).map(|i| x[i]).sum::<f64>() / count;
            let var = channel_indices(xs, c)
                .map(|i| (x[i] - mean).powi(2))
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .unzip()
}

/// y = (x − mean[c]) / sqrt(var[c] + eps) · weight[c] + bias[c].
fn normalize(x: &[f64], xs: [usize; 4], mean: &[f64], var: &[f64], l: &BatchNorm2dRef) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for c in 0..xs[1] {
        let inv_std = 1.0 / (var[c] + l.eps).sqrt();
        for i in channel_indices(xs, c) {
            y[i] = (x[i] - mean[c]) * inv_std * l.weight[c] + l.bias[c];
        }
    }
    y
}

impl BatchNorm2dRef {
    /// PyTorch's initial state: weight 1, bias 0, running mean 0, running variance 1,
    /// eps 1e-5, momentum 0.1.
    pub fn new(channels: usize) -> Self {
        BatchNorm2dRef {
            weight: vec![1.0; channels],
            bias: vec![0.0; channels],
            running_mean: vec![0.0; channels],
            running_var: vec![1.0; channels],
            num_batches_tracked: 0,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// Training forward pass, without changing `self`: the output, the batch statistics and
    /// the running statistics as they are after this batch.
    pub fn forward_train(&self, x: &[f64], xs: [usize; 4]) -> BatchNormTrainOutput {
        let count = xs[0] * xs[2] * xs[3];
        assert!(count > 1, "training needs more than 1 value per channel");
        let (mean, var) = batch_stats(x, xs);
        let y = normalize(x, xs, &mean, &var, self);
        let m = self.momentum;
        let unbiased = count as f64 / (count - 1) as f64;
        let running_mean = (0..xs[1])
            .map(|c| (1.0 - m) * self.running_mean[c] + m * mean[c])
            .collect();
        let running_var = (0..xs[1])
            .map(|c| (1.0 - m) * self.running_var[c] + m * var[c] * unbiased)
            .collect();
        BatchNormTrainOutput {
            y,
            mean,
            var,
            running_mean,
            running_var,
        }
    }

    /// Training forward pass that also stores the new running statistics and counts the
    /// batch, as one step of a training loop does.
    pub fn train_step(&mut self, x: &[f64], xs: [usize; 4]) -> BatchNormTrainOutput {
        let out = self.forward_train(x, xs);
        self.running_mean = out.running_mean.clone();
        self.running_var = out.running_var.clone();
        self.num_batches_tracked += 1;
        out
    }

    /// Evaluation forward pass with the running statistics.
    pub fn forward_eval(&self, x: &[f64], xs: [usize; 4]) -> Vec<f64> {
        normalize(x, xs, &self.running_mean, &self.running_var, self)
    }

    /// Training-mode backward pass through the batch statistics of `x`: with
    /// x̂ = (x − mean)/σ and m = N·H·W, dβ = Σ dy, dγ = Σ dy·x̂ and
    /// dx = γ/σ · (dy − Σdy/m − x̂ · Σ(dy·x̂)/m).
    pub fn backward(&self, x: &[f64], xs: [usize; 4], dy: &[f64]) -> BatchNormGradsRef {
        let count = (xs[0] * xs[2] * xs[3]) as f64;
        let (mean, var) = batch_stats(x, xs);
        let mut dx = vec![0.0; x.len()];
        let mut dweight = vec![0.0; xs[1]];
        let mut dbias = vec![0.0; xs[1]];
        for c in 0..xs[1] {
            let inv_std = 1.0 / (var[c] + self.eps).sqrt();
            let xhat = |i: usize| (x[i] - mean[c]) * inv_std;
            dbias[c] = channel_indices(xs, c).map(|i| dy[i]).sum();
            dweight[c] = channel_indices(xs, c).map(|i| dy[i] * xhat(i)).sum();
            for i in channel_indices(xs, c) {
                dx[i] = self.weight[c]
                    * inv_std
                    * (dy[i] - dbias[c] / count - xhat(i) * dweight[c] / count);
            }
        }
        BatchNormGradsRef { dx, dweight, dbias }
    }

    /// Evaluation-mode input gradient: dx = dy · γ / sqrt(running_var + eps).
    pub fn backward_eval(&self, xs: [usize; 4], dy: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; dy.len()];
        for c in 0..xs[1] {
            let scale = self.weight[c] / (self.running_var[c] + self.eps).sqrt();
            for i in channel_indices(xs, c) {
                dx[i] = dy[i] * scale;
            }
        }
        dx
    }
}
