//! The training loop: SGD steps over shuffled, augmented batches, metrics read back without
//! blocking, an evaluation and a checkpoint after every epoch, and exact resumption.
//!
//! A checkpoint holds the weights (`last.safetensors`, a PyTorch state dict) and, beside
//! them, everything else the next step depends on (`last.train.safetensors`): the momentum
//! buffers, the step count, the data order's position and seed, and the run's settings.
//! The learning rate is a function of the step and every random draw a function of the seed,
//! the epoch and the image, so a resumed run takes the same steps as an uninterrupted one
//! and ends with bit-identical weights.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::TrainConfig;
use super::console::Console;
use super::dataset::LoadedData;
use super::metrics::{read_csv, write_csv, EpochRecord};
use super::plot;
use super::run_dir::{default_run_path, write_atomically, RunDir};
use super::run_state::{batcher_state, save_last, EpochSums, Progress, TEST_ACC_KEY};
use super::schedule::LrSchedule;
use crate::checkpoint::{load_checkpoint, StateDict};
use crate::data::{Augment, Batch, Batcher, BatcherConfig, Dataset};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::exec::{Executor, Metrics, PendingMetrics};

/// Steps whose metrics may be in flight before the loop waits for the oldest: enough to
/// keep a GPU busy, few enough that the host does not run far ahead.
const MAX_IN_FLIGHT: usize = 8;

/// How a run is carried out; none of this changes the weights it computes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run folder: a new one to create, or with `resume` the one to continue. `None`
    /// makes `runs/MODEL-DATASET-TIME`.
    pub out: Option<PathBuf>,
    /// Continue the run in `out` from its last checkpoint.
    pub resume: bool,
    /// Start from this state dict instead of the seed's initialisation.
    pub init: Option<PathBuf>,
    /// Stop once the run has taken this many optimizer steps in all.
    pub max_steps: Option<u64>,
    /// Also write the final weights here.
    pub save: Option<PathBuf>,
    /// Read the metrics back every this many steps.
    pub log_every: u64,
    /// Messages and progress bars.
    pub console: Console,
    /// Set (by a Ctrl-C handler) to stop after the current step, save and return.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            out: None,
            resume: false,
            init: None,
            max_steps: None,
            save: None,
            log_every: 20,
            console: Console::SILENT,
            interrupt: None,
        }
    }
}

/// Why a run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// All epochs are done.
    Finished,
    /// The step limit (`--steps`) was reached.
    StepLimit,
    /// The interrupt flag was set (Ctrl-C).
    Interrupted,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The settings (with the data set resolved).
    pub config: TrainConfig,
    /// One record per completed epoch, from the run's start.
    pub records: Vec<EpochRecord>,
    /// Optimizer steps taken in all.
    pub steps: u64,
    /// Epochs completed.
    pub epochs: u64,
    /// Why it returned.
    pub stop: Stop,
}

/// Builds the executor of `config`'s model for `train`'s images and classes.
pub fn executor_for(gpu: &Gpu, config: &TrainConfig, train: &Dataset) -> Result<Executor> {
    let net = config
        .model
        .config(train.channels(), train.classes(), config.label_smoothing)?;
    Executor::new(gpu, move |batch| net.build(batch), config.seed)
}

/// Trains `config` on `data` as `options` say; see the module documentation.
pub fn train(
    gpu: &Gpu,
    config: TrainConfig,
    data: LoadedData,
    options: &RunOptions,
) -> Result<TrainOutcome> {
    let mut run = Run::open(gpu, config, data, options)?;
    let stop = loop {
        if let Some(stop) = run.stop_before_epoch() {
            break stop;
        }
        match run.train_epoch()? {
            Some(stop) => break stop,
            None => run.finish_epoch()?,
        }
    };
    run.close(stop)
}

/// A run in progress.
struct Run<'a> {
    gpu: &'a Gpu,
    options: &'a RunOptions,
    config: TrainConfig,
    dir: RunDir,
    exec: Executor,
    batcher: Batcher,
    test_batcher: Batcher,
    steps_per_epoch: u64,
    schedule: LrSchedule,
    progress: Progress,
    batch: Batch,
}

impl<'a> Run<'a> {
    /// Writes `last.safetensors` and its training state for where the run stands now.
    fn save_last(&self) -> Result<StateDict> {
        save_last(
            &self.dir,
            &self.exec,
            &self.batcher,
            &self.progress,
            &self.config,
            self.schedule.lr(self.exec.steps),
        )
    }

    /// Sets up a new run, or restores one from its last checkpoint.
    fn open(
        gpu: &'a Gpu,
        mut config: TrainConfig,
        data: LoadedData,
        options: &'a RunOptions,
    ) -> Result<Self> {
        config.validate()?;
        let console = options.console;
        config.data.name = Some(data.name);
        // An absolute folder, so that `--resume` works from anywhere.
        config.data.dir = data
            .dir
            .as_ref()
            .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()));

        let dir = match (&options.out, options.resume) {
            (Some(dir), true) => RunDir::open(dir)?,
            (None, true) => return Err(Error::invalid("train", "resuming needs the run folder")),
            (Some(dir), false) => RunDir::create(dir)?,
            (None, false) => RunDir::create(default_run_path(
                &config.model.to_string(),
                &data.name.to_string(),
            ))?,
        };

        let mut exec = executor_for(gpu, &config, &data.split.train)?;
        let augment = if config.augment {
            data.name.augment()
        } else {
            Augment::NONE
        };
        let batcher_config = BatcherConfig {
            batch_size: config.batch_size,
            shuffle: config.shuffle,
            drop_last: true,
            augment,
            seed: config.seed,
        };
        let mut batcher = Batcher::new(data.split.train, batcher_config)?;
        let test_batcher = Batcher::new(data.split.test, BatcherConfig::eval(config.batch_size))?;
        let steps_per_epoch = batcher.batches_per_epoch() as u64;
        let schedule = config.schedule(steps_per_epoch)?;

        let progress = if options.resume {
            let (weights, training) = load_checkpoint(dir.last())?;
            exec.load_state_dict(&weights)?;
            exec.load_optimizer_state(&training.optimizer)?;
            batcher.restore(batcher_state(&training, &dir.last())?)?;
            let records = if dir.metrics_csv().is_file() {
                read_csv(&dir.metrics_csv())?
            } else {
                Vec::new()
            };
            console.say(&format!(
                "resuming {} at epoch {}, step {}",
                dir.path().display(),
                training.epoch + 1,
                training.step
            ));
            Progress::restore(&training, records)
        } else {
            if let Some(init) = &options.init {
                exec.load_state_dict(&StateDict::load(init)?)?;
                console.say(&format!("initial weights: {}", init.display()));
            }
            write_text(&dir.config_txt(), &config.to_text())?;
            Progress::default()
        };

        let parameters: usize = exec
            .param_names()
            .iter()
            .filter_map(|name| exec.tensor(name))
            .map(|t| t.len())
            .sum();
        console.say(&format!(
            "{}: {parameters} parameters, {steps_per_epoch} steps of {} images per epoch, {} \
             epochs, run folder {}",
            config.model,
            config.batch_size,
            config.epochs,
            dir.path().display()
        ));
        Ok(Run {
            gpu,
            options,
            config,
            dir,
            exec,
            batcher,
            test_batcher,
            steps_per_epoch,
            schedule,
            progress,
            batch: Batch::default(),
        })
    }

    fn interrupted(&self) -> bool {
        self.options
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }

    /// Why the run should stop before its next step, if it should.
    fn stop_before_step(&self) -> Option<Stop> {
        if self.interrupted() {
            Some(Stop::Interrupted)
        } else if self
            .options
            .max_steps
            .is_some_and(|max| self.exec.steps >= max)
        {
            Some(Stop::StepLimit)
        } else {
            None
        }
    }

    fn stop_before_epoch(&self) -> Option<Stop> {
        if self.progress.epoch >= self.config.epochs {
            Some(Stop::Finished)
        } else {
            self.stop_before_step()
        }
    }

    /// The error for a loss or weights that stopped being finite.
    fn diverged(&self, what: String) -> Error {
        let kept = if self.dir.last().is_file() {
            format!(
                "the last good checkpoint, {}, is kept",
                self.dir.last().display()
            )
        } else {
            "no checkpoint had been saved yet".to_string()
        };
        Error::invalid(
            "train",
            format!("{what}; stopped without saving: {kept}. Try a lower --lr or --warmup-epochs"),
        )
    }

    /// Trains the rest of the current epoch. Returns why it stopped early (after saving a
    /// mid-epoch checkpoint), or `None` when the epoch is complete, its sums in
    /// `progress.partial`.
    fn train_epoch(&mut self) -> Result<Option<Stop>> {
        let console = self.options.console;
        let epoch = self.progress.epoch;
        let first_step = epoch * self.steps_per_epoch;
        let epoch_end = first_step + self.steps_per_epoch;
        let bar = console.bar(
            self.steps_per_epoch,
            format!("epoch {}/{}", epoch + 1, self.config.epochs),
        );
        bar.set_position(self.exec.steps - first_step);
        let started = Instant::now();
        let mut sums = self.progress.partial;
        let mut pending: VecDeque<(u64, PendingMetrics)> = VecDeque::new();
        let mut images_now = 0u64;
        let mut last_loss = f64::NAN;
        let log_every = self.options.log_every.max(1);
        let mut stopped = None;

        while self.exec.steps < epoch_end {
            if let Some(stop) = self.stop_before_step() {
                stopped = Some(stop);
                break;
            }
            if !self.batcher.next_batch_into(&mut self.batch) {
                return Err(Error::invalid(
                    "train",
                    format!(
                        "the training set ran out after step {} of epoch {}",
                        self.exec.steps,
                        epoch + 1
                    ),
                ));
            }
            let lr = self.schedule.lr(self.exec.steps);
            let batch = &self.batch;
            let metrics = self
                .exec
                .train_step(&batch.images, &batch.labels, &self.config.sgd(lr), true)?
                .expect("metrics were requested");
            pending.push_back((self.exec.steps, metrics));
            images_now += batch.len() as u64;

            if self.exec.steps.is_multiple_of(log_every) || pending.len() > MAX_IN_FLIGHT {
                let latest = collect(self.gpu, &mut pending, &mut sums, false)
                    .map_err(|e| self.diverged(e))?;
                last_loss = latest.unwrap_or(last_loss);
            }
            bar.set_position(self.exec.steps - first_step);
            let rate = images_now as f64 / started.elapsed().as_secs_f64().max(1e-9);
            // Until the first metrics come back there is no loss to show.
            let loss = if last_loss.is_nan() {
                "–".to_string()
            } else {
                format!("{last_loss:.3}")
            };
            bar.set_message(format!("{rate:.0} img/s  loss {loss}  lr {lr:.4}"));
        }
        collect(self.gpu, &mut pending, &mut sums, true).map_err(|e| self.diverged(e))?;
        sums.train_seconds += started.elapsed().as_secs_f64();
        sums.seconds += started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        self.progress.partial = sums;

        let Some(stop) = stopped else {
            // The epoch is complete: move the batcher on to the next epoch's order.
            let more = self.batcher.next_batch_into(&mut self.batch);
            debug_assert!(!more, "an epoch has exactly steps_per_epoch full batches");
            return Ok(None);
        };
        // Mid-epoch: the partial sums go into the checkpoint so the epoch's figures come out
        // whole after resuming.
        self.save_last()?;
        let why = match stop {
            Stop::Interrupted => "interrupted",
            _ => "step limit reached",
        };
        console.say(&format!(
            "{why} at step {} (epoch {}, {} of {} steps): checkpoint saved; continue with \
             --resume {}",
            self.exec.steps,
            epoch + 1,
            self.exec.steps - first_step,
            self.steps_per_epoch,
            self.dir.path().display()
        ));
        Ok(Some(stop))
    }

    /// Evaluates a completed epoch, records it, and saves the checkpoint, the best weights,
    /// `metrics.csv` and `curves.svg`.
    fn finish_epoch(&mut self) -> Result<()> {
        let started = Instant::now();
        let epoch = self.progress.epoch + 1;
        let (test_loss, test_acc) =
            evaluate_loss(self.gpu, &mut self.exec, &mut self.test_batcher)?;
        if !test_loss.is_finite() {
            return Err(self.diverged(format!(
                "the test loss after epoch {epoch} is {test_loss}: the weights have diverged"
            )));
        }
        let sums = self.progress.partial;
        let seen = sums.seen.max(1) as f64;
        let record = EpochRecord {
            epoch,
            step: self.exec.steps,
            lr: self.schedule.lr(self.exec.steps - 1),
            train_loss: sums.loss_sum / seen,
            train_acc: sums.correct as f64 / seen,
            test_loss,
            test_acc,
            seconds: sums.seconds + started.elapsed().as_secs_f64(),
            images_per_second: sums.seen as f64 / sums.train_seconds.max(1e-9),
        };
        let progress = &mut self.progress;
        progress.records.push(record);
        progress.epoch = epoch;
        progress.partial = EpochSums::default();
        let improved = progress.best.is_none_or(|(_, best)| test_acc > best);
        if improved {
            progress.best = Some((epoch, test_acc));
        }

        let mut weights = self.save_last()?;
        if improved {
            weights.set_metadata(TEST_ACC_KEY, format!("{test_acc:?}"));
            weights.save(self.dir.best())?;
        }
        write_csv(&self.dir.metrics_csv(), &self.progress.records)?;
        let curves = plot::svg(&plot::training_curves(&self.progress.records));
        write_text(&self.dir.curves_svg(), &curves)?;
        self.options.console.say(&format!(
            "epoch {:>3}/{}  train loss {:.4} acc {:5.1}%  test loss {:.4} acc {:5.1}%  \
             lr {:.4}  {:.1} s ({:.0} img/s){}",
            record.epoch,
            self.config.epochs,
            record.train_loss,
            100.0 * record.train_acc,
            record.test_loss,
            100.0 * record.test_acc,
            record.lr,
            record.seconds,
            record.images_per_second,
            if improved { "  best" } else { "" }
        ));
        Ok(())
    }

    /// Writes `--save` and says how the run ended.
    fn close(self, stop: Stop) -> Result<TrainOutcome> {
        let console = self.options.console;
        if let Some(path) = &self.options.save {
            self.exec.state_dict()?.save(path)?;
            console.say(&format!("final weights: {}", path.display()));
        }
        if let (Stop::Finished, Some((epoch, acc))) = (stop, self.progress.best) {
            console.say(&format!(
                "done: best test accuracy {:.2}% at epoch {epoch} ({})",
                100.0 * acc,
                self.dir.best().display()
            ));
        }
        Ok(TrainOutcome {
            run_dir: self.dir.path().to_path_buf(),
            config: self.config,
            records: self.progress.records,
            steps: self.exec.steps,
            epochs: self.progress.epoch,
            stop,
        })
    }
}

/// Reads the metrics of finished steps, oldest first, into `sums`; with `wait_all`, waits
/// for every pending one, otherwise only for those beyond [`MAX_IN_FLIGHT`]. Returns the
/// latest loss read, or the description of a non-finite loss.
fn collect(
    gpu: &Gpu,
    pending: &mut VecDeque<(u64, PendingMetrics)>,
    sums: &mut EpochSums,
    wait_all: bool,
) -> std::result::Result<Option<f64>, String> {
    let mut latest = None;
    while let Some(&(step, _)) = pending.front() {
        let read = if wait_all {
            // The GPU has to finish everything anyway: block in the driver.
            let (_, metrics) = pending.pop_front().expect("front exists");
            metrics.wait(gpu).map(Some)
        } else {
            let must_wait = pending.len() > MAX_IN_FLIGHT;
            match pending.front_mut().expect("front exists").1.try_read(gpu) {
                Ok(None) if must_wait => {
                    // Not finished yet: let the GPU work on (a blocking wait would drain the
                    // whole queue, not just this step).
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Ok(Some(m)) => {
                    pending.pop_front();
                    Ok(Some(m))
                }
                other => other,
            }
        };
        let metrics: Metrics = match read {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => return Err(format!("reading the metrics of step {step} failed: {e}")),
        };
        if !metrics.loss.is_finite() {
            return Err(format!(
                "the training loss of step {step} is {}",
                metrics.loss
            ));
        }
        sums.loss_sum += f64::from(metrics.loss) * metrics.batch as f64;
        sums.correct += u64::from(metrics.correct);
        sums.seen += metrics.batch as u64;
        latest = Some(f64::from(metrics.loss));
    }
    Ok(latest)
}

/// Mean loss and accuracy over a whole test set, in evaluation mode.
pub fn evaluate_loss(gpu: &Gpu, exec: &mut Executor, test: &mut Batcher) -> Result<(f64, f64)> {
    let mut batch = Batch::default();
    let mut pending: VecDeque<PendingMetrics> = VecDeque::new();
    let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0u64, 0u64);
    let mut take = |m: Metrics| {
        loss_sum += f64::from(m.loss) * m.batch as f64;
        correct += u64::from(m.correct);
        seen += m.batch as u64;
    };
    while test.next_batch_into(&mut batch) {
        pending.push_back(exec.eval_batch(&batch.images, &batch.labels)?);
        while pending.len() > MAX_IN_FLIGHT {
            let front = pending.pop_front().expect("more than zero pending");
            take(front.wait(gpu)?);
        }
    }
    for p in pending {
        take(p.wait(gpu)?);
    }
    let n = seen.max(1) as f64;
    Ok((loss_sum / n, correct as f64 / n))
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, text.as_bytes()).map_err(|e| Error::Checkpoint {
        file: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    })
}
