//! 2-D convolution (dense and depthwise) against float64 references: forward, input, weight
//! and bias gradients, on odd and round shapes, strides 1 to 3, paddings 0 to 2, kernels 1×1
//! to 5×5; the references against finite differences; and the errors for bad inputs.

mod common;

use cenet::kernels::conv::{self, Conv2d, GemmKernel, Pass};
use cenet::kernels::Recorder;
use cenet::Tensor;
use common::reference::conv as reference;
use common::*;

/// One convolution to test: shapes, hyperparameters and whether it has a bias.
struct Case {
    input: [usize; 4],
    weight: [usize; 4],
    conv: Conv2d,
    bias: bool,
}

/// A dense convolution of `input` to `out_channels` channels with a square `kernel`.
fn dense(input: [usize; 4], out_channels: usize, kernel: usize, conv: Conv2d, bias: bool) -> Case {
    Case {
        input,
        weight: [out_channels, input[1], kernel, kernel],
        conv,
        bias,
    }
}

/// A dense convolution with per-axis stride and padding.
fn rect(stride: [usize; 2], padding: [usize; 2]) -> Conv2d {
    Conv2d {
        stride,
        padding,
        groups: 1,
    }
}

/// A depthwise convolution of `input` with a square `kernel`.
fn depthwise(input: [usize; 4], kernel: usize, stride: usize, padding: usize, bias: bool) -> Case {
    let channels = input[1];
    Case {
        input,
        weight: [channels, 1, kernel, kernel],
        conv: Conv2d::depthwise(channels, stride, padding),
        bias,
    }
}

/// Runs the forward pass and all gradients of `case` under each kernel tuning and compares
/// each with the float64 reference under TOL_REDUCTION: every output is a sum of f32 products
/// (up to a few thousand terms here), accumulated in f32.
fn check_against_reference(case: &Case, seed: u64) {
    let Case {
        input: xs,
        weight: ws,
        conv,
        bias: with_bias,
    } = *case;
    let ys = reference::conv2d_output_shape(xs, ws, &conv);
    let mut rng = Rng::new(seed);
    let x = through_f32(&rng.normal(xs.iter().product()));
    let w = through_f32(&rng.normal(ws.iter().product()));
    let b = through_f32(&rng.normal(ws[0]));
    let dy = through_f32(&rng.normal(ys.iter().product()));
    let bias = with_bias.then_some(&b[..]);
    let want_y = reference::conv2d_forward(&x, xs, &w, ws, bias, &conv);
    let want_dx = reference::conv2d_backward_data(&dy, &w, ws, xs, &conv);
    let want_dw = reference::conv2d_backward_weight(&x, xs, &dy, ws, &conv);
    let want_db = reference::conv2d_backward_bias(&dy, ys);
    let want_y_unbiased = reference::conv2d_forward(&x, xs, &w, ws, None, &conv);

    for (tuning, gpu) in gpus_of_each_tuning() {
        let name = format!("input {xs:?} weight {ws:?} {conv:?} bias {with_bias} {tuning:?}");
        let up = |shape: &[usize], values: &[f64]| upload_to(gpu, shape, values);
        let (xt, wt, bt, dyt) = (up(&xs, &x), up(&ws, &w), up(&[ws[0]], &b), up(&ys, &dy));

        let y = conv::forward(gpu, &conv, &xt, &wt, with_bias.then_some(&bt)).unwrap();
        assert_eq!(y.shape(), ys, "{name}: output shape");
        let got = download_from(gpu, &y);
        assert_close(&format!("{name} forward"), &got, &want_y, TOL_REDUCTION);

        let grads = conv::backward(gpu, &conv, &xt, &wt, &dyt, with_bias).unwrap();
        let got = download_from(gpu, &grads.input);
        assert_close(
            &format!("{name} input gradient"),
            &got,
            &want_dx,
            TOL_REDUCTION,
        );
        let got = download_from(gpu, &grads.weight);
        assert_close(
            &format!("{name} weight gradient"),
            &got,
            &want_dw,
            TOL_REDUCTION,
        );
        assert_eq!(
            grads.bias.is_some(),
            with_bias,
            "{name}: bias gradient present"
        );
        if let Some(db) = grads.bias {
            let got = download_from(gpu, &db);
            assert_close(
                &format!("{name} bias gradient"),
                &got,
                &want_db,
                TOL_REDUCTION,
            );
        }

        // Every kernel family that fits a pass (forward without the bias), as a kernel
        // search may choose it, whatever the tuning's default.
        for (pass, inputs, shape, want) in [
            (Pass::Forward, [&xt, &wt], &ys[..], &want_y_unbiased),
            (Pass::BackwardData, [&dyt, &wt], &xs[..], &want_dx),
            (Pass::BackwardWeight, [&xt, &dyt], &ws[..], &want_dw),
        ] {
            for kernel in conv::kernels_for(gpu, pass, &conv, &xs, &ws)
                .unwrap()
                .fitting
            {
                let out = conv::run_with_kernel(gpu, pass, kernel, &conv, inputs, shape).unwrap();
                let got = download_from(gpu, &out);
                let what = format!("{name} {} with the {} kernel", pass.name(), kernel.name());
                assert_close(&what, &got, want, TOL_REDUCTION);
            }
        }
    }
}

#[test]
fn conv2d_3x3_matches_reference_for_stride_1_and_padding_0_to_2() {
    let cases = [
        dense([1, 3, 7, 5], 4, 3, Conv2d::new(1, 1), true),
        dense([3, 3, 7, 5], 5, 3, Conv2d::new(1, 0), false),
        dense([3, 2, 7, 5], 3, 3, Conv2d::new(1, 2), true),
    ];
    for (i, case) in cases.iter().enumerate() {
        check_against_reference(case, 10 + i as u64);
    }
}

#[test]
fn conv2d_matches_reference_for_strides_2_and_3() {
    let cases = [
        dense([3, 3, 7, 5], 5, 3, Conv2d::new(2, 1), false),
        dense([1, 4, 8, 8], 6, 3, Conv2d::new(2, 1), true),
        // The 1×1 projection of a ResNet shortcut.
        dense([3, 4, 8, 8], 8, 1, Conv2d::new(2, 0), false),
        dense([3, 3, 7, 5], 2, 5, Conv2d::new(2, 0), true),
        dense([1, 3, 9, 9], 4, 3, Conv2d::new(2, 2), false),
        // Stride 3 with a 5×5 kernel: nine input phases, each reached by its own taps.
        dense([3, 2, 9, 8], 3, 5, Conv2d::new(3, 2), true),
    ];
    for (i, case) in cases.iter().enumerate() {
        check_against_reference(case, 20 + i as u64);
    }
}

#[test]
fn conv2d_matches_reference_for_1x1_and_5x5_kernels() {
    let cases = [
        dense([3, 3, 7, 5], 4, 1, Conv2d::new(1, 0), true),
        dense([1, 16, 5, 7], 16, 1, Conv2d::new(1, 0), false),
        dense([1, 4, 7, 5], 6, 5, Conv2d::new(1, 2), true),
        dense([3, 3, 7, 5], 5, 5, Conv2d::new(1, 1), false),
    ];
    for (i, case) in cases.iter().enumerate() {
        check_against_reference(case, 30 + i as u64);
    }
}

#[test]
fn conv2d_with_rectangular_stride_and_padding_matches_reference() {
    let conv = rect([2, 1], [0, 1]);
    check_against_reference(&dense([3, 3, 7, 5], 4, 3, conv, true), 40);
}

#[test]
fn conv2d_loading_whole_rows_as_vec4s_matches_reference() {
    // Stride 1 along the width, output rows of a multiple of 8 pixels and input rows of a
    // multiple of 4: the row-block and narrow kernels load B as runs of rows (SEGMENTS),
    // starting at every offset within a vec4 and running past both ends of a row. The
    // weight gradients (output rows of a multiple of 4) load B 4 values of K at a time,
    // likewise as runs.
    let cases = [
        // One run per row, padding on both sides; the input gradient likewise.
        dense([2, 3, 8, 8], 5, 3, Conv2d::new(1, 1), true),
        // A 5×5 kernel with padding 2: runs start 2 before to 2 after the pixel.
        dense([2, 4, 6, 16], 3, 5, Conv2d::new(1, 2), false),
        // Padding 3 on 12-wide rows: 16 output columns, runs from 3 before a row's start
        // (the input gradient's rows of 12 take the gathering path).
        dense([1, 3, 5, 12], 4, 3, rect([1, 1], [1, 3]), true),
        // Stride 2 down the height only, no padding there: two phases of rows, each loaded
        // as runs, the input gradient's reaching past the last row of dy.
        dense([2, 3, 7, 8], 4, 3, rect([2, 1], [0, 1]), false),
        // Stride 2 along the width: the input gradient's phases (rows of 8 pixels) still
        // read runs of dy, from one before to one past each pixel.
        dense([2, 3, 6, 16], 4, 3, Conv2d::new(2, 1), false),
        // The forward product with stride 2 loads every other element of 5 vec4s: rows of 16
        // output pixels, so that the second 8 start inside the row rather than in padding.
        dense([1, 3, 4, 32], 5, 3, Conv2d::new(2, 1), false),
        dense([1, 5, 4, 32], 3, 1, Conv2d::new(2, 0), false),
        // 3 taps a kernel row, taken 3 at a time from 4 vec4s, over K = 180 (forward) and
        // 216 (input gradient): more than one chunk of staged A in the row-block kernels.
        dense([1, 20, 4, 8], 24, 3, Conv2d::new(1, 1), false),
        dense([2, 5, 4, 8], 6, 1, Conv2d::new(1, 0), true),
        // A weight gradient of N = 3 columns and M = 20 rows: the wide kernel serves 64
        // slices per workgroup, too many to stage 4 values of K each, and gathers instead.
        dense([2, 3, 4, 8], 20, 1, Conv2d::new(1, 0), false),
    ];
    for (i, case) in cases.iter().enumerate() {
        check_against_reference(case, 45 + i as u64);
    }
}

#[test]
fn conv2d_weight_gradient_by_input_channel_matches_reference() {
    // 3×3 kernels with padding 1 and stride 1 or 2 along rows of a multiple of 4: the
    // weight gradient may run a thread per input channel (the taps kernel), loading 4 pixels'
    // taps from the 3 vec4s around them.
    let cases = [
        // Fewer channels than SIMD lanes, 5 rows of C.
        dense([2, 3, 8, 8], 5, 3, Conv2d::new(1, 1), false),
        // 40 rows (a full block of 32 and a partial one), 20 channels (a partial lane group).
        dense([2, 20, 4, 8], 40, 3, Conv2d::new(1, 1), false),
        // Rows of a single vec4: both neighbours of every pixel run are padding. 70 channels
        // take two workgroups along the channels.
        dense([1, 70, 4, 4], 17, 3, Conv2d::new(1, 1), false),
        // Stride 2: the taps are every other element of the 3 vec4s.
        dense([2, 6, 8, 8], 12, 3, Conv2d::new(2, 1), false),
        dense([2, 4, 5, 16], 6, 3, rect([1, 2], [0, 1]), false),
        // K = 1,024 over several slices.
        dense([4, 8, 16, 16], 16, 3, Conv2d::new(1, 1), false),
    ];
    for (i, case) in cases.iter().enumerate() {
        let fitting = conv::kernels_for(
            gpu(),
            Pass::BackwardWeight,
            &case.conv,
            &case.input,
            &case.weight,
        )
        .unwrap()
        .fitting;
        assert!(fitting.contains(&GemmKernel::Taps), "{fitting:?}");
        check_against_reference(case, 80 + i as u64);
    }
    // Not for other kernel sizes, paddings, or rows that are not whole vec4s.
    for (input, weight, conv) in [
        ([2, 3, 8, 8], [4, 3, 5, 5], Conv2d::new(1, 2)),
        ([2, 3, 8, 8], [4, 3, 3, 3], rect([1, 1], [1, 3])),
        ([2, 3, 7, 7], [4, 3, 3, 3], Conv2d::new(1, 1)),
        ([2, 3, 12, 12], [4, 3, 3, 3], Conv2d::new(3, 1)),
    ] {
        let fitting = conv::kernels_for(gpu(), Pass::BackwardWeight, &conv, &input, &weight)
            .unwrap()
            .fitting;
        assert!(
            !fitting.contains(&GemmKernel::Taps),
            "{input:?} {conv:?}: {fitting:?}"
        );
    }
}

#[test]
fn conv2d_matches_reference_across_several_tiles_in_every_gemm_dimension() {
    // Forward M = 80, N = 243, K = 648; input gradient M = 72, N = 243, K = 720;
    // weight gradient M = 80, N = 648, K = 243: every dimension spans several tiles and ends
    // in a partial one.
    check_against_reference(&dense([3, 72, 9, 9], 80, 3, Conv2d::new(1, 1), true), 50);
    // Strided, with 17–32 and 33–64 row tiles.
    check_against_reference(&dense([2, 24, 9, 9], 40, 3, Conv2d::new(2, 1), false), 51);
    // 17–32 rows with K over 128 (forward M = 28, K = 180; input gradient M = 20, K = 252):
    // the wide kernels stage A in two chunks and store rows past 16.
    check_against_reference(&dense([2, 20, 9, 7], 28, 3, Conv2d::new(1, 1), true), 52);
    // Weight gradients with M = 24: N = 270 (tiled) and N = 135 (the wide kernel).
    check_against_reference(&dense([2, 30, 5, 6], 24, 3, Conv2d::new(1, 1), false), 53);
    check_against_reference(&dense([2, 15, 5, 6], 24, 3, Conv2d::new(1, 1), false), 54);
    // At most 16 rows with K over 256 (forward M = 12, K = 270), and a weight gradient of
    // M = 8 and N = 540 over split slices; under CPU tuning both go to the 16-row block
    // kernels, and the input gradients (M = 30, 60) to two 32-row blocks.
    check_against_reference(&dense([2, 30, 5, 6], 12, 3, Conv2d::new(1, 1), true), 55);
    check_against_reference(&dense([3, 60, 4, 5], 8, 3, Conv2d::new(2, 1), false), 56);
}

#[test]
fn conv2d_weight_and_bias_gradients_split_long_reductions_over_the_batch() {
    // K = N·OH·OW = 3·32·32 = 3,072 for a tiny M·N: the weight gradient runs as many split-K
    // slices added by a reduction pass.
    check_against_reference(&dense([3, 3, 32, 32], 8, 3, Conv2d::new(1, 1), true), 60);
    // 2·72·72 = 10,368 positions per channel: several slices in the bias gradient.
    check_against_reference(&dense([2, 2, 72, 72], 3, 1, Conv2d::new(1, 0), true), 61);

    // Each takes a pass over slices and a pass adding them up.
    let conv = Conv2d::new(1, 1);
    let x = Tensor::zeros(gpu(), &[3, 3, 32, 32]).unwrap();
    let dy = Tensor::zeros(gpu(), &[3, 8, 32, 32]).unwrap();
    let dw = Tensor::zeros(gpu(), &[8, 3, 3, 3]).unwrap();
    let mut rec = Recorder::new(gpu());
    conv::backward_weight_into(&mut rec, &conv, &x, &dy, &dw).unwrap();
    assert_eq!(rec.dispatch_count(), 2, "weight gradient dispatches");
    let dy = Tensor::zeros(gpu(), &[2, 3, 72, 72]).unwrap();
    let db = Tensor::zeros(gpu(), &[3]).unwrap();
    let mut rec = Recorder::new(gpu());
    conv::backward_bias_into(&mut rec, &dy, &db).unwrap();
    assert_eq!(rec.dispatch_count(), 2, "bias gradient dispatches");
}

#[test]
fn depthwise_conv2d_matches_reference() {
    let cases = [
        depthwise([3, 5, 7, 5], 3, 1, 1, true),
        depthwise([1, 4, 9, 9], 3, 2, 1, false),
        depthwise([3, 3, 7, 5], 5, 1, 2, true),
        depthwise([1, 3, 7, 5], 1, 1, 0, false),
        depthwise([3, 6, 8, 8], 5, 2, 0, true),
        // 3·48·48 = 6,912 positions: the weight gradient sums two slices.
        depthwise([3, 3, 48, 48], 3, 1, 1, true),
    ];
    for (i, case) in cases.iter().enumerate() {
        check_against_reference(case, 70 + i as u64);
    }
}

#[test]
fn conv2d_single_pass_forms_match_the_combined_backward() {
    let case = dense([3, 3, 7, 5], 4, 3, Conv2d::new(2, 1), true);
    let (xs, ws, conv) = (case.input, case.weight, case.conv);
    let ys = conv.output_shape(&xs, &ws).unwrap();
    let mut rng = Rng::new(80);
    let x = upload(&xs, &rng.normal(xs.iter().product()));
    let w = upload(&ws, &rng.normal(ws.iter().product()));
    let dy = upload(&ys, &rng.normal(ys.iter().product()));

    let grads = conv::backward(gpu(), &conv, &x, &w, &dy, true).unwrap();
    let dx = conv::backward_data(gpu(), &conv, &dy, &w, &xs).unwrap();
    let dw = conv::backward_weight(gpu(), &conv, &x, &dy, &ws).unwrap();
    let db = conv::backward_bias(gpu(), &dy).unwrap();
    assert_eq!(download(&dx), download(&grads.input));
    assert_eq!(download(&dw), download(&grads.weight));
    assert_eq!(download(&db), download(&grads.bias.unwrap()));
}

#[test]
fn conv2d_recording_forms_write_into_caller_tensors_in_one_submission() {
    let (xs, ws) = ([1, 3, 7, 5], [4, 3, 3, 3]);
    let conv = Conv2d::new(1, 1);
    let ys = conv.output_shape(&xs, &ws).unwrap();
    assert_eq!(ys, [1, 4, 7, 5]);
    let mut rng = Rng::new(81);
    let x = through_f32(&rng.normal(xs.iter().product()));
    let w = through_f32(&rng.normal(ws.iter().product()));
    let (xt, wt) = (upload(&xs, &x), upload(&ws, &w));
    let y = Tensor::zeros(gpu(), &ys).unwrap();
    let dx = Tensor::zeros(gpu(), &xs).unwrap();

    // Forward, then the input gradient of L = ½‖y‖², whose output gradient is y itself.
    let mut rec = Recorder::new(gpu());
    conv::forward_into(&mut rec, &conv, &xt, &wt, None, &y).unwrap();
    conv::backward_data_into(&mut rec, &conv, &y, &wt, &dx).unwrap();
    rec.submit().unwrap();

    let want_y = reference::conv2d_forward(&x, xs, &w, ws, None, &conv);
    assert_close("recorded forward", &download(&y), &want_y, TOL_REDUCTION);
    let want_dx = reference::conv2d_backward_data(&want_y, &w, ws, xs, &conv);
    assert_close(
        "recorded input gradient",
        &download(&dx),
        &want_dx,
        TOL_REDUCTION,
    );
}

/// Checks all three reference gradients of `case` against finite differences of
/// L = ⟨conv(x, w) + b, dy⟩.
fn check_reference_gradients(case: &Case, seed: u64) {
    let (xs, ws, conv) = (case.input, case.weight, case.conv);
    let name = format!("reference input {xs:?} weight {ws:?} {conv:?}");
    let ys = reference::conv2d_output_shape(xs, ws, &conv);
    let mut rng = Rng::new(seed);
    let x = rng.normal(xs.iter().product());
    let w = rng.normal(ws.iter().product());
    let b = rng.normal(ws[0]);
    let dy = rng.normal(ys.iter().product());
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        dot(
            &reference::conv2d_forward(x, xs, w, ws, Some(b), &conv),
            &dy,
        )
    };

    let dx = reference::conv2d_backward_data(&dy, &w, ws, xs, &conv);
    check_gradient(&format!("{name} input"), &x, &dx, 40, |x| loss(x, &w, &b));
    let dw = reference::conv2d_backward_weight(&x, xs, &dy, ws, &conv);
    check_gradient(&format!("{name} weight"), &w, &dw, 40, |w| loss(&x, w, &b));
    let db = reference::conv2d_backward_bias(&dy, ys);
    check_gradient(&format!("{name} bias"), &b, &db, 40, |b| loss(&x, &w, b));
}

#[test]
fn conv2d_reference_gradients_match_finite_differences() {
    check_reference_gradients(&dense([2, 3, 7, 5], 4, 3, Conv2d::new(2, 1), true), 90);
    check_reference_gradients(&dense([1, 2, 5, 6], 3, 5, Conv2d::new(1, 2), true), 91);
    check_reference_gradients(&depthwise([2, 3, 7, 5], 3, 2, 1, true), 92);
    // A group count the GPU kernels reject: the reference still covers it.
    let grouped = Case {
        input: [1, 4, 5, 5],
        weight: [6, 2, 3, 3],
        conv: Conv2d::new(1, 1).with_groups(2),
        bias: true,
    };
    check_reference_gradients(&grouped, 93);
}

fn forward_error(xs: &[usize], ws: &[usize], conv: Conv2d, bias: Option<&[usize]>) -> String {
    let x = Tensor::zeros(gpu(), xs).unwrap();
    let w = Tensor::zeros(gpu(), ws).unwrap();
    let b = bias.map(|s| Tensor::zeros(gpu(), s).unwrap());
    conv::forward(gpu(), &conv, &x, &w, b.as_ref())
        .expect_err("the convolution should be rejected")
        .to_string()
}

#[test]
fn conv2d_whose_output_exceeds_the_binding_limit_is_an_error_naming_op_and_shape() {
    // A 1×1 input padded until the output of 16 channels outgrows one storage binding.
    let limit = gpu().max_binding_bytes();
    let side = ((limit / (16 * 4)) as f64).sqrt() as usize + 2;
    let padding = side / 2;
    let out_side = 2 * padding + 1;
    let err = forward_error(&[1, 1, 1, 1], &[16, 1, 1, 1], Conv2d::new(1, padding), None);
    let shape = format!("[1, 16, {out_side}, {out_side}]");
    assert!(
        err.contains("conv2d output") && err.contains(&shape) && err.contains(&limit.to_string()),
        "{err}"
    );
}

#[test]
fn conv2d_rejects_mismatched_channels_naming_both_shapes() {
    let err = forward_error(&[1, 3, 7, 5], &[16, 4, 3, 3], Conv2d::new(1, 1), None);
    assert!(
        err.contains("conv2d")
            && err.contains("3 channels")
            && err.contains("[1, 3, 7, 5]")
            && err.contains("[16, 4, 3, 3]"),
        "{err}"
    );
}

#[test]
fn conv2d_rejects_group_counts_other_than_1_and_depthwise() {
    let err = forward_error(
        &[1, 4, 7, 5],
        &[4, 2, 3, 3],
        Conv2d::new(1, 1).with_groups(2),
        None,
    );
    assert!(
        err.contains("conv2d") && err.contains("groups = 2") && err.contains("depthwise"),
        "{err}"
    );
    // groups = channels, but a channel multiplier of 2 is not depthwise either.
    let err = forward_error(
        &[1, 4, 7, 5],
        &[8, 1, 3, 3],
        Conv2d::depthwise(4, 1, 1),
        None,
    );
    assert!(
        err.contains("conv2d") && err.contains("groups = 4"),
        "{err}"
    );
}

#[test]
fn conv2d_rejects_bad_bias_kernel_and_ranks() {
    let err = forward_error(&[1, 3, 7, 5], &[4, 3, 3, 3], Conv2d::new(1, 1), Some(&[5]));
    assert!(
        err.contains("conv2d")
            && err.contains("bias")
            && err.contains("[5]")
            && err.contains("[4]"),
        "{err}"
    );

    let err = forward_error(&[1, 3, 3, 3], &[4, 3, 5, 5], Conv2d::new(1, 0), None);
    assert!(
        err.contains("conv2d") && err.contains("larger than the padded input 3×3"),
        "{err}"
    );

    let err = forward_error(&[3, 7, 5], &[4, 3, 3, 3], Conv2d::new(1, 1), None);
    assert!(
        err.contains("conv2d") && err.contains("4-D") && err.contains("[3, 7, 5]"),
        "{err}"
    );

    let err = forward_error(&[1, 3, 7, 5], &[4, 3, 3, 3], Conv2d::new(0, 1), None);
    assert!(err.contains("conv2d") && err.contains("stride"), "{err}");
}

#[test]
fn conv2d_recording_forms_reject_wrongly_shaped_outputs() {
    let conv = Conv2d::new(2, 1);
    let x = Tensor::zeros(gpu(), &[1, 3, 7, 5]).unwrap();
    let w = Tensor::zeros(gpu(), &[4, 3, 3, 3]).unwrap();
    let dy = Tensor::zeros(gpu(), &[1, 4, 4, 3]).unwrap();
    let wrong = Tensor::zeros(gpu(), &[1, 4, 7, 5]).unwrap();
    let mut rec = Recorder::new(gpu());

    let err = conv::forward_into(&mut rec, &conv, &x, &w, None, &wrong)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d") && err.contains("[1, 4, 7, 5]") && err.contains("[1, 4, 4, 3]"),
        "{err}"
    );

    let err = conv::backward_data_into(&mut rec, &conv, &wrong, &w, &x)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d_backward_data") && err.contains("[1, 4, 7, 5]"),
        "{err}"
    );

    let dw = Tensor::zeros(gpu(), &[4, 3, 3, 3]).unwrap();
    let err = conv::backward_weight_into(&mut rec, &conv, &x, &wrong, &dw)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d_backward_weight") && err.contains("[1, 4, 4, 3]"),
        "{err}"
    );

    let db = Tensor::zeros(gpu(), &[3]).unwrap();
    let err = conv::backward_bias_into(&mut rec, &dy, &db)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d_backward_bias") && err.contains("[3]") && err.contains("[4]"),
        "{err}"
    );
    assert_eq!(rec.dispatch_count(), 0);
}

#[test]
fn every_dense_pass_has_the_tiled_and_row_kernels_and_rejects_a_kernel_that_does_not_fit() {
    let conv = Conv2d::new(1, 1);
    // 40 output channels: too many rows for the narrow and wide kernels.
    let (xs, ws) = ([2, 24, 9, 9], [40, 24, 3, 3]);
    let kernels =
        |pass, conv: &Conv2d, ws: &[usize]| conv::kernels_for(gpu(), pass, conv, &xs, ws).unwrap();
    for pass in [Pass::Forward, Pass::BackwardData, Pass::BackwardWeight] {
        let fitting = kernels(pass, &conv, &ws).fitting;
        assert!(fitting.contains(&GemmKernel::Tiled) && fitting.contains(&GemmKernel::Rows));
    }
    let forward = kernels(Pass::Forward, &conv, &ws);
    assert_eq!(forward.fitting, [GemmKernel::Tiled, GemmKernel::Rows]);
    // The taps kernel is for weight gradients only (rows of 9 are not whole vec4s).
    let weight = kernels(Pass::BackwardWeight, &conv, &ws).fitting;
    assert!(!weight.contains(&GemmKernel::Taps), "{weight:?}");
    assert_eq!(forward.defaults.len(), 1);
    // The input gradient has 24 rows: the wide kernel fits it.
    let data = kernels(Pass::BackwardData, &conv, &ws).fitting;
    assert!(data.contains(&GemmKernel::Wide), "{data:?}");
    let depthwise = kernels(Pass::Forward, &Conv2d::depthwise(24, 1, 1), &[24, 1, 3, 3]);
    assert!(depthwise.fitting.is_empty() && depthwise.defaults.is_empty());

    let x = Tensor::zeros(gpu(), &xs).unwrap();
    let w = Tensor::zeros(gpu(), &ws).unwrap();
    let err = conv::run_with_kernel(
        gpu(),
        Pass::Forward,
        GemmKernel::Narrow,
        &conv,
        [&x, &w],
        &[2, 40, 9, 9],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("narrow") && err.contains("forward") && err.contains("tiled, rows"),
        "{err}"
    );
}
