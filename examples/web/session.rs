//! One training run in the page: the data, the network and its optimizer, and the test
//! images shown in the grid. Nothing here knows about the browser; every read-back is an
//! `await`, so the page's thread never blocks.

use std::path::Path;
use std::sync::Arc;

use cenet::data::cifar::{parse_cifar, CifarKind};
use cenet::data::{synthetic, Augment, Batch, Batcher, BatcherConfig, Dataset, Split};
use cenet::graph::exec::Executor;
use cenet::kernels::sgd::SgdConfig;
use cenet::nn::resnet::ResNetConfig;
use cenet::{Error, Gpu, Result};

/// Training images held out for testing when the user picks no CIFAR test file.
const HELD_OUT_FOR_TEST: usize = 1000;

/// How to train.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// ResNet depth (6n + 2: 8, 20, …).
    pub depth: usize,
    /// Channel Equilibrium blocks after the stem and in every residual block.
    pub ce: bool,
    /// Images per training step.
    pub batch_size: usize,
    /// The optimizer.
    pub sgd: SgdConfig,
    /// Random crops and flips of the training images.
    pub augment: bool,
    /// Seed of the initial weights and of the batch order.
    pub seed: u64,
    /// Test images in the grid, which is also the evaluation batch size.
    pub grid_images: usize,
    /// Test images evaluated for the test accuracy (rounded down to whole grid batches).
    pub eval_images: usize,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// Steps taken so far, this one included.
    pub step: u64,
    /// Epochs completed, with the fraction of the current one.
    pub epoch: f64,
    /// Mean loss over the batch.
    pub loss: f32,
    /// Correct top-1 predictions in the batch.
    pub correct: u32,
    /// Images in the batch.
    pub batch: usize,
}

/// The network on held-out images, with the running statistics.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Mean loss over the evaluated test images.
    pub loss: f32,
    /// Fraction of them classified correctly.
    pub accuracy: f32,
    /// Test images evaluated.
    pub images: usize,
    /// The predicted class of every grid image.
    pub grid_predictions: Vec<u32>,
}

/// The training and test sets of a run, before a network is built.
pub struct Data {
    train: Arc<Dataset>,
    test: Arc<Dataset>,
}

impl Data {
    /// The built-in striped-image set: `train` and `test` images generated from `seed`.
    pub fn synthetic(train: usize, test: usize, seed: u64) -> Result<Self> {
        Ok(Self::from_split(synthetic::split(train, test, seed)?))
    }

    /// CIFAR-10 from the contents of its `.bin` files, as `(file name, bytes)`, read in
    /// order of name. Files whose name starts with `test` form the test set; without one,
    /// the last 1,000 training images are held out for testing.
    pub fn cifar10(files: &[(String, Vec<u8>)]) -> Result<Self> {
        let mut train: Option<Dataset> = None;
        let mut test: Option<Dataset> = None;
        let mut in_order: Vec<&(String, Vec<u8>)> = files.iter().collect();
        in_order.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, bytes) in in_order {
            let set = parse_cifar(CifarKind::Cifar10, bytes, Path::new(name))?;
            let slot = if name.starts_with("test") {
                &mut test
            } else {
                &mut train
            };
            *slot = Some(match slot.take() {
                Some(earlier) => earlier.concat(&set)?,
                None => set,
            });
        }
        let (train, test) = match (train, test) {
            (Some(train), Some(test)) => (train, test),
            (Some(all), None) => {
                if all.len() <= HELD_OUT_FOR_TEST {
                    return Err(Error::invalid(
                        "web demo",
                        format!(
                            "{} images are too few to hold {HELD_OUT_FOR_TEST} out for \
                             testing; add test_batch.bin",
                            all.len()
                        ),
                    ));
                }
                let cut = all.len() - HELD_OUT_FOR_TEST;
                (all.slice(0..cut)?, all.slice(cut..all.len())?)
            }
            (None, _) => {
                return Err(Error::invalid(
                    "web demo",
                    "no CIFAR-10 training file given (data_batch_1.bin … data_batch_5.bin)",
                ))
            }
        };
        Ok(Self::from_split(Split {
            train: train.renamed("CIFAR-10 train"),
            test: test.renamed("CIFAR-10 test"),
        }))
    }

    fn from_split(split: Split) -> Self {
        Data {
            train: Arc::new(split.train),
            test: Arc::new(split.test),
        }
    }

    /// The training set.
    pub fn train(&self) -> &Dataset {
        &self.train
    }

    /// The test set.
    pub fn test(&self) -> &Dataset {
        &self.test
    }
}

/// A network being trained on a data set.
pub struct Session {
    gpu: Gpu,
    settings: Settings,
    data: Data,
    executor: Executor,
    batcher: Batcher,
    batch: Batch,
    /// The test images evaluated, in batches of `grid_images`; the first is the grid.
    eval_batches: Vec<Batch>,
}

impl Session {
    /// A freshly initialised network on `data`.
    pub fn new(gpu: &Gpu, data: Data, settings: Settings) -> Result<Self> {
        let config = ResNetConfig::new(settings.depth, settings.ce)?;
        let classes = data.train.classes();
        let config = ResNetConfig { classes, ..config };
        let executor = Executor::new(gpu, move |batch| config.build(batch), settings.seed)?;

        let augment = if settings.augment {
            Augment::CIFAR
        } else {
            Augment::NONE
        };
        let batcher = Batcher::new(
            data.train.clone(),
            BatcherConfig::train(settings.batch_size, settings.seed).with_augment(augment),
        )?;

        let grid = settings.grid_images.clamp(1, data.test.len());
        let evaluated = (settings.eval_images.min(data.test.len()) / grid).max(1) * grid;
        let mut eval_batcher = Batcher::new(
            Arc::new(data.test.slice(0..evaluated)?),
            BatcherConfig::eval(grid),
        )?;
        let mut eval_batches = Vec::new();
        while let Some(batch) = eval_batcher.next_batch() {
            eval_batches.push(batch);
        }
        log::info!(
            "web demo: {} on {} ({} images), batches of {}; testing on {} of {} ({} images)",
            config.name(),
            data.train.name(),
            data.train.len(),
            settings.batch_size,
            evaluated,
            data.test.name(),
            data.test.len()
        );
        Ok(Session {
            gpu: gpu.clone(),
            settings,
            data,
            executor,
            batcher,
            batch: Batch::default(),
            eval_batches,
        })
    }

    /// The data being trained on.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The model's name, e.g. `resnet8-ce`.
    pub fn model_name(&self) -> String {
        let config = ResNetConfig::new(self.settings.depth, self.settings.ce);
        config.map_or_else(|_| "resnet".into(), |c| c.name())
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.executor.steps
    }

    /// One SGD step on the next batch, waiting (without blocking) for its loss.
    pub async fn step(&mut self) -> Result<StepReport> {
        // At the end of an epoch the batcher moves on and the second call starts the next.
        if !self.batcher.next_batch_into(&mut self.batch) {
            self.batcher.next_batch_into(&mut self.batch);
        }
        let pending = self.executor.train_step(
            &self.batch.images,
            &self.batch.labels,
            &self.settings.sgd,
            true,
        )?;
        let metrics = pending
            .ok_or_else(|| Error::invalid("web demo", "the step returned no metrics"))?
            .read(&self.gpu)
            .await?;
        let epoch_fraction = self.batcher.position() as f64 / self.data.train.len() as f64;
        Ok(StepReport {
            step: self.executor.steps,
            epoch: self.batcher.epoch() as f64 + epoch_fraction,
            loss: metrics.loss,
            correct: metrics.correct,
            batch: metrics.batch,
        })
    }

    /// Evaluates the test images with the running statistics (so only after a step).
    pub async fn evaluate(&mut self) -> Result<Evaluation> {
        let mut pending = Vec::with_capacity(self.eval_batches.len());
        for batch in &self.eval_batches {
            pending.push(self.executor.eval_batch(&batch.images, &batch.labels)?);
        }
        let (mut loss_sum, mut correct, mut images) = (0.0f64, 0u64, 0usize);
        for p in pending {
            let m = p.read(&self.gpu).await?;
            loss_sum += f64::from(m.loss) * m.batch as f64;
            correct += u64::from(m.correct);
            images += m.batch;
        }

        let grid = &self.eval_batches[0];
        let logits = self
            .executor
            .read_logits(&grid.images, &grid.labels)
            .await?;
        let classes = logits.len() / grid.labels.len();
        let grid_predictions = logits.chunks_exact(classes).map(argmax).collect();
        Ok(Evaluation {
            loss: (loss_sum / images as f64) as f32,
            accuracy: correct as f32 / images as f32,
            images,
            grid_predictions,
        })
    }

    /// The grid's test images as RGBA pixels, one 32×32 image after another, and their
    /// labels.
    pub fn grid_images(&self) -> (Vec<u8>, Vec<u32>) {
        let grid = &self.eval_batches[0];
        let test = &self.data.test;
        let mut rgba = Vec::with_capacity(grid.indices.len() * 32 * 32 * 4);
        for &index in &grid.indices {
            let image = test.image(index as usize);
            let plane = image.len() / test.channels();
            for p in 0..plane {
                for c in 0..3 {
                    // Grey images repeat their one channel.
                    rgba.push(image[(c % test.channels()) * plane + p]);
                }
                rgba.push(255);
            }
        }
        (rgba, grid.labels.clone())
    }

    /// The trained weights and running statistics as a safetensors file, under PyTorch's
    /// state-dict keys.
    pub async fn weights(&self) -> Result<Vec<u8>> {
        let mut dict = self.executor.read_state_dict().await?;
        dict.set_metadata(cenet::checkpoint::MODEL_KEY, self.model_name());
        dict.set_metadata("steps", self.executor.steps.to_string());
        dict.to_bytes()
    }
}

/// The index of the largest value (the first, on ties).
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use cenet::checkpoint::StateDict;
    use cenet::data::cifar::encode_cifar;

    fn cifar_bytes(images: usize, seed: u64) -> Vec<u8> {
        let set = synthetic::generate(images, seed).expect("synthetic images");
        encode_cifar(CifarKind::Cifar10, &set).expect("CIFAR-10 records")
    }

    #[test]
    fn cifar10_files_named_test_form_the_test_set() {
        let files = vec![
            ("test_batch.bin".to_string(), cifar_bytes(7, 1)),
            ("data_batch_2.bin".to_string(), cifar_bytes(5, 2)),
            ("data_batch_1.bin".to_string(), cifar_bytes(3, 3)),
        ];
        let data = Data::cifar10(&files).unwrap();
        assert_eq!(data.train().len(), 8);
        assert_eq!(data.test().len(), 7);
        // Read in order of name: data_batch_1 first.
        let first = synthetic::generate(3, 3).unwrap();
        assert_eq!(data.train().image(0), first.image(0));
        assert_eq!(data.train().class_names().unwrap()[0], "airplane");
    }

    #[test]
    fn cifar10_without_a_test_file_holds_out_the_last_training_images() {
        let files = vec![("data_batch_1.bin".to_string(), cifar_bytes(1010, 4))];
        let data = Data::cifar10(&files).unwrap();
        assert_eq!(data.train().len(), 10);
        assert_eq!(data.test().len(), HELD_OUT_FOR_TEST);

        let too_few = vec![("data_batch_1.bin".to_string(), cifar_bytes(20, 4))];
        let err = Data::cifar10(&too_few).err().expect("too few images");
        assert!(err.to_string().contains("test_batch.bin"), "{err}");
        let only_test = vec![("test_batch.bin".to_string(), cifar_bytes(20, 4))];
        assert!(Data::cifar10(&only_test).is_err());
    }

    #[test]
    fn a_session_trains_evaluates_and_saves_weights_with_the_steps_counted() {
        let gpu = Gpu::new().expect("a GPU adapter");
        let settings = Settings {
            depth: 8,
            ce: true,
            batch_size: 4,
            sgd: SgdConfig::new(0.05),
            augment: true,
            seed: 3,
            grid_images: 3,
            eval_images: 7,
        };
        let mut session = Session::new(&gpu, Data::synthetic(12, 9, 5).unwrap(), settings).unwrap();
        let first = pollster::block_on(session.step()).unwrap();
        let second = pollster::block_on(session.step()).unwrap();
        assert_eq!((first.step, second.step), (1, 2));
        assert_eq!(second.batch, 4);
        assert!(second.loss.is_finite() && second.correct <= 4);
        assert!((second.epoch - 8.0 / 12.0).abs() < 1e-9, "{}", second.epoch);

        let evaluation = pollster::block_on(session.evaluate()).unwrap();
        // 7 images round down to two grid batches of 3.
        assert_eq!(evaluation.images, 6);
        assert_eq!(evaluation.grid_predictions.len(), 3);
        assert!(evaluation.grid_predictions.iter().all(|&p| p < 10));
        let (rgba, labels) = session.grid_images();
        assert_eq!(rgba.len(), 3 * 32 * 32 * 4);
        assert_eq!(labels, session.data().test().labels()[..3]);

        let bytes = pollster::block_on(session.weights()).unwrap();
        let weights = StateDict::from_bytes(&bytes, "downloaded.safetensors").unwrap();
        let config = ResNetConfig::new(8, true).unwrap();
        let fresh = Executor::new(&gpu, move |b| config.build(b), 0).unwrap();
        weights.expect(&fresh.state_dict_specs()).unwrap();
        assert_eq!(
            weights.get_i64_scalar("bn1.num_batches_tracked").unwrap(),
            2
        );
        // The native runner's eval and inspect find the model from the file alone.
        let named = cenet::train::evaluate::model_of(&weights, None, "downloaded".as_ref());
        assert_eq!(named.unwrap().to_string(), "resnet8-ce");
    }
}
