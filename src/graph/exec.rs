//! Running graphs on the GPU. An [`Executor`] owns the parameters, momentum buffers and
//! running statistics of one network (by state-dict name) and compiles the network once per
//! batch size and mode: the step program, its memory plan, the planned buffers and each
//! op's saved intermediates. A training step is then recorded into one command encoder and
//! submitted once; the loss and accuracy are read back only when asked, without blocking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;

use super::autodiff::{forward_program, training_program, Instr, StepProgram, Storage, VId};
use super::plan::{plan, Plan};
use super::{Graph, Init, NodeId, Op};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::activation::{self, Activation};
use crate::kernels::batchnorm::{self, BatchNorm2d, BatchNormGrads, SavedStats};
use crate::kernels::ce::{self, CeGrads, CeSaved, CeState};
use crate::kernels::sgd::{self, SgdConfig};
use crate::kernels::{conv, linear, loss, pool, Program, Recorder};
use crate::nn::Model;
use crate::rng::SplitMix64 as Rng;
use crate::tensor::{DType, Tensor};

/// Training or evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Batch statistics, gradients and updates.
    Train,
    /// Running statistics, forward only.
    Eval,
}

/// Parameter gradients read back, by parameter name.
pub type Gradients = HashMap<String, Vec<f32>>;

/// What a compiled program is for: a batch size, a mode, and the nodes besides the loss and
/// logits whose values it keeps to the end (an evaluation that reads them back).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    batch: usize,
    mode: Mode,
    outputs: Vec<NodeId>,
}

impl Key {
    fn step(batch: usize, mode: Mode) -> Self {
        Key {
            batch,
            mode,
            outputs: Vec::new(),
        }
    }
}

/// A network compiled for one batch size and mode.
struct Compiled {
    model: Model,
    mode: Mode,
    program: StepProgram,
    plan: Plan,
    /// Every virtual tensor as a GPU tensor: planned ones are views of shared slots.
    values: Vec<Tensor>,
    bn_saved: Vec<SavedStats>,
    ce_saved: Vec<CeSaved>,
    pool_indices: HashMap<NodeId, Tensor>,
    correct: Option<Tensor>,
    dispatches: usize,
    /// The step as recorded the first time it ran.
    recorded: Option<Program>,
}

/// Metrics of a step or batch, in flight from the GPU.
pub struct PendingMetrics {
    staging: Option<wgpu::Buffer>,
    recycle: Arc<Mutex<Vec<wgpu::Buffer>>>,
    receiver: oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    batch: usize,
}

/// Loss and accuracy of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Correct top-1 predictions.
    pub correct: u32,
    /// Images in the batch.
    pub batch: usize,
}

impl PendingMetrics {
    /// Waits for the values (on native, by polling the device).
    pub async fn read(mut self, gpu: &Gpu) -> Result<Metrics> {
        gpu.wait_idle()?;
        let mapped = (&mut self.receiver)
            .await
            .map_err(|_| readback_error("the device was lost"))?;
        mapped.map_err(|e| readback_error(&e.to_string()))?;
        self.decode()
    }

    /// The values if the GPU has finished, without waiting (call again later otherwise).
    pub fn try_read(&mut self, gpu: &Gpu) -> Result<Option<Metrics>> {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = gpu.device().poll(wgpu::PollType::Poll);
        #[cfg(target_arch = "wasm32")]
        let _ = gpu;
        match self.receiver.try_recv() {
            Ok(Some(Ok(()))) => self.decode().map(Some),
            Ok(Some(Err(e))) => Err(readback_error(&e.to_string())),
            Ok(None) => Ok(None),
            Err(_) => Err(readback_error("the device was lost")),
        }
    }

    /// Blocking [`PendingMetrics::read`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(self, gpu: &Gpu) -> Result<Metrics> {
        pollster::block_on(self.read(gpu))
    }

    fn decode(&mut self) -> Result<Metrics> {
        let staging = self
            .staging
            .take()
            .ok_or_else(|| readback_error("already read"))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| readback_error(&e.to_string()))?;
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(&view);
        drop(view);
        staging.unmap();
        self.recycle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(staging);
        Ok(Metrics {
            loss: values[0],
            correct: values[1].round() as u32,
            batch: self.batch,
        })
    }
}

fn readback_error(reason: &str) -> Error {
    Error::Readback {
        what: "step metrics".into(),
        reason: reason.into(),
    }
}

/// The parameters, optimizer state and running statistics of a network, and its compiled
/// forms.
pub struct Executor {
    pub(crate) gpu: Gpu,
    build: Box<dyn Fn(usize) -> Result<Model>>,
    /// Parameters and state buffers by state-dict name.
    pub(crate) tensors: HashMap<String, Tensor>,
    /// Momentum buffers by parameter name (zero until the first step, which makes PyTorch's
    /// first-step rule `buf = d` the same arithmetic as `buf = μ·buf + d`).
    pub(crate) momentum: HashMap<String, Tensor>,
    /// `num_batches_tracked` by batch-norm prefix; CE blocks' trained steps by CE prefix.
    pub(crate) counters: HashMap<String, u64>,
    compiled: HashMap<Key, Compiled>,
    /// Names in the order the model declares them (parameters, then states).
    pub(crate) param_names: Vec<String>,
    pub(crate) state_names: Vec<String>,
    /// Batch-norm layer prefixes, in declaration order.
    pub(crate) bn_prefixes: Vec<String>,
    /// CE block prefixes, in declaration order.
    pub(crate) ce_prefixes: Vec<String>,
    /// SGD's hyperparameters as the update kernels read them, written before each step.
    hyper: Tensor,
    /// Staging buffers of metrics already read, for reuse.
    staging_free: Arc<Mutex<Vec<wgpu::Buffer>>>,
    /// Optimizer steps taken.
    pub steps: u64,
}

impl Executor {
    /// Creates the network's parameters and state, initialised from `seed`. `build` makes
    /// the model for a batch size; it is called once per batch size and mode used.
    pub fn new(
        gpu: &Gpu,
        build: impl Fn(usize) -> Result<Model> + 'static,
        seed: u64,
    ) -> Result<Self> {
        let template = build(1)?;
        let graph = &template.graph;
        let mut rng = Rng::new(seed);
        let mut tensors = HashMap::new();
        for p in &graph.params {
            let values = initial_values(&p.init, &p.shape, &mut rng);
            tensors.insert(p.name.clone(), Tensor::from_slice(gpu, &p.shape, &values)?);
        }
        for s in &graph.states {
            let values = initial_values(&s.init, &s.shape, &mut rng);
            tensors.insert(s.name.clone(), Tensor::from_slice(gpu, &s.shape, &values)?);
        }
        let mut momentum = HashMap::new();
        for p in &graph.params {
            momentum.insert(p.name.clone(), Tensor::zeros(gpu, &p.shape)?);
        }
        let mut counters = HashMap::new();
        for bn in &graph.batch_norms {
            counters.insert(bn.prefix.clone(), 0);
        }
        for l in &graph.ce_layers {
            counters.insert(l.prefix.clone(), 0);
        }
        log::info!(
            "cenet: {} with {} parameters",
            template.name,
            graph.parameter_count()
        );
        Ok(Executor {
            gpu: gpu.clone(),
            param_names: graph.params.iter().map(|p| p.name.clone()).collect(),
            state_names: graph.states.iter().map(|s| s.name.clone()).collect(),
            bn_prefixes: graph.batch_norms.iter().map(|b| b.prefix.clone()).collect(),
            ce_prefixes: graph.ce_layers.iter().map(|l| l.prefix.clone()).collect(),
            build: Box::new(build),
            tensors,
            momentum,
            counters,
            compiled: HashMap::new(),
            hyper: Tensor::zeros(gpu, &[4])?,
            staging_free: Arc::new(Mutex::new(Vec::new())),
            steps: 0,
        })
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Parameter names in declaration order.
    pub fn param_names(&self) -> &[String] {
        &self.param_names
    }

    /// State-buffer names (running statistics) in declaration order.
    pub fn state_names(&self) -> &[String] {
        &self.state_names
    }

    /// The tensor of a parameter or state buffer.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The momentum buffer of a parameter.
    pub fn momentum(&self, name: &str) -> Option<&Tensor> {
        self.momentum.get(name)
    }

    /// `num_batches_tracked` of a batch-norm layer, or the trained steps of a CE block.
    pub fn counter(&self, prefix: &str) -> Option<u64> {
        self.counters.get(prefix).copied()
    }

    /// Sets a counter (when loading a checkpoint).
    pub fn set_counter(&mut self, prefix: &str, value: u64) -> Result<()> {
        match self.counters.get_mut(prefix) {
            Some(c) => {
                *c = value;
                Ok(())
            }
            None => Err(Error::invalid(
                "executor",
                format!("no batch-norm or CE layer named {prefix:?}"),
            )),
        }
    }

    /// Every counter: `num_batches_tracked` by batch-norm prefix, trained steps by CE prefix.
    pub fn counters(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counters.iter().map(|(k, v)| (k.as_str(), *v))
    }

    fn compiled(&mut self, key: &Key) -> Result<&mut Compiled> {
        if !self.compiled.contains_key(key) {
            let c = self.compile(key)?;
            self.compiled.insert(key.clone(), c);
        }
        Ok(self.compiled.get_mut(key).expect("inserted above"))
    }

    fn compile(&self, key: &Key) -> Result<Compiled> {
        let (batch, mode) = (key.batch, key.mode);
        let model = (self.build)(batch)?;
        let graph = &model.graph;
        if let Some(bad) = key.outputs.iter().find(|n| n.0 >= graph.nodes.len()) {
            return Err(Error::invalid(
                "executor",
                format!(
                    "node {} asked for is not in {} ({} nodes)",
                    bad.0,
                    model.name,
                    graph.nodes.len()
                ),
            ));
        }
        let mut outputs = vec![model.loss, model.logits];
        outputs.extend(&key.outputs);
        let program = match mode {
            Mode::Train => training_program(graph, model.loss, &outputs[1..]),
            Mode::Eval => forward_program(graph, &outputs),
        };
        let plan = plan(graph, &program);
        log::debug!(
            "cenet: {} batch {batch} {mode:?}: {} instructions, planned {} bytes (live bound {})",
            model.name,
            program.instrs.len(),
            plan.planned_peak_bytes,
            plan.live_bound_bytes
        );

        let gpu = &self.gpu;
        let slots: Vec<Tensor> = plan
            .slot_bytes
            .iter()
            .map(|&b| Tensor::uninit(gpu, &[(b / 4) as usize], DType::F32, "planned buffer"))
            .collect::<Result<_>>()?;
        let input = Tensor::uninit(gpu, graph.shape(model.input), DType::F32, "input batch")?;
        let labels = Tensor::uninit(gpu, graph.shape(model.labels), DType::U32, "labels")?;
        let fused_away = Tensor::uninit(gpu, &[1], DType::F32, "value fused away")?;
        let mut values = Vec::with_capacity(program.tensors.len());
        for (v, t) in program.tensors.iter().enumerate() {
            values.push(match t.storage {
                Storage::Host if t.dtype == DType::U32 => labels.clone(),
                Storage::Host => input.clone(),
                Storage::Param(p) => self.named(&graph.params[p.0].name)?,
                // A value fused away is never read or written, so has no slot; it gets a
                // one-element stand-in that every op's shape check would reject.
                Storage::Planned => match plan.slot[v] {
                    Some(slot) => slots[slot].view(&t.shape, t.dtype)?,
                    None => fused_away.clone(),
                },
            });
        }

        let mut bn_saved = Vec::new();
        for bn in &graph.batch_norms {
            let channels = self.named(&format!("{}.weight", bn.prefix))?.len();
            bn_saved.push(SavedStats::new(gpu, channels)?);
        }
        let mut ce_saved = Vec::new();
        let mut pool_indices = HashMap::new();
        let mut correct = None;
        for (i, node) in graph.nodes.iter().enumerate() {
            match node.op {
                Op::ChannelEquilibrium { x, layer } => {
                    let state = self.ce_state(graph, layer)?;
                    ce_saved.push(CeSaved::new(gpu, &state, graph.shape(x))?);
                }
                Op::MaxPool2d { .. } => {
                    let t = Tensor::uninit(gpu, &node.shape, DType::U32, "max-pool indices")?;
                    pool_indices.insert(NodeId(i), t);
                }
                Op::CrossEntropy { .. } => {
                    correct = Some(Tensor::uninit(
                        gpu,
                        &[1],
                        DType::F32,
                        "correct predictions",
                    )?);
                }
                _ => {}
            }
        }
        Ok(Compiled {
            model,
            mode,
            program,
            plan,
            values,
            bn_saved,
            ce_saved,
            pool_indices,
            correct,
            dispatches: 0,
            recorded: None,
        })
    }

    fn named(&self, name: &str) -> Result<Tensor> {
        self.tensors.get(name).cloned().ok_or_else(|| {
            Error::invalid(
                "executor",
                format!("the model has no tensor named {name:?}"),
            )
        })
    }

    fn batch_norm(&self, graph: &Graph, layer: usize) -> Result<BatchNorm2d> {
        let l = &graph.batch_norms[layer];
        Ok(BatchNorm2d {
            weight: self.named(&graph.params[l.weight.0].name)?,
            bias: self.named(&graph.params[l.bias.0].name)?,
            running_mean: self.named(&graph.states[l.running_mean.0].name)?,
            running_var: self.named(&graph.states[l.running_var.0].name)?,
            num_batches_tracked: self.counters.get(&l.prefix).copied().unwrap_or(0),
            eps: l.eps,
            momentum: l.momentum,
        })
    }

    fn ce_state(&self, graph: &Graph, layer: usize) -> Result<CeState> {
        let l = &graph.ce_layers[layer];
        let p = |id: super::ParamId| self.named(&graph.params[id.0].name);
        let s = |id: super::StateId| self.named(&graph.states[id.0].name);
        let theta = p(l.theta)?;
        let w1 = p(l.w1)?;
        Ok(CeState {
            options: l.options,
            channels: w1.shape()[1],
            group_size: graph.states[l.running_wm.0].shape[1],
            theta,
            running_mean: s(l.running_mean)?,
            running_wm: s(l.running_wm)?,
            running_scale: s(l.running_scale)?,
            w1,
            gamma_ln: p(l.ln_weight)?,
            beta_ln: p(l.ln_bias)?,
            w2: p(l.w2)?,
            trained_steps: self.counters.get(&l.prefix).copied().unwrap_or(0),
        })
    }

    /// One training step on a batch: forward, backward, SGD update and running statistics,
    /// recorded into one command encoder and submitted once. With `metrics`, the loss and
    /// the number of correct predictions are copied out in the same submission and returned
    /// as a pending read that never blocks the caller.
    pub fn train_step(
        &mut self,
        images: &[f32],
        labels: &[u32],
        sgd: &SgdConfig,
        metrics: bool,
    ) -> Result<Option<PendingMetrics>> {
        sgd.validate()?;
        let key = Key::step(labels.len(), Mode::Train);
        let pending = self.run(&key, images, labels, &Update::Sgd(*sgd), metrics)?;
        self.steps += 1;
        for c in self.counters.values_mut() {
            *c += 1;
        }
        Ok(pending)
    }

    /// The gradient of the mean loss with respect to every parameter on a batch, read back
    /// (blocking; native only). Runs a training forward pass, so running statistics are
    /// updated as in a step, but no parameter changes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gradients(&mut self, images: &[f32], labels: &[u32]) -> Result<Gradients> {
        Ok(self.gradients_and_values(images, labels, &[])?.0)
    }

    /// Like [`Executor::gradients`], and also reads back the training-mode values of
    /// `nodes` (in order), kept alive to the end of the step as [`Executor::eval_outputs`]
    /// keeps its probes: for checking a network against a reference on the same branches
    /// of its piecewise functions.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gradients_and_values(
        &mut self,
        images: &[f32],
        labels: &[u32],
        nodes: &[NodeId],
    ) -> Result<(Gradients, Vec<Vec<f32>>)> {
        let mut sink = HashMap::new();
        for name in &self.param_names {
            let shape = self.tensors[name].shape().to_vec();
            sink.insert(
                name.clone(),
                Tensor::uninit(&self.gpu, &shape, DType::F32, "gradient")?,
            );
        }
        let key = Key {
            batch: labels.len(),
            mode: Mode::Train,
            outputs: nodes.to_vec(),
        };
        self.run(
            &key,
            images,
            labels,
            &Update::CopyGradients(sink.clone()),
            false,
        )?;
        for c in self.counters.values_mut() {
            *c += 1;
        }
        let c = self.compiled(&key)?;
        let values: Vec<Tensor> = nodes
            .iter()
            .map(|n| c.values[c.program.values[n].0].clone())
            .collect();
        let values = values
            .iter()
            .map(|t| t.to_vec(&self.gpu))
            .collect::<Result<Vec<_>>>()?;
        let grads = sink
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_vec(&self.gpu)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok((grads, values))
    }

    /// Evaluates a batch with the running statistics: loss and correct predictions.
    pub fn eval_batch(&mut self, images: &[f32], labels: &[u32]) -> Result<PendingMetrics> {
        let key = Key::step(labels.len(), Mode::Eval);
        Ok(self
            .run(&key, images, labels, &Update::None, true)?
            .expect("metrics requested"))
    }

    /// Evaluates a batch and reads back its logits [N, classes] without blocking: await it
    /// (on the web, from an async task).
    pub async fn read_logits(&mut self, images: &[f32], labels: &[u32]) -> Result<Vec<f32>> {
        let key = Key::step(labels.len(), Mode::Eval);
        self.run(&key, images, labels, &Update::None, false)?;
        let c = self.compiled(&key)?;
        let t = c.values[c.program.values[&c.model.logits].0].clone();
        t.read(&self.gpu).await
    }

    /// Evaluates a batch and reads back its logits [N, classes] (blocking; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn logits(&mut self, images: &[f32], labels: &[u32]) -> Result<Vec<f32>> {
        let mut values = self.eval_outputs(images, labels, &[])?;
        Ok(values.remove(0))
    }

    /// Evaluates a batch with the running statistics and reads back the logits followed by
    /// the values of `nodes` (blocking; native only). The nodes are those of the model the
    /// executor builds, e.g. probes a caller's build function appended to the graph. Their
    /// values are kept alive to the end of the pass, which the memory plan otherwise reuses;
    /// each list of nodes is compiled once per batch size.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn eval_outputs(
        &mut self,
        images: &[f32],
        labels: &[u32],
        nodes: &[NodeId],
    ) -> Result<Vec<Vec<f32>>> {
        let key = Key {
            batch: labels.len(),
            mode: Mode::Eval,
            outputs: nodes.to_vec(),
        };
        self.run(&key, images, labels, &Update::None, false)?;
        let c = self.compiled(&key)?;
        let tensors: Vec<Tensor> = std::iter::once(c.model.logits)
            .chain(nodes.iter().copied())
            .map(|n| c.values[c.program.values[&n].0].clone())
            .collect();
        tensors.iter().map(|t| t.to_vec(&self.gpu)).collect()
    }

    /// Runs the recorded training step of `batch` (after it has run once) dispatch by
    /// dispatch and returns where its time goes, by kernel (see [`Program::profile`]).
    /// The step runs for real: parameters are updated as by one more step.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_train_step(&self, batch: usize) -> Result<Vec<crate::kernels::KernelTime>> {
        let key = Key::step(batch, Mode::Train);
        let program = self
            .compiled
            .get(&key)
            .and_then(|c| c.recorded.as_ref())
            .ok_or_else(|| {
                Error::invalid(
                    "profile",
                    format!("no training step of batch {batch} has run yet"),
                )
            })?;
        program.profile(&self.gpu)
    }

    /// Dispatches per recorded step of a batch size and mode (after it has run once).
    pub fn dispatches_per_step(&self, batch: usize, mode: Mode) -> Option<usize> {
        self.compiled
            .get(&Key::step(batch, mode))
            .map(|c| c.dispatches)
    }

    /// (planned peak, live bound) bytes of a compiled batch size and mode.
    pub fn memory(&self, batch: usize, mode: Mode) -> Option<(u64, u64)> {
        self.compiled
            .get(&Key::step(batch, mode))
            .map(|c| (c.plan.planned_peak_bytes, c.plan.live_bound_bytes))
    }

    fn run(
        &mut self,
        key: &Key,
        images: &[f32],
        labels: &[u32],
        update: &Update,
        metrics: bool,
    ) -> Result<Option<PendingMetrics>> {
        let (batch, mode) = (key.batch, key.mode);
        if batch == 0 {
            return Err(Error::invalid(
                "executor",
                "a batch needs at least one image",
            ));
        }
        if mode == Mode::Eval {
            for (prefix, &steps) in &self.counters {
                if steps == 0
                    && self
                        .state_names
                        .iter()
                        .any(|n| n == &format!("{prefix}.AR.running_scale"))
                {
                    return Err(Error::invalid(
                        "ce",
                        format!(
                            "{prefix}: evaluation needs running statistics, but this block \
                             never trained (running_scale = 0)"
                        ),
                    ));
                }
            }
        }
        self.compiled(key)?;
        let mut compiled = self.compiled.remove(key).expect("compiled above");
        let result = self.record_and_submit(&mut compiled, images, labels, update, metrics);
        if let Ok((_, dispatches)) = &result {
            compiled.dispatches = *dispatches;
        }
        self.compiled.insert(key.clone(), compiled);
        result.map(|(p, _)| p)
    }

    fn record_and_submit(
        &self,
        c: &mut Compiled,
        images: &[f32],
        labels: &[u32],
        update: &Update,
        metrics: bool,
    ) -> Result<(Option<PendingMetrics>, usize)> {
        let graph = &c.model.graph;
        let input = &c.values[c.program.values[&c.model.input].0];
        if images.len() != input.len() {
            return Err(Error::DataLength {
                what: "input images".into(),
                got: images.len(),
                expected: input.len(),
                shape: input.shape().to_vec(),
            });
        }
        let classes = graph.shape(c.model.logits)[1];
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(Error::invalid(
                "cross_entropy",
                format!("label {l} of image {i} is not below {classes} classes"),
            ));
        }
        input.write(&self.gpu, images)?;
        let label_tensor = &c.values[c.program.values[&c.model.labels].0];
        self.gpu
            .queue()
            .write_buffer(label_tensor.buffer(), 0, bytemuck::cast_slice(labels));

        if let Update::Sgd(sgd) = update {
            self.gpu.queue().write_buffer(
                self.hyper.buffer(),
                0,
                bytemuck::cast_slice(&sgd.to_hyper()),
            );
        }

        // A step is recorded once per compiled form and replayed: its bind groups, parameter
        // buffers and scratch tensors are made on the first step only. Gradient readback
        // records afresh, since it copies into tensors of its own.
        let fresh;
        let program = match update {
            Update::CopyGradients(_) => {
                fresh = self.record_program(c, update)?;
                &fresh
            }
            Update::Sgd(_) | Update::None => {
                if c.recorded.is_none() {
                    c.recorded = Some(self.record_program(c, update)?);
                }
                c.recorded.as_ref().expect("recorded above")
            }
        };

        let staging = if metrics {
            Some(self.metrics_buffer())
        } else {
            None
        };
        let loss = &c.values[c.program.values[&c.model.loss].0];
        let commands = self.gpu.scoped("encoding a step", || {
            let mut encoder =
                self.gpu
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cenet step"),
                    });
            program.encode(&mut encoder);
            if let (Some(staging), Some(correct)) = (&staging, &c.correct) {
                encoder.copy_buffer_to_buffer(loss.buffer(), 0, staging, 0, 4);
                encoder.copy_buffer_to_buffer(correct.buffer(), 0, staging, 4, 4);
            }
            encoder.finish()
        })?;
        let dispatches = program.dispatch_count();
        self.gpu.scoped("submitting a step", || {
            self.gpu.queue().submit([commands]);
        })?;
        let pending = staging.map(|staging| {
            let (sender, receiver) = oneshot::channel();
            staging.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = sender.send(r);
            });
            PendingMetrics {
                staging: Some(staging),
                receiver,
                batch: labels.len(),
                recycle: self.staging_free.clone(),
            }
        });
        Ok((pending, dispatches))
    }

    fn record_program(&self, c: &mut Compiled, update: &Update) -> Result<Program> {
        let mut rec = Recorder::new(&self.gpu);
        // CE's saved buffers note which pass filled them, so they are lent out mutably.
        let mut ce_saved = std::mem::take(&mut c.ce_saved);
        let recorded = c
            .program
            .instrs
            .iter()
            .try_for_each(|instr| self.record(&mut rec, c, &mut ce_saved, instr, update));
        c.ce_saved = ce_saved;
        recorded?;
        Ok(rec.into_program())
    }

    /// An 8-byte staging buffer for a step's loss and correct count, reused once read.
    fn metrics_buffer(&self) -> wgpu::Buffer {
        let reused = self
            .staging_free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        reused.unwrap_or_else(|| {
            self.gpu.note_allocation();
            self.gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("cenet metrics"),
                size: 8,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    fn record(
        &self,
        rec: &mut Recorder,
        c: &Compiled,
        ce_saved: &mut [CeSaved],
        instr: &Instr,
        update: &Update,
    ) -> Result<()> {
        let graph = &c.model.graph;
        let value = |n: NodeId| -> &Tensor { &c.values[c.program.values[&n].0] };
        let t = |v: VId| -> &Tensor { &c.values[v.0] };
        match instr {
            Instr::Forward { node, out } => {
                let y = t(*out);
                match &graph.node(*node).op {
                    Op::Input | Op::Labels | Op::Param(_) => {}
                    Op::Conv2d {
                        x,
                        weight,
                        bias,
                        geometry,
                    } => {
                        conv::forward_into(
                            rec,
                            geometry,
                            value(*x),
                            value(*weight),
                            bias.map(value),
                            y,
                        )?;
                    }
                    Op::BatchNorm { x, layer } => {
                        if c.mode == Mode::Train {
                            let mut bn = self.batch_norm(graph, *layer)?;
                            batchnorm::forward_train_into(
                                rec,
                                &mut bn,
                                value(*x),
                                y,
                                &c.bn_saved[*layer],
                            )?;
                        } else {
                            let bn = self.batch_norm(graph, *layer)?;
                            batchnorm::forward_eval_into(rec, &bn, value(*x), y)?;
                        }
                    }
                    Op::ChannelEquilibrium { x, layer } => {
                        let mut state = self.ce_state(graph, *layer)?;
                        let saved = &mut ce_saved[*layer];
                        if c.mode == Mode::Train {
                            ce::ce_forward_train_into(rec, &mut state, value(*x), y, saved)?;
                        } else {
                            ce::ce_forward_eval_into(rec, &state, value(*x), y, saved)?;
                        }
                    }
                    Op::Relu(x) => activation::forward_into(rec, Activation::Relu, value(*x), y)?,
                    Op::Relu6(x) => activation::forward_into(rec, Activation::Relu6, value(*x), y)?,
                    Op::Add(a, b) => activation::add_into(rec, value(*a), value(*b), y)?,
                    Op::GlobalAvgPool(x) => pool::global_avg_pool_forward_into(rec, value(*x), y)?,
                    Op::MaxPool2d { x, geometry } => {
                        pool::max_pool2d_forward_into(
                            rec,
                            value(*x),
                            geometry,
                            y,
                            &c.pool_indices[node],
                        )?;
                    }
                    Op::Linear { x, weight, bias } => {
                        linear::forward_into(rec, value(*x), value(*weight), bias.map(value), y)?;
                    }
                    Op::CrossEntropy {
                        logits,
                        labels,
                        smoothing,
                    } => {
                        let correct = c.correct.as_ref().expect("allocated with the loss");
                        loss::forward_into(
                            rec,
                            value(*logits),
                            value(*labels),
                            *smoothing,
                            y,
                            correct,
                        )?;
                    }
                }
            }
            Instr::FusedForward {
                act,
                add,
                norm,
                out,
            } => {
                let activation = match graph.node(*act).op {
                    Op::Relu(_) => Activation::Relu,
                    _ => Activation::Relu6,
                };
                let operands = |add: NodeId| match graph.node(add).op {
                    Op::Add(a, b) => (a, b),
                    _ => unreachable!("fused sums are Add nodes"),
                };
                let Some(norm) = norm else {
                    let (a, b) = operands(add.expect("a fused sum or batch norm"));
                    return activation::add_act_into(
                        rec,
                        Some(activation),
                        value(a),
                        value(b),
                        t(*out),
                    );
                };
                let Op::BatchNorm { x, layer } = graph.node(*norm).op else {
                    unreachable!("fused norms are BatchNorm nodes");
                };
                let residual = add.map(|add| {
                    let (a, b) = operands(add);
                    value(if a == *norm { b } else { a })
                });
                let epilogue = batchnorm::Epilogue {
                    residual,
                    activation: Some(activation),
                };
                let mut bn = self.batch_norm(graph, layer)?;
                if c.mode == Mode::Train {
                    let saved = &c.bn_saved[layer];
                    batchnorm::forward_train_fused_into(
                        rec,
                        &mut bn,
                        value(x),
                        t(*out),
                        saved,
                        epilogue,
                    )?;
                } else {
                    batchnorm::forward_eval_fused_into(rec, &bn, value(x), t(*out), epilogue)?;
                }
            }
            Instr::Backward { node, dy, grads } => {
                let dy = dy.map(t);
                let g = |i: usize| grads.get(i).copied().flatten().map(t);
                match &graph.node(*node).op {
                    Op::Input | Op::Labels | Op::Param(_) | Op::Add(..) => {}
                    Op::Conv2d {
                        x,
                        weight,
                        geometry,
                        ..
                    } => {
                        let dy = dy.expect("conv is not the loss");
                        if let Some(dx) = g(0) {
                            conv::backward_data_into(rec, geometry, dy, value(*weight), dx)?;
                        }
                        if let Some(dw) = g(1) {
                            conv::backward_weight_into(rec, geometry, value(*x), dy, dw)?;
                        }
                        if let Some(db) = g(2) {
                            conv::backward_bias_into(rec, dy, db)?;
                        }
                    }
                    Op::BatchNorm { x, layer } => {
                        let dy = dy.expect("batch norm is not the loss");
                        let bn = self.batch_norm(graph, *layer)?;
                        let x = value(*x);
                        let channels = [x.shape()[1]];
                        let out = BatchNormGrads {
                            dx: match g(0) {
                                Some(dx) => dx.clone(),
                                None => {
                                    rec.scratch(x.shape(), "unused batchnorm2d input gradient")?
                                }
                            },
                            dweight: g(1)
                                .cloned()
                                .map_or_else(|| rec.scratch(&channels, "unused"), Ok)?,
                            dbias: g(2)
                                .cloned()
                                .map_or_else(|| rec.scratch(&channels, "unused"), Ok)?,
                        };
                        batchnorm::backward_into(rec, &bn, x, dy, &c.bn_saved[*layer], &out)?;
                    }
                    Op::ChannelEquilibrium { x, layer } => {
                        let dy = dy.expect("CE is not the loss");
                        let state = self.ce_state(graph, *layer)?;
                        let x = value(*x);
                        let mut targets = Vec::with_capacity(6);
                        for (i, like) in [
                            x,
                            &state.theta,
                            &state.w1,
                            &state.gamma_ln,
                            &state.beta_ln,
                            &state.w2,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            targets.push(match g(i) {
                                Some(t) => t.clone(),
                                None => rec.scratch(like.shape(), "unused CE gradient")?,
                            });
                        }
                        let mut it = targets.into_iter();
                        let out = CeGrads {
                            x: it.next().expect("six targets"),
                            theta: it.next().expect("six targets"),
                            w1: it.next().expect("six targets"),
                            gamma_ln: it.next().expect("six targets"),
                            beta_ln: it.next().expect("six targets"),
                            w2: it.next().expect("six targets"),
                        };
                        ce::ce_backward_into(rec, &state, x, dy, &ce_saved[*layer], &out)?;
                    }
                    Op::Relu(_) => {
                        if let Some(dx) = g(0) {
                            activation::backward_into(
                                rec,
                                Activation::Relu,
                                value(*node),
                                dy.expect("relu"),
                                dx,
                            )?;
                        }
                    }
                    Op::Relu6(_) => {
                        if let Some(dx) = g(0) {
                            activation::backward_into(
                                rec,
                                Activation::Relu6,
                                value(*node),
                                dy.expect("relu6"),
                                dx,
                            )?;
                        }
                    }
                    Op::GlobalAvgPool(_) => {
                        if let Some(dx) = g(0) {
                            pool::global_avg_pool_backward_into(rec, dy.expect("pool"), dx)?;
                        }
                    }
                    Op::MaxPool2d { geometry, .. } => {
                        if let Some(dx) = g(0) {
                            pool::max_pool2d_backward_into(
                                rec,
                                dy.expect("pool"),
                                &c.pool_indices[node],
                                geometry,
                                dx,
                            )?;
                        }
                    }
                    Op::Linear { x, weight, .. } => {
                        let dw = g(1)
                            .cloned()
                            .map_or_else(|| rec.scratch(value(*weight).shape(), "unused"), Ok)?;
                        linear::backward_into(
                            rec,
                            value(*x),
                            value(*weight),
                            dy.expect("linear"),
                            g(0),
                            &dw,
                            g(2),
                        )?;
                    }
                    Op::CrossEntropy {
                        logits,
                        labels,
                        smoothing,
                    } => {
                        if let Some(dlogits) = g(0) {
                            loss::backward_into(
                                rec,
                                value(*logits),
                                value(*labels),
                                *smoothing,
                                dlogits,
                            )?;
                        }
                    }
                }
            }
            Instr::Accumulate { a, b, out } => activation::add_into(rec, t(*a), t(*b), t(*out))?,
            Instr::Update { param, grad } => {
                let name = &graph.params[param.0].name;
                match update {
                    Update::Sgd(_) => {}
                    Update::CopyGradients(sink) => return rec.copy(t(*grad), &sink[name]),
                    Update::None => return Ok(()),
                }
                // Momentum buffers start at zero, so the first step's `buf = d` is `μ·0 + d`;
                // the hyperparameters are read from `hyper`, written before each submission.
                let param = self.named(name)?;
                sgd::sgd_step_scheduled_into(
                    rec,
                    &self.hyper,
                    false,
                    &param,
                    t(*grad),
                    &self.momentum[name],
                )?;
            }
        }
        Ok(())
    }
}

/// What a step does with each parameter's complete gradient.
enum Update {
    /// An SGD step.
    Sgd(SgdConfig),
    /// Copy it into these tensors, by parameter name.
    // Only the blocking `gradients` constructs it, and that does not exist on the web.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    CopyGradients(HashMap<String, Tensor>),
    /// Nothing (evaluation).
    None,
}

/// Initial values of a parameter or state buffer.
pub fn initial_values(init: &Init, shape: &[usize], rng: &mut Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    match init {
        Init::Constant(v) => vec![*v; n],
        Init::Normal { std } => (0..n)
            .map(|_| (rng.normal() * *std as f64) as f32)
            .collect(),
        Init::Uniform { bound } => (0..n)
            .map(|_| rng.uniform(-*bound as f64, *bound as f64) as f32)
            .collect(),
        Init::Identity => {
            let d = shape.last().copied().unwrap_or(1);
            (0..n)
                .map(|i| if (i / d) % d == i % d { 1.0 } else { 0.0 })
                .collect()
        }
    }
}
