//! Training as a user runs it: a short run on generated images whose loss falls and whose
//! accuracy passes a stated bound, and the same seed giving the same weights.

mod common;

use cenet::data::{synthetic, Augment, Batcher, BatcherConfig};
use cenet::graph::exec::Executor;
use cenet::kernels::sgd::SgdConfig;
use cenet::nn::resnet::ResNetConfig;
use common::gpu;

struct Run {
    first_epoch_loss: f64,
    last_epoch_loss: f64,
    train_accuracy: f64,
    test_accuracy: f64,
}

fn train_resnet8_ce(seed: u64, epochs: usize, max_steps: usize) -> (Run, Executor) {
    let data = synthetic::split(256, 160, 1).unwrap();
    let config = ResNetConfig::new(8, true).unwrap();
    let mut exec = Executor::new(gpu(), move |b| config.build(b), seed).unwrap();
    let batcher_config = BatcherConfig {
        augment: Augment::NONE,
        ..BatcherConfig::train(32, seed)
    };
    let mut batches = Batcher::new(data.train, batcher_config).unwrap();
    let sgd = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };

    let mut epoch_losses = Vec::new();
    let mut last_correct = (0, 0);
    for _ in 0..epochs {
        let mut pending = Vec::new();
        let started = std::time::Instant::now();
        while let Some(batch) = batches.next_batch() {
            if exec.steps as usize >= max_steps {
                break;
            }
            pending.push(
                exec.train_step(&batch.images, &batch.labels, &sgd, true)
                    .unwrap()
                    .unwrap(),
            );
        }
        let metrics: Vec<_> = pending
            .into_iter()
            .map(|p| p.wait(gpu()).unwrap())
            .collect();
        println!(
            "epoch: {} steps in {:.1} s",
            metrics.len(),
            started.elapsed().as_secs_f64()
        );
        let images: usize = metrics.iter().map(|m| m.batch).sum();
        let loss = metrics
            .iter()
            .map(|m| m.loss as f64 * m.batch as f64)
            .sum::<f64>()
            / images as f64;
        epoch_losses.push(loss);
        last_correct = (metrics.iter().map(|m| m.correct as usize).sum(), images);
    }

    let mut test = Batcher::new(data.test, BatcherConfig::eval(80)).unwrap();
    let (mut correct, mut total) = (0, 0);
    while let Some(batch) = test.next_batch() {
        let m = exec
            .eval_batch(&batch.images, &batch.labels)
            .unwrap()
            .wait(gpu())
            .unwrap();
        correct += m.correct as usize;
        total += m.batch;
    }
    let run = Run {
        first_epoch_loss: epoch_losses[0],
        last_epoch_loss: *epoch_losses.last().unwrap(),
        train_accuracy: last_correct.0 as f64 / last_correct.1 as f64,
        test_accuracy: correct as f64 / total as f64,
    };
    println!(
        "loss {:.3} → {:.3}, last-epoch training accuracy {:.3}, test accuracy {:.3}",
        run.first_epoch_loss, run.last_epoch_loss, run.train_accuracy, run.test_accuracy
    );
    (run, exec)
}

#[test]
fn resnet8_ce_learns_the_synthetic_set() {
    // 256 generated images of 10 stripe classes, 8 steps of 32 per epoch, 4 epochs.
    let (run, _) = train_resnet8_ce(3, 4, usize::MAX);
    assert!(
        run.last_epoch_loss < 0.7 * run.first_epoch_loss,
        "loss did not fall enough"
    );
    // Chance is 0.1; the bound leaves a wide margin below what this run reaches.
    assert!(
        run.train_accuracy >= 0.5,
        "training accuracy {}",
        run.train_accuracy
    );
}

#[test]
fn the_same_seed_on_the_same_adapter_gives_the_same_weights() {
    let (_, a) = train_resnet8_ce(21, 1, 2);
    let (_, b) = train_resnet8_ce(21, 1, 2);
    assert_eq!(a.state_dict().unwrap(), b.state_dict().unwrap());
}
