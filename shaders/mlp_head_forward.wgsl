    // Layer {{ l }} forward: {{ n_in }} inputs, {{ n }} units.
    for (var t = lane; t < ROWS * {{ n }}u; t += WORKGROUP) {
        let row = t / {{ n }}u;
        let j = t % {{ n }}u;
        var acc = 0.0;
        for (var k = 0u; k < {{ n_in }}u; k++) {
            acc += {{ input }} * params[{{ w_at }}u + k * {{ n }}u + j];
        }
        z[{{ z_at }}u + t] = acc + params[{{ b_at }}u + j];
    }
    storageBarrier();
