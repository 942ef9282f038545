//! What the page's JavaScript calls: a [`Demo`] that owns the GPU, the chosen data and the
//! training session. Every method that touches the GPU is async and returns a promise;
//! calls must not overlap (the page queues them), and one that would is refused.

use std::cell::{RefCell, RefMut};
use std::path::Path;

use cenet::data::cifar::{parse_cifar, CifarKind};
use cenet::gpu::AdapterChoice;
use cenet::kernels::sgd::SgdConfig;
use cenet::Gpu;
use wasm_bindgen::prelude::*;

use crate::session::{Data, Session, Settings};

/// Sets up panic messages and logging on the console once the module loads.
#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
    // A second initialisation (a page that loads the module twice) changes nothing.
    let _ = console_log::init_with_level(log::Level::Info);
}

/// What a training run uses, as the page sets it.
#[wasm_bindgen]
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// ResNet depth: 8, 20, 32, …
    pub depth: usize,
    /// Put Channel Equilibrium blocks in the network.
    pub ce: bool,
    /// Images per step.
    pub batch_size: usize,
    /// SGD learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Random crops and flips.
    pub augment: bool,
    /// Seed of the weights, the batch order and the synthetic images.
    pub seed: u32,
    /// Synthetic training images (ignored for CIFAR-10).
    pub synthetic_train: usize,
    /// Synthetic test images (ignored for CIFAR-10).
    pub synthetic_test: usize,
    /// Test images shown in the grid.
    pub grid_images: usize,
    /// Test images evaluated for the test accuracy.
    pub eval_images: usize,
}

#[wasm_bindgen]
impl Options {
    /// ResNet-8 with CE, batches of 32, SGD with momentum at learning rate 0.05.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Options {
        Options {
            depth: 8,
            ce: true,
            batch_size: 32,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            augment: false,
            seed: 1,
            synthetic_train: 5000,
            synthetic_test: 512,
            grid_images: 32,
            eval_images: 256,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    fn settings(&self) -> Settings {
        Settings {
            depth: self.depth,
            ce: self.ce,
            batch_size: self.batch_size,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                nesterov: false,
            },
            augment: self.augment,
            seed: u64::from(self.seed),
            grid_images: self.grid_images,
            eval_images: self.eval_images,
        }
    }
}

/// What one step measured (see `session::StepReport`).
#[wasm_bindgen]
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// Steps taken so far.
    pub step: f64,
    /// Epochs completed, with the fraction of the current one.
    pub epoch: f64,
    /// Mean loss of the batch.
    pub loss: f32,
    /// Correct predictions in the batch.
    pub correct: u32,
    /// Images in the batch.
    pub batch: usize,
}

/// The test evaluation (see `session::Evaluation`).
#[wasm_bindgen(getter_with_clone)]
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Mean test loss.
    pub loss: f32,
    /// Fraction of test images classified correctly.
    pub accuracy: f32,
    /// Test images evaluated.
    pub images: usize,
    /// The predicted class of every grid image.
    pub predictions: Vec<u32>,
}

/// The test images of the grid.
#[wasm_bindgen(getter_with_clone)]
#[derive(Clone, Debug)]
pub struct Grid {
    /// 32×32 RGBA pixels, image after image.
    pub rgba: Vec<u8>,
    /// The true class of each image.
    pub labels: Vec<u32>,
    /// The names of the classes.
    pub class_names: Vec<String>,
}

/// The GPU, the data chosen and the training session.
#[wasm_bindgen]
pub struct Demo {
    gpu: Gpu,
    cifar_files: RefCell<Vec<(String, Vec<u8>)>>,
    session: RefCell<Option<Session>>,
}

// The async methods hold the session's `RefMut` across their awaits on purpose: it is what
// makes an overlapping call fail with a clear error instead of interleaving two steps.
#[allow(clippy::await_holding_refcell_ref)]
#[wasm_bindgen]
impl Demo {
    /// Opens the browser's WebGPU adapter and device.
    pub async fn open() -> Result<Demo, JsError> {
        let choice = AdapterChoice {
            backend: Some(wgpu::Backend::BrowserWebGpu),
            name: None,
            tuning: None,
            search: Default::default(),
        };
        let gpu = Gpu::new_async(choice).await?;
        Ok(Demo {
            gpu,
            cifar_files: RefCell::new(Vec::new()),
            session: RefCell::new(None),
        })
    }

    /// The adapter's description as the browser reports it (often empty, for privacy).
    pub fn adapter_name(&self) -> String {
        self.gpu.adapter().name.clone()
    }

    /// Whether the browser gave a fallback (software) adapter.
    pub fn is_software(&self) -> bool {
        self.gpu.adapter().is_software()
    }

    /// Adds a CIFAR-10 `.bin` file, checking its records at once; returns its number of
    /// images.
    pub fn add_cifar_file(&self, name: String, bytes: Vec<u8>) -> Result<usize, JsError> {
        let images = parse_cifar(CifarKind::Cifar10, &bytes, Path::new(&name))?.len();
        self.cifar_files.borrow_mut().push((name, bytes));
        Ok(images)
    }

    /// Forgets the CIFAR-10 files added.
    pub fn clear_cifar_files(&self) {
        self.cifar_files.borrow_mut().clear();
    }

    /// Builds a new network on the synthetic set, or on the CIFAR-10 files added if any.
    /// Returns a line describing the data.
    pub fn prepare(&self, options: &Options) -> Result<String, JsError> {
        let files = self.cifar_files.borrow();
        let data = if files.is_empty() {
            Data::synthetic(
                options.synthetic_train,
                options.synthetic_test,
                u64::from(options.seed),
            )?
        } else {
            Data::cifar10(&files)?
        };
        let described = format!(
            "{}: {} training images, {} test images",
            data.train().name().trim_end_matches(" train"),
            data.train().len(),
            data.test().len()
        );
        let session = Session::new(&self.gpu, data, options.settings())?;
        *self.busy()? = Some(session);
        Ok(described)
    }

    /// The model's name, e.g. `resnet8-ce`.
    pub fn model_name(&self) -> Result<String, JsError> {
        Ok(self.busy()?.as_ref().ok_or_else(not_prepared)?.model_name())
    }

    /// The test images of the grid.
    pub fn grid(&self) -> Result<Grid, JsError> {
        let slot = self.busy()?;
        let session = slot.as_ref().ok_or_else(not_prepared)?;
        let (rgba, labels) = session.grid_images();
        let test = session.data().test();
        let class_names = match test.class_names() {
            Some(names) => names.to_vec(),
            None => (0..test.classes()).map(|c| c.to_string()).collect(),
        };
        Ok(Grid {
            rgba,
            labels,
            class_names,
        })
    }

    /// One training step.
    pub async fn step(&self) -> Result<StepReport, JsError> {
        let mut slot = self.busy()?;
        let report = slot.as_mut().ok_or_else(not_prepared)?.step().await?;
        Ok(StepReport {
            step: report.step as f64,
            epoch: report.epoch,
            loss: report.loss,
            correct: report.correct,
            batch: report.batch,
        })
    }

    /// Evaluates the test images and predicts the grid's classes (after a step).
    pub async fn evaluate(&self) -> Result<Evaluation, JsError> {
        let mut slot = self.busy()?;
        let session = slot.as_mut().ok_or_else(not_prepared)?;
        if session.steps() == 0 {
            return Err(JsError::new(
                "evaluation needs the running statistics of at least one training step",
            ));
        }
        let e = session.evaluate().await?;
        Ok(Evaluation {
            loss: e.loss,
            accuracy: e.accuracy,
            images: e.images,
            predictions: e.grid_predictions,
        })
    }

    /// The weights as a safetensors file (PyTorch's state-dict keys).
    pub async fn weights(&self) -> Result<Vec<u8>, JsError> {
        let slot = self.busy()?;
        let session = slot.as_ref().ok_or_else(not_prepared)?;
        Ok(session.weights().await?)
    }
}

impl Demo {
    /// The session slot, or an error if another call is still using it.
    fn busy(&self) -> Result<RefMut<'_, Option<Session>>, JsError> {
        self.session
            .try_borrow_mut()
            .map_err(|_| JsError::new("the demo is busy with another call; await it first"))
    }
}

fn not_prepared() -> JsError {
    JsError::new("no network yet: call prepare() first")
}
