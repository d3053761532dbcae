//! Value parsers for flags: each refuses what the recipe cannot use, with the reason.

/// A number of images: a whole number of at least 1.
pub(super) fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A layer width: a whole number of at least 1.
pub(super) fn parse_width(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("layer widths must be at least 1".into()),
        Ok(w) => Ok(w),
        Err(e) => Err(e.to_string()),
    }
}

/// A learning rate: a finite positive number.
pub(super) fn parse_lr(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(lr) if lr.is_finite() && lr > 0.0 => Ok(lr),
        Ok(_) => Err("must be a positive number".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn parse_weight_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(wd) if wd.is_finite() && wd >= 0.0 => Ok(wd),
        Ok(_) => Err("must be 0 or a positive number".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A rate in [0, 1): dropout, label smoothing.
pub(super) fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(eps) if (0.0..1.0).contains(&eps) => Ok(eps),
        Ok(_) => Err("must be at least 0 and below 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `--shard K/N`, K from 1 to N.
pub(super) fn parse_shard(s: &str) -> Result<crate::sweep::Shard, String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 2/4")?;
    let k: usize = k.trim().parse().map_err(|e| format!("K: {e}"))?;
    let n: usize = n.trim().parse().map_err(|e| format!("N: {e}"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("K must be 1 to N, got {k}/{n}"));
    }
    Ok(crate::sweep::Shard { k, n })
}

/// A duration longer than zero, as humantime writes them (`10m`, `90s`).
pub(super) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than 0".into()),
        Err(e) => Err(format!("{e} (e.g. 10m, 90s)")),
    }
}

/// `--image-size H,W`: rows and columns, each at least 1 and at most 4096.
pub(super) fn parse_image_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(',')
        .ok_or("expected H,W (rows,columns), e.g. 32,32")?;
    let side = |v: &str, what: &str| match v.trim().parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{what} {n} is not 1 to 4096")),
        Err(e) => Err(format!("{what}: {e}")),
    };
    Ok((side(h, "H")?, side(w, "W")?))
}

/// `--channels`: 1 (gray) or 3 (RGB).
pub(super) fn parse_channels(s: &str) -> Result<usize, String> {
    match s.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        other => Err(format!("{other:?}: 1 (gray) or 3 (RGB)")),
    }
}
