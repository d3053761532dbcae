    // The workgroup's sums are one slice's: kept for cnn_conv_weights_sum.wgsl. (The
    // parameters and moments are bound all the same: the sum kernel's layout is the same.)
    _ = &step;
    _ = &params;
    _ = &m;
    _ = &v;
    for (var e = lane; e < SUMS; e += WORKGROUP) {
        partials[(slice * GROUPS + g) * SUMS + e] = partial[e];
    }
