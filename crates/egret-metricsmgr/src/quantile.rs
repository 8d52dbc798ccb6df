//! Quantiles of a cumulative histogram, the way Prometheus' `histogram_quantile` computes them: find the bucket that
//! holds the rank and interpolate linearly inside it. The bench (window quantiles between two scrapes) and the
//! tmanager (quantiles between two reports) both use this one function.

/// The `q` quantile (0..=1) of a cumulative histogram given as (upper bound, observations at most that bound), by
/// increasing bound, `+Inf` last if present; `None` when it holds no observation. A quantile in the `+Inf` bucket is
/// reported as the largest finite bound.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
            return Some(lower + (le - lower) * fraction);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_that_holds_the_rank() {
        let h = [(0.001, 190.0), (0.002, 200.0), (f64::INFINITY, 200.0)];
        assert_eq!(histogram_quantile(&h, 0.5), Some(0.0005263157894736842));
        // rank 198 of 200: 8 of the 10 observations between 1 and 2 ms.
        assert!((histogram_quantile(&h, 0.99).unwrap() - 0.0018).abs() < 1e-12);
        assert_eq!(histogram_quantile(&[], 0.5), None);
        assert_eq!(histogram_quantile(&[(1.0, 0.0)], 0.5), None);
        assert_eq!(histogram_quantile(&[(f64::INFINITY, 3.0)], 0.5), Some(0.0));
        assert_eq!(histogram_quantile(&[(1.0, 1.0), (f64::INFINITY, 4.0)], 0.9), Some(1.0));
    }
}
