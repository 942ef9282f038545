//! The runtime: adapter choice, limits, error scopes, uploads and readbacks, the buffer pool,
//! the pipeline cache and grids past one dimension's workgroup limit.

mod common;

use cenet::gpu::{AdapterChoice, AdapterSummary};
use cenet::kernels::activation;
use cenet::{DType, Error, Gpu, Tensor};
use common::*;

#[test]
fn no_matching_adapter_says_what_to_install() {
    let choice = AdapterChoice {
        backend: None,
        name: Some("no-such-adapter-anywhere".into()),
        tuning: None,
        search: Default::default(),
    };
    let err = pollster::block_on(Gpu::new_async(choice)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoAdapter { .. }), "{text}");
    assert!(
        text.contains("no-such-adapter-anywhere") && text.contains("mesa-vulkan-drivers"),
        "{text}"
    );
}

#[test]
fn a_software_opengl_adapter_comes_with_advice_to_install_the_vulkan_driver() {
    let summary = |backend, device_type| AdapterSummary {
        name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
        backend,
        device_type,
        driver: String::new(),
    };
    let gl = summary(wgpu::Backend::Gl, wgpu::DeviceType::Cpu).advice();
    assert!(
        gl.is_some_and(|a| a.contains("mesa-vulkan-drivers")),
        "{gl:?}"
    );
    for (backend, device_type) in [
        (wgpu::Backend::Vulkan, wgpu::DeviceType::Cpu),
        (wgpu::Backend::Gl, wgpu::DeviceType::IntegratedGpu),
    ] {
        assert_eq!(summary(backend, device_type).advice(), None);
    }
}

#[test]
fn upload_and_readback_round_trip_f32_and_u32() {
    let values: Vec<f32> = (0..1001).map(|i| i as f32 * 0.25 - 7.0).collect();
    let t = Tensor::from_slice(gpu(), &[7, 11, 13], &values).unwrap();
    assert_eq!(t.to_vec(gpu()).unwrap(), values);
    assert_eq!(pollster::block_on(t.read(gpu())).unwrap(), values);

    let labels: Vec<u32> = (0..37).map(|i| i * 3).collect();
    let l = Tensor::from_u32(gpu(), &[37], &labels).unwrap();
    assert_eq!(l.dtype(), DType::U32);
    assert_eq!(l.to_vec_u32(gpu()).unwrap(), labels);
}

#[test]
fn upload_of_wrong_length_names_the_shape() {
    let err = Tensor::from_slice(gpu(), &[2, 3], &[1.0; 5])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("5") && err.contains("[2, 3]") && err.contains('6'),
        "{err}"
    );
}

#[test]
fn tensor_over_the_binding_limit_is_an_error_naming_it() {
    let limit = gpu().max_binding_bytes();
    let elements = (limit / 4 + 1) as usize;
    let err = Tensor::uninit(gpu(), &[elements], DType::F32, "activations").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::TooLarge { .. }), "{text}");
    assert!(
        text.contains("activations") && text.contains(&limit.to_string()),
        "{text}"
    );
}

#[test]
fn validation_errors_become_errors_not_panics() {
    let device = gpu().device().clone();
    let result = gpu().scoped("creating a bad buffer", || {
        // MAP_READ may only be combined with COPY_DST.
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bad"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    });
    let err = result.unwrap_err().to_string();
    assert!(err.contains("creating a bad buffer"), "{err}");
}

#[test]
fn pipelines_compile_once_per_device() {
    let x = upload(&[4], &[1.0, -1.0, 2.0, -2.0]);
    activation::relu(gpu(), &x).unwrap();
    let compiled = gpu().pipelines_compiled();
    activation::relu(gpu(), &x).unwrap();
    assert_eq!(gpu().pipelines_compiled(), compiled);
}

#[test]
fn dropped_tensors_return_their_buffers_to_the_pool() {
    // A size no other test uses, so parallel tests cannot take it in between.
    let shape = [3, 5, 7, 11, 2];
    let before = gpu().pooled_bytes();
    let t = Tensor::uninit(gpu(), &shape, DType::F32, "pooled").unwrap();
    drop(t);
    let bytes = shape.iter().product::<usize>() as u64 * 4;
    assert!(gpu().pooled_bytes() >= before + bytes);
}

#[test]
fn dispatches_past_one_dimension_limit_cover_every_element() {
    let max = gpu().limits().max_compute_workgroups_per_dimension as usize;
    // One more workgroup than a single dimension allows, plus a partial one.
    let n = 256 * max + 300;
    let values: Vec<f32> = (0..n)
        .map(|i| if i % 2 == 0 { -1.0 } else { (i % 1000) as f32 })
        .collect();
    let x = Tensor::from_slice(gpu(), &[n], &values).unwrap();
    let y = activation::relu(gpu(), &x).unwrap().to_vec(gpu()).unwrap();
    let wrong = y
        .iter()
        .zip(&values)
        .position(|(got, v)| *got != v.max(0.0));
    assert_eq!(wrong, None, "first wrong element");
}

#[test]
fn a_tensor_dropped_before_its_recorded_work_is_submitted_keeps_its_contents() {
    use cenet::kernels::Recorder;
    // A size no other test uses.
    let shape = [7, 3, 13];
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32 - 100.0).collect();
    let y = Tensor::uninit(gpu(), &shape, DType::F32, "output").unwrap();
    let mut rec = Recorder::new(gpu());
    {
        let x = Tensor::from_slice(gpu(), &shape, &values).unwrap();
        activation::forward_into(&mut rec, activation::Activation::Relu, &x, &y).unwrap();
    }
    // The dropped input's buffer must not be handed out (and overwritten) before submission.
    let other = Tensor::from_slice(gpu(), &shape, &vec![-5.0; n]).unwrap();
    rec.submit().unwrap();
    let want: Vec<f32> = values.iter().map(|v| v.max(0.0)).collect();
    assert_eq!(y.to_vec(gpu()).unwrap(), want);
    drop(other);
}
