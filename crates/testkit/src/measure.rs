//! Figures from repeated measurements, for the benchmarks: the median of
//! rounds, a percentile of latencies, and the knobs a benchmark reads from
//! the environment. Nothing here measures anything itself.

use std::str::FromStr;
use std::time::Duration;

/// The median of `values` (the mean of the middle two for an even count).
/// Panics when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The `p`th percentile (0-100) by nearest rank; `None` when empty.
pub fn percentile(times: &[Duration], p: f64) -> Option<Duration> {
    if times.is_empty() {
        return None;
    }
    let mut sorted = times.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The environment variable `name` read as a `T`, `default` when unset or
/// empty. Panics, naming the variable, on a value that does not parse.
pub fn knob<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a valid value")),
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let times: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&times, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&times, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&times, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&times, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 99.0),
            Some(Duration::from_millis(7))
        );
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
