// Batch normalisation, statistics pass 1 of 2: partial (count, mean, M2) of each channel over
// chunks of its N·H·W values. Workgroup g takes chunk g % chunks of channel g / chunks. Each
// thread runs Welford's update over its strided share of the chunk, then the workgroup merges
// the per-thread triples pairwise with Chan's parallel formula. Neither step ever forms Σx², so
// the variance stays accurate when the mean is large against the spread (x = 1000 + noise).
// Values are taken an Elem at a time: f32 here, vec4<f32> (4 positions of one channel) in
// the variant batchnorm_stats4 (build.rs) that the host uses when H·W is a multiple of 4,
// where plane, count and chunk count Elems and each Elem joins the thread's summary as a
// set of `lanes()` values with its own mean and M2.
//
// x:        [N, C, H, W] row-major
// partials: [C, chunks, 3] row-major, (count, mean, M2) of one chunk; M2 = Σ (x − mean)²

alias Elem = f32;

// The sum of an Elem's lanes, and how many it has.
fn total(v: Elem) -> f32 {
    return v;
}

fn lanes() -> f32 {
    return 1.0;
}

struct Params {
    channels: u32,
    plane: u32,   // H·W
    count: u32,   // N·H·W values per channel
    chunk: u32,   // values per chunk
    chunks: u32,  // chunks per channel
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> summaries: array<vec3<f32>, WORKGROUP>;

// The (count, mean, M2) of the union of two disjoint sets of values.
fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let n = a.x + b.x;
    if (n == 0.0) {
        return vec3<f32>(0.0);
    }
    let delta = b.y - a.y;
    let share_b = b.x / n;
    return vec3<f32>(n, a.y + delta * share_b, a.z + b.z + delta * delta * a.x * share_b);
}

@compute @workgroup_size(256)
fn channel_partials(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32,
                    @builtin(num_workgroups) groups: vec3<u32>) {
    let g = wid.y * groups.x + wid.x;
    if (g >= params.channels * params.chunks) {
        return;
    }
    let c = g / params.chunks;
    let start = (g % params.chunks) * params.chunk;
    let end = min(start + params.chunk, params.count);

    var s = vec3<f32>(0.0);
    for (var j = start + lid; j < end; j += WORKGROUP) {
        let n = j / params.plane;
        let v = x[(n * params.channels + c) * params.plane + (j - n * params.plane)];
        let v_mean = total(v) / lanes();
        let centred = v - v_mean;
        s = merge(s, vec3<f32>(lanes(), v_mean, total(centred * centred)));
    }
    summaries[lid] = s;
    workgroupBarrier();

    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            summaries[lid] = merge(summaries[lid], summaries[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total = summaries[0];
        partials[g * 3u] = total.x;
        partials[g * 3u + 1u] = total.y;
        partials[g * 3u + 2u] = total.z;
    }
}
