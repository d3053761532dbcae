    // Layer {{ l }} backward: the gradient into the layer below (with the old weights), then
    // the layer's own weights and bias.
    for (var t = lane; t < ROWS * {{ n_in }}u; t += WORKGROUP) {
        let row = t / {{ n_in }}u;
        let k = t % {{ n_in }}u;
        var g = 0.0;
        if (z[{{ z_below }}u + t] > 0.0) {
            var back = 0.0;
            for (var j = 0u; j < {{ n }}u; j++) {
                back += d[{{ d_here }}] * params[{{ w_at }}u + k * {{ n }}u + j];
            }
            g = back{{ keep }};
        }
        d[{{ d_below }}] = g;
    }
    storageBarrier();
    for (var t = lane; t < {{ n_in }}u * {{ n }}u; t += WORKGROUP) {
        let k = t / {{ n }}u;
        let j = t % {{ n }}u;
        var g = 0.0;
        for (var row = 0u; row < ROWS; row++) {
            g += {{ input }} * d[{{ d_here }}];
        }
        adam({{ w_at }}u + t, g);
    }
    for (var j = lane; j < {{ n }}u; j += WORKGROUP) {
        var g = 0.0;
        for (var row = 0u; row < ROWS; row++) {
            g += d[{{ d_here }}];
        }
        adam({{ b_at }}u + j, g);
    }
    storageBarrier();
