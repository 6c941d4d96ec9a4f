//! Scoring predictions against labels. Pure: the same predictions give the same metrics.
//!
//! A classifier error (no verdict for a case) counts as a wrong answer: it lowers accuracy and
//! recall, appears in the confusion matrix as `error`, and is never a costly error (nothing
//! was decided).

use crate::classify::Label;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One scored case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub id: String,
    pub expected: Label,
    /// `None`: the classifier gave no verdict.
    pub predicted: Option<Label>,
    pub difficulty: String,
    pub category: String,
    pub latency_ms: f64,
    /// For `retry_with_resources`: did it name the right resource (memory vs runtime)?
    pub resource_match: Option<bool>,
    /// Why there was no verdict (`bad_answer`, `timeout`, `no_precedent`, ...).
    pub error_kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// A costly kind of error: how many, out of how many cases of that class, and the rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Costly {
    pub count: usize,
    pub of: usize,
    pub rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostlyErrors {
    /// Permanent failures (`fail`) retried, with or without resources: wasted allocations.
    pub permanent_retried: Costly,
    /// Transient failures (`retry`) failed: lost work (and canceled dependents).
    pub transient_failed: Costly,
    /// Resource failures (`retry_with_resources`) retried without more resources: the same
    /// out-of-memory or time limit again.
    pub resources_retried_without: Costly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Cases the classifier gave no verdict for.
    pub errors: usize,
    /// The cases without a verdict by why (`bad_answer`, `refused`, `timeout`, `unavailable`,
    /// `no_precedent`).
    pub errors_by_kind: BTreeMap<String, usize>,
    pub per_class: BTreeMap<String, ClassMetrics>,
    /// expected → predicted (`error` for no verdict) → count.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    pub costly: CostlyErrors,
    /// Among `retry_with_resources` cases predicted as such: how many named the right resource.
    pub resource_kind: Accuracy,
    pub by_difficulty: BTreeMap<String, Accuracy>,
    pub by_category: BTreeMap<String, Accuracy>,
    /// Milliseconds per case.
    pub latency_ms: Latency,
}

pub const ERROR: &str = "error";

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn compute(cases: &[Scored]) -> Metrics {
    let n = cases.len();
    let correct = cases
        .iter()
        .filter(|c| c.predicted == Some(c.expected))
        .count();
    let errors = cases.iter().filter(|c| c.predicted.is_none()).count();
    let mut errors_by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for c in cases.iter().filter(|c| c.predicted.is_none()) {
        let kind = c.error_kind.clone().unwrap_or_else(|| ERROR.to_string());
        *errors_by_kind.entry(kind).or_default() += 1;
    }

    let mut per_class = BTreeMap::new();
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for l in Label::ALL {
        let support = cases.iter().filter(|c| c.expected == l).count();
        let predicted = cases.iter().filter(|c| c.predicted == Some(l)).count();
        let tp = cases
            .iter()
            .filter(|c| c.expected == l && c.predicted == Some(l))
            .count();
        let (p, r) = (ratio(tp, predicted), ratio(tp, support));
        let f1 = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        per_class.insert(
            l.as_str().to_string(),
            ClassMetrics {
                precision: p,
                recall: r,
                f1,
                support,
            },
        );
        let row = confusion.entry(l.as_str().to_string()).or_default();
        for m in Label::ALL {
            row.insert(m.as_str().to_string(), 0);
        }
        row.insert(ERROR.to_string(), 0);
    }
    for c in cases {
        let col = c.predicted.map_or(ERROR, |p| p.as_str());
        *confusion
            .entry(c.expected.as_str().to_string())
            .or_default()
            .entry(col.to_string())
            .or_default() += 1;
    }

    let costly_of = |expected: Label, wrong: &dyn Fn(Label) -> bool| {
        let of = cases.iter().filter(|c| c.expected == expected).count();
        let count = cases
            .iter()
            .filter(|c| c.expected == expected && c.predicted.is_some_and(wrong))
            .count();
        Costly {
            count,
            of,
            rate: ratio(count, of),
        }
    };
    let costly = CostlyErrors {
        permanent_retried: costly_of(Label::Fail, &|p| p != Label::Fail),
        transient_failed: costly_of(Label::Retry, &|p| p == Label::Fail),
        resources_retried_without: costly_of(Label::RetryWithResources, &|p| p == Label::Retry),
    };

    let kind: Vec<bool> = cases.iter().filter_map(|c| c.resource_match).collect();
    let resource_kind = Accuracy {
        n: kind.len(),
        correct: kind.iter().filter(|k| **k).count(),
        accuracy: ratio(kind.iter().filter(|k| **k).count(), kind.len()),
    };

    let group = |key: &dyn Fn(&Scored) -> &str| {
        let mut m: BTreeMap<String, Accuracy> = BTreeMap::new();
        for c in cases {
            let e = m.entry(key(c).to_string()).or_insert(Accuracy {
                n: 0,
                correct: 0,
                accuracy: 0.0,
            });
            e.n += 1;
            e.correct += usize::from(c.predicted == Some(c.expected));
        }
        for a in m.values_mut() {
            a.accuracy = ratio(a.correct, a.n);
        }
        m
    };

    let mut lat: Vec<f64> = cases.iter().map(|c| c.latency_ms).collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let latency_ms = Latency {
        p50: percentile(&lat, 50.0),
        p90: percentile(&lat, 90.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or(0.0),
        mean: if lat.is_empty() {
            0.0
        } else {
            lat.iter().sum::<f64>() / lat.len() as f64
        },
    };

    Metrics {
        n,
        correct,
        accuracy: ratio(correct, n),
        errors,
        errors_by_kind,
        per_class,
        confusion,
        costly,
        resource_kind,
        by_difficulty: group(&|c| c.difficulty.as_str()),
        by_category: group(&|c| c.category.as_str()),
        latency_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::*;

    fn s(id: &str, e: Label, p: Option<Label>, diff: &str, ms: f64) -> Scored {
        Scored {
            id: id.into(),
            expected: e,
            predicted: p,
            difficulty: diff.into(),
            category: if e == Fail {
                "bug".into()
            } else {
                "net".into()
            },
            latency_ms: ms,
            resource_match: None,
            error_kind: p.is_none().then(|| "timeout".to_string()),
        }
    }

    /// Six cases computed by hand:
    ///
    /// | id | expected | predicted | |
    /// |----|----------|-----------|---|
    /// | 1 | retry | retry | ok |
    /// | 2 | retry | fail | transient failed |
    /// | 3 | fail | fail | ok |
    /// | 4 | fail | retry | permanent retried |
    /// | 5 | retry_with_resources | retry | resources retried without |
    /// | 6 | retry_with_resources | (error) | |
    ///
    /// accuracy 2/6. retry: predicted for 1, 4 and 5, right once → precision 1/3; recall 1/2.
    /// fail: predicted for 2 and 3 → precision 1/2; recall 1/2. retry_with_resources: never
    /// predicted → precision 0, recall 0. Latencies 1,2,3,4,5,100 ms: p50 3, p90 100.
    #[test]
    fn metrics_match_a_hand_computed_set() {
        let cases = vec![
            s("1", Retry, Some(Retry), "easy", 1.0),
            s("2", Retry, Some(Fail), "easy", 2.0),
            s("3", Fail, Some(Fail), "hard", 3.0),
            s("4", Fail, Some(Retry), "hard", 4.0),
            s("5", RetryWithResources, Some(Retry), "easy", 5.0),
            s("6", RetryWithResources, None, "hard", 100.0),
        ];
        let m = compute(&cases);
        assert_eq!((m.n, m.correct, m.errors), (6, 2, 1));
        assert_eq!(m.errors_by_kind["timeout"], 1);
        assert!((m.accuracy - 2.0 / 6.0).abs() < 1e-12);
        let r = &m.per_class["retry"];
        assert!((r.precision - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.recall - 0.5).abs() < 1e-12);
        assert!((r.f1 - 0.4).abs() < 1e-12, "2·(1/3)·(1/2)/(1/3+1/2) = 0.4");
        assert_eq!(r.support, 2);
        let f = &m.per_class["fail"];
        assert_eq!((f.precision, f.recall, f.f1, f.support), (0.5, 0.5, 0.5, 2));
        let w = &m.per_class["retry_with_resources"];
        assert_eq!((w.precision, w.recall, w.f1, w.support), (0.0, 0.0, 0.0, 2));
        assert_eq!(m.confusion["retry"]["fail"], 1);
        assert_eq!(m.confusion["retry_with_resources"]["retry"], 1);
        assert_eq!(m.confusion["retry_with_resources"][ERROR], 1);
        assert_eq!(m.confusion["fail"]["retry_with_resources"], 0);
        assert_eq!(
            m.costly.permanent_retried,
            Costly {
                count: 1,
                of: 2,
                rate: 0.5
            }
        );
        assert_eq!(m.costly.transient_failed.count, 1);
        assert_eq!(m.costly.resources_retried_without.count, 1);
        assert_eq!(m.by_difficulty["easy"].correct, 1);
        assert_eq!(m.by_difficulty["easy"].n, 3);
        assert_eq!(m.by_difficulty["hard"].correct, 1);
        assert_eq!(m.by_category["bug"].accuracy, 0.5);
        assert_eq!(m.latency_ms.p50, 3.0);
        assert_eq!(m.latency_ms.p90, 100.0);
        assert_eq!(m.latency_ms.max, 100.0);
        assert!((m.latency_ms.mean - 115.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn empty_is_all_zero_not_nan() {
        let m = compute(&[]);
        assert_eq!(m.accuracy, 0.0);
        assert!(m.per_class.values().all(|c| c.f1 == 0.0));
    }
}
