    // Layer {{ l }} backward: the gradient into the layer below, for the block's rows.
    for (var t = lane; t < BLOCK * {{ n_in }}u; t += WORKGROUP) {
        let row = first + t / {{ n_in }}u;
        let k = t % {{ n_in }}u;
        var g = 0.0;
        if (z[{{ z_below }}u + row * {{ n_in }}u + k] > 0.0) {
            var back = 0.0;
            for (var j = 0u; j < {{ n }}u; j++) {
                back += d[{{ d_here }}] * params[{{ w_at }}u + k * {{ n }}u + j];
            }
            g = back{{ keep }};
        }
        d[{{ d_below }}] = g;
    }
    storageBarrier();
