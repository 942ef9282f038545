//! Training-time augmentation: a random 32×32 crop of the image padded with zeros, and a
//! random horizontal flip, as used to train ResNets on CIFAR.

use super::dataset::IMAGE_SIZE;
use crate::rng::SplitMix64;

/// Which augmentations to draw for each training image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Zero pixels added on each side before cropping back to 32×32, so the image moves by
    /// up to this many pixels in each direction; 0 turns cropping off.
    pub crop_padding: usize,
    /// Mirror left-right with probability ½.
    pub flip: bool,
}

impl Augment {
    /// No augmentation: evaluation, and digit sets (a mirrored digit is another symbol).
    pub const NONE: Augment = Augment {
        crop_padding: 0,
        flip: false,
    };

    /// CIFAR's standard augmentation: 4-pixel padding, random crop, random flip.
    pub const CIFAR: Augment = Augment {
        crop_padding: 4,
        flip: true,
    };

    /// Whether every draw leaves images unchanged.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.flip
    }

    /// Draws one image's crop and flip. Draws nothing from `rng` for what is switched off.
    pub fn sample(&self, rng: &mut SplitMix64) -> CropFlip {
        let span = 2 * self.crop_padding as u64 + 1;
        let shift = |rng: &mut SplitMix64| {
            if self.crop_padding == 0 {
                0
            } else {
                rng.below(span) as isize - self.crop_padding as isize
            }
        };
        let shift_x = shift(rng);
        let shift_y = shift(rng);
        let flip = self.flip && rng.coin();
        CropFlip {
            shift_x,
            shift_y,
            flip,
        }
    }
}

/// One drawn augmentation. Output pixel `(y, x)` is input pixel
/// `(y + shift_y, x' + shift_x)`, where `x' = 31 - x` when `flip` and `x` otherwise; pixels
/// from outside the input are 0. (Cropping at offset `p + shift` of the image padded by `p`
/// is the same thing.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CropFlip {
    /// Horizontal shift of the crop window, in pixels (positive: to the right).
    pub shift_x: isize,
    /// Vertical shift of the crop window, in pixels (positive: down).
    pub shift_y: isize,
    /// Mirror the crop left-right.
    pub flip: bool,
}

impl CropFlip {
    /// Calls `put(channel, output_offset, pixel)` for every output pixel of a `[C, 32, 32]`
    /// image, `output_offset` being the row-major offset within the channel plane.
    pub fn for_each_pixel(
        &self,
        image: &[u8],
        channels: usize,
        mut put: impl FnMut(usize, usize, u8),
    ) {
        let size = IMAGE_SIZE as isize;
        for c in 0..channels {
            let plane = &image[c * IMAGE_SIZE * IMAGE_SIZE..(c + 1) * IMAGE_SIZE * IMAGE_SIZE];
            for y in 0..IMAGE_SIZE {
                let source_y = y as isize + self.shift_y;
                for x in 0..IMAGE_SIZE {
                    let mirrored = if self.flip { IMAGE_SIZE - 1 - x } else { x };
                    let source_x = mirrored as isize + self.shift_x;
                    let inside = (0..size).contains(&source_y) && (0..size).contains(&source_x);
                    let pixel = if inside {
                        plane[(source_y * size + source_x) as usize]
                    } else {
                        0
                    };
                    put(c, y * IMAGE_SIZE + x, pixel);
                }
            }
        }
    }

    /// Writes the augmented `[C, 32, 32]` image into `out`, which has the same length.
    pub fn apply(&self, image: &[u8], channels: usize, out: &mut [u8]) {
        let plane = IMAGE_SIZE * IMAGE_SIZE;
        self.for_each_pixel(image, channels, |c, offset, pixel| {
            out[c * plane + offset] = pixel;
        });
    }
}
