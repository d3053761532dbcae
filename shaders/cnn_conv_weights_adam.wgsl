    // The workgroup's sums are the gradients: Adam.
    for (var e = lane; e < SUMS; e += WORKGROUP) {
        apply(g, e, partial[e]);
    }
