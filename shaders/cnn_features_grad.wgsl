// Fused CNN step, backward: the loss gradient into the dense layer's input features (with the
// dense weights as they were before this step's update), and from there through the last
// convolution's max-pooling and ReLU into its outputs, [ROWS, SIDE, SIDE, channels]; the
// outputs no pooling window covers (the last row and column of an odd side) get zero. One
// invocation per four rows and four features.

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> d: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> features: array<f32>;
@group(0) @binding(3) var<storage, read_write> winners: array<u32>;
@group(0) @binding(4) var<storage, read_write> top: array<f32>;

const SIDE: u32 = {{ side }}u;
const POOLED: u32 = {{ pooled }}u;
const CHANNELS: u32 = {{ channels }}u;
const FEATURES: u32 = FIRST_IN;

fn top_index(b: u32, y: u32, x: u32, c: u32) -> u32 {
    return ((b * SIDE + y) * SIDE + x) * CHANNELS + c;
}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let quads = FEATURES / 4u;
    let f4 = id.x % quads;
    let b4 = id.x / quads;
    if (b4 >= ROWS / 4u) {
        return;
    }
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var j = 0u; j < FIRST_OUT; j++) {
        let dv = d[FIRST_Z / 4u + j * (ROWS / 4u) + b4];
        let w = params[FIRST_W / 4u + j * quads + f4];
        a0 += dv.x * w;
        a1 += dv.y * w;
        a2 += dv.z * w;
        a3 += dv.w * w;
    }
    let rows = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var r = 0u; r < 4u; r++) {
        let b = 4u * b4 + r;
        for (var k = 0u; k < 4u; k++) {
            let f = 4u * f4 + k;
            let c = f / (POOLED * POOLED);
            let py = (f / POOLED) % POOLED;
            let px = f % POOLED;
            let at = b * FEATURES + f;
            let open = features[at] > 0.0;
            for (var w = 0u; w < 4u; w++) {
                var value = 0.0;
                if (open && winners[at] == w) {
                    value = rows[r][k];
                }
                top[top_index(b, 2u * py + w / 2u, 2u * px + w % 2u, c)] = value;
            }
            // The outputs past the last window, beside or below this one.
            let y_end = select(2u * py + 2u, SIDE, py == POOLED - 1u);
            let x_end = select(2u * px + 2u, SIDE, px == POOLED - 1u);
            for (var y = 2u * py; y < y_end; y++) {
                for (var x = 2u * px; x < x_end; x++) {
                    if (y >= 2u * POOLED || x >= 2u * POOLED) {
                        top[top_index(b, y, x, c)] = 0.0;
                    }
                }
            }
        }
    }
}
