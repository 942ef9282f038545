//! Same-machine baseline for cenet: how fast does burn (wgpu backend, WGSL kernels,
//! autotune and fusion on) train a CIFAR ResNet-20?
//!
//! The data is synthetic: one batch of random images and random labels, made once
//! and reused for every step, so only the training step itself is timed.
//!
//! Output lines are `key value` pairs, easy to grep:
//! `first_step_s`, `step_s` (one per timed step) and `img_per_s` (median).

use std::time::Instant;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

const CLASSES: usize = 10;
const LEARNING_RATE: f64 = 0.1;

/// A 3×3 convolution without bias (batch norm follows every convolution).
fn conv3x3(in_ch: usize, out_ch: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([in_ch, out_ch], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

/// The projection shortcut used where a block changes shape: 1×1 conv (stride 2) + BN.
#[derive(Module, Debug)]
struct Projection {
    conv: Conv2d,
    bn: BatchNorm,
}

/// A basic residual block: conv-BN-ReLU, conv-BN, add the shortcut, ReLU.
#[derive(Module, Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// `None` means the identity shortcut.
    shortcut: Option<Projection>,
    relu: Relu,
}

impl BasicBlock {
    fn new(in_ch: usize, out_ch: usize, stride: usize, device: &Device) -> Self {
        let shortcut = (stride != 1 || in_ch != out_ch).then(|| Projection {
            conv: Conv2dConfig::new([in_ch, out_ch], [1, 1])
                .with_stride([stride, stride])
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(out_ch).init(device),
        });
        Self {
            conv1: conv3x3(in_ch, out_ch, stride, device),
            bn1: BatchNormConfig::new(out_ch).init(device),
            conv2: conv3x3(out_ch, out_ch, 1, device),
            bn2: BatchNormConfig::new(out_ch).init(device),
            shortcut,
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let residual = match &self.shortcut {
            Some(p) => p.bn.forward(p.conv.forward(x.clone())),
            None => x.clone(),
        };
        let y = self.relu.forward(self.bn1.forward(self.conv1.forward(x)));
        let y = self.bn2.forward(self.conv2.forward(y));
        self.relu.forward(y + residual)
    }
}

/// CIFAR ResNet-20 (He et al. 2016): stem, 3 stages × 3 blocks (16/32/64 channels),
/// global average pool, linear classifier.
#[derive(Module, Debug)]
struct ResNet20 {
    stem_conv: Conv2d,
    stem_bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
    relu: Relu,
}

impl ResNet20 {
    fn new(device: &Device) -> Self {
        let mut blocks = Vec::new();
        let mut in_ch = 16;
        for (stage, out_ch) in [16, 32, 64].into_iter().enumerate() {
            for block in 0..3 {
                // Stages 2 and 3 halve the resolution in their first block.
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(in_ch, out_ch, stride, device));
                in_ch = out_ch;
            }
        }
        Self {
            stem_conv: conv3x3(3, 16, 1, device),
            stem_bn: BatchNormConfig::new(16).init(device),
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(64, CLASSES).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .relu
            .forward(self.stem_bn.forward(self.stem_conv.forward(images)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        // [B, 64, 1, 1] -> [B, 64]
        let x = self.pool.forward(x).flatten::<2>(1, 3);
        self.fc.forward(x)
    }
}

/// Command-line options: `--batch N`, `--steps N`, `--warmup N`.
struct Args {
    batch: usize,
    steps: usize,
    warmup: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        batch: 128,
        steps: 3,
        warmup: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{flag} needs a whole number"));
        match flag.as_str() {
            "--batch" => args.batch = value,
            "--steps" => args.steps = value,
            "--warmup" => args.warmup = value,
            _ => panic!("unknown flag {flag} (expected --batch, --steps or --warmup)"),
        }
    }
    assert!(args.batch > 0 && args.warmup > 0 && args.steps > 0);
    args
}

/// One training step: forward, loss, backward, SGD update.
///
/// Burn queues work lazily, so the step is forced to finish before returning: the loss
/// is read back to the CPU and then the device is synchronised, which also waits for
/// the backward pass and the weight update that the loss value alone does not depend on.
fn train_step(
    model: ResNet20,
    optim: &mut ModuleOptimizer,
    images: &Tensor<4>,
    labels: &Tensor<1, Int>,
    device: &Device,
) -> (ResNet20, f32) {
    let logits = model.forward(images.clone());
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits, labels.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = optim.step(LEARNING_RATE, model, grads);
    let loss = loss.into_scalar::<f32>();
    device.sync().expect("device sync failed");
    (model, loss)
}

fn main() {
    let start = Instant::now();
    let args = parse_args();

    // wgpu picks the adapter (Vulkan first; here that is lavapipe) and compiles WGSL.
    let device = Device::wgpu(Default::default()).autodiff();

    // Synthetic data, made once: normal(0, 1) images and labels from a small LCG.
    let images = Tensor::<4>::random(
        [args.batch, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let labels: Vec<i64> = (0..args.batch)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) % CLASSES as u64) as i64
        })
        .collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [args.batch]), &device);

    let mut model = ResNet20::new(&device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0, // burn defaults to 0.1; PyTorch-style SGD uses 0
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig { penalty: 5e-4 }))
        .init();

    println!(
        "batch {} warmup {} steps {} params {}",
        args.batch,
        args.warmup,
        args.steps,
        model.num_params()
    );

    // Warm-up steps: the first includes device start-up, kernel compilation and autotuning.
    for i in 0..args.warmup {
        let t = Instant::now();
        let loss;
        (model, loss) = train_step(model, &mut optim, &images, &labels, &device);
        if i == 0 {
            println!("first_step_s {:.3}", start.elapsed().as_secs_f64());
        }
        println!(
            "warmup_step {i} s {:.3} loss {loss:.4}",
            t.elapsed().as_secs_f64()
        );
    }

    // Timed steps.
    let mut times = Vec::with_capacity(args.steps);
    for i in 0..args.steps {
        let t = Instant::now();
        let loss;
        (model, loss) = train_step(model, &mut optim, &images, &labels, &device);
        let s = t.elapsed().as_secs_f64();
        println!("step_s {s:.3} step {i} loss {loss:.4}");
        times.push(s);
    }

    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("median_step_s {median:.3}");
    println!("img_per_s {:.2}", args.batch as f64 / median);
    println!("total_s {:.3}", start.elapsed().as_secs_f64());
}
