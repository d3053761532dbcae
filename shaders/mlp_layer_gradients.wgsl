    // Layer {{ l }}: its weights' and bias's gradients, summed over the rows in order, and Adam.
    if (t < {{ n_in }}u * {{ n }}u) {
        let k = t / {{ n }}u;
        let j = t % {{ n }}u;
        var g = 0.0;
        for (var row = 0u; row < ROWS; row++) {
            g += {{ input }} * d[{{ d_here }}];
        }
        adam({{ w_at }}u + t, g);
        return;
    }
    t -= {{ n_in }}u * {{ n }}u;
    if (t < {{ n }}u) {
        let j = t;
        var g = 0.0;
        for (var row = 0u; row < ROWS; row++) {
            g += d[{{ d_here }}];
        }
        adam({{ b_at }}u + j, g);
        return;
    }
    t -= {{ n }}u;
