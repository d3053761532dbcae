    // Layer {{ l }} forward: {{ n_in }} inputs, {{ n }} units, for the block's rows.
    for (var t = lane; t < BLOCK * {{ n }}u; t += WORKGROUP) {
        let row = first + t / {{ n }}u;
        let j = t % {{ n }}u;
        var acc = 0.0;
        for (var k = 0u; k < {{ n_in }}u; k++) {
            acc += {{ input }} * params[{{ w_at }}u + k * {{ n }}u + j];
        }
        z[{{ z_at }}u + row * {{ n }}u + j] = acc + params[{{ b_at }}u + j];
    }
    storageBarrier();
