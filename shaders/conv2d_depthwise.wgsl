// Depthwise 2-D convolution (groups = channels: channel c of the output sees only channel c
// of the input, through its own KH × KW filter), computed directly. With one filter per
// channel there is no reduction over channels to tile, so the passes are memory-bound:
//   forward           one thread per output element sums its KH·KW taps.
//                     src0 = x [batch, C, H, W], src1 = w [C, 1, KH, KW], bias [C]
//                     (when has_bias), out = y [batch, C, OH, OW]
//   backward_data     one thread per input element sums the outputs it reached: only the taps
//                     kh ≡ ih + pad (mod stride) land on an output row, so it steps by stride.
//                     src0 = dy [batch, C, OH, OW], src1 = w, out = dx [batch, C, H, W]
//   backward_weight   workgroup (c, split) sums dy·x over a slice of `chunk` of the
//                     batch·OH·OW output positions for each tap: each thread a strided
//                     part, then a tree in workgroup memory.
//                     src0 = x, src1 = dy, out = partial sums [splits, C, KH·KW];
//                     conv2d_reduce.wgsl adds the slices.
// All buffers are row-major; C = channels. bias is bound but unread unless
// has_bias is set.

struct Params {
    batch: u32,
    channels: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    has_bias: u32,
    positions: u32,
    chunk: u32,
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;
@group(0) @binding(1) var<storage, read> src1: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> sums: array<f32, 256>;

fn index(wid: vec3<u32>, lid: u32, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * WORKGROUP + lid;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
           @builtin(num_workgroups) groups: vec3<u32>) {
    let p = params;
    let i = index(wid, lid, groups);
    let out_plane = p.out_h * p.out_w;
    if (i >= p.batch * p.channels * out_plane) {
        return;
    }
    // i = (nc, oh, ow) with nc = n·C + c
    let nc = i / out_plane;
    let c = nc % p.channels;
    let oh = (i % out_plane) / p.out_w;
    let ow = i % p.out_w;
    let x_at = nc * p.in_h * p.in_w;
    let w_at = c * p.kernel_h * p.kernel_w;
    let ih0 = i32(oh * p.stride_h) - i32(p.pad_h);
    let iw0 = i32(ow * p.stride_w) - i32(p.pad_w);

    var acc = 0.0;
    for (var kh = 0u; kh < p.kernel_h; kh++) {
        let ih = ih0 + i32(kh);
        if (ih < 0 || ih >= i32(p.in_h)) {
            continue;
        }
        for (var kw = 0u; kw < p.kernel_w; kw++) {
            let iw = iw0 + i32(kw);
            if (iw >= 0 && iw < i32(p.in_w)) {
                let x = src0[x_at + u32(ih) * p.in_w + u32(iw)];
                acc += x * src1[w_at + kh * p.kernel_w + kw];
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[c];
    }
    out[i] = acc;
}

@compute @workgroup_size(256)
fn backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let p = params;
    let i = index(wid, lid, groups);
    let in_plane = p.in_h * p.in_w;
    if (i >= p.batch * p.channels * in_plane) {
        return;
    }
    // i = (nc, ih, iw); tap kh reaches output row (ih + pad − kh) / stride when that divides.
    let nc = i / in_plane;
    let c = nc % p.channels;
    let ihp = (i % in_plane) / p.in_w + p.pad_h;
    let iwp = i % p.in_w + p.pad_w;
    let dy_at = nc * p.out_h * p.out_w;
    let w_at = c * p.kernel_h * p.kernel_w;

    var acc = 0.0;
    for (var kh = ihp % p.stride_h; kh < p.kernel_h && kh <= ihp; kh += p.stride_h) {
        let oh = (ihp - kh) / p.stride_h;
        if (oh >= p.out_h) {
            continue;
        }
        for (var kw = iwp % p.stride_w; kw < p.kernel_w && kw <= iwp; kw += p.stride_w) {
            let ow = (iwp - kw) / p.stride_w;
            if (ow < p.out_w) {
                acc += src0[dy_at + oh * p.out_w + ow] * src1[w_at + kh * p.kernel_w + kw];
            }
        }
    }
    out[i] = acc;
}

// The sum of every thread's v, returned to all threads.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    sums[lid] = v;
    workgroupBarrier();
    for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            sums[lid] += sums[lid + half];
        }
        workgroupBarrier();
    }
    let total = sums[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let c = wid.x;
    let split = wid.y;
    let begin = split * p.chunk;
    let end = min(begin + p.chunk, p.positions);
    let out_plane = p.out_h * p.out_w;
    let taps = p.kernel_h * p.kernel_w;

    for (var tap = 0u; tap < taps; tap++) {
        let kh = i32(tap / p.kernel_w) - i32(p.pad_h);
        let kw = i32(tap % p.kernel_w) - i32(p.pad_w);
        var acc = 0.0;
        for (var q = begin + lid; q < end; q += WORKGROUP) {
            // q = (n, oh, ow)
            let n = q / out_plane;
            let oh = (q % out_plane) / p.out_w;
            let ow = q % p.out_w;
            let ih = i32(oh * p.stride_h) + kh;
            let iw = i32(ow * p.stride_w) + kw;
            if (ih >= 0 && ih < i32(p.in_h) && iw >= 0 && iw < i32(p.in_w)) {
                let nc = n * p.channels + c;
                let x = src0[(nc * p.in_h + u32(ih)) * p.in_w + u32(iw)];
                acc += x * src1[nc * out_plane + oh * p.out_w + ow];
            }
        }
        let total = workgroup_sum(acc, lid);
        if (lid == 0u) {
            out[(split * p.channels + c) * taps + tap] = total;
        }
    }
}
