//! An executor's tensors as PyTorch state dicts: the model's weights and running statistics
//! under PyTorch's keys (loadable with `load_state_dict(strict=True)`), and the optimizer's
//! momentum buffers and counters for exact resumption.

use super::exec::Executor;
use crate::checkpoint::{ElementType, StateDict, TensorSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl Executor {
    /// Names, types and shapes of the model's state dict, as PyTorch lays it out.
    pub fn state_dict_specs(&self) -> Vec<TensorSpec> {
        let mut specs: Vec<TensorSpec> = self
            .param_names
            .iter()
            .chain(&self.state_names)
            .map(|n| TensorSpec::f32(n.clone(), self.tensors[n].shape()))
            .collect();
        for prefix in &self.bn_prefixes {
            specs.push(TensorSpec::i64_scalar(format!(
                "{prefix}.num_batches_tracked"
            )));
        }
        specs
    }

    /// The model's state dict (weights, running statistics, `num_batches_tracked`), read
    /// back from the GPU.
    pub async fn read_state_dict(&self) -> Result<StateDict> {
        let mut dict = StateDict::new();
        for name in self.param_names.iter().chain(&self.state_names) {
            let t = &self.tensors[name];
            dict.insert_f32(name.clone(), t.shape(), t.read(&self.gpu).await?)?;
        }
        for prefix in &self.bn_prefixes {
            let count = self.counters.get(prefix).copied().unwrap_or(0);
            dict.insert_i64_scalar(format!("{prefix}.num_batches_tracked"), count as i64)?;
        }
        dict.set_metadata("format", "pt");
        Ok(dict)
    }

    /// Blocking [`Executor::read_state_dict`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_dict(&self) -> Result<StateDict> {
        pollster::block_on(self.read_state_dict())
    }

    /// Loads weights and running statistics. Strict, as PyTorch's `load_state_dict`: every
    /// missing, unexpected or mis-shaped tensor is listed in one error, and nothing is
    /// changed unless all of them fit.
    pub fn load_state_dict(&mut self, dict: &StateDict) -> Result<()> {
        dict.expect(&self.state_dict_specs())?;
        for name in self.param_names.iter().chain(&self.state_names) {
            let (_, values) = dict.get_f32(name)?;
            self.tensors[name].write(&self.gpu, values)?;
        }
        for prefix in &self.bn_prefixes {
            let count = dict.get_i64_scalar(&format!("{prefix}.num_batches_tracked"))?;
            self.counters.insert(prefix.clone(), count.max(0) as u64);
        }
        // A CE block has trained once its running scale is set; PyTorch keeps no counter.
        for prefix in &self.ce_prefixes {
            let (_, scale) = dict.get_f32(&format!("{prefix}.AR.running_scale"))?;
            let trained = scale.first().is_some_and(|&s| s != 0.0);
            self.counters.insert(prefix.clone(), u64::from(trained));
        }
        Ok(())
    }

    /// The optimizer's state: one momentum buffer per parameter, under the parameter's name,
    /// and the step count.
    pub async fn read_optimizer_state(&self) -> Result<StateDict> {
        let mut dict = StateDict::new();
        for name in &self.param_names {
            let t = &self.momentum[name];
            dict.insert_f32(name.clone(), t.shape(), t.read(&self.gpu).await?)?;
        }
        dict.insert_i64_scalar("step", self.steps as i64)?;
        for prefix in &self.ce_prefixes {
            let steps = self.counters.get(prefix).copied().unwrap_or(0);
            dict.insert_i64_scalar(format!("ce_trained_steps.{prefix}"), steps as i64)?;
        }
        Ok(dict)
    }

    /// Blocking [`Executor::read_optimizer_state`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn optimizer_state(&self) -> Result<StateDict> {
        pollster::block_on(self.read_optimizer_state())
    }

    /// Restores what [`Executor::read_optimizer_state`] saved.
    pub fn load_optimizer_state(&mut self, dict: &StateDict) -> Result<()> {
        let mut specs: Vec<TensorSpec> = self
            .param_names
            .iter()
            .map(|n| TensorSpec::f32(n.clone(), self.momentum[n].shape()))
            .collect();
        specs.push(TensorSpec::new("step", ElementType::I64, &[]));
        for prefix in &self.ce_prefixes {
            specs.push(TensorSpec::i64_scalar(format!("ce_trained_steps.{prefix}")));
        }
        dict.expect(&specs)?;
        for name in &self.param_names {
            let (_, values) = dict.get_f32(name)?;
            self.momentum[name].write(&self.gpu, values)?;
        }
        self.steps = dict.get_i64_scalar("step")?.max(0) as u64;
        for prefix in &self.ce_prefixes {
            let steps = dict.get_i64_scalar(&format!("ce_trained_steps.{prefix}"))?;
            self.counters.insert(prefix.clone(), steps.max(0) as u64);
        }
        Ok(())
    }

    /// Writes `values` into the parameter or state buffer `name`.
    pub fn set_tensor(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let t: &Tensor = self.tensors.get(name).ok_or_else(|| {
            Error::invalid(
                "executor",
                format!("the model has no tensor named {name:?}"),
            )
        })?;
        t.write(&self.gpu, values)
    }
}
