//! A built-in 10-class data set in CIFAR's format (3×32×32), generated from a seed.
//!
//! Each image is a sinusoidal grating: stripes of one random colour on a background of
//! another, at a random phase, with Gaussian pixel noise. The class fixes the stripes'
//! orientation (one of five, 36° apart, jittered by up to ±6°) and period (about 4 or 8
//! pixels, jittered by ±10 %). Colours and phase are drawn independently of the class, so
//! an image's mean colour says nothing about its class: telling classes apart needs
//! oriented spatial filters, which is what a convolution learns. Images are balanced over
//! the classes (image `i` has class `i mod 10`).
//!
//! Image `i` depends only on the seed and `i`, so a longer set extends a shorter one.

use std::f64::consts::{PI, TAU};

use super::dataset::{Dataset, Split, IMAGE_SIZE, PIXELS_PER_CHANNEL};
use super::normalize::Normalization;
use crate::error::Result;
use crate::rng::SplitMix64;

/// Number of classes.
pub const CLASSES: usize = 10;

/// Distinct stripe orientations; classes `c` and `c + 5` share orientation `c mod 5`.
const ORIENTATIONS: usize = 5;

/// Stripe period in pixels for classes 0–4 (fine) and 5–9 (coarse).
const PERIODS: [f64; 2] = [4.0, 8.0];

/// Largest random deviation from the class's orientation, in degrees (the classes are 36°
/// apart, so neighbouring classes stay 24° apart).
const ANGLE_JITTER_DEGREES: f64 = 6.0;

/// Largest relative deviation from the class's period.
const PERIOD_JITTER: f64 = 0.1;

/// Least difference between stripe and background colour, in the channel where they
/// differ most (on a 0..1 scale), so that every image shows its stripes.
const MIN_CONTRAST: f64 = 0.35;

/// Standard deviation of the Gaussian pixel noise (on a 0..1 scale).
const NOISE_STD: f64 = 0.05;

/// Stream of the seed the test images are drawn from, far from any training index.
const TEST_STREAM: u64 = u64::MAX;

/// The class names, e.g. `fine stripes at 36°`.
pub fn class_names() -> Vec<String> {
    (0..CLASSES)
        .map(|class| {
            let width = if class < ORIENTATIONS {
                "fine"
            } else {
                "coarse"
            };
            let degrees = (class % ORIENTATIONS) * 180 / ORIENTATIONS;
            format!("{width} stripes at {degrees}°")
        })
        .collect()
}

/// `count` images generated from `seed`, named `synthetic`, normalised with
/// [`Normalization::SYNTHETIC`].
pub fn generate(count: usize, seed: u64) -> Result<Dataset> {
    let image_len = 3 * PIXELS_PER_CHANNEL;
    let mut images = vec![0u8; count * image_len];
    let mut labels = Vec::with_capacity(count);
    for (index, image) in images.chunks_exact_mut(image_len).enumerate() {
        let class = index % CLASSES;
        draw_image(class, &mut SplitMix64::stream(seed, index as u64), image);
        labels.push(class as u32);
    }
    Dataset::new("synthetic", 3, images, labels, CLASSES)?
        .with_class_names(class_names())?
        .with_normalization(Normalization::SYNTHETIC)
}

/// `train` training images and `test` test images from `seed`; the test images come from a
/// stream of their own, so none repeats a training image.
pub fn split(train: usize, test: usize, seed: u64) -> Result<Split> {
    let test_seed = SplitMix64::stream(seed, TEST_STREAM).next_u64();
    Ok(Split {
        train: generate(train, seed)?.renamed("synthetic train"),
        test: generate(test, test_seed)?.renamed("synthetic test"),
    })
}

/// Draws one `[3, 32, 32]` image of `class` into `image`.
fn draw_image(class: usize, rng: &mut SplitMix64, image: &mut [u8]) {
    let orientation = (class % ORIENTATIONS) as f64 * PI / ORIENTATIONS as f64;
    let angle = orientation + rng.uniform(-1.0, 1.0) * ANGLE_JITTER_DEGREES.to_radians();
    let period =
        PERIODS[class / ORIENTATIONS] * rng.uniform(1.0 - PERIOD_JITTER, 1.0 + PERIOD_JITTER);
    let phase = rng.uniform(0.0, TAU);
    let background: [f64; 3] = std::array::from_fn(|_| rng.unit());
    let stripes = stripe_colour(&background, rng);

    // The wave across the image, shared by the three channels.
    let (dx, dy) = (angle.cos() * TAU / period, angle.sin() * TAU / period);
    let wave: Vec<f64> = (0..PIXELS_PER_CHANNEL)
        .map(|p| {
            let (y, x) = ((p / IMAGE_SIZE) as f64, (p % IMAGE_SIZE) as f64);
            0.5 + 0.5 * (x * dx + y * dy + phase).sin()
        })
        .collect();

    for (c, plane) in image.chunks_exact_mut(PIXELS_PER_CHANNEL).enumerate() {
        let (low, high) = (background[c], stripes[c]);
        for (pixel, w) in plane.iter_mut().zip(&wave) {
            let value = low + (high - low) * w + NOISE_STD * rng.normal();
            *pixel = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
}

/// A colour at least [`MIN_CONTRAST`] away from `background` in some channel. The rule is
/// symmetric under `v → 1 - v`, which keeps every channel's mean at 0.5.
fn stripe_colour(background: &[f64; 3], rng: &mut SplitMix64) -> [f64; 3] {
    for _ in 0..64 {
        let colour: [f64; 3] = std::array::from_fn(|_| rng.unit());
        let contrast = (0..3)
            .map(|c| (colour[c] - background[c]).abs())
            .fold(0.0, f64::max);
        if contrast >= MIN_CONTRAST {
            return colour;
        }
    }
    // Reached with probability below 1e-29: move the red channel half the range away.
    let red = background[0];
    let far_red = if red < 0.5 { red + 0.5 } else { red - 0.5 };
    [far_red, background[1], background[2]]
}
