// The fused MLP training step: the network's layout and the step buffer, shared by
// mlp_forward.wgsl, mlp_head.wgsl, mlp_gradients.wgsl and mlp_update.wgsl (prepended to each).
//
// All parameters live in one flat buffer, layer after layer as in burn's module order: the
// weights, then the bias. Burn keeps a dense layer's weights [IN, OUT] row-major; on the device
// the first layer's are transposed, [OUT, IN], so that each unit's 784 weights are contiguous
// (the later layers' stay as burn has them). Adam's two moments have the same layout. A
// batch's pre-activations z of layer l are [ROWS, OUT] row-major; their loss gradients d the
// same, except the first layer's, [OUT, ROWS], as mlp_update.wgsl reads them. ROWS is the batch
// size rounded up to a multiple of 4; the rows past the batch are padding.
//
// The step buffer (u32 words, uploaded with every step):
//   [0] learning rate (f32 bits)
//   [1] Adam's bias correction sqrt(1 - b2^t) / (1 - b1^t) (f32 bits)
//   [2] Adam's epsilon times sqrt(1 - b2^t) (f32 bits)
//   [3] weight decay factor 1 - lr * wd (f32 bits; 1 without decay)
//   [4] real (not padding) rows in the batch
//   [5] label smoothing epsilon (f32 bits)
//   [ROWS_AT ..]        the batch's image numbers; >= COUNT marks a padding row
//   [ROWS_AT + ROWS ..] each row's shift (pixels.wgsl)
//   then, with dropout, each hidden layer's [ROWS, OUT] keep factors (f32 bits)

const ROWS: u32 = {{ rows }}u;
const COUNT: u32 = {{ count }}u;
const CLASSES: u32 = {{ classes }}u;

const STEP_LR: u32 = 0u;
const STEP_CORRECTION: u32 = 1u;
const STEP_EPSILON: u32 = 2u;
const STEP_DECAY: u32 = 3u;
const STEP_REAL: u32 = 4u;
const STEP_SMOOTHING: u32 = 5u;
const ROWS_AT: u32 = {{ rows_at }}u;

// The first dense layer: inputs, units, where its weights, bias and z (and d) start.
const FIRST_IN: u32 = {{ first_in }}u;
const FIRST_OUT: u32 = {{ first_out }}u;
const FIRST_W: u32 = {{ first_w }}u;
const FIRST_B: u32 = {{ first_b }}u;
const FIRST_Z: u32 = {{ first_z }}u;
