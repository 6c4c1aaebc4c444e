//! Kubernetes resource quantities (`64Mi`, `1G`, `500m`, `0.5`).

/// Parse a quantity into its value scaled by `scale` (1 for bytes,
/// 1000 for milli-CPUs). `None` for malformed input.
pub fn parse(q: &str, scale: f64) -> Option<i64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    let v = (n * mult * scale).ceil();
    (v.is_finite() && v >= 0.0).then_some(v as i64)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("64Mi", 1.0), Some(64 << 20));
        assert_eq!(parse("1G", 1.0), Some(1_000_000_000));
        assert_eq!(parse("500m", 1000.0), Some(500));
        assert_eq!(parse("2", 1000.0), Some(2000));
        assert_eq!(parse("0.5", 1000.0), Some(500));
        assert_eq!(parse("12Qi", 1.0), None);
        assert_eq!(parse("-1", 1.0), None);
    }
}
